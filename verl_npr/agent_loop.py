"""verl agent loop `npr_parallel`: one fork-join request per sample through verl's server manager (NPR
limits in `sampling_params["custom_params"]["npr"]`), returning the linearised trajectory with its
log-probs. Its `extra_fields["npr"]` record (refused forks, stats, validity) is what the worker
(`verl_npr.agent_loop_worker`) rebuilds the Layout from; a malformed or truncated row gets an all-zero
`response_mask` (no gradient; PAPO leaves it out of the reward statistics), its reward is still computed.

Settings: `actor_rollout_ref.rollout.custom.npr` {max_branches, max_new_tokens, max_total_tokens,
min_fork_budget, script}; `check_config` validates them and the host settings fork-join needs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence
from uuid import uuid4

from verl.experimental.agent_loop.agent_loop import AgentLoopBase, AgentLoopOutput, _agent_loop_registry, register
from verl.utils.profiler import simple_timer

from npr.forkjoin.limits import LIMIT_FIELDS, LimitFields
from npr.layout import build_layout
from npr.schema import TagIds
from npr.wire import NPR_KEY, NprRecordError, encode_npr_params, parse_npr_record
from verl_npr.batch import training_error
from verl_npr.registries import claim_name

NAME = "npr_parallel"
MANAGER = "verl_npr.agent_loop_worker.NprAgentLoopManager"
TRAINER_MODES = ("npr_sync", "sync")  # async modes resume aborted requests from a partial output


@dataclass(frozen=True)
class NprRolloutSettings(LimitFields):
    """Fork-join limits of the rollout (`npr.forkjoin.limits.LimitFields`). max_total_tokens bounds the
    linearised response (what verl pads to response_length; default), max_new_tokens the critical path
    (default: max_total_tokens). `script` forces a structure on any model (tests, demos): branch lengths per
    block, as `npr.decoding.ScriptedStructure`."""

    max_new_tokens: int | None = None  # resolved in from_rollout_config (default: max_total_tokens)
    script: tuple[tuple[int, ...], ...] | None = None

    @classmethod
    def from_rollout_config(cls, rollout: Any) -> "NprRolloutSettings":
        """From `actor_rollout_ref.rollout` (DictConfig or verl's RolloutConfig); missing keys = defaults,
        None limits resolved (see the class). Raises ValueError naming the key and the fix."""
        custom = _get(rollout, "custom") or {}
        raw = dict(_get(custom, NPR_KEY) or {})
        valid = (*LIMIT_FIELDS, "script")
        unknown = sorted(set(raw) - set(valid))
        if unknown:
            raise ValueError(f"unknown key(s) {unknown} in actor_rollout_ref.rollout.custom.npr; valid keys: "
                             f"{', '.join(valid)}")
        response_length = int(_get(rollout, "response_length"))
        script = raw.get("script")
        total = raw.get("max_total_tokens") or response_length
        settings = cls(max_branches=int(raw.get("max_branches") or cls.max_branches),
                       max_new_tokens=raw.get("max_new_tokens") or total, max_total_tokens=total,
                       min_fork_budget=int(raw.get("min_fork_budget", cls.min_fork_budget)),
                       script=None if script is None else tuple(tuple(int(x) for x in block) for block in script))
        if settings.max_total_tokens > response_length:
            raise ValueError(f"actor_rollout_ref.rollout.custom.npr.max_total_tokens={settings.max_total_tokens} exceeds "
                             f"the response length {response_length} verl pads to; lower it or raise "
                             "data.max_response_length")
        if settings.max_new_tokens > settings.max_total_tokens:
            raise ValueError(f"actor_rollout_ref.rollout.custom.npr.max_new_tokens={settings.max_new_tokens} (critical "
                             f"path) exceeds max_total_tokens={settings.max_total_tokens}; lower it")
        settings.wire()  # the protocol's own validation, at config time
        return settings

    def wire(self) -> dict[str, Any]:
        """The `custom_params["npr"]` dict (validated by npr.wire; raises NprParamsError)."""
        return encode_npr_params(**self.limit_values(), script=self.script)


def check_config(config: Any) -> NprRolloutSettings:
    """Refuse, before any rollout, a verl config under which `npr_parallel` would train on wrong structure.
    Returns the rollout settings. Raises ValueError naming the key, its value and the fix."""
    arr = config.actor_rollout_ref
    rollout, model = arr.rollout, arr.model
    manager = _get(_get(rollout, "agent"), "agent_loop_manager_class")
    problems = []
    if manager != MANAGER:
        problems.append(f"actor_rollout_ref.rollout.agent.agent_loop_manager_class={manager!r}: set it to {MANAGER} "
                        "(its workers hand verl NPR position ids and the structure)")
    attn = _get(_get(model, "override_config") or {}, "attn_implementation")
    if attn != "npr":
        problems.append(f"actor_rollout_ref.model.override_config.attn_implementation={attn!r}: set it to 'npr'")
    if _get(model, "use_fused_kernels"):
        problems.append("actor_rollout_ref.model.use_fused_kernels=true: set it to false (verl's fused forward drops "
                        "the structure kwargs)")
    for role in ("actor", "ref"):
        sp = _get(_get(arr, role) or {}, "ulysses_sequence_parallel_size") or 1
        if int(sp) > 1:
            problems.append(f"actor_rollout_ref.{role}.ulysses_sequence_parallel_size={sp}: the attention 'npr' "
                            "needs 1")
    mode = _get(_get(_get(config, "trainer") or {}, "v1") or {}, "trainer_mode")
    if mode is not None and mode not in TRAINER_MODES:
        problems.append(f"trainer.v1.trainer_mode={mode!r}: use one of {list(TRAINER_MODES)} (the async modes resume "
                        "aborted requests from a partial output, which breaks a fork-join trajectory)")
    if _get(rollout, "name") == "sglang":
        sglang_kwargs = _get(_get(rollout, "engine_kwargs") or {}, "sglang") or {}
        if _get(sglang_kwargs, "attention_backend") != "npr":
            problems.append("actor_rollout_ref.rollout.engine_kwargs.sglang.attention_backend="
                            f"{_get(sglang_kwargs, 'attention_backend')!r}: set it to 'npr'")
        if _get(rollout, "skip_tokenizer_init"):
            problems.append("actor_rollout_ref.rollout.skip_tokenizer_init=true: set it to false (the fork-join engine "
                            "reads the tag ids from SGLang's tokenizer)")
    if problems:
        raise ValueError(f"agent loop {NAME!r} cannot run with this config:\n  " + "\n  ".join(problems))
    return NprRolloutSettings.from_rollout_config(rollout)


class NprParallelAgentLoop(AgentLoopBase):
    """Single-turn fork-join rollout. The response is the engine's linearised trajectory (forced tokens
    included); response_mask is all ones when the structure is valid and the request stopped by itself,
    else all zeros. `extra_fields["npr"]` carries the engine's record plus is_valid / error."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.settings = check_config(self.config)
        self.response_length = self.rollout_config.response_length
        self.tags = TagIds.from_tokenizer(self.tokenizer)

    async def run(self, sampling_params: dict[str, Any], **kwargs) -> AgentLoopOutput:
        messages = list(kwargs["raw_prompt"])
        self._assert_mm_supported(False)
        prompt_ids = await self.ct_build_initial_tokens(messages)
        params = dict(sampling_params)
        params["max_new_tokens"] = self.settings.max_new_tokens
        params["custom_params"] = {**(params.get("custom_params") or {}), NPR_KEY: self.settings.wire()}
        metrics: dict[str, Any] = {}
        with simple_timer("generate_sequences", metrics):
            output = await self.server_manager.generate(request_id=uuid4().hex, prompt_ids=prompt_ids,
                                                        sampling_params=params)
        record = parse_npr_record((output.extra_fields or {}).get(NPR_KEY))
        if record is None:
            raise NprRecordError("the rollout server returned no meta_info['npr'] record: it does not run NPR "
                                 "fork-join. Use rollout.name=sglang with engine_kwargs.sglang.attention_backend=npr "
                                 "and native-parallel-reasoner installed next to SGLang")
        response_ids = list(output.token_ids)
        if len(response_ids) > self.response_length:
            raise ValueError(f"the engine returned {len(response_ids)} tokens, beyond max_total_tokens "
                             f"{self.settings.max_total_tokens} / response_length {self.response_length}")
        finish_reason = record.finish_reason or output.stop_reason
        layout = build_layout(list(prompt_ids) + response_ids, self.tags, len(prompt_ids),
                              refused_forks=list(record.refused_forks), max_branches=self.settings.max_branches)
        error = training_error(layout, finish_reason, len(response_ids))
        is_valid = error is None
        npr_record = {**record.as_dict(), "finish_reason": finish_reason, "max_branches": self.settings.max_branches,
                      "is_valid": is_valid, "error": error}
        extra = dict(output.extra_fields or {})
        extra[NPR_KEY] = npr_record
        extra.update({"turn_scores": [], "tool_rewards": []})
        if metrics.get("num_preempted") is None:
            metrics["num_preempted"] = output.num_preempted if output.num_preempted is not None else -1
        return AgentLoopOutput(prompt_ids=list(prompt_ids), response_ids=response_ids,
                               response_mask=[int(is_valid)] * len(response_ids),
                               response_logprobs=list(output.log_probs) if output.log_probs else None,
                               num_turns=2, metrics=metrics, extra_fields=extra)


