"""The reference fork-join decoder: a thin loop over the `npr.forkjoin` protocol on any HF causal LM,
CPU or GPU (nano-vllm's shape: sequences and scheduling in the controller, slots in its manager,
forwards in the model runner). Per step: plan -> one forward -> scores and samples -> commit.

Log-prob convention (the trainer's, decided by the controller): each response token is scored by the
raw logits of the token before it in the linearised sequence, so branch i's forced <step> is scored
after branch i-1's last token and the join's <takeaway> after the last branch's."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from npr.decoding.config import DecodingConfig, SamplingParams
from npr.decoding.runner import ModelRunner
from npr.decoding.sampler import LogitsProcessor, apply_step_repetition_penalty, sample_batch
from npr.decoding.scripted import ScriptedStructure, content_token_ids
from npr.forkjoin import (
    Finish,
    ForkJoinController,
    Preempt,
    Request,
    SlotManager,
    Trajectory,
    Work,
    WorkResult,
    derive_seed,
)
from npr.layout import Layout
from npr.scoring import log_probs
from npr.templates import Templates


@dataclass
class DecodeResult(Trajectory):
    """One request's output: the `Trajectory` (token_ids/logprobs cover the response only, linearised;
    finish_reason "stop" | "length" | "abort"; stats total_tokens, critical_path_tokens, num_forks,
    max_width; blocks: per forked block how each branch ended; notes: fallbacks taken), plus the
    decoded text and the Layout of prompt + response."""

    text: str = ""
    layout: Layout | None = None

    def trajectory(self) -> Trajectory:
        return Trajectory.from_dict(self.to_dict())


class Decoder:
    """Fork-join decoding of any HF causal LM whose tokenizer has the eight tags as single tokens."""

    def __init__(self, model, tokenizer, config: DecodingConfig | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.config = config or DecodingConfig()
        self.templates = Templates.from_tokenizer(tokenizer)
        self.stop_token_ids = _eos_ids(model, tokenizer) | set(self.config.stop_token_ids)
        if not self.stop_token_ids:
            raise ValueError("no EOS token: the tokenizer and generation_config define none; "
                             "pass DecodingConfig(stop_token_ids=(...))")
        self.vocab_size = model.get_output_embeddings().weight.shape[0]
        self.last_memory: dict[str, int] | None = None  # slot use after the last generate()
        self._runner: ModelRunner | None = None  # its K/V pool is kept across calls

    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        sampling: SamplingParams | None = None,
        script: ScriptedStructure | Sequence[ScriptedStructure | None] | None = None,
        processors: Sequence[LogitsProcessor] = (),
        should_abort: Callable[[int, Request], bool] | None = None,
        progress: bool | Callable[[dict], None] = False,
        seeds: Sequence[int] | None = None,
    ) -> list[DecodeResult]:
        """Decode each prompt (a list of token ids). Returns one DecodeResult per prompt, in order.

        script: one ScriptedStructure for all prompts, or one per prompt (None = unscripted).
        should_abort(index, request) is asked every step; True aborts that request.
        Each prompt (its index in this call) gets its own sampling streams: copies of one prompt differ,
        and a given (seed, index) is reproducible. seeds: one per prompt instead; prompt i then samples
        as an SGLang request with sampling_seed seeds[i] does, whatever else is in the call. Raises ValueError for empty prompts, ids outside
        the vocabulary, or prompts that cannot fit max_kv_slots.
        """
        sampling = sampling or SamplingParams()
        prompts = [_as_ids(p, i, self.vocab_size) for i, p in enumerate(prompts)]
        if not prompts:
            return []
        scripts = list(script) if isinstance(script, (list, tuple)) else [script] * len(prompts)
        if len(scripts) != len(prompts):
            raise ValueError(f"got {len(scripts)} scripts for {len(prompts)} prompts; pass one per prompt or one for all")
        limit = self.config.max_kv_slots
        for i, prompt in enumerate(prompts):
            if limit is not None and len(prompt) + 1 > limit:
                raise ValueError(f"prompt {i} has {len(prompt)} tokens but max_kv_slots is {limit}; "
                                 "raise max_kv_slots (a prompt needs its length + 1 slots)")
        if self._runner is None:
            self._runner = ModelRunner(self.model)
        if seeds is not None and len(seeds) != len(prompts):
            raise ValueError(f"got {len(seeds)} seeds for {len(prompts)} prompts; pass one per prompt")
        session = _Session(self, prompts, sampling, scripts, list(processors), should_abort, progress, seeds)
        try:
            return session.run()
        finally:
            slots = session.controller.slots
            self.last_memory = {"used_slots": slots.num_used, "high_water": slots.high_water,
                                "pool_slots": self._runner.pool.capacity, "pool_bytes": self._runner.pool.nbytes,
                                "preemptions": session.num_preemptions}


class _Session:
    """One generate() call: the controller (requests, slots) and the engine side of each step."""

    def __init__(self, decoder: Decoder, prompts, sampling, scripts, processors, should_abort, progress, seeds=None):
        self.decoder, self.config, self.sampling = decoder, decoder.config, sampling
        self.seeds = None if seeds is None else [int(x) for x in seeds]
        self.runner = decoder._runner
        self.should_abort = should_abort
        self.progress = _make_progress(progress)
        self.controller = ForkJoinController(self.config.limits, decoder.templates, decoder.stop_token_ids,
                                             SlotManager(self.config.max_kv_slots), self.config.max_batch)
        content = None
        if any(s is not None for s in scripts):
            content = content_token_ids(decoder.tokenizer, decoder.vocab_size,
                                        decoder.templates.tags.all | decoder.stop_token_ids)
        eos = min(decoder.stop_token_ids)
        self.processors = [([s.bind(decoder.templates, eos, content)] if s is not None else []) + processors
                           for s in scripts]
        self.requests = [self.controller.add_request(i, p) for i, p in enumerate(prompts)]
        self.results: list[DecodeResult | None] = [None] * len(prompts)
        self.seed = sampling.seed if sampling.seed is not None else int(torch.randint(0, 2**62, ()).item())
        self.num_steps = self.num_preemptions = 0

    def run(self) -> list[DecodeResult]:
        controller = self.controller
        try:
            while controller.has_work:
                if self.should_abort is not None:
                    for request in list(controller.running):
                        if self.should_abort(request.req_id, request):
                            self._handle(controller.abort(request))
                plan = controller.plan()
                self._handle(plan.events)
                if plan.works:
                    self._handle(controller.commit(plan, self._step(plan.works)))
                self.num_steps += 1
                if self.progress:
                    self.progress({"step": self.num_steps, "running": len(controller.running),
                                   "waiting": len(controller.waiting),
                                   "done": sum(r is not None for r in self.results)})
        except BaseException:
            controller.release_all()
            raise
        if controller.slots.num_used:  # the ownership invariant
            raise RuntimeError(f"KV leak: {controller.slots.num_used} slots still owned after every request finished")
        return self.results  # type: ignore[return-value]

    def _handle(self, events) -> None:
        for event in events:
            if isinstance(event, Finish):
                self.results[event.request.req_id] = self._result(event.trajectory)
            elif isinstance(event, Preempt):
                self.num_preemptions += 1

    # -- the engine's part of a step: forward, scores, samples ---------------------------------------
    def _step(self, works: list[Work]) -> list[WorkResult]:
        runner = self.runner
        rows: list[int] = []  # flat query rows whose logits are needed
        base = 0
        for work in works:
            rows += [base + j for j, _ in work.scores]
            if work.sample:
                rows.append(base + len(work.tokens) - 1)
            base += len(work.tokens)
        keep = sorted(set(rows))
        index_of = {row: i for i, row in enumerate(keep)}
        step = runner.prepare(works, keep)
        logits = runner.run(step, self.controller.slots.high_water)
        logprobs = log_probs(logits)
        score_rows, score_tokens = [], []
        for work, flat in zip(works, step.rows):
            for j, token in work.scores:
                score_rows.append(index_of[flat[j]])
                score_tokens.append(token)
        sampled = [(work, index_of[flat[-1]]) for work, flat in zip(works, step.rows) if work.sample]
        chosen = self._choose(sampled, logits)
        picked_rows = score_rows + [row for _, row in sampled]
        picked_tokens = score_tokens + chosen
        values = logprobs[torch.tensor(picked_rows, dtype=torch.long, device=logprobs.device),
                          torch.tensor(picked_tokens, dtype=torch.long, device=logprobs.device)].tolist()
        n = len(score_rows)
        return WorkResult.for_works(works, values[:n], picked_tokens[n:], values[n:])

    def _choose(self, sampled: list[tuple[Work, int]], logits: torch.Tensor) -> list[int]:
        """Tokens for the sampling works, from processed logits (processors, penalty, temperature...)."""
        if not sampled:
            return []
        raw = logits[torch.tensor([row for _, row in sampled], device=logits.device)]
        seqs = [work.seq for work, _ in sampled]
        processed = raw
        if any(self.processors[s.request.req_id] for s in seqs) or self.config.step_repetition_penalty != 1.0:
            out = []
            for seq, row in zip(seqs, raw):
                for processor in self.processors[seq.request.req_id]:
                    row = processor(seq, row)
                if not seq.is_trunk:
                    row = apply_step_repetition_penalty(row, seq.tokens[seq.header_len:],
                                                        self.config.step_repetition_penalty)
                out.append(row)
            processed = torch.stack(out)
        rows = len(seqs)
        sampling, device = self.sampling, processed.device
        keys = torch.tensor([self._key(s) for s in seqs], device=device)
        counters = torch.tensor([len(s.tokens) for s in seqs], device=device)
        return sample_batch(processed, torch.full((rows,), float(sampling.temperature)),
                            torch.full((rows,), float(sampling.top_p)), torch.full((rows,), sampling.top_k),
                            keys, counters).tolist()

    def _key(self, seq) -> int:
        """The sequence's sampling key: (call seed, prompt index, block, branch), or with per-prompt seeds
        (seeds[i], 0, block, branch), an SGLang request's (`sglang_npr.engine.sampling.Choice.key`)."""
        if self.seeds is not None:
            return derive_seed(self.seeds[seq.request.req_id], 0, seq.block, seq.branch)
        return derive_seed(self.seed, seq.request.req_id, seq.block, seq.branch)

    def _result(self, trajectory: Trajectory) -> DecodeResult:
        decoder = self.decoder
        layout = trajectory.layout(decoder.templates.tags, self.config.max_branches)
        text = decoder.tokenizer.decode(trajectory.token_ids, skip_special_tokens=False)
        return DecodeResult(**trajectory.to_dict(), text=text, layout=layout)


