"""Packaging invariants: importing our packages leaves verl, SGLang and hydra out of sys.modules;
register() twice equals register() once; a host version error names installed and supported versions."""

from __future__ import annotations

import os
from importlib import metadata

import pytest

import npr.versions
from packaging.specifiers import SpecifierSet

from npr.versions import SUPPORTED, HostVersionError
from tests.hosts import require_host, run_json

HOST_MODULES = ("verl", "sglang", "hydra")

NO_HOST_IMPORTS = """
import importlib, json, pkgutil, sys
names = ["npr", "npr.schema", "reward", "verl_npr", "verl_npr.registration", "sglang_npr",
         "sglang_npr.registration", "npr.cli", "npr.cli.doctor", "npr.versions"]
for package in ("npr", "reward"):  # the core and the rewards: every public module
    module = importlib.import_module(package)
    names += [info.name for info in pkgutil.walk_packages(module.__path__, package + ".")
              if not any(part.startswith("_") for part in info.name.split("."))]
for name in names:
    importlib.import_module(name)
hosts = sorted(m for m in sys.modules if m.split(".")[0] in %r)
print(json.dumps({"imported": names, "hosts": hosts}))
""" % (HOST_MODULES,)


def test_importing_our_packages_imports_no_host():
    result = run_json(NO_HOST_IMPORTS)
    assert {"npr.schema", "reward", "verl_npr", "sglang_npr", "npr.cli"} <= set(result["imported"])
    assert result["hosts"] == []


def test_doctor_never_imports_a_host_in_process():
    code = (
        "import contextlib, io, json, sys\n"
        "from npr.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    rc = main(['doctor', '--json'])\n"
        f"hosts = sorted(m for m in sys.modules if m.split('.')[0] in {HOST_MODULES!r})\n"
        "print(json.dumps({'rc': rc, 'hosts': hosts}))\n"
    )
    result = run_json(code)
    assert result == {"rc": 0, "hosts": []}


# --- register() twice == once, against the real hosts ------------------------------------------

SNAPSHOT = """
import enum, importlib, json, sys

def canon(obj):
    if isinstance(obj, dict):
        return {str(key): canon(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [canon(item) for item in obj]
    if isinstance(obj, enum.Enum):
        return obj.value
    if callable(obj):
        return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"
    return repr(obj)

REGISTRIES, missing = {}, {}
for label, target in TARGETS.items():  # a registry the installed host lacks is left out, not fatal
    module_name, _, attr_path = target.partition(":")
    try:
        obj = importlib.import_module(module_name)
        for attr in attr_path.split("."):
            obj = getattr(obj, attr)
        REGISTRIES[label] = obj
    except Exception as exc:
        missing[label] = repr(exc)

def snapshot():
    return {name: canon(registry) for name, registry in REGISTRIES.items()}

from %s_npr import is_registered, register
before = snapshot()
register()
once = snapshot()
register()
twice = snapshot()
print(json.dumps({"before": before, "once": once, "twice": twice, "registered": is_registered(),
                  "missing": missing}))
"""

# host -> {label: "module:attribute"} of every registry our register() may add to
HOST_REGISTRIES = {
    "verl": {
        "adv_estimators": "verl.trainer.ppo.core_algos:ADV_ESTIMATOR_REGISTRY",
        "policy_losses": "verl.trainer.ppo.core_algos:POLICY_LOSS_REGISTRY",
        "reward_managers": "verl.experimental.reward_loop.reward_manager.registry:REWARD_MANAGER",
        "agent_loops": "verl.experimental.agent_loop.agent_loop:_agent_loop_registry",
        "attention": "transformers:AttentionInterface._global_mapping",
        "attention_masks": "transformers.masking_utils:AttentionMaskInterface._global_mapping",
    },
    "sglang": {
        "attention_backends": "sglang.srt.layers.attention.attention_registry:ATTENTION_BACKENDS",
        "attention_backend_choices": "sglang.srt.arg_groups.choices:ATTENTION_BACKEND_CHOICES",
        "hooks": "sglang.srt.plugins.hook_registry:HookRegistry._hooks",
    },
}


@pytest.mark.parametrize("host", [pytest.param("verl", marks=pytest.mark.verl),
                                  pytest.param("sglang", marks=pytest.mark.sglang)])
def test_register_twice_equals_once(host):
    require_host(host)  # skips, or fails under NPR_REQUIRE_HOSTS=1
    # verl's own plugin loading is switched off so that register() runs first in the snapshot.
    code = f"TARGETS = {HOST_REGISTRIES[host]!r}\n" + SNAPSHOT % host
    result = run_json(code, env={"VERL_USE_EXTERNAL_PLUGINS": "none"})
    if os.environ.get("NPR_REQUIRE_HOSTS") == "1":  # CI's pinned environment has every registry
        assert result["missing"] == {}
    assert result["registered"] is True
    assert result["twice"] == result["once"]
    for name, registry in result["before"].items():  # register() only adds
        if isinstance(registry, dict):
            assert set(registry) <= set(result["once"][name]), name
        else:
            assert registry == result["once"][name][: len(registry)], name


# --- version errors ------------------------------------------------------------------------------

def _fake_versions(monkeypatch, **versions):
    """Make importlib.metadata report `versions` (None = not installed) for the named dists."""
    real = metadata.version

    def fake(dist):
        if dist in versions:
            if versions[dist] is None:
                raise metadata.PackageNotFoundError(dist)
            return versions[dist]
        return real(dist)

    monkeypatch.setattr(npr.versions.metadata, "version", fake)


@pytest.mark.parametrize("host", ["verl", "sglang"])
@pytest.mark.parametrize("installed", ["0.4.0", "9.0"])
def test_version_error_names_installed_and_supported(monkeypatch, host, installed):
    import importlib
    import sys

    registration = importlib.import_module(f"{host}_npr.registration")
    monkeypatch.setattr(registration._ONCE, "done", False)
    monkeypatch.delenv("NPR_SKIP_VERSION_CHECK", raising=False)
    _fake_versions(monkeypatch, **{host: installed})
    host_was_imported = host in sys.modules
    with pytest.raises(HostVersionError) as err:
        registration.register()
    message = str(err.value)
    assert f"{host} {installed} is installed" in message
    assert SUPPORTED[host] in message
    assert not registration.is_registered()
    assert (host in sys.modules) == host_was_imported  # the check comes before any host import


@pytest.mark.parametrize("host", ["verl", "sglang"])
def test_missing_host_error_says_what_to_install(monkeypatch, host):
    import importlib

    registration = importlib.import_module(f"{host}_npr.registration")
    monkeypatch.setattr(registration._ONCE, "done", False)
    monkeypatch.delenv("NPR_SKIP_VERSION_CHECK", raising=False)
    _fake_versions(monkeypatch, **{host: None})
    with pytest.raises(HostVersionError, match=f"{host} is not installed") as err:
        registration.register()
    assert SUPPORTED[host] in str(err.value)
    assert not registration.is_registered()


def test_extras_and_supported_versions_agree():
    """One source of host versions: pyproject's extras carry exactly npr.versions.SUPPORTED."""
    import tomllib
    from pathlib import Path

    from packaging.requirements import Requirement

    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    for host, spec in SUPPORTED.items():
        [requirement] = [Requirement(r) for r in project["optional-dependencies"][host]]
        assert requirement.name == host and requirement.specifier == SpecifierSet(spec), (host, str(requirement))
