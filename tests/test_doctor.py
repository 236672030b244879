"""`npr doctor` reports what is really installed: versions from package metadata and, for each installed
host, whether our plugin is discoverable and actually loaded by the host (errors the hosts swallow too)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from npr.cli.doctor import ENTRY_POINTS, PACKAGES
from npr.versions import installed_version
from tests.hosts import make_env

HOSTS = list(ENTRY_POINTS)


def run_npr(*args: str, env: dict[str, str | None] | None = None) -> subprocess.CompletedProcess:
    """Run the installed `npr` console script (as a user would) in a fresh process."""
    script = Path(sys.executable).with_name("npr")
    cmd = [str(script)] if script.exists() else [sys.executable, "-c", "import sys; from npr.cli import main; sys.exit(main())"]
    return subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=600, env=make_env(env),
                          stdin=subprocess.DEVNULL)


def doctor(*args: str, env: dict[str, str | None] | None = None) -> tuple[int, str]:
    """`npr doctor ARGS`: (exit code, stdout); never a traceback."""
    proc = run_npr("doctor", *args, env=env)
    assert not proc.stderr.strip().startswith("Traceback"), proc.stderr[-3000:]
    return proc.returncode, proc.stdout


def doctor_json(*args: str, env=None) -> tuple[int, dict]:
    rc, out = doctor("--json", *args, env=env)
    return rc, json.loads(out)


def installed_hosts() -> list[str]:
    return [host for host in HOSTS if installed_version(host) is not None]


def test_json_report_matches_what_is_installed():
    rc, report = doctor_json(env={"VERL_USE_EXTERNAL_PLUGINS": None, "SGLANG_PLUGINS": None})
    assert rc == 0 and report["core_ok"] is True and report["problems"] == []
    assert report["python"] == ".".join(map(str, sys.version_info[:3]))
    for dist in PACKAGES:
        assert report["versions"][dist] == installed_version(dist), dist
    for host in HOSTS:
        entry = report["hosts"][host]
        assert entry["installed"] == installed_version(host)
        group, name, expected, _ = ENTRY_POINTS[host]
        found = {ep.value for ep in metadata.entry_points(group=group) if ep.name == name}
        assert entry["entry_point_ok"] is (found == {expected})
        if entry["installed"] is None:
            assert entry["loaded"] is None
            assert any(w.startswith(f"{host} is not installed") for w in report["warnings"])
        else:  # this checkout is pip-installed, so an installed host must really load our plugin
            assert (entry["loaded"], entry["load_error"]) == (True, None), entry
    assert report["strict_ok"] is all(report["hosts"][h]["loaded"] for h in HOSTS)
    if os.environ.get("NPR_REQUIRE_HOSTS") == "1":  # CI: both hosts installed and loading the plugins
        assert report["strict_ok"] is True, report["warnings"]


def test_strict_fails_when_a_host_filters_the_plugin_out():
    env = {"VERL_USE_EXTERNAL_PLUGINS": "none", "SGLANG_PLUGINS": "some_other_plugin"}
    rc, report = doctor_json("--strict", env=env)
    assert rc == 1 and report["core_ok"] is True and report["strict_ok"] is False
    for host in installed_hosts():
        assert report["hosts"][host]["loaded"] is False
        env_var = ENTRY_POINTS[host][3]
        assert any(w.startswith(f"{host} does not load") and env_var in w for w in report["warnings"]), report["warnings"]


def test_a_register_error_swallowed_by_the_host_is_reported(tmp_path):
    hosts = installed_hosts()
    if not hosts:
        pytest.skip("neither verl nor SGLang is installed")
    # sitecustomize runs in the doctor and in its probes: the supported ranges exclude what is installed.
    (tmp_path / "sitecustomize.py").write_text(
        "import npr.versions\nnpr.versions.SUPPORTED.update(verl='>=99', sglang='>=99')\n")
    rc, report = doctor_json("--strict", env={"PYTHONPATH": str(tmp_path), "NPR_SKIP_VERSION_CHECK": None,
                                              "VERL_USE_EXTERNAL_PLUGINS": None, "SGLANG_PLUGINS": None})
    assert rc == 1 and report["core_ok"] is True
    for host in hosts:
        entry = report["hosts"][host]
        assert entry["version_ok"] is False and entry["loaded"] is False
        assert f"{host} {entry['installed']} is installed" in entry["load_error"]
        assert f"{host}>=99" in entry["load_error"]


def test_text_report_without_probes():
    rc, out = doctor("--no-load")
    assert rc == 0
    assert out.splitlines()[0].startswith("python")
    assert "core OK" in out.splitlines()[-1]
    for host in HOSTS:
        assert f"plugin {host}" in out


def test_no_load_does_not_claim_the_hosts_load_the_plugins():
    rc, out = doctor("--no-load")
    assert rc == 0 and "load the plugins" not in out and "not checked" in out.splitlines()[-1]
    rc, report = doctor_json("--no-load")
    assert rc == 0 and report["strict_ok"] is False  # nothing was checked, so nothing strict can pass


def test_strict_with_no_load_is_a_usage_error():
    proc = run_npr("doctor", "--strict", "--no-load")
    assert proc.returncode == 2 and "npr doctor: error: argument" in proc.stderr and "--no-load" in proc.stderr
