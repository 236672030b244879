"""The reference fork-join decoder: one loop over many requests and all their live branches
(choose -> run -> postprocess), on any HF causal LM, CPU or GPU.

Log-prob convention (the trainer's): each response token's log-prob comes from the raw logits of the
token before it in the linearised sequence, so branch i's forced <step> is scored after branch i-1's
last token and the join's <takeaway> after the last branch's."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from npr.decoding.config import DecodingConfig, SamplingParams
from npr.decoding.controller import (
    BranchDone,
    Finish,
    Fork,
    ForkJoinController,
    Join,
    Request,
    Seq,
    SeqState,
)
from npr.decoding.runner import ModelRunner, StepInputs
from npr.decoding.sampler import LogitsProcessor, apply_step_repetition_penalty, make_generator, sample
from npr.decoding.scripted import ScriptedStructure, content_token_ids
from npr.layout import Layout, Templates, build_layout


@dataclass
class DecodeResult:
    """One request's output. token_ids/logprobs cover the response only (linearised)."""

    prompt_ids: list[int]
    token_ids: list[int]
    logprobs: list[float]
    text: str
    layout: Layout  # of prompt + response
    finish_reason: str  # "stop" | "length" | "abort"
    stats: dict[str, int]  # total_tokens, critical_path_tokens, num_forks, max_width
    blocks: list[list[str]] = field(default_factory=list)  # per forked block: how each branch ended
    notes: list[str] = field(default_factory=list)  # fallbacks taken (refused forks, stray tags, ...)


@dataclass(eq=False)
class _SeqRun:
    """Engine-side state of one sequence."""

    row: int
    slots: list[int] = field(default_factory=list)
    last_logits: torch.Tensor | None = None
    generator: torch.Generator | None = None


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
        self.last_memory: dict[str, int] | None = None  # free/total slots and rows after the last generate()
        self._runner: ModelRunner | None = None  # reused across calls of the same size (keeps CUDA graphs)

    def _get_runner(self, num_slots: int, num_rows: int) -> ModelRunner:
        runner = self._runner
        if runner is None or (runner.pool.num_slots, runner.table.rows.shape[0]) != (num_slots, num_rows):
            self._runner = None  # free the old pool before allocating a new one
            runner = self._runner = ModelRunner(self.model, num_slots, num_rows, self.config.use_cuda_graphs)
        return runner

    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        sampling: SamplingParams | None = None,
        script: ScriptedStructure | Sequence[ScriptedStructure | None] | None = None,
        processors: Sequence[LogitsProcessor] = (),
        should_abort: Callable[[int, Request], bool] | None = None,
        progress: bool | Callable[[dict], None] = False,
    ) -> list[DecodeResult]:
        """Decode each prompt (a list of token ids). Returns one DecodeResult per prompt, in order.

        script: one ScriptedStructure for all prompts, or one per prompt (None = unscripted).
        should_abort(index, request) is asked every step; True aborts that request.
        Raises ValueError for empty prompts or prompts that cannot fit the KV budget.
        """
        sampling = sampling or SamplingParams()
        prompts = [_as_ids(p, i) for i, p in enumerate(prompts)]
        if not prompts:
            return []
        scripts = list(script) if isinstance(script, (list, tuple)) else [script] * len(prompts)
        if len(scripts) != len(prompts):
            raise ValueError(f"got {len(scripts)} scripts for {len(prompts)} prompts; pass one per prompt or one for all")
        session = _Session(self, prompts, sampling, scripts, list(processors), should_abort, progress)
        try:
            return session.run()
        finally:
            pool, table = session.runner.pool, session.runner.table
            self.last_memory = {"free_slots": pool.num_free, "slots": pool.capacity,
                                "free_rows": table.num_free, "rows": table.rows.shape[0] - 1}


