"""`npr eval engine=http` against `python -m sglang.launch_server --attention-backend npr` on loopback
(CPU, tiny model), through the native /generate and the OpenAI-compatible /v1/completions: the same
per-sample trajectories as the reference decoder (greedy; scripted parallel and plain sequential)."""

import pytest

from npr.eval import ReferenceEngine, read_samples, run_eval
from tests.eval.sglang_runs import assert_same_trajectories, greedy_config, write_fixture
from tests.sglang_npr.engines import launch_server
from tests.hosts import make_env, require_host

pytestmark = [pytest.mark.sglang, pytest.mark.slow]
require_host("sglang")


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    from npr.tiny import save_tiny

    return save_tiny(tmp_path_factory.mktemp("tiny"), seed=0)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return write_fixture(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def reference(model_path, source, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref")
    run_eval(greedy_config(source, out, model_path), engine=ReferenceEngine(model_path, "cpu", "float32"))
    return read_samples(str(out / "samples.jsonl"))


@pytest.fixture(scope="module")
def server(model_path, tmp_path_factory):
    with launch_server(model_path, tmp_path_factory.mktemp("server") / "server.log", make_env()) as url:
        yield url


@pytest.mark.parametrize("api", ["native", "openai"])
def test_http_server_matches_reference_decoder(server, model_path, source, reference, api, tmp_path):
    summary = run_eval(greedy_config(source, tmp_path / "http", model_path, engine="http", url=server, api=api))
    assert summary["num_new_samples"] == 2 * 2 * 2
    assert_same_trajectories(read_samples(str(tmp_path / "http" / "samples.jsonl")), reference,
                             has_blocks=api == "native")
