"""The `launch_server` commands the docs print are the ones the server tests run: `--attention-backend npr`,
and on CPU every flag of tests/sglang_npr/engines.CPU_SERVER_ARGS plus an explicit `--max-total-tokens`
(SGLang's default KV sizing takes the machine's memory). They carry no `--disable-overlap-schedule`:
fork-join runs under SGLang's default overlap scheduler. The README's client request is a valid NPR request."""

import json
import re
import shlex
from pathlib import Path

from npr.wire import parse_npr_params
from tests.sglang_npr.engines import CPU_SERVER_ARGS

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", ROOT / "recipes" / "eval" / "README.md", ROOT / "docs" / "cpu.md"]


def _commands(pattern: str) -> list[tuple[str, str]]:
    out = []
    for path in DOCS:
        text = path.read_text(encoding="utf-8").replace("\\\n", " ")
        for block in re.findall(r"```(?:bash|sh)\n(.*?)```", text, flags=re.S):
            out += [(path.name, line.strip()) for line in block.splitlines() if re.search(pattern, line)]
    return out


def _flags(words: list[str]) -> dict[str, str | None]:
    flags: dict[str, str | None] = {}
    for i, word in enumerate(words):
        if word.startswith("--"):
            value = words[i + 1] if i + 1 < len(words) and not words[i + 1].startswith("--") else None
            flags[word] = value
    return flags


def test_launch_server_commands_match_the_tested_flags():
    commands = _commands(r"-m sglang\.launch_server")
    devices = {("--device", "cpu") in _flags(shlex.split(c)).items() for _, c in commands}
    assert devices == {True, False}, "the docs show one command per device (CPU and GPU)"
    assert {name for name, _ in commands} == {p.name for p in DOCS}
    cpu_flags = _flags(list(CPU_SERVER_ARGS))
    for name, command in commands:
        flags = _flags(shlex.split(command))
        assert flags.get("--attention-backend") == "npr", f"{name}: {command}"
        assert "--disable-overlap-schedule" not in flags, f"{name}: {command}"
        assert "--model-path" in flags
        if flags.get("--device") == "cpu":
            assert {k: flags.get(k) for k in cpu_flags} == cpu_flags, f"{name}: {command} lacks {cpu_flags}"
            assert int(flags["--max-total-tokens"]) > 0, f"{name}: {command}"


def test_the_readme_client_request_is_a_valid_npr_request():
    [(_, curl)] = [c for c in _commands(r"^curl .*/generate") if c[0] == "README.md"]
    body = json.loads(shlex.split(curl)[shlex.split(curl).index("-d") + 1])
    params = parse_npr_params(body["sampling_params"]["custom_params"])
    assert params is not None and params.max_branches == 5
    assert body["text"] and body["sampling_params"]["max_new_tokens"] > 0
