"""`npr sample --engine reference|sglang|server` on the tiny model (CPU): sampled trials at concurrency > 1
give, trial by trial, the same records and kept SFT rows through the real sglang.Engine and a loopback
`sglang.launch_server` as through the reference decoder; a run killed by PID mid-run and resumed ends with
every trial exactly once, every record written before the kill kept."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from npr.cli import main
from tests.hosts import make_env, require_host
from tests.sample_runs import kept_records, sample_argv, trial_keys, write_problems
from tests.sglang_npr.engines import CPU_ENGINE_ARGS, launch_server

pytestmark = [pytest.mark.sglang, pytest.mark.slow]
require_host("sglang")

NUM_PROBLEMS, NUM_TRIALS = 4, 3


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    from npr.tiny import save_tiny

    return save_tiny(tmp_path_factory.mktemp("tiny"), seed=0)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_problems(tmp_path_factory.mktemp("data") / "problems.parquet", NUM_PROBLEMS)


@pytest.fixture(scope="module")
def reference(model_path, data, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref")
    assert main(sample_argv(data, model_path, out, "reference", num_trials=NUM_TRIALS)) == 0
    kept = kept_records(out)
    assert 0 < len(kept["kept"]) < NUM_PROBLEMS * NUM_TRIALS  # the grader keeps some trials, not all
    assert len(set(kept["kept"].values())) > 1  # and they differ (sampled, not one text copied)
    return kept


@pytest.fixture(scope="module")
def server(model_path, tmp_path_factory):
    with launch_server(model_path, tmp_path_factory.mktemp("server") / "server.log", make_env()) as url:
        yield url


def test_sglang_engine_samples_what_the_reference_decoder_samples(model_path, data, reference, tmp_path, capsys):
    engine_args = {**CPU_ENGINE_ARGS, "attention_backend": "npr"}
    argv = sample_argv(data, model_path, tmp_path, "sglang", num_trials=NUM_TRIALS,
                       extra=["--engine-args", json.dumps(engine_args)])
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["num_trials"] == NUM_PROBLEMS * NUM_TRIALS and summary["samples_per_s"] > 0
    assert kept_records(tmp_path) == reference


def test_server_samples_what_the_reference_decoder_samples(server, model_path, data, reference, tmp_path):
    assert main(sample_argv(data, model_path, tmp_path, "server", num_trials=NUM_TRIALS,
                            extra=["--url", server])) == 0
    assert kept_records(tmp_path) == reference


def test_killed_run_resumes_with_every_trial_once(server, model_path, tmp_path):
    num_problems, num_trials = 12, 4
    data = write_problems(tmp_path / "problems.parquet", num_problems)
    whole = tmp_path / "whole"
    assert main(sample_argv(data, model_path, whole, "server", num_trials=num_trials, extra=["--url", server])) == 0
    argv = sample_argv(data, model_path, tmp_path / "killed", "server", num_trials=num_trials, concurrency=4,
                       extra=["--url", server])
    records = tmp_path / "killed" / "records.jsonl"
    proc = subprocess.Popen([sys.executable, "-c", f"import sys; from npr.cli import main; sys.exit(main({argv!r}))"],
                            env=make_env(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if records.exists() and len(trial_keys(records)) >= 6:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be killed mid-run"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    before = records.read_bytes()
    written = trial_keys(records)
    assert 6 <= len(written) < num_problems * num_trials
    assert main(argv) == 0
    after = trial_keys(records)
    assert records.read_bytes().startswith(before)  # nothing written before the kill is lost or rewritten
    assert sorted(after) == sorted({(k, j) for k, j in after}) and len(after) == num_problems * num_trials
    assert kept_records(tmp_path / "killed") == kept_records(whole)