class _Session:
    """State of one generate() call: runner (KV pool, table), controller, requests."""

    def __init__(self, decoder: Decoder, prompts, sampling, scripts, processors, should_abort, progress):
        self.decoder, self.config, self.sampling = decoder, decoder.config, sampling
        self.prompts, self.should_abort = prompts, should_abort
        self.progress = _make_progress(progress)
        self.controller = ForkJoinController(self.config, decoder.templates, decoder.stop_token_ids)
        content = None
        if any(s is not None for s in scripts):
            content = content_token_ids(decoder.tokenizer, decoder.vocab_size,
                                        decoder.templates.tags.all | decoder.stop_token_ids)
        eos = min(decoder.stop_token_ids)
        self.processors = [([s.bind(decoder.templates, eos, content)] if s is not None else []) + processors
                           for s in scripts]
        needs = [len(p) + self.config.total_budget for p in prompts]
        limit = self.config.max_kv_slots
        for i, need in enumerate(needs):
            if limit is not None and need > limit - 1:
                raise ValueError(f"prompt {i} needs {need} KV slots (prompt {len(prompts[i])} + total budget "
                                 f"{self.config.total_budget}) but max_kv_slots is {limit}; raise max_kv_slots or "
                                 "lower max_total_tokens")
        num_slots = sum(needs) + 1 if limit is None else min(sum(needs) + 1, limit)
        aligned = -(-num_slots // 16) * 16  # aligned rows keep fused attention kernels on their fast path
        num_slots = aligned if limit is None or aligned <= limit else num_slots
        rows = (1 + self.config.max_branches) * len(prompts) + 1
        self.runner = decoder._get_runner(num_slots, rows)
        self.start_free = (self.runner.pool.num_free, self.runner.table.num_free)
        self.needs = needs
        self.waiting = list(range(len(prompts)))
        self.running: dict[int, Request] = {}
        self.reserved = 0
        self.results: list[DecodeResult | None] = [None] * len(prompts)
        self.seqs: dict[int, list[Seq]] = {}
        self.seed = sampling.seed if sampling.seed is not None else int(torch.randint(0, 2**62, ()).item())
        self.num_steps = 0

    # -- loop ------------------------------------------------------------------------------------
    def run(self) -> list[DecodeResult]:
        try:
            while self.waiting or self.running:
                self._admit()
                self._check_aborts()
                self._choose()
                self._feed()
                self.num_steps += 1
                if self.progress:
                    self.progress({"step": self.num_steps, "running": len(self.running), "waiting": len(self.waiting),
                                   "done": sum(r is not None for r in self.results)})
        finally:
            for index in list(self.running):  # failed mid-run: give every slot back
                self._release(index)
        pool, table = self.runner.pool, self.runner.table
        if (pool.num_free, table.num_free) != self.start_free:  # the ownership invariant
            raise RuntimeError(f"KV leak: {pool.num_free} slots / {table.num_free} rows free, "
                               f"started with {self.start_free}")
        return self.results  # type: ignore[return-value]

    def _admit(self) -> None:
        capacity = self.runner.pool.capacity
        while self.waiting:
            index = self.waiting[0]
            need = min(self.needs[index], capacity)
            if self.running and self.reserved + need > capacity:
                return
            self.waiting.pop(0)
            self.reserved += need
            request = self.controller.add_request(index, self.prompts[index])
            trunk = request.trunk
            trunk.engine = _SeqRun(row=self.runner.table.alloc(),
                                   generator=self._generator(0, 0))
            self.running[index] = request
            self.seqs[index] = [trunk]

    def _check_aborts(self) -> None:
        if self.should_abort is None:
            return
        for index, request in list(self.running.items()):
            if self.should_abort(index, request):
                self._handle([self.controller.abort(request)])

    def _generator(self, block: int, branch: int):
        if self.sampling.is_greedy:
            return None
        return make_generator(self.seed, block, branch, self.runner.device)

    # -- choose: one token (or a run of forced tokens) per ACTIVE sequence without pending tokens --
    def _choose(self) -> None:
        todo = [s for r in list(self.running.values()) for s in r.live()
                if s.state is SeqState.ACTIVE and not s.pending]
        sampled: list[Seq] = []
        for seq in todo:
            if seq.request.is_finished:
                continue
            if not self.controller.has_budget(seq):
                self._handle(self.controller.out_of_budget(seq))
            elif seq.forced:
                self._choose_forced(seq)
            else:
                sampled.append(seq)
        if sampled:
            self._choose_sampled(sampled)

    def _choose_forced(self, seq: Seq) -> None:
        first = True
        while seq.forced and self.controller.has_budget(seq) and not seq.request.is_finished:
            token = seq.forced[0]
            logprob = None
            if first and seq.logprob_source is None:
                logprob = _logprob(seq.engine.last_logits, token)
            self._handle(self.controller.on_token(seq, token, logprob))
            first = False

    def _choose_sampled(self, seqs: list[Seq]) -> None:
        raw = torch.stack([s.engine.last_logits for s in seqs]) if len(seqs) > 1 else seqs[0].engine.last_logits[None]
        processed = raw
        if any(self.processors[s.request.req_id] for s in seqs) or self.config.step_repetition_penalty != 1.0:
            rows = []
            for seq, row in zip(seqs, raw):
                for processor in self.processors[seq.request.req_id]:
                    row = processor(seq, row)
                if not seq.is_trunk:
                    row = apply_step_repetition_penalty(row, seq.tokens[seq.header_len:],
                                                        self.config.step_repetition_penalty)
                rows.append(row)
            processed = torch.stack(rows)
        if self.sampling.is_greedy:
            chosen = torch.argmax(processed, -1)
        else:
            chosen = torch.tensor([sample(row, self.sampling, seq.engine.generator) for seq, row in zip(seqs, processed)],
                                  device=raw.device)
        picked = _log_softmax(raw).gather(1, chosen[:, None])[:, 0]
        tokens, values = torch.stack([chosen.to(picked.dtype), picked]).tolist()  # one device sync
        for seq, token, logprob in zip(seqs, tokens, values):
            if not seq.request.is_finished:
                self._handle(self.controller.on_token(seq, int(token), logprob))

    # -- feed: one forward over every pending token ----------------------------------------------
    def _feed(self) -> None:
        entries = [s for r in list(self.running.values()) for s in [r.trunk, *r.branches]
                   if s.pending and s.state in (SeqState.ACTIVE, SeqState.DRAINING)]
        if not entries:
            return
        ids, positions, slots, rows, keep, hide_q, hide_slot = [], [], [], [], [], [], []
        spans = []
        for seq in entries:
            count = len(seq.pending)
            new = self.runner.pool.alloc(count, seq)
            seq.engine.slots += new
            base = len(ids)
            ids += seq.pending
            positions += range(seq.next_position, seq.next_position + count)
            slots += new
            rows += [seq.engine.row] * count
            is_prompt = seq.is_trunk and seq.next_position == 0
            first_kept = len(keep)
            keep += [base + count - 1] if is_prompt else range(base, base + count)
            for j in range(count - 1):  # a multi-token entry: token j must not see tokens j+1..
                hide_q += [base + j] * (count - 1 - j)
                hide_slot += new[j + 1:]
            spans.append((seq, count, first_kept, len(keep), is_prompt))
        device = self.runner.device
        parts = [ids, positions, slots, rows, keep, hide_q, hide_slot]
        flat = torch.tensor([x for part in parts for x in part], dtype=torch.long)  # host; the runner copies
        views = list(torch.split(flat, [len(part) for part in parts]))
        step = StepInputs(*views[:5], views[5] if hide_q else None, views[6] if hide_q else None)
        logits = self.runner.run(step)
        for seq, count, lo, hi, is_prompt in spans:
            seq.engine.last_logits = logits[hi - 1]
            if not is_prompt and count > 1:  # forced run: score tokens 2..count from the rows before them
                rows_lp = _log_softmax(logits[lo:hi - 1])
                fed = torch.tensor(seq.tokens[-count + 1:], device=device)
                values = rows_lp.gather(1, fed[:, None])[:, 0].tolist()
                seq.logprobs[len(seq.logprobs) - count + 1:] = values
            self._handle(self.controller.on_fed(seq))

    # -- actions -----------------------------------------------------------------------------------
    def _handle(self, actions) -> None:
        table, pool = self.runner.table, self.runner.pool
        for action in actions:
            if isinstance(action, Fork):
                parent = action.parent
                for child in action.children:
                    child.engine = _SeqRun(row=table.alloc(), last_logits=parent.engine.last_logits,
                                           generator=self._generator(action.request.num_forks, child.branch))
                    table.copy(parent.engine.row, child.engine.row)
                self.seqs[action.request.req_id] += list(action.children)
            elif isinstance(action, BranchDone):
                seq = action.seq
                nxt = seq.next_sibling
                if nxt is not None and nxt.tokens:
                    nxt.logprobs[0] = _logprob(seq.engine.last_logits, nxt.tokens[0])
            elif isinstance(action, Join):
                parent = action.parent
                table.merge(parent.engine.row, [c.engine.row for c in action.children])
                for child in action.children:
                    pool.transfer(child.engine.slots, child, parent)
                    parent.engine.slots += child.engine.slots
                    child.engine.slots = []
                    table.release(child.engine.row)
                    self.seqs[action.request.req_id].remove(child)
                parent.engine.last_logits = action.children[-1].engine.last_logits
            elif isinstance(action, Finish):
                index = action.request.req_id
                if index in self.running:
                    self.results[index] = self._result(action.request)
                    self._release(index)

    def _release(self, index: int) -> None:
        del self.running[index]
        for seq in self.seqs.pop(index):
            self.runner.pool.free(seq.engine.slots, seq)
            seq.engine.slots = []
            self.runner.table.release(seq.engine.row)
        self.reserved -= min(self.needs[index], self.runner.pool.capacity)

    def _result(self, request: Request) -> DecodeResult:
        decoder = self.decoder
        tokens, logprobs = request.linear()
        prompt = self.prompts[request.req_id]
        layout = build_layout(prompt + tokens, decoder.templates.tags, len(prompt),
                              max_branches=self.config.max_branches, refused_forks=request.refused_forks)
        stats = {"total_tokens": request.total_tokens, "critical_path_tokens": request.trunk_path_tokens,
                 "num_forks": request.num_forks, "max_width": request.max_width if request.num_forks else 1}
        return DecodeResult(
            prompt_ids=prompt, token_ids=tokens,
            logprobs=[float("nan") if lp is None else float(lp) for lp in logprobs],
            text=decoder.tokenizer.decode(tokens, skip_special_tokens=False), layout=layout,
            finish_reason=request.finish_reason or "abort", stats=stats,
            blocks=[[end.value for end in ends] for ends in request.blocks], notes=list(request.notes),
        )


def _log_softmax(logits: torch.Tensor) -> torch.Tensor:
    """Log-probs of raw logits [..., V]: float64 for a float64 model, float32 otherwise."""
    return torch.log_softmax(logits if logits.dtype == torch.float64 else logits.float(), -1)


def _logprob(logits: torch.Tensor, token: int) -> float:
    return float(_log_softmax(logits)[token])


def _eos_ids(model, tokenizer) -> set[int]:
    ids: set[int] = set()
    for source in (getattr(tokenizer, "eos_token_id", None),
                   getattr(getattr(model, "generation_config", None), "eos_token_id", None)):
        if isinstance(source, int):
            ids.add(source)
        elif isinstance(source, (list, tuple)):
            ids.update(int(x) for x in source)
    return ids


def _as_ids(prompt, index: int) -> list[int]:
    if hasattr(prompt, "keys") and "input_ids" in prompt:  # a BatchEncoding from apply_chat_template
        prompt = prompt["input_ids"]
    if isinstance(prompt, torch.Tensor):
        prompt = prompt.tolist()
    if isinstance(prompt, str):
        raise TypeError(f"prompt {index} is a str; pass token ids (e.g. tokenizer.apply_chat_template(..., tokenize=True))")
    ids = [int(t) for t in prompt]
    if not ids:
        raise ValueError(f"prompt {index} is empty; a prompt needs at least one token")
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
