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
    min_numbers: int = 6
    max_numbers: int = 12
    chunk_size: int = 3
    num_test: int = 32
    sft_steps: int = 340
    sft_batch: int = 32
    sft_lr: float = 3e-3
    sft_warmup: int = 20
    papo_steps: int = 4
    papo_prompts: int = 2
    papo_group: int = 16
    papo_lr: float = 1e-5
    hidden_size: int = 128
    num_layers: int = 2
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
        for name in ("num_test", "sft_steps", "sft_batch", "papo_prompts", "hidden_size", "num_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.papo_steps < 0 or self.papo_group < 2:
            raise ValueError(f"need papo_steps >= 0 and papo_group >= 2 (advantages compare group members), got "
                             f"{self.papo_steps}, {self.papo_group}")
        if self.hidden_size % 4:
            raise ValueError(f"hidden_size must be a multiple of 4 (4 heads), got {self.hidden_size}")


# test-suite size: fewer, shorter problems (2-3 plans) and fewer steps
FAST = dict(min_numbers=4, max_numbers=6, chunk_size=2, num_test=16, sft_steps=200, papo_steps=2, papo_prompts=2,
            papo_group=4)

