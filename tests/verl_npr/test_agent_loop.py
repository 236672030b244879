"""Agent loop `npr_parallel` driven through verl's server-manager interface by the reference decoder (a
fake server manager over `npr.decoding.Decoder` answering like the SGLang plugin: linearised ids,
log-probs, meta_info["npr"] in extra_fields), then through verl's own TransferQueue postprocess
(`AgentLoopWorkerTQ._agent_loop_postprocess`, the TQ put captured) and its padded postprocess: the fields
verl stores carry the decoder's NPR positions, the structure kwargs, its log-probs, and an all-zero
response_mask for truncated rows. Plus config checks and the rollout metrics."""

import asyncio

import pytest
import torch
from omegaconf import OmegaConf

from tests.hosts import require_host

pytestmark = pytest.mark.verl
require_host("verl")

from npr.decoding import Decoder, DecodingConfig, SamplingParams, ScriptedStructure  # noqa: E402
from npr.masks import STRUCTURE_KEYS  # noqa: E402
from npr.wire import make_npr_record, parse_npr_params  # noqa: E402
from verl.experimental.agent_loop.agent_loop import AgentLoopWorker, DictConfigWrap  # noqa: E402
from verl.utils.dataset.rl_dataset import RLHFDataset  # noqa: E402
from verl.workers.rollout.replica import TokenOutput  # noqa: E402
from verl_npr.agent_loop import MANAGER, NprParallelAgentLoop, check_config, record_metrics  # noqa: E402
from verl_npr.agent_loop_worker import NprAgentLoopWorkerImpl, NprStructureMixin  # noqa: E402
from verl_npr.batch import structure_inputs  # noqa: E402

PROMPT_LENGTH, RESPONSE_LENGTH = 64, 96
SCRIPT = [[3, 5], [2, 4, 1]]


def make_config(**npr):
    return OmegaConf.create({
        "actor_rollout_ref": {
            "model": {"override_config": {"attn_implementation": "npr"}, "use_fused_kernels": False},
            "actor": {"ulysses_sequence_parallel_size": 1}, "ref": {"ulysses_sequence_parallel_size": 1},
            "rollout": {"name": "sglang", "prompt_length": PROMPT_LENGTH, "response_length": RESPONSE_LENGTH,
                        "engine_kwargs": {"sglang": {"attention_backend": "npr"}},
                        "agent": {"agent_loop_manager_class": MANAGER}, "custom": {"npr": npr}}},
        "trainer": {"v1": {"trainer_mode": "npr_sync"}},
        "data": {}})


class DecoderServerManager:
    """verl's server-manager interface (`generate(request_id, prompt_ids=, sampling_params=)` -> TokenOutput)
    over the reference decoder, reading the NPR wire parameters as the SGLang plugin does."""

    def __init__(self, model, tokenizer):
        self.model, self.tokenizer, self.results = model, tokenizer, []

    async def generate(self, request_id, *, prompt_ids, sampling_params, **kwargs):
        npr = parse_npr_params(sampling_params["custom_params"]).resolved(sampling_params["max_new_tokens"])
        decoder = Decoder(self.model, self.tokenizer, DecodingConfig(
            max_branches=npr.max_branches, max_new_tokens=npr.max_new_tokens, max_total_tokens=npr.max_total_tokens,
            min_fork_budget=npr.min_fork_budget))
        script = ScriptedStructure(branch_lengths=npr.script) if npr.script else None
        [r] = decoder.generate([list(prompt_ids)], SamplingParams(temperature=sampling_params["temperature"], seed=0),
                               script=script)
        self.results.append(r)
        record = make_npr_record(r)  # what the SGLang plugin sends as meta_info["npr"]
        return TokenOutput(token_ids=r.token_ids, log_probs=r.logprobs, stop_reason=r.finish_reason,
                           extra_fields={"global_steps": 1, "npr": record})