def _eos_ids(model, tokenizer) -> set[int]:
    ids: set[int] = set()
    for source in (getattr(tokenizer, "eos_token_id", None),
                   getattr(getattr(model, "generation_config", None), "eos_token_id", None)):
        if isinstance(source, int):
            ids.add(source)
        elif isinstance(source, (list, tuple)):
            ids.update(int(x) for x in source)
    return ids


def _as_ids(prompt: Any, index: int, vocab_size: int) -> list[int]:
    if hasattr(prompt, "keys") and "input_ids" in prompt:  # a BatchEncoding from apply_chat_template
        prompt = prompt["input_ids"]
    if isinstance(prompt, torch.Tensor):
        prompt = prompt.tolist()
    if isinstance(prompt, str):
        raise TypeError(f"prompt {index} is a str; pass token ids (e.g. tokenizer.apply_chat_template(..., tokenize=True))")
    ids = [int(t) for t in prompt]
    if not ids:
        raise ValueError(f"prompt {index} is empty; a prompt needs at least one token")
    bad = [t for t in ids if not 0 <= t < vocab_size]
    if bad:
        raise ValueError(f"prompt {index} has token ids outside the model's vocabulary [0, {vocab_size}): "
                         f"{bad[:5]}; encode it with this model's tokenizer")
    return ids


def _make_progress(progress) -> Callable[[dict], None] | None:
    if callable(progress):
        return progress
    if not progress:
        return None
    start = time.perf_counter()

    def report(info: dict) -> None:
        if info["step"] % 16 == 0:
            rate = info["step"] / max(time.perf_counter() - start, 1e-9)
            print(f"\r[npr] step {info['step']}  running {info['running']}  done {info['done']}  "
                  f"{rate:.1f} steps/s", end="", file=sys.stderr, flush=True)

    return report


def sequential_replay(model, tokenizer, result: DecodeResult) -> tuple[Decoder, list]:
    """The baseline of a fork-join speed-up: a sequential-mode Decoder over the same model and the logits
    processors that make it decode exactly `result`'s linearised ids (then EOS), with room for them. Pass
    the processors to its `generate` with `result`'s prompt."""
    from npr.decoding.scripted import ForcedTokens

    room = result.stats["total_tokens"] + 8
    decoder = Decoder(model, tokenizer, DecodingConfig(max_new_tokens=room, max_total_tokens=room, parallel=False))
    return decoder, [ForcedTokens(result.token_ids[:-1], tokenizer.eos_token_id)]
