"""`npr eval engine=http` against `python -m sglang.launch_server --attention-backend npr` on loopback
(CPU, tiny model): the same per-sample trajectories as the reference decoder (greedy; scripted parallel
and plain sequential), through the console script's own code path."""

import pytest

from npr.eval import ReferenceEngine, read_samples, run_eval
from tests.eval.sglang_runs import assert_same_trajectories, greedy_config, launch_server, write_fixture
from tests.hosts import make_env, require_host

pytestmark = [pytest.mark.sglang, pytest.mark.slow]
require_host("sglang")


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    from npr.tiny import save_tiny

    return save_tiny(tmp_path_factory.mktemp("tiny"), seed=0)


def test_http_server_matches_reference_decoder(model_path, tmp_path):
    source = write_fixture(tmp_path)
    run_eval(greedy_config(source, tmp_path / "ref", model_path), engine=ReferenceEngine(model_path, "cpu", "float32"))
    with launch_server(model_path, tmp_path / "server.log", make_env()) as url:
        summary = run_eval(greedy_config(source, tmp_path / "http", model_path, engine="http", url=url))
    assert summary["num_new_samples"] == 2 * 2 * 2
    assert_same_trajectories(read_samples(str(tmp_path / "http" / "samples.jsonl")),
                             read_samples(str(tmp_path / "ref" / "samples.jsonl")))
