"""The core imports none of its clients: no module of `npr` imports `reward`, `sglang_npr` or `verl_npr`,
neither when it is imported (every module, in a fresh interpreter) nor by name anywhere in its code (an
import statement or `importlib.import_module("...")` naming one). Engines and graders reach `npr` through
the `npr.engines` / `npr.graders` entry points instead, which this test checks are registered."""

from __future__ import annotations

import ast
import json
import os
import pkgutil
import subprocess
import sys

import npr

CLIENTS = ("reward", "sglang_npr", "verl_npr")
HOSTS = ("verl", "sglang", "hydra")  # DESIGN §2: the core never imports a host either
ROOT = os.path.dirname(npr.__file__)


def npr_modules() -> list[str]:
    names = ["npr"]
    for info in pkgutil.walk_packages([ROOT], prefix="npr."):
        names.append(info.name)
    return sorted(names)


def _is_client(name: str | None) -> bool:
    return bool(name) and name.split(".")[0] in CLIENTS


def client_imports_in(path: str) -> list[str]:
    """'file:line: what' for every import statement (at any depth) or import_module("...") naming a client."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    found = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module or ""]
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) in (
                "import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant):
            names = [str(node.args[0].value)]
        found += [f"{os.path.relpath(path, ROOT)}:{node.lineno}: {name}" for name in names if _is_client(name)]
    return found


def test_the_scan_finds_client_imports(tmp_path):
    """Negative control: the scan sees top-level, nested and dynamic imports of a client, and nothing else."""
    bad = tmp_path / "bad.py"
    bad.write_text("import os\nimport reward.grade\ndef f():\n    from sglang_npr.client import x\n"
                   "    import importlib\n    importlib.import_module('verl_npr.demo')\nimport rewards_of_mine\n")
    assert [line.split(": ")[1] for line in client_imports_in(str(bad))] == ["reward.grade", "sglang_npr.client",
                                                                             "verl_npr.demo"]


def test_no_npr_module_names_a_client_in_an_import():
    found = []
    for folder, _, files in os.walk(ROOT):
        for name in files:
            if name.endswith(".py"):
                found += client_imports_in(os.path.join(folder, name))
    assert found == [], "npr imports its clients by name (inject them or use an entry point):\n" + "\n".join(found)


def test_importing_every_npr_module_loads_no_client():
    modules = npr_modules()
    assert "npr.eval.engines" in modules and "npr.cli.sample" in modules and len(modules) > 30
    code = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        f"print(json.dumps(sorted({{m for m in sys.modules if m.split('.')[0] in {CLIENTS + HOSTS!r}}})))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []


def test_clients_reach_npr_through_entry_points():
    from importlib.metadata import entry_points

    from npr.eval.engines import GROUP as ENGINES
    from npr.graders import GROUP as GRADERS

    engines = {ep.name: ep.value for ep in entry_points(group=ENGINES)}
    graders = {ep.name: ep.value for ep in entry_points(group=GRADERS)}
    assert "sglang" in engines and "reward" in graders, (
        "this environment's metadata predates the npr.engines / npr.graders entry points: reinstall the "
        "package (pip install -e . or bash scripts/setup_env.sh)")
    assert engines["sglang"].startswith("sglang_npr.") and engines["http"].startswith("sglang_npr.")
    assert graders["reward"] == "reward"
