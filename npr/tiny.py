"""Tiny in-memory models and tokenizers (no hub, no network) for tests, demos and benchmarks:
a byte-level BPE tokenizer whose eight tags are special tokens, and a random Qwen3-style model."""

from __future__ import annotations

import os
from typing import Any

from npr.schema import TAG_STRINGS

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
_CORPUS = [
    "Let us solve the problem step by step. The answer is \\boxed{42}.",
    "First compute the sum: 1 + 2 + 3 = 6. Then multiply by 7 to get 42.",
    "Plan 1: try small cases. Plan 2: use algebra. Plan 3: check the parity of n.",
    "We consider x = 3 and y = 4, so x^2 + y^2 = 25 and the hypotenuse is 5.",
    "Therefore the probability is \\frac{1}{2}, and the final answer is \\boxed{\\frac{1}{2}}.",
    "In parallel we explore two approaches and then compare their results in the takeaway.",
    "\n1: \n2: \n3: \n4: \n5: the the and of to in is it that for with as",
]


def make_tiny_tokenizer(with_tags: bool = True, vocab_size: int = 384) -> Any:
    """A PreTrainedTokenizerFast built in memory: byte-level BPE trained on a small fixed corpus.

    with_tags=True adds the eight tags as special tokens (Stage 2+); False leaves them multi-token (Stage 1).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE(unk_token=None))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    core.train_from_iterator(_CORPUS, trainer=trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    if with_tags:
        tok.add_special_tokens({"additional_special_tokens": list(TAG_STRINGS)})
    tok.chat_template = CHAT_TEMPLATE
    return tok


def make_tiny_config(vocab_size: int, **overrides: Any) -> Any:
    """A 2-layer Qwen3 config small enough for CPU tests."""
    from transformers import Qwen3Config

    kwargs = dict(
        vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=4096,
        rope_theta=10000.0, tie_word_embeddings=False, initializer_range=0.2,
    )
    kwargs.update(overrides)
    return Qwen3Config(**kwargs)


def make_tiny_model(tokenizer: Any, seed: int = 0, dtype: Any = None, attn_implementation: str = "sdpa",
                    **config_overrides: Any) -> Any:
    """A random Qwen3ForCausalLM sized to the tokenizer, in eval mode. dtype defaults to float32."""
    import torch
    from transformers import Qwen3ForCausalLM

    vocab = ((len(tokenizer) + 63) // 64) * 64
    config = make_tiny_config(vocab, **config_overrides)
    config._attn_implementation = attn_implementation
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen3ForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model.to(dtype or torch.float32).eval()


def save_tiny(path: str | os.PathLike, seed: int = 0) -> str:
    """Write a tiny tokenizer + model to `path` (loadable with from_pretrained); returns the path."""
    tok = make_tiny_tokenizer()
    model = make_tiny_model(tok, seed=seed)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)