def run_loop(config, server, tokenizer, question="What is 2+2?"):
    async def run():  # verl's agent loop binds the running event loop when it is built
        loop = NprParallelAgentLoop(trainer_config=DictConfigWrap(config), server_manager=server, tokenizer=tokenizer,
                                    processor=None, dataset_cls=RLHFDataset, data_config=DictConfigWrap(config.data))
        sampling = dict(temperature=1.0, top_p=1.0, top_k=-1, repetition_penalty=1.0, logprobs=True)
        return await loop.run(sampling, raw_prompt=[{"role": "user", "content": question}])

    return asyncio.run(run())


def make_worker(cls, config, tokenizer):
    """verl's worker class without its Ray/TQ start-up: the attributes its postprocess reads."""
    worker = object.__new__(cls)
    worker.config, worker.tokenizer, worker.processor = config, tokenizer, None
    worker.rollout_config = config.actor_rollout_ref.rollout
    worker.reward_loop_worker_handles, worker.distillation_enabled, worker.mm_processor_kwargs = None, False, {}
    worker._init_npr()
    return worker


@pytest.fixture(scope="module")
def server(tokenizer, model32):
    return DecoderServerManager(model32, tokenizer)


def test_tq_postprocess_stores_npr_fields(server, tokenizer, monkeypatch):
    """verl's own AgentLoopWorkerTQ._agent_loop_postprocess, with our worker: positions, structure, log-probs."""
    import verl.trainer.ppo.v1.agent_loop_tq as agent_loop_tq

    config = make_config(script=SCRIPT)
    rows = {"valid": run_loop(config, server, tokenizer)}
    r_valid = server.results[-1]
    rows["truncated"] = run_loop(make_config(script=SCRIPT, max_total_tokens=20), server, tokenizer)
    r_truncated = server.results[-1]
    assert r_valid.finish_reason == "stop" and r_valid.layout.is_valid and r_valid.stats["max_width"] == 3
    assert r_truncated.finish_reason == "length" and len(r_truncated.token_ids) == 20

    puts = []

    async def capture(keys, fields, tags, partition_id):
        puts.append((keys, fields, tags, partition_id))

    monkeypatch.setattr(agent_loop_tq.tq, "async_kv_batch_put", capture)
    worker = make_worker(NprAgentLoopWorkerImpl, config, tokenizer)
    for name, output in rows.items():
        asyncio.run(worker._agent_loop_postprocess(output, False, uid=name, session_id=0, global_steps=1))
    assert not worker._npr_layouts  # every layout consumed by its position call

    for (keys, fields, tags, _), result, valid in zip(puts, (r_valid, r_truncated), (True, False)):
        prompt, response = result.prompt_ids, result.token_ids
        length = len(prompt) + len(response)
        assert fields["input_ids"][0].tolist() == [*prompt, *response]
        assert fields["position_ids"].shape == (1, length)
        assert torch.equal(fields["position_ids"][0], result.layout.position_ids)
        assert fields["responses"][0].tolist() == list(response)
        assert fields["response_mask"][0].tolist() == [int(valid)] * len(response)
        assert torch.allclose(fields["rollout_log_probs"][0], torch.tensor(result.logprobs, dtype=torch.float32))
        mm = fields["multi_modal_inputs"][0]
        mm = getattr(mm, "data", mm)
        assert set(mm) == set(STRUCTURE_KEYS) and "position_ids" not in mm
        for key, value in structure_inputs(result.layout).items():
            assert torch.equal(mm[key], value)
        record = fields["extra_fields"][0]
        record = getattr(record, "data", record)["npr"]
        assert record["is_valid"] is valid and record["stats"] == result.stats
        assert tags[0]["prompt_len"] == len(prompt) and tags[0]["response_len"] == len(response)
    # a branched layout really is not sequential (negative control)
    assert not torch.equal(puts[0][1]["position_ids"][0], torch.arange(len(r_valid.layout)))


def test_refused_fork_positions_follow_the_engine(server, tokenizer):
    """A fork the engine refused (budget) goes on sequentially; the worker rebuilds that, not a branched parse."""
    output = run_loop(make_config(script=[[3, 5]], max_total_tokens=40, min_fork_budget=30), server, tokenizer)
    result = server.results[-1]
    assert result.refused_forks, "the script should hit the fork budget"
    worker = make_worker(type("W", (NprStructureMixin, AgentLoopWorker), {}), make_config(), tokenizer)
    input_ids = torch.tensor([*output.prompt_ids, *output.response_ids])
    mm = worker._compute_multi_modal_inputs(output, input_ids)
    positions = worker._compute_position_ids(input_ids[None], torch.ones_like(input_ids)[None], mm)[0]
    assert torch.equal(positions, result.layout.position_ids)
    assert torch.equal(mm["npr_branch_id"], torch.zeros_like(mm["npr_branch_id"]))


