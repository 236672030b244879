"""Every verl command the docs print works as printed: each `python -m verl.trainer...`, `torchrun ... -m
verl.trainer...` and `bash recipes/<stage>/run.sh` command in the READMEs, the recipe YAML headers and the
docstrings is run from the repository root with `--cfg job` appended (Hydra composes the config and prints
it; nothing trains), and exits 0 with the command's own overrides in the printed config. A torchrun command
runs with one process instead of the printed count (the composition is the same). A relative
`--config-path` fails this test: Hydra resolves it against verl's package, not the shell's folder."""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.hosts import make_env, require_host

pytestmark = [pytest.mark.verl, pytest.mark.slow]
require_host("verl")

ROOT = Path(__file__).resolve().parents[2]
TRAINER = re.compile(r"(python -m|torchrun\b.*?-m) verl\.trainer\.")
RUN_SH = re.compile(r"\bbash recipes/(npr_zero|npr_rl|npr_beta)/run\.sh\b")


def _joined(lines: list[str]) -> list[str]:
    """Lines with their backslash continuations joined."""
    out, pending = [], ""
    for line in lines:
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        out.append(pending + line)
        pending = ""
    return out


def _strip_comment(command: str) -> str:
    return re.sub(r"\s+#(?=\s).*$", "", command).strip()


def markdown_commands(text: str) -> list[str]:
    blocks = re.findall(r"```(?:bash|sh)\n(.*?)```", text, flags=re.S)
    lines = _joined([line for block in blocks for line in block.splitlines()])
    return [_strip_comment(line) for line in lines if TRAINER.search(line) or RUN_SH.search(line)]


def yaml_header_commands(text: str) -> list[str]:
    header = [line[1:].strip() for line in text.splitlines() if line.startswith("#")]
    return [_strip_comment(line) for line in _joined(header) if TRAINER.search(line)]


def docstring_commands(text: str) -> list[str]:
    spans = (" ".join(span.split()) for span in re.findall(r"`([^`]+)`", text))
    return [span for span in spans if TRAINER.search(span) and "--config-path" in span]


def printed_commands() -> list[tuple[str, str]]:
    """(where, command) for every verl command the repository prints."""
    found = []
    docs = [ROOT / "README.md", *sorted(ROOT.glob("recipes/*/README.md")), *sorted(ROOT.glob("docs/*.md"))]
    for path in docs:
        found += [(path, c) for c in markdown_commands(path.read_text(encoding="utf-8"))]
    for path in sorted(ROOT.glob("recipes/*/*.yaml")):
        found += [(path, c) for c in yaml_header_commands(path.read_text(encoding="utf-8"))]
    for path in sorted([*ROOT.glob("tests/verl_npr/*.py"), *ROOT.glob("verl_npr/*.py")]):
        if path.name != Path(__file__).name:
            found += [(path, c) for c in docstring_commands(path.read_text(encoding="utf-8"))]
    return [(str(path.relative_to(ROOT)), command) for path, command in found]


COMMANDS = printed_commands()


def test_the_docs_print_the_commands_this_test_runs():
    where = {w for w, _ in COMMANDS}
    for expected in ["recipes/npr_rl/npr_rl.yaml", "recipes/npr_rl/tiny_cpu.yaml", "recipes/npr_zero/npr_zero.yaml",
                     "recipes/npr_zero/tiny_cpu.yaml", "recipes/npr_beta/npr_beta.yaml", "recipes/npr_rl/README.md",
                     "recipes/npr_zero/README.md", "recipes/npr_beta/README.md", "README.md",
                     "tests/verl_npr/test_main_ppo_cpu.py"]:
        assert expected in where, f"no verl command found in {expected}"
    for where, command in COMMANDS:
        path = re.search(r"--config-path\s+(\S+)", command)
        assert path is None or path.group(1).strip('"').startswith("$PWD/"), \
            f"{where}: {command!r} gives a relative --config-path; Hydra resolves it against verl's package"


def _runnable(command: str) -> str:
    if "torchrun" in command or "npr_beta/run.sh" in command:
        command = re.sub(r"--nproc-per-node[ =]\d+", "--nproc-per-node 1", command)
        command = re.sub(r"\bGPUS=\d+", "GPUS=1", command)
        command = command if "GPUS=" in command else f"GPUS=1 {command}"
    return command if "--cfg job" in command else f"{command} --cfg job"


def _get(config: dict, dotted: str):
    for key in dotted.split("."):
        config = config[key]
    return config


@pytest.mark.parametrize("where, command", COMMANDS, ids=[f"{w}:{i}" for i, (w, _) in enumerate(COMMANDS)])
def test_printed_command_composes(where, command):
    # `python` and `torchrun` are this interpreter's, as in an activated environment
    path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    env = make_env({"VERL_USE_EXTERNAL_PLUGINS": None, "PWD": str(ROOT), "PATH": path})
    proc = subprocess.run(["bash", "-c", _runnable(command)], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env=env, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, f"{where}: {command}\nexit {proc.returncode}\n{proc.stderr[-3000:]}"
    config = yaml.safe_load(proc.stdout)
    assert isinstance(config, dict) and ("actor_rollout_ref" in config or "model" in config), proc.stdout[:2000]
    for word in shlex.split(os.path.expandvars(command.replace("$PWD", str(ROOT)))):
        match = re.fullmatch(r"([a-z_]+(?:\.[a-z_]+)+)=(.+)", word)
        if match and match.group(2) != "...":
            assert str(_get(config, match.group(1))) == match.group(2), f"{where}: {word} not in the composed config"
