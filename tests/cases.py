"""Cases shared by several test modules (test modules never import each other): hand-drawn symbolic
sequences for `sym` (tests/conftest.py) with the prompt length they are drawn with, and the chat prompt of
the tiny tokenizer. tests/test_cases.py checks them."""

from __future__ import annotations

# Prompt "Q Q Q", one block of two uneven branches, then the answer (response_start=3).
TWO_BRANCHES = (
    "Q Q Q "
    "<guideline> <plan> a </plan> <plan> b </plan> </guideline> "
    "<step> h c </step> "
    "<step> h c c c </step> "
    "<takeaway> t </takeaway> ans"
)

# Prompt "Q", two blocks: three branches with separators after </step> and an empty one, then two
# (response_start=1).
THREE_AND_TWO = (
    "Q "
    "<guideline> <plan> x </plan> <plan> y </plan> <plan> z </plan> </guideline> nl "
    "<step> a </step> nl "
    "<step> b b b </step> "
    "<step> </step> nl "
    "<takeaway> t </takeaway> nl "
    "<guideline> <plan> u </plan> <plan> v </plan> </guideline> "
    "<step> e e </step> "
    "<step> </step> "
    "<takeaway> </takeaway> ans"
)


def prompt_ids(tokenizer, text="What is 6 times 7?") -> list[int]:
    """The chat-template prompt ids of one user message, with the generation prompt."""
    ids = tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True)
    return list(ids if isinstance(ids, list) else ids["input_ids"])