def register_agent_loop() -> type[NprParallelAgentLoop]:
    """Register `NprParallelAgentLoop` as "npr_parallel" in verl's agent-loop registry. Idempotent.
    Raises ValueError when another class already holds the name."""
    target = f"{NprParallelAgentLoop.__module__}.{NprParallelAgentLoop.__qualname__}"
    claim_name("agent loop", NAME, _agent_loop_registry, None, lambda: register(NAME)(NprParallelAgentLoop),
               is_ours=lambda held: dict(held) == {"_target_": target})
    return NprParallelAgentLoop


def _get(obj: Any, key: str, default: Any = None) -> Any:
    if obj is None:
        return default
    if isinstance(obj, Mapping) or hasattr(obj, "get") and not hasattr(obj, "__dataclass_fields__"):
        try:
            return obj.get(key, default)
        except Exception:  # noqa: BLE001 - a config object without that key
            return default
    return getattr(obj, key, default)


def record_metrics(records: Sequence[Mapping[str, Any] | None], prefix: str = "npr") -> dict[str, float]:
    """Rollout metrics of a batch from the agent loop's records (None = a row of another agent loop):
    trigger_rate (share of responses with a forked block of width >= 2), width mean/max (widest block per
    response), critical-path and total tokens, their ratio, valid_share (rows that train)."""
    rows = [r for r in records if isinstance(r, Mapping) and "stats" in r]
    if not rows:
        return {}
    widths = [int(r["stats"].get("max_width", 0) or 0) for r in rows]
    total = [int(r["stats"].get("total_tokens", 0) or 0) for r in rows]
    critical = [int(r["stats"].get("critical_path_tokens", 0) or 0) for r in rows]
    n = len(rows)
    return {f"{prefix}/trigger_rate": sum(w >= 2 for w in widths) / n,
            f"{prefix}/width/mean": sum(widths) / n, f"{prefix}/width/max": float(max(widths)),
            f"{prefix}/total_tokens/mean": sum(total) / n, f"{prefix}/critical_path_tokens/mean": sum(critical) / n,
            f"{prefix}/parallel_ratio": sum(total) / max(sum(critical), 1),
            f"{prefix}/valid_share": sum(bool(r.get("is_valid")) for r in rows) / n,
            f"{prefix}/truncated_share": sum(r.get("finish_reason") != "stop" for r in rows) / n,
            f"{prefix}/num_forks/mean": sum(int(r["stats"].get("num_forks", 0) or 0) for r in rows) / n}
