"""Stage-2 parallel SFT data for verl's own SFT trainer (`verl.trainer.sft_trainer`, through its
`data.custom_cls` hook): rows of `npr sample` (prompt_ids, response_ids: canonical ids) or chat
`messages` (the assistant text is converted segment by segment). Each item carries NPR position ids and
the structure as `multi_modal_inputs` (the attention "npr" reads them, packed or padded); the loss
covers every assistant token (forced headers and EOS included) unless a row brings its own
`loss_mask` over the response. Rows whose ids do not form a valid
layout, or that exceed `max_length`, are reported with their index and skipped."""

from __future__ import annotations

import logging
from typing import Any

import torch

from npr.layout import build_layout
from npr.templates import Templates
from verl_npr.batch import structure_inputs

logger = logging.getLogger(__name__)


def _chat_ids(tokenizer: Any, messages: list, **kwargs: Any) -> list[int]:
    out = tokenizer.apply_chat_template(messages, tokenize=True, **kwargs)
    return list(out["input_ids"] if hasattr(out, "keys") else out)


def row_ids(row: dict, tokenizer: Any, templates: Templates) -> tuple[list[int], list[int]]:
    """(prompt ids, response ids) of one row: its own ids when it has them, else from `messages`
    (all but the last message through the chat template with a generation prompt; the last, the
    assistant's, through `Templates.text_to_ids` + EOS). Raises ValueError naming what is missing."""
    prompt, response = row.get("prompt_ids"), row.get("response_ids")
    if prompt is not None and response is not None:
        return [int(x) for x in prompt], [int(x) for x in response]
    messages = row.get("messages")
    if not isinstance(messages, (list, tuple)) or len(messages) < 2 or messages[-1].get("role") != "assistant":
        raise ValueError("a row needs prompt_ids + response_ids (from `npr sample`) or `messages` ending with "
                         "the assistant's answer")
    prompt_ids = _chat_ids(tokenizer, [dict(m) for m in messages[:-1]], add_generation_prompt=True)
    return prompt_ids, templates.text_to_ids(messages[-1]["content"]) + [tokenizer.eos_token_id]


class NprSFTDataset(torch.utils.data.Dataset):
    """verl SFT dataset (constructor signature of verl's `create_sft_dataset`) for parallel SFT.

    Items: input_ids [L], position_ids [L] (NPR positions), loss_mask [L] (1 on response tokens) and
    multi_modal_inputs (npr_block_id, npr_branch_id [L], npr_seq_lens [1]). Needs data.pad_mode=no_padding
    (verl's engine accepts only that); raises ValueError otherwise, and when no row is usable."""

    def __init__(self, parquet_files: Any, tokenizer: Any, config: Any = None, processor: Any = None,
                 max_samples: int = -1):
        import datasets

        config = config or {}
        pad_mode = config.get("pad_mode", "no_padding")
        if pad_mode != "no_padding":
            raise ValueError(f"data.pad_mode={pad_mode!r}: NprSFTDataset needs no_padding (verl's engine packs "
                             "or pads micro-batches itself; use model.use_remove_padding to choose)")
        self.max_length = int(config.get("max_length", 32768))
        files = [parquet_files] if isinstance(parquet_files, str) else list(parquet_files)
        frames = [datasets.load_dataset("parquet" if f.endswith(".parquet") else "json", data_files=f, split="train")
                  for f in files]
        rows = [row for frame in frames for row in frame]
        if max_samples is not None and max_samples > 0:
            rows = rows[:max_samples]
        templates = Templates.from_tokenizer(tokenizer)
        self.items: list[dict] = []
        self.skipped: list[tuple[int, str]] = []
        for index, row in enumerate(rows):
            try:
                prompt, response = row_ids(row, tokenizer, templates)
            except (ValueError, TypeError, KeyError) as err:
                self.skipped.append((index, str(err)))
                continue
            ids = prompt + response
            if len(ids) > self.max_length:
                self.skipped.append((index, f"{len(ids)} tokens > data.max_length={self.max_length} (truncating "
                                            "would cut a block open; raise max_length or filter the row)"))
                continue
            layout = build_layout(ids, templates.tags, len(prompt))
            if not layout.is_valid:
                self.skipped.append((index, f"invalid layout: {layout.error}"))
                continue
            loss_mask = torch.zeros(len(ids), dtype=torch.long)
            own = row.get("loss_mask")  # optional, over the response: train on a subset of its tokens
            if own is not None and len(own) != len(response):
                self.skipped.append((index, f"loss_mask has {len(own)} entries for {len(response)} response tokens"))
                continue
            loss_mask[len(prompt):] = 1 if own is None else torch.tensor([int(x) for x in own], dtype=torch.long)
            self.items.append({"input_ids": torch.tensor(ids, dtype=torch.long),
                               "position_ids": layout.position_ids.to(torch.long).clone(),
                               "loss_mask": loss_mask, "multi_modal_inputs": structure_inputs(layout)})
        for index, reason in self.skipped:
            logger.warning("NprSFTDataset: skipped row %d: %s", index, reason)
        if not self.items:
            raise ValueError(f"no usable row in {files} ({len(self.skipped)} skipped: {self.skipped[:3]})")

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        item = self.items[index]
        return {**item, "multi_modal_inputs": dict(item["multi_modal_inputs"])}
