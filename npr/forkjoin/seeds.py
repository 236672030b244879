"""Per-sequence sampling seeds: one stream per (call seed, request, block, branch), stable across
runs, platforms and engines, so copies of one prompt differ and a given request stays reproducible."""

from __future__ import annotations

import hashlib


def derive_seed(seed: int, request: int, block: int, branch: int) -> int:
    """A 63-bit seed for one sequence: request = its index in the call (or any stable id),
    block = forks before it (0 for the trunk), branch = 1-based branch (0 for the trunk)."""
    digest = hashlib.blake2b(f"{seed}:{request}:{block}:{branch}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1
