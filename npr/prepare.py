"""Model preparation for Stage 2: the eight tags become special tokens of the tokenizer, and each new
embedding row (input, and output when the head is untied) starts as the mean of the rows of the
sub-word tokens the base tokenizer splits its tag into."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from npr.errors import TagTokenError
from npr.schema import TAG_STRINGS, TagIds


@dataclass(frozen=True)
class PreparedTags:
    """What `prepare_tokenizer_and_model` did: tag -> new id, and tag -> the sub-word ids it was initialised from."""

    tag_ids: TagIds
    subword_ids: dict[str, list[int]]
    vocab_size: int  # rows of the resized embedding


def subword_ids_of_tags(tokenizer: Any) -> dict[str, list[int]]:
    """tag -> ids the (unprepared) tokenizer splits it into. Raises TagTokenError naming a tag that is
    already one token (the tokenizer is prepared, or a tag collides with an existing token), that encodes
    to nothing, or that contains the unknown token (its mean would be meaningless)."""
    unk = getattr(tokenizer, "unk_token_id", None)
    out: dict[str, list[int]] = {}
    for tag in TAG_STRINGS:
        ids = [int(i) for i in tokenizer.encode(tag, add_special_tokens=False)]
        if len(ids) == 1:
            raise TagTokenError(f"tag {tag!r} is already the single token {ids[0]} of this tokenizer: it looks "
                                "prepared already (use it as is), or a tag collides with an existing token")
        if not ids or (unk is not None and unk in ids):
            raise TagTokenError(f"tag {tag!r} encodes to {ids} (unknown token id {unk}): its new embedding cannot "
                                "be the mean of its sub-word embeddings; use a tokenizer that can spell the tag "
                                "(byte-level BPE or sentencepiece with byte fallback)")
        out[tag] = ids
    return out


def prepare_tokenizer_and_model(tokenizer: Any, model: Any) -> PreparedTags:
    """Add the tags as special tokens to `tokenizer`, resize `model`'s embeddings (never shrinking them)
    and initialise each tag's new input row — and output row when the head is untied — as the mean of its
    sub-word rows. In place. Raises TagTokenError (see `subword_ids_of_tags`) before changing anything."""
    import torch

    subwords = subword_ids_of_tags(tokenizer)
    # add_tokens(special_tokens=True) keeps the tokenizer's other special tokens on every transformers version
    tokenizer.add_tokens(list(TAG_STRINGS), special_tokens=True)
    tag_ids = TagIds.from_tokenizer(tokenizer)
    old_rows = model.get_input_embeddings().weight.shape[0]
    new_rows = max(old_rows, len(tokenizer))
    if new_rows != old_rows:
        model.resize_token_embeddings(new_rows, mean_resizing=False)
    by_text = tag_ids.by_text
    embeddings = [model.get_input_embeddings()]
    output = model.get_output_embeddings()
    tied = output is None or output.weight.data_ptr() == embeddings[0].weight.data_ptr()
    if not tied:
        embeddings.append(output)
    with torch.no_grad():
        for module in embeddings:
            weight = module.weight
            for tag, ids in subwords.items():
                weight[by_text[tag]] = weight[ids].mean(dim=0)
    return PreparedTags(tag_ids, subwords, new_rows)


def prepare_model(base: str | os.PathLike, out: str | os.PathLike, **load_kwargs: Any) -> PreparedTags:
    """Load an HF causal LM and its tokenizer from `base`, prepare them (`prepare_tokenizer_and_model`)
    and save both to `out` in HF format. Raises TagTokenError before writing anything."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, **load_kwargs)
    prepared = prepare_tokenizer_and_model(tokenizer, model)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return prepared
