"""`NprEngine`: the SGLang adapter of `npr.forkjoin` (one per scheduler process). The controller
decides; this class computes and reports.

Life of an NPR request: it enters SGLang's waiting queue like any other and its prompt prefills in
SGLang's own (chunked) extend with a radix-cache match and lock. In the forward of its last chunk the
first token is chosen from the prompt's raw logits (`capture_prefill`), and SGLang lets go of the Req
(`claim`: finished in SGLang's eyes, so its loops skip it; the Req keeps its row and its lock). When
that batch's result is processed the prompt is inserted into the radix tree (only prompt KV ever is)
and the request joins the one controller (`Prefilled`). From then on each scheduler iteration's decode
forward carries one row per live sequence (`plan_step` -> tail.attach -> `sample_step` -> `commit`),
forced tokens (branch headers, <takeaway>) one per step as ordinary decode inputs. At a Finish the
linearised trajectory goes back through SGLang's own output streamer, with its per-token log-probs
(trainer convention) and meta_info["npr"]; its KV is freed and SGLang releases the Req."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from npr.forkjoin import (
    Finish,
    Fork,
    ForkJoinController,
    Join,
    Limits,
    Preempt,
    Prefilled,
    Seq,
    SlotCounter,
    WorkResult,
    final_prefix,
)
from sglang_npr.engine import tail as tails
from sglang_npr.engine.rows import RowTable, SeqRow
from sglang_npr.engine.sampling import Choice, choice_of, choose_and_score
from npr.wire import NPR_KEY, NprParams, make_npr_record

logger = logging.getLogger(__name__)


class _Claimed:
    """The finished_reason an NPR-owned Req carries in SGLang's eyes (never sent to a client)."""

    def to_json(self):
        return {"type": "abort", "message": "owned by the NPR fork-join engine"}


CLAIMED = _Claimed()


@dataclass(eq=False)
class _Entry:
    """One NPR request: SGLang's Req (for the output), the controller's Request, its rows, its choice."""

    req: Any
    params: NprParams
    limits: Limits
    choice: Choice
    request: Any = None
    trunk: SeqRow | None = None
    branches: list[SeqRow] = field(default_factory=list)  # rows of the open block
    abort_pending: bool = False  # aborted between its prefill forward and the take-over
    streamed_preemptions: int = 0  # preemptions whose restart was checked against what was streamed


