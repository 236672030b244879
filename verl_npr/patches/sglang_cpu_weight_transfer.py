"""Patch (LEDGER.md), cpu platform only: SGLang 0.5.23's torch-reductions patch
(`sglang.srt.utils.patch_torch`, applied by `weight_sync.utils.update_weights`) rewrites argument 6
of every reduced tensor into a CUDA device uuid; a CPU tensor's reduction has no such argument
(IndexError). The rewrite is skipped for non-CUDA tensors, and CPU tensors are shared through files
(`torch.multiprocessing` strategy "file_system"), as the SGLang scheduler is not a child of the actor.
Removal: when SGLang's patch leaves non-CUDA tensors alone."""

from __future__ import annotations

import functools

from npr.versions import check_host_version

TARGET = "sglang.srt.utils.patch_torch._reduce_tensor_modified"
SGLANG_VERSIONS = ">=0.5.23,<0.6"


def apply() -> None:
    """Idempotent; also fixes an already-installed SGLang reduction."""
    check_host_version("sglang", SGLANG_VERSIONS)
    import torch.multiprocessing as mp
    from sglang.srt.utils import patch_torch
    from torch.multiprocessing import reductions

    mp.set_sharing_strategy("file_system")
    current = patch_torch._reduce_tensor_modified
    if getattr(current, "__npr_original__", None) is not None:
        return

    @functools.wraps(current)
    def reduce_tensor(tensor, *args, **kwargs):
        if not tensor.is_cuda:
            return reductions._reduce_tensor_original(tensor, *args, **kwargs)
        return current(tensor, *args, **kwargs)

    reduce_tensor.__npr_original__ = current
    patch_torch._reduce_tensor_modified = reduce_tensor
    if getattr(reductions, "reduce_tensor", None) is current:  # SGLang's patch is already in place
        reductions.reduce_tensor = reduce_tensor
        reductions.init_reductions()
