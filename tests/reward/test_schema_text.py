"""What the reward relies on from `npr.text.parse_text`: where the final answer starts, and which text
a plan owns, when a guideline does not fork or a plan is left open."""

from npr.text import parse_text

ANSWER = "\nSo \\boxed{42}."


def test_final_answer_after_a_guideline_that_does_not_fork():
    text = "<guideline>\n</guideline>" + ANSWER  # 0 plans: no fork, the block is just the guideline
    parsed = parse_text(text)
    assert [i.name for i in parsed.issues] == ["plan_count"]
    assert parsed.blocks[0].end == len(text) - len(ANSWER)
    assert parsed.final == ANSWER and parsed.outside == []


def test_too_many_plans_ends_the_block_at_its_guideline():
    text = "<guideline><plan>1: a</plan><plan>2: b</plan></guideline>" + ANSWER
    parsed = parse_text(text, max_branches=1)
    assert [i.name for i in parsed.issues] == ["plan_count"] and parsed.final == ANSWER


def test_unclosed_plan_does_not_swallow_the_guideline_close_and_separator():
    text = ("<guideline>\n<plan>1: a\n</guideline>\nsep\n<step>\n1: x\n</step>\n"
            "<takeaway>\nt\n</takeaway>" + ANSWER)
    parsed = parse_text(text)
    assert [i.name for i in parsed.issues] == ["unclosed_plan"]
    assert parsed.blocks[0].plans == ["1: a\n"]
    assert parsed.outside == [(text.index("\nsep"), "\nsep\n")]
    assert parsed.final == ANSWER
