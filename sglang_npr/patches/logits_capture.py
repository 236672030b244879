"""Before SGLang's sampler: the NPR rows' raw logits are split off the decode batch's logits (and its
positions, which seeded sampling reads) and scored / sampled on the device by the NPR engine; in an
extend, the first token of every NPR prompt that ends there is chosen from its raw logits."""

from __future__ import annotations

TARGET = "sglang.srt.managers.tp_worker.capture_pre_sample_logits"


def split_npr_rows(original, batch, forward_batch, logits_output, *args, **kwargs):
    from sglang_npr.patches.scheduler_queue import active_engine

    engine = active_engine()
    if engine is not None and batch is not None and logits_output is not None \
            and logits_output.next_token_logits is not None:
        tail = getattr(batch, "npr_tail", None)
        logits = logits_output.next_token_logits
        if tail is not None:
            base = logits.shape[0] - tail.num_rows
            engine.sample_step(tail, logits[base:])
            logits_output.next_token_logits = logits[:base]
            if logits_output.hidden_states is not None:
                logits_output.hidden_states = logits_output.hidden_states[:base]
            forward_batch.positions = forward_batch.positions[:base]
        elif forward_batch.forward_mode.is_extend() and engine.has_work:
            engine.capture_prefill(batch, logits)
    return original(batch, forward_batch, logits_output, *args, **kwargs)


def install() -> None:
    from sglang.srt.plugins.hook_registry import HookRegistry, HookType

    HookRegistry.register(TARGET, split_npr_rows, HookType.AROUND)
