"""`npr eval` through SGLang's in-process Engine with the NPR plugin (CPU, tiny model): greedy scripted
parallel runs and plain sequential runs give, sample by sample, the reference decoder's trajectories
(ids, stats, blocks; log-probs within 1e-4) and the same grades."""

import pytest

from npr.eval import ReferenceEngine, SGLangEngine, read_samples, run_eval
from tests.eval.sglang_runs import assert_same_trajectories, greedy_config, write_fixture
from tests.hosts import require_host
from tests.sglang_npr.engines import CPU_ENGINE_ARGS

pytestmark = [pytest.mark.sglang, pytest.mark.slow]
require_host("sglang")


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    from npr.tiny import save_tiny

    return save_tiny(tmp_path_factory.mktemp("tiny"), seed=0)


def test_sglang_engine_matches_reference_decoder(model_path, tmp_path):
    source = write_fixture(tmp_path)
    reference = greedy_config(source, tmp_path / "ref", model_path)
    run_eval(reference, engine=ReferenceEngine(model_path, "cpu", "float32"))
    engine = SGLangEngine(model_path, attention_backend="npr", **CPU_ENGINE_ARGS)
    try:
        summary = run_eval(greedy_config(source, tmp_path / "sgl", model_path, engine="sglang"), engine=engine)
    finally:
        engine.close()
    assert summary["num_new_samples"] == 2 * 2 * 2
    assert_same_trajectories(read_samples(str(tmp_path / "sgl" / "samples.jsonl")),
                             read_samples(str(tmp_path / "ref" / "samples.jsonl")))
