"""Ctrl-C in `npr sample` and `npr eval`: a child process gets SIGINT (to its whole process group, as a
terminal sends it) once some records are written; it exits 130 with one line saying how many records its
JSONL keeps and that a rerun resumes, and no traceback."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from npr.cli.interrupt import count_records

ROOT = Path(__file__).resolve().parents[2]
NUM_PROBLEMS = 300  # far more than a run does before the interrupt
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from npr.tiny import save_tiny

    return save_tiny(tmp_path_factory.mktemp("tiny"))


def interrupt_after_records(argv: list[str], records: Path, tmp_path: Path) -> tuple[int, str]:
    """Run `npr ARGV` in a child, SIGINT its process group once `records` holds 2 records; (exit, stderr)."""
    err_path = tmp_path / "stderr.txt"
    with open(err_path, "w") as err, open(tmp_path / "stdout.txt", "w") as out:
        proc = subprocess.Popen([sys.executable, "-c", "import sys; from npr.cli import main; sys.exit(main(sys.argv[1:]))",
                                 *argv], stdout=out, stderr=err, stdin=subprocess.DEVNULL, cwd=ROOT,
                                start_new_session=True)
        try:
            deadline = time.time() + 300
            while count_records(str(records)) < 2:
                assert proc.poll() is None, f"exited {proc.returncode} early: {err_path.read_text()[-3000:]}"
                assert time.time() < deadline, "no records after 300 s"
                time.sleep(0.2)
            os.killpg(proc.pid, signal.SIGINT)
            code = proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    return code, err_path.read_text()


def check_interrupted(code: int, stderr: str, command: str, records: Path) -> None:
    kept = count_records(str(records))
    assert 2 <= kept < NUM_PROBLEMS
    assert code == 130, stderr[-3000:]
    assert f"npr {command}: interrupted, {kept} records kept in {records}, rerun to resume" in stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr[-3000:]


def test_ctrl_c_in_npr_sample(model, tmp_path):
    from npr.data import convert, write_parquet

    rows = [{"question": f"What is {i}+{i}?", "answer": str(2 * i)} for i in range(NUM_PROBLEMS)]
    write_parquet(convert(rows, "toy", instruction=None).rows, tmp_path / "data.parquet")
    out = tmp_path / "out"
    argv = ["sample", "--data", str(tmp_path / "data.parquet"), "--model", model, "--out", str(out),
            "--num-trials", "1", "--script", "1,2", "--max-new-tokens", "32", "--device", "cpu",
            "--concurrency", "1"]  # one record per decoder call: a quiet machine cannot finish before the SIGINT
    code, stderr = interrupt_after_records(argv, out / "records.jsonl", tmp_path)
    check_interrupted(code, stderr, "sample", out / "records.jsonl")


def test_ctrl_c_in_npr_eval(model, tmp_path):
    source = tmp_path / "aime.jsonl"
    source.write_text("".join(json.dumps({"question": f"What is {i}+{i}?", "answer": str(2 * i)}) + "\n"
                              for i in range(NUM_PROBLEMS)))
    out = tmp_path / "eval"
    argv = ["eval", "--config", str(ROOT / "recipes" / "eval" / "tiny_cpu.yaml"), f"model={model}",
            f"output_dir={out}", "modes=[parallel]", "n=1", "concurrency=1",
            f"benchmarks=[{{name: aime25, source: {source}}}]"]
    code, stderr = interrupt_after_records(argv, out / "samples.jsonl", tmp_path)
    check_interrupted(code, stderr, "eval", out / "samples.jsonl")
