"""`DemoConfig`: every setting of `npr demo`, frozen and validated (an error names the value and the fix),
and `FAST`, the test-suite size. Step counts are fixed, never a time budget, so the outcome does not
depend on the machine's load."""

from __future__ import annotations

from dataclasses import dataclass

KEYS = "abcdefghijklmnopqrstuvwxyz"
MAX_BRANCHES = 5


@dataclass(frozen=True)
class DemoConfig:
    output_dir: str = "out/demo"
    seed: int = 0
    engine: str = "reference"
    # the task: keyed digits, summed mod 10, in chunks (one plan per chunk)
    min_numbers: int = 4
    max_numbers: int = 8
    chunk_size: int = 2
    num_test: int = 32
    # the model
    hidden_size: int = 128
    num_layers: int = 2
    # phase 0, the "instruct" prelude: SFT on mostly sequential solutions
    instruct_steps: int = 300
    instruct_parallel: float = 0.4  # share of parallel-format targets under the instruction
    instruct_plain: float = 0.25  # share of prompts without the instruction (always sequential)
    # Stage 1 (NPR-Zero): GRPO with the format-gated reward
    stage1_steps: int = 12
    stage1_prompts: int = 4
    stage1_group: int = 8
    stage1_lr: float = 2e-4
    # Stage 2: rejection sampling from the Stage-1 model, SFT on what it kept
    sample_problems: int = 128
    sample_trials: int = 4
    sft_steps: int = 150
    stage2_lr: float = 1e-3  # the Stage-2 SFT's peak rate (the model is trained already)
    # SFT (phase 0 and Stage 2): batch, peak learning rate, warm-up (cosine down to a tenth after it)
    sft_batch: int = 32
    sft_lr: float = 3e-3
    sft_warmup: int = 20
    # Stage 3: PAPO
    papo_steps: int = 16
    papo_prompts: int = 8
    papo_group: int = 8
    papo_lr: float = 3e-5  # 1e-4 and above lowered greedy accuracy by 13 points here; see the README
    # evaluation: sampled accuracy avg@eval_samples at temperature 1; the speed-up on speed_problems
    eval_samples: int = 8
    speed_problems: int = 8

    def __post_init__(self):
        if self.engine not in ("reference", "sglang"):
            raise ValueError(f"engine must be 'reference' or 'sglang', got {self.engine!r}")
        if self.chunk_size < 1 or not 1 <= self.min_numbers <= self.max_numbers <= len(KEYS):
            raise ValueError(f"need chunk_size >= 1 and 1 <= min_numbers <= max_numbers <= {len(KEYS)}, got "
                             f"{self.chunk_size}, {self.min_numbers}, {self.max_numbers}")
        fewest, most = -(-self.min_numbers // self.chunk_size), -(-self.max_numbers // self.chunk_size)
        if fewest < 2 or most > MAX_BRANCHES:
            raise ValueError(f"{self.min_numbers}-{self.max_numbers} numbers in chunks of {self.chunk_size} give "
                             f"{fewest}-{most} plans; the demo needs 2-{MAX_BRANCHES} (a fork of width >= 2, at most "
                             "max_branches): change the range or chunk_size")
        for name in ("num_test", "instruct_steps", "sft_steps", "sft_batch", "hidden_size", "num_layers",
                     "stage1_prompts", "papo_prompts", "sample_problems", "sample_trials", "eval_samples"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("stage1_steps", "papo_steps", "sft_warmup"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("stage1_group", "papo_group"):
            if getattr(self, name) < 2:
                raise ValueError(f"{name} must be >= 2 (advantages compare group members), got {getattr(self, name)}")
        for name in ("instruct_parallel", "instruct_plain"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} is a share in [0, 1], got {getattr(self, name)}")
        if self.hidden_size % 4:
            raise ValueError(f"hidden_size must be a multiple of 4 (4 heads), got {self.hidden_size}")


# test-suite size: fewer, shorter problems (2-3 plans) and fewer steps
FAST = dict(min_numbers=4, max_numbers=6, chunk_size=2, num_test=16, instruct_steps=150, stage1_steps=6,
            sample_problems=64, sft_steps=80, papo_steps=8, papo_prompts=8, eval_samples=4)
