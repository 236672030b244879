"""`NprEngine`: the SGLang adapter of `npr.forkjoin` (one per scheduler process). NPR requests are taken
out of SGLang's queues at intake; every scheduler iteration runs one controller step for all of them:
plan -> one forward over per-token rows (forward.RowRunner) -> scores, samples -> commit. At a Finish the
linearised trajectory goes back to the client through SGLang's own output streamer, with its per-token
log-probs (trainer convention) and meta_info["npr"]. A request with stream=True also gets, after every
step, the prefix of its linearised response that can no longer change (see `_final_prefix`), through the
same streamer as incremental chunks; the rest and meta_info["npr"] come at the Finish. The controller
decides; this class computes."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from npr.forkjoin import Finish, ForkJoinController, Limits, Seq, WorkResult, derive_seed
from sglang_npr.engine.forward import Row, RowRunner
from sglang_npr.engine.slots import SglangSlots
from sglang_npr.protocol import NPR_KEY, NprParams

logger = logging.getLogger(__name__)


@dataclass(eq=False)
class _Entry:
    """One NPR request: SGLang's Req (for the output), the controller's Request, how to choose tokens."""

    req: Any
    request: Any
    controller: ForkJoinController
    processors: list = field(default_factory=list)
    greedy: bool = True
    sampling: Any = None  # npr.decoding.SamplingParams when not greedy
    seed: int = 0
    streamed_preemptions: int = 0  # preemptions whose restart was checked against what was streamed


class NprEngine:
    def __init__(self, scheduler):
        from npr.templates import Templates

        tokenizer = scheduler.tokenizer
        if tokenizer is None:
            raise ValueError("NPR requests need the server's tokenizer (to find the tag ids); "
                             "do not start it with --skip-tokenizer-init")
        self.scheduler = scheduler
        self.runner = RowRunner(scheduler)
        self.slots = SglangSlots(scheduler.tree_cache)
        self.templates = Templates.from_tokenizer(tokenizer)
        self.vocab_size = scheduler.model_config.vocab_size
        eos = scheduler.model_config.hf_eos_token_id
        self.eos_ids = {int(t) for t in (eos if isinstance(eos, (set, list, tuple)) else [eos]) if t is not None}
        if getattr(tokenizer, "eos_token_id", None) is not None:
            self.eos_ids.add(int(tokenizer.eos_token_id))
        self.controllers: dict[Limits, ForkJoinController] = {}
        self.entries: dict[Any, _Entry] = {}
        self._content = None

    # -- requests --------------------------------------------------------------------------------------
    @property
    def has_work(self) -> bool:
        return bool(self.entries)

    def add(self, req, params: NprParams) -> None:
        """Take over an SGLang Req whose custom_params carry "npr" (already validated at intake)."""
        from npr.decoding import SamplingParams

        sp = req.sampling_params
        params = params.resolved(sp.max_new_tokens)
        stops = set(self.eos_ids) | set(sp.stop_token_ids or ()) | set(req.eos_token_ids or ())
        limits = Limits(max_branches=params.max_branches, max_new_tokens=params.max_new_tokens,
                        max_total_tokens=params.max_total_tokens, min_fork_budget=params.min_fork_budget,
                        stop_token_ids=tuple(sorted(stops)))
        controller = self.controllers.get(limits)
        if controller is None:
            controller = self.controllers[limits] = ForkJoinController(limits, self.templates, stops, slots=self.slots)
        request = controller.add_request(req.rid, list(req.origin_input_ids))
        greedy = sp.top_k == 1  # SGLang turns temperature 0 into top_k 1
        entry = _Entry(req, request, controller, greedy=greedy)
        if not greedy:
            top_k = 0 if sp.top_k >= self.vocab_size else int(sp.top_k)
            entry.sampling = SamplingParams(temperature=float(sp.temperature), top_p=float(sp.top_p), top_k=top_k)
            entry.seed = sp.sampling_seed if sp.sampling_seed is not None else _random_seed()
        if params.script is not None:
            entry.processors.append(self._script(params))
        req.npr_params = params
        self.entries[req.rid] = entry

    def abort(self, rid: Any = None, abort_all: bool = False) -> bool:
        """Abort NPR requests by rid (SGLang matches rid prefixes for aborts); True when one matched."""
        matched = False
        for key, entry in list(self.entries.items()):
            if abort_all or (isinstance(key, str) and isinstance(rid, str) and key.startswith(rid)) or key == rid:
                matched = True
                self._handle(entry.controller.abort(entry.request))
        return matched

    def release_all(self, message: str) -> None:
        """A step failed: give every slot back and finish every NPR request with an abort."""
        for controller in self.controllers.values():
            controller.release_all()
        for entry in list(self.entries.values()):
            self._emit_abort(entry, message)
        self.entries.clear()

    # -- one step --------------------------------------------------------------------------------------
    def step(self) -> None:
        plans = []
        for controller in self.controllers.values():
            if not controller.has_work:
                continue
            plan = controller.plan()
            self._handle(plan.events)
            if plan.works:
                plans.append((controller, plan))
        if not plans:
            return
        works = [work for _, plan in plans for work in plan.works]
        results = self._compute(works)
        at = 0
        for controller, plan in plans:
            count = len(plan.works)
            self._handle(controller.commit(plan, results[at:at + count]))
            at += count
        self._stream()

    def _compute(self, works) -> list[WorkResult]:
        import torch

        rows, bases = [], []
        for work in works:
            bases.append(len(rows))
            for j, token in enumerate(work.tokens):
                rows.append(Row(work.context + work.slots[:j + 1], token, work.positions[j]))
        logits = self.runner.run(rows)
        logprobs = torch.log_softmax(logits if logits.dtype == torch.float64 else logits.float(), -1)
        results = []
        for work, base in zip(works, bases):
            scores = [float(logprobs[base + j, token]) for j, token in work.scores]
            if not work.sample:
                results.append(WorkResult(scores))
                continue
            last = base + len(work.tokens) - 1
            token = self._choose(work.seq, logits[last])
            results.append(WorkResult(scores, token, float(logprobs[last, token])))
        return results

    def _choose(self, seq: Seq, logits) -> int:
        import torch
        from npr.decoding.sampler import make_generator, sample

        entry = self.entries[seq.request.req_id]
        row = logits
        for processor in entry.processors:
            row = processor(seq, row)
        if entry.greedy:
            return int(torch.argmax(row))
        if seq.engine is None:  # one RNG stream per (seed, block, branch)
            seq.engine = make_generator(derive_seed(entry.seed, 0, seq.block, seq.branch), row.device)
        return sample(row, entry.sampling, seq.engine)

    # -- streaming -------------------------------------------------------------------------------------
    def _stream(self) -> None:
        """Send each streaming request the part of its linearised response that became final this step."""
        reqs = []
        for entry in list(self.entries.values()):
            if not entry.req.stream:
                continue
            req, sent = entry.req, len(entry.req.output_ids)
            length, ids, logprobs = _final_prefix(entry.request, sent)
            if entry.request.num_preemptions > entry.streamed_preemptions and length >= sent:
                # A preempted request starts over (same seeds, so the same output); check the restart
                # against what the client already has before sending more.
                entry.streamed_preemptions = entry.request.num_preemptions
                _, full_ids, full_logprobs = _final_prefix(entry.request)
                if not self._same_as_sent(req, full_ids, full_logprobs):
                    self.entries.pop(req.rid, None)
                    entry.controller.abort(entry.request)
                    self._emit_abort(entry, "NPR: a preempted request restarted with a different output "
                                            "than the one already streamed")
                    continue
            if not ids:
                continue
            self._extend_output(req, ids, logprobs)
            reqs.append(req)
        if reqs:
            self.scheduler.output_streamer.stream_output(reqs, any(r.return_logprob for r in reqs))

    @staticmethod
    def _extend_output(req, ids, logprobs) -> None:
        req.output_ids.extend(ids)
        if req.return_logprob:
            req.logprob.output_token_logprobs_val.extend(logprobs)
            req.logprob.output_token_logprobs_idx.extend(ids)
            if req.logprob.top_logprobs_num > 0:
                req.logprob.output_top_logprobs_val.extend([] for _ in ids)
                req.logprob.output_top_logprobs_idx.extend([] for _ in ids)

    @staticmethod
    def _same_as_sent(req, ids, logprobs) -> bool:
        sent = len(req.output_ids)
        if list(ids[:sent]) != list(req.output_ids):
            return False
        return not req.return_logprob or list(logprobs[:sent]) == list(req.logprob.output_token_logprobs_val[:sent])

    # -- events and outputs ------------------------------------------------------------------------------
    def _handle(self, events) -> None:
        for event in events:
            if isinstance(event, Finish):
                entry = self.entries.pop(event.request.req_id, None)
                if entry is not None:
                    self._emit(entry, event)

    def _emit(self, entry: _Entry, finish: Finish) -> None:
        from array import array

        from sglang.srt.managers.schedule_batch import FINISH_ABORT, FINISH_LENGTH, FINISH_MATCHED_TOKEN

        req, traj = entry.req, finish.trajectory
        if req.stream and len(req.output_ids) and not self._same_as_sent(req, traj.token_ids, traj.logprobs):
            # Only a preempted request that restarted and then ended (abort, full KV cache) before reaching
            # what it had streamed gets here: the client cannot take tokens back, so it is an error.
            logger.warning("NPR request %s ended (%s) after a restart, before what was streamed",
                           req.rid, finish.reason)
            self._emit_abort(entry, f"NPR: the request was preempted, restarted and ended ({finish.reason}) "
                                    "before reaching the output it had already streamed")
            return
        req.output_ids = array("q", traj.token_ids)
        if req.return_logprob:
            req.logprob.output_token_logprobs_val = list(traj.logprobs)
            req.logprob.output_token_logprobs_idx = list(traj.token_ids)
            if req.logprob.top_logprobs_num > 0:
                req.logprob.output_top_logprobs_val = [[] for _ in traj.token_ids]
                req.logprob.output_top_logprobs_idx = [[] for _ in traj.token_ids]
        if finish.reason == "stop":
            req.finished_reason = FINISH_MATCHED_TOKEN(matched=traj.token_ids[-1] if traj.token_ids else 0)
        elif finish.reason == "length":
            req.finished_reason = FINISH_LENGTH(length=len(traj.token_ids))
        else:
            req.finished_reason = FINISH_ABORT("aborted")
        record = {"stats": dict(traj.stats), "blocks": traj.blocks, "refused_forks": traj.refused_forks,
                  "notes": traj.notes, "finish_reason": traj.finish_reason}
        if req.npr_params.return_positions:
            record["positions"] = list(finish.positions)
        req.customized_info = {NPR_KEY: [record]}
        # SGLang sends a request-level customized_info key of a streaming request with its first chunk
        # only; the record exists at the Finish, so the final chunk is built as a non-streaming Req's is
        # (for a finished Req, `stream` only decides that).
        stream, req.stream = req.stream, False
        try:
            self.scheduler.output_streamer.stream_output([req], req.return_logprob)
        finally:
            req.stream = stream

    def _emit_abort(self, entry: _Entry, message: str) -> None:
        from sglang.srt.disaggregation.utils import prepare_abort

        prepare_abort(entry.req, message)
        self.scheduler.output_streamer.stream_output([entry.req], entry.req.return_logprob)

    def _script(self, params: NprParams):
        from npr.decoding import ScriptedStructure
        from npr.decoding.scripted import content_token_ids

        if self._content is None:
            self._content = content_token_ids(self.scheduler.tokenizer, self.vocab_size,
                                              set(self.templates.tags.all) | self.eos_ids)
        script = ScriptedStructure(branch_lengths=[list(b) for b in params.script], plan_tokens=params.plan_tokens,
                                   takeaway_tokens=params.takeaway_tokens, answer_tokens=params.answer_tokens)
        return script.bind(self.templates, min(self.eos_ids), self._content)


def _final_prefix(request, skip: int = 0) -> tuple[int, list[int], list[float]]:
    """The prefix of `request`'s linearised response that no later step can change: the finished parts
    (trunk runs before a fork, joined blocks), then the trunk's own tokens when no block is open, or the
    open block's branches that ended, in order, up to the first that did not. A branch's first token is
    scored by its predecessor's tail, as `_close_block` will do. A token without a log-prob ends the
    prefix (the Finish would cut there). Returns its length and its ids and log-probs after `skip`."""
    from npr.forkjoin.controller import SeqState

    ranges = list(request.parts)
    if request.branches:
        for branch in request.branches:
            if branch.state is not SeqState.DONE:
                break
            ranges.append((branch, 0, len(branch.tokens)))
    elif request.trunk is not None:
        ranges.append((request.trunk, request.trunk_cut, len(request.trunk.tokens)))
    length, ids, logprobs, previous = 0, [], [], None
    for seq, start, end in ranges:
        first = start + max(0, skip - length)  # tokens before `skip` were final (and sent) already
        length += min(end - start, max(0, skip - length))
        for k in range(first, end):
            logprob = seq.logprobs[k]
            if k == 0 and logprob is None and previous is not None and not seq.is_trunk and not previous.is_trunk:
                logprob = previous.tail_score
            if logprob is None:
                return length, ids, logprobs
            ids.append(seq.tokens[k])
            logprobs.append(float(logprob))
            length += 1
        previous = seq
    return length, ids, logprobs


def _random_seed() -> int:
    import random

    return random.getrandbits(62)