def test_padded_postprocess_scatters_positions(server, tokenizer):
    """verl's padded AgentLoopWorker._agent_loop_postprocess: NPR positions at the attended tokens."""
    config = make_config(script=SCRIPT)
    output = run_loop(config, server, tokenizer)
    result = server.results[-1]
    worker = make_worker(type("W", (NprStructureMixin, AgentLoopWorker), {}), config, tokenizer)
    out = asyncio.run(worker._agent_loop_postprocess(output, False, raw_prompt=[]))
    keep = out.attention_mask[0].bool()
    assert out.position_ids.shape == (1, PROMPT_LENGTH + RESPONSE_LENGTH)
    assert torch.equal(out.position_ids[0, keep], result.layout.position_ids)
    assert out.response_mask[0].sum() == len(result.token_ids)


def test_other_agent_loops_keep_verl_defaults(tokenizer):
    from verl.experimental.agent_loop.agent_loop import AgentLoopMetrics, AgentLoopOutput

    worker = make_worker(type("W", (NprStructureMixin, AgentLoopWorker), {}), make_config(), tokenizer)
    output = AgentLoopOutput(prompt_ids=[1, 2], response_ids=[3], response_mask=[1], metrics=AgentLoopMetrics())
    ids = torch.tensor([1, 2, 3])
    mm = worker._compute_multi_modal_inputs(output, ids)
    assert mm == {}
    assert worker._compute_position_ids(ids[None], torch.ones(1, 3, dtype=torch.long), mm)[0].tolist() == [0, 1, 2]


@pytest.mark.parametrize("change, words", [
    (("actor_rollout_ref.rollout.agent.agent_loop_manager_class", None), ["agent_loop_manager_class", MANAGER]),
    (("actor_rollout_ref.model.override_config.attn_implementation", "sdpa"), ["attn_implementation", "'sdpa'"]),
    (("actor_rollout_ref.rollout.engine_kwargs.sglang.attention_backend", "fa3"), ["attention_backend", "'npr'"]),
    (("actor_rollout_ref.rollout.skip_tokenizer_init", True), ["skip_tokenizer_init", "false"]),
    (("trainer.v1.trainer_mode", "colocate_async"), ["colocate_async", "npr_sync"]),
    (("actor_rollout_ref.rollout.custom.npr.max_total_tokens", 500), ["max_total_tokens=500", "96"]),
    (("actor_rollout_ref.rollout.custom.npr.max_branch", 3), ["max_branch", "valid keys"]),
    (("actor_rollout_ref.rollout.custom.npr.script", [[1, 2, 3]]), ["script", "max_branches"]),
])
def test_config_errors_name_the_key_and_fix(change, words):
    config = make_config(max_branches=2)
    OmegaConf.update(config, change[0], change[1], force_add=True)
    with pytest.raises(ValueError) as err:
        check_config(config)
    for word in words:
        assert word in str(err.value)


def test_record_metrics():
    rows = [{"stats": {"max_width": 3, "total_tokens": 30, "critical_path_tokens": 15, "num_forks": 2},
             "is_valid": True, "finish_reason": "stop"},
            {"stats": {"max_width": 1, "total_tokens": 10, "critical_path_tokens": 10, "num_forks": 0},
             "is_valid": False, "finish_reason": "length"}, None]
    m = record_metrics(rows)
    assert m["npr/trigger_rate"] == 0.5 and m["npr/width/max"] == 3 and m["npr/width/mean"] == 2
    assert m["npr/valid_share"] == 0.5 and m["npr/truncated_share"] == 0.5
    assert m["npr/parallel_ratio"] == 40 / 25 and m["npr/critical_path_tokens/mean"] == 12.5
    assert record_metrics([None]) == {}