class NprEngine:
    def __init__(self, scheduler):
        from npr.templates import Templates

        tokenizer = scheduler.tokenizer
        if tokenizer is None:
            raise ValueError("NPR requests need the server's tokenizer (to find the tag ids); "
                             "do not start it with --skip-tokenizer-init")
        self.scheduler = scheduler
        self.templates = Templates.from_tokenizer(tokenizer)
        self.vocab_size = scheduler.model_config.vocab_size
        eos = scheduler.model_config.hf_eos_token_id
        self.eos_ids = {int(t) for t in (eos if isinstance(eos, (set, list, tuple)) else [eos]) if t is not None}
        if getattr(tokenizer, "eos_token_id", None) is not None:
            self.eos_ids.add(int(tokenizer.eos_token_id))
        self.server_seed = int(getattr(scheduler.server_args, "random_seed", 0) or 0)
        self.rows = RowTable(scheduler.req_to_token_pool, scheduler.token_to_kv_pool_allocator, scheduler.tree_cache)
        self.controller = ForkJoinController(Limits(), self.templates, self.eos_ids, SlotCounter(self.rows.room),
                                             feed_limit=1)
        self.entries: dict[Any, _Entry] = {}  # by rid, from intake to finish
        self.admitting: dict[int, tuple[list[_Entry], Any]] = {}  # forward_iter -> prefilled, first tokens
        self.step: tails.Tail | None = None  # planned or in flight, not committed
        self._content = None

    # -- requests --------------------------------------------------------------------------------------
    @property
    def has_work(self) -> bool:
        return bool(self.entries)

    @property
    def has_decode_work(self) -> bool:
        return self.controller.has_work

    def intake(self, req, params: NprParams) -> None:
        """An SGLang Req whose custom_params carry "npr" (validated at the tokenizer) enters SGLang's
        queue as usual; here it gets its limits and its way of choosing tokens."""
        sp = req.sampling_params
        params = params.resolved(sp.max_new_tokens)
        stops = set(self.eos_ids) | set(sp.stop_token_ids or ()) | set(req.eos_token_ids or ())
        limits = Limits(**params.limit_values(), stop_token_ids=tuple(sorted(stops)))
        script = self._script(params) if params.script is not None else None
        choice = choice_of(sp, self.vocab_size, req.rid, self.server_seed, script)
        req.npr_params = params
        self.entries[req.rid] = _Entry(req, params, limits, choice)

    def entry_of(self, req) -> _Entry | None:
        entry = self.entries.get(getattr(req, "rid", None))
        return entry if entry is not None and entry.req is req else None

    def abort(self, rid: Any = None, abort_all: bool = False) -> bool:
        """Abort NPR requests the engine owns, by rid (SGLang matches rid prefixes) or all; True when one
        matched. Requests still in SGLang's queues are SGLang's to abort."""
        matched = False
        for key, entry in list(self.entries.items()):
            if not (abort_all or key == rid or (isinstance(key, str) and isinstance(rid, str) and key.startswith(rid))):
                continue
            if entry.request is not None:
                matched = True
                self._handle(self.controller.abort(entry.request))
            elif _is_claimed(entry.req):
                matched = True
                entry.abort_pending = True
        return matched

    def release_all(self, message: str) -> None:
        """A step failed: give every slot back and finish every NPR request this engine owns with an abort."""
        self.controller.release_all()
        self.step = None
        self.admitting.clear()
        for entry in list(self.entries.values()):
            if entry.trunk is not None:
                self.rows.release(entry.trunk, entry.branches)
            if _is_claimed(entry.req) or entry.request is not None:
                self._emit_abort(entry, message)
                self._release_req(entry)
                self.entries.pop(entry.req.rid, None)

    # -- prefill: the first token, then the take-over ------------------------------------------------
    def capture_prefill(self, batch, logits) -> None:
        """In the forward of an extend: choose the first token of every NPR request whose prompt ends in
        this batch, from the raw logits of its last prompt token, and claim its Req."""
        decoding = {id(r) for r in (batch.decoding_reqs or ())}
        rows, entries = [], []
        for i, req in enumerate(batch.reqs):
            entry = self.entry_of(req)
            if (entry is None or entry.request is not None or id(req) in decoding or req.finished()
                    or req.extend_end != len(req.full_untruncated_fill_ids)):
                continue
            rows.append(i)
            entries.append(entry)
        if not entries:
            return
        seqs = [Seq(None, branch=0, block=0, cursor=len(e.req.origin_input_ids)) for e in entries]
        pending = choose_and_score(logits, rows, seqs, [e.choice for e in entries], [], [])
        for entry in entries:
            _claim(entry.req)
        self.admitting[batch.forward_iter] = (entries, pending)

    def _take_over(self, entries: list[_Entry], pending) -> None:
        tokens, logprobs, _ = pending.host()
        tree = self.scheduler.tree_cache
        for entry, token, logprob in zip(entries, tokens, logprobs):
            req = entry.req
            prompt_len = len(req.origin_input_ids)
            if not req.skip_radix_cache_insert:  # the prompt's KV becomes shareable; nothing else ever does
                tree.checkpoint(req, up_to=prompt_len)
            req.prefix_len = prompt_len
            req.kv.kv_committed_len = req.kv.kv_allocated_len = prompt_len
            entry.trunk = self.rows.adopt(req.kv.req_pool_idx, prompt_len)
            entry.request = self.controller.add_request(
                req.rid, list(req.origin_input_ids), entry.limits,
                prefilled=Prefilled([None] * prompt_len, token, logprob))
            if entry.abort_pending:
                self._handle(self.controller.abort(entry.request))

    # -- one decode step -------------------------------------------------------------------------------
    def plan_step(self) -> tails.Tail | None:
        """Plan the controller's next step and lay out its rows (one new slot each); None if there is
        nothing to feed. Called before the batch's forward, after the previous step's commit."""
        if self.step is not None or not self.controller.has_work:
            return None
        import torch

        plan = self.controller.plan()
        self._handle(plan.events)
        if not plan.works:
            return None
        rows, tokens, positions = [], [], []
        tail = tails.Tail(plan, None, None, None, None, None, None)
        for index, work in enumerate(plan.works):
            seq = work.seq
            entry = self.entries[seq.request.req_id]
            if seq.engine is None:
                seq.engine = entry.trunk
            rows.append(seq.engine.row)
            tokens.append(work.tokens[0])
            positions.append(work.positions[0])
            for _, token in work.scores:
                tail.score_rows.append(index)
                tail.score_tokens.append(token)
            if work.sample:
                tail.sample_rows.append(index)
                tail.sample_seqs.append(seq)
                tail.choices.append(entry.choice)
        slots, seq_lens, deltas = self.rows.grow(rows)
        if [n - 1 + d for n, d in zip(seq_lens, deltas)] != positions:
            raise RuntimeError(f"NPR row positions {[n - 1 + d for n, d in zip(seq_lens, deltas)]} differ from "
                               f"the controller's {positions}")
        device = self.rows.device
        host = torch.tensor([rows, seq_lens, tokens, deltas], dtype=torch.int64)
        on_device = host.to(device, non_blocking=True) if device.type != "cpu" else host
        tail.rows, tail.seq_lens, tail.input_ids, tail.deltas = on_device
        tail.seq_lens_cpu, tail.out_cache_loc = host[1], slots
        self.step = tail
        return tail

    def sample_step(self, tail: tails.Tail, logits) -> None:
        """In the forward, on the NPR rows' raw logits [R, V]: scores and samples, results to the host."""
        tail.pending = choose_and_score(logits, tail.sample_rows, tail.sample_seqs, tail.choices, tail.score_rows,
                                        tail.score_tokens)

    def on_result(self, batch) -> None:
        """The batch's result is being processed: take over its prefilled NPR requests, commit its step."""
        admitted = self.admitting.pop(batch.forward_iter, None)
        if admitted is not None:
            self._take_over(*admitted)
        step = self.step
        if step is not None and step.forward_iter == batch.forward_iter:
            self.step = None
            self._commit(step)

    def _commit(self, step: tails.Tail) -> None:
        if step.pending is None:
            raise RuntimeError("the NPR rows' logits never reached the engine (capture hook not applied?)")
        tokens, logprobs, scores = step.pending.host()
        results = WorkResult.for_works(step.plan.works, scores, tokens, logprobs)
        self._handle(self.controller.commit(step.plan, results))
        self._stream()

    # -- events ----------------------------------------------------------------------------------------
    def _handle(self, events) -> None:
        for event in events:
            entry = self.entries.get(event.request.req_id)
            if entry is None:
                continue
            if isinstance(event, Fork):
                rows = self.rows.fork(event.parent.engine or entry.trunk, len(event.children))
                for child, row in zip(event.children, rows):
                    child.engine = row
                entry.branches = rows
            elif isinstance(event, Join):
                rows = [child.engine for child in event.children]
                self.rows.join(entry.trunk, rows, [len(child.tokens) for child in event.children])
                entry.branches = []
            elif isinstance(event, Preempt):
                self.rows.release(entry.trunk, entry.branches)
                entry.branches = []
            elif isinstance(event, Finish):
                self.rows.release(entry.trunk, entry.branches)
                entry.branches = []
                self.entries.pop(entry.req.rid, None)
                self._emit_finish(entry, event)
                self._release_req(entry)

    def _release_req(self, entry: _Entry) -> None:
        """Hand the Req's row and prompt back to SGLang (the tree keeps the prompt; the lock goes)."""
        from sglang.srt.mem_cache.common import release_kv_cache

        req = entry.req
        if entry.trunk is not None:
            self.rows.forget(entry.trunk)
        if not req.kv.holds_kv:
            return
        prompt_len = len(req.origin_input_ids)
        req.kv.kv_committed_len = req.kv.kv_allocated_len = prompt_len
        release_kv_cache(req, self.scheduler.tree_cache, checkpoint=False)

    # -- output ----------------------------------------------------------------------------------------
    def _stream(self) -> None:
        """Send each streaming request the part of its linearised response that became final this step."""
        reqs = []
        for entry in list(self.entries.values()):
            req, request = entry.req, entry.request
            if not req.stream or request is None:
                continue
            sent = len(req.output_ids)
            length, ids, logprobs = final_prefix(request, sent)
            if request.num_preemptions > entry.streamed_preemptions and length >= sent:
                # A preempted request starts over (same seeds, so the same output); check the restart
                # against what the client already has before sending more.
                entry.streamed_preemptions = request.num_preemptions
                _, full_ids, full_logprobs = final_prefix(request)
                if not _same_as_sent(req, full_ids, full_logprobs):
                    self._handle(self.controller.abort(request))
                    self._emit_abort(entry, "NPR: a preempted request restarted with a different output "
                                            "than the one already streamed")
                    continue
            if not ids:
                continue
            _extend_output(req, ids, logprobs)
            reqs.append(req)
        if reqs:
            self._send(reqs)

    def _send(self, reqs) -> None:
        """SGLang's streamer, with the Reqs unclaimed for the call (it skips finished Reqs)."""
        claimed = [r for r in reqs if _is_claimed(r)]
        for req in claimed:
            req.finished_reason, req.finished_output = None, False
        try:
            self.scheduler.output_streamer.stream_output(reqs, any(r.return_logprob for r in reqs))
        finally:
            for req in claimed:
                if req.finished_reason is None:
                    _claim(req)

    def _emit_finish(self, entry: _Entry, finish: Finish) -> None:
        from array import array

        from sglang.srt.managers.schedule_batch import FINISH_ABORT, FINISH_LENGTH, FINISH_MATCHED_TOKEN

        req, traj = entry.req, finish.trajectory
        if req.stream and len(req.output_ids) and not _same_as_sent(req, traj.token_ids, traj.logprobs):
            # Only a preempted request that restarted and then ended (abort, full KV cache) before reaching
            # what it had streamed gets here: the client cannot take tokens back, so it is an error.
            logger.warning("NPR request %s ended (%s) after a restart, before what was streamed", req.rid, finish.reason)
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
            reason = FINISH_MATCHED_TOKEN(matched=traj.token_ids[-1] if traj.token_ids else 0)
        elif finish.reason == "length":
            reason = FINISH_LENGTH(length=len(traj.token_ids))
        else:
            reason = FINISH_ABORT("aborted")
        record = make_npr_record(traj, finish.positions if entry.params.return_positions else None)
        req.customized_info = {NPR_KEY: [record]}
        # SGLang sends a request-level customized_info key of a streaming request with its first chunk
        # only; the record exists at the Finish, so the final chunk is built as a non-streaming Req's is
        # (for a finished Req, `stream` only decides that).
        req.finished_reason, req.finished_output = reason, False
        stream, req.stream = req.stream, False
        try:
            self.scheduler.output_streamer.stream_output([req], req.return_logprob)
        finally:
            req.stream = stream

    def _emit_abort(self, entry: _Entry, message: str) -> None:
        from sglang.srt.disaggregation.utils import prepare_abort

        req = entry.req
        req.finished_reason, req.finished_output = None, False
        prepare_abort(req, message)
        self.scheduler.output_streamer.stream_output([req], req.return_logprob)

    def _script(self, params: NprParams):
        from npr.decoding import ScriptedStructure
        from npr.decoding.scripted import content_token_ids

        if self._content is None:
            self._content = content_token_ids(self.scheduler.tokenizer, self.vocab_size,
                                              set(self.templates.tags.all) | self.eos_ids)
        script = ScriptedStructure(branch_lengths=[list(b) for b in params.script], plan_tokens=params.plan_tokens,
                                   takeaway_tokens=params.takeaway_tokens, answer_tokens=params.answer_tokens)
        return script.bind(self.templates, min(self.eos_ids), self._content)


def _claim(req) -> None:
    req.finished_reason, req.finished_output = CLAIMED, True


def _is_claimed(req) -> bool:
    return req.finished_reason is CLAIMED


def _extend_output(req, ids, logprobs) -> None:
    req.output_ids.extend(ids)
    if req.return_logprob:
        req.logprob.output_token_logprobs_val.extend(logprobs)
        req.logprob.output_token_logprobs_idx.extend(ids)
        if req.logprob.top_logprobs_num > 0:
            req.logprob.output_top_logprobs_val.extend([] for _ in ids)
            req.logprob.output_top_logprobs_idx.extend([] for _ in ids)


def _same_as_sent(req, ids, logprobs) -> bool:
    sent = len(req.output_ids)
    if list(ids[:sent]) != list(req.output_ids):
        return False
    if req.return_logprob:
        got = req.logprob.output_token_logprobs_val[:sent]
        return all(abs(a - b) <= 1e-5 for a, b in zip(got, logprobs[:sent]))
    return True
