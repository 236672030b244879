"""Shared fixtures: seeded RNGs, a tiny tokenizer holding the 8 tag tokens, tiny Qwen3 models built in
memory (2 layers, random weights), and a symbolic sequence builder for hand-drawn layouts."""

from __future__ import annotations

import random

import pytest
import torch

from npr.layout import Templates
from npr.schema import TagIds
from npr.tiny import make_tiny_model, make_tiny_tokenizer


HOST_DIRS = ("verl_npr", "sglang_npr")


def pytest_collection_modifyitems(config, items):
    """Tests of a real host (its marker, or its folder) also get `hosts`, so a quick local run can
    deselect them (-m 'not hosts'); CI runs everything. Without CUDA, `gpu` tests skip."""
    skip = None if torch.cuda.is_available() else pytest.mark.skip(reason="needs CUDA")
    for item in items:
        folder = item.path.parent.name
        if "verl" in item.keywords or "sglang" in item.keywords or folder in HOST_DIRS:
            item.add_marker(pytest.mark.hosts)
        if skip is not None and "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed():
    random.seed(0)
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def tokenizer():
    return make_tiny_tokenizer()


@pytest.fixture(scope="session")
def tags(tokenizer) -> TagIds:
    return TagIds.from_tokenizer(tokenizer)


@pytest.fixture(scope="session")
def templates(tokenizer) -> Templates:
    return Templates.from_tokenizer(tokenizer)


@pytest.fixture(scope="session")
def model64(tokenizer):
    """Tiny Qwen3 in float64 with SDPA attention (exactness checks)."""
    return make_tiny_model(tokenizer, seed=0, dtype=torch.float64)


@pytest.fixture(scope="session")
def model32(tokenizer):
    return make_tiny_model(tokenizer, seed=1, dtype=torch.float32)


@pytest.fixture(scope="session")
def sym(tags):
    """sym("P P <guideline> <plan> x </plan> ...") -> ids: tags map to their ids, other words to
    content ids (a fixed id per distinct word, below the tag ids)."""
    tag_of = tags.by_text
    content: dict[str, int] = {}

    def build(spec: str) -> list[int]:
        out = []
        for word in spec.split():
            if word in tag_of:
                out.append(tag_of[word])
            else:
                out.append(content.setdefault(word, 10 + len(content)))
        return out

    return build
