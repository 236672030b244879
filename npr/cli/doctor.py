"""`npr doctor`: versions, whether each host plugin is discoverable and whether the host really loads it.

Hosts are probed in child processes only: this process never imports verl, SGLang or hydra.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from importlib import metadata

from npr.versions import SUPPORTED, installed_version

# distributions in the versions table (read from metadata: never imported here)
PACKAGES = ["torch", "transformers", "tokenizers", "math-verify", "verl", "sglang", "flash-attn"]
CORE_PACKAGES = ["torch", "transformers", "math-verify"]
PROBE_TIMEOUT_S = 180

# host -> (entry-point group, entry-point name, expected target, env var that filters plugins)
ENTRY_POINTS = {
    "verl": ("verl.plugins", "npr", "verl_npr.register_on_import", "VERL_USE_EXTERNAL_PLUGINS"),
    "sglang": ("sglang.srt.plugins", "npr", "sglang_npr:register", "SGLANG_PLUGINS"),
}

# Each probe prints one JSON line. It loads plugins the way the host does, then asks our plugin (named by
# the entry point's target, passed as argv[1]: npr names no plugin module) whether register() ran; on
# failure it calls the plugin package's register() itself to recover the error the host hid.
_PROBE_PRELUDE = """
import importlib, json, sys, traceback
target = sys.argv[1]
package = target.split(":")[0].split(".")[0]
out = {"module_loaded": False, "registered": False, "error": None}
def _err(prefix, exc):
    return prefix + "".join(traceback.format_exception_only(type(exc), exc)).strip()
def _register_again():
    try:
        importlib.import_module(package).register()
    except BaseException as exc:
        out["error"] = _err(package + ".register() raised: ", exc)
"""
PROBES = {
    "verl": _PROBE_PRELUDE + """
try:
    import verl
except BaseException as exc:
    out["error"] = _err("import verl failed: ", exc)
else:
    out["module_loaded"] = target in sys.modules
    reg = sys.modules.get(package + ".registration")
    out["registered"] = bool(reg and reg.is_registered())
    if not out["registered"]:
        _register_again()
print(json.dumps(out))
""",
    "sglang": _PROBE_PRELUDE + """
try:
    from sglang.srt.plugins import load_plugins
    load_plugins()
except BaseException as exc:
    out["error"] = _err("sglang.srt.plugins.load_plugins() failed: ", exc)
else:
    reg = sys.modules.get(package + ".registration")
    out["module_loaded"] = reg is not None
    out["registered"] = bool(reg and reg.is_registered())
    if not out["registered"]:
        _register_again()
print(json.dumps(out))
""",
}


@dataclass
class HostReport:
    name: str
    installed: str | None
    supported: str
    version_ok: bool
    entry_point: str | None  # "group:name -> value" as found in the installed metadata
    entry_point_ok: bool
    loaded: bool | None = None  # None: not probed (host missing or --no-load)
    load_error: str | None = None


@dataclass
class Report:
    python: str
    executable: str
    platform: str
    versions: dict[str, str | None]
    torch_cuda: str
    hosts: dict[str, HostReport]
    problems: list[str] = field(default_factory=list)  # the core is broken
    warnings: list[str] = field(default_factory=list)  # a host is missing or does not load our plugin

    @property
    def core_ok(self) -> bool:
        return not self.problems

    @property
    def is_load_checked(self) -> bool:
        """Whether every installed host with our entry point was probed (False after --no-load)."""
        return all(h.loaded is not None for h in self.hosts.values() if h.installed and h.entry_point_ok)

    @property
    def strict_ok(self) -> bool:
        return self.core_ok and not self.warnings and self.is_load_checked


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")
    # --strict promises the hosts load the plugin, which --no-load does not check: refused together
    checks = parser.add_mutually_exclusive_group()
    checks.add_argument("--strict", action="store_true",
                        help="exit non-zero when a host is missing or does not load the plugin")
    checks.add_argument("--no-load", action="store_true",
                        help="skip the child processes that check the hosts really load the plugins")


def run(args: argparse.Namespace) -> int:
    report = make_report(load=not args.no_load)
    if args.json:
        payload = asdict(report) | {"core_ok": report.core_ok, "strict_ok": report.strict_ok}
        print(json.dumps(payload, indent=2))
    else:
        print(render(report))
    ok = report.strict_ok if args.strict else report.core_ok
    return 0 if ok else 1


def make_report(load: bool = True) -> Report:
    versions = {dist: installed_version(dist) for dist in PACKAGES}
    report = Report(
        python=platform.python_version(), executable=sys.executable,
        platform=f"{platform.system()} {platform.machine()}", versions=versions,
        torch_cuda=_torch_cuda(), hosts={},
    )
    if sys.version_info < (3, 10):
        report.problems.append(f"Python {report.python} is too old: native-parallel-reasoner needs >=3.10.")
    for dist in CORE_PACKAGES:
        if versions[dist] is None:
            report.problems.append(f"{dist} is not installed: pip install -e . (or bash scripts/setup_env.sh).")
    if report.torch_cuda.startswith("error"):
        report.problems.append(f"torch does not import: {report.torch_cuda}")
    for host in ENTRY_POINTS:
        report.hosts[host] = _check_host(host, versions[host])
    if load:
        probed = [h for h in report.hosts.values() if h.installed and h.entry_point_ok]
        with ThreadPoolExecutor(max_workers=2) as pool:
            for host, (loaded, error) in zip(probed, pool.map(lambda h: probe_host(h.name), probed)):
                host.loaded, host.load_error = loaded, error
    for host in report.hosts.values():
        report.warnings.extend(_host_warnings(host))
    return report


def _torch_cuda() -> str:
    try:
        import torch
    except Exception as exc:  # doctor must report a broken torch, not crash on it
        return f"error: {type(exc).__name__}: {exc}"
    if torch.cuda.is_available():
        return f"available: {torch.version.cuda}, {torch.cuda.device_count()} device(s)"
    return "not available" + (f"; torch built with CUDA {torch.version.cuda}" if torch.version.cuda else "; CPU build")


def _check_host(host: str, installed: str | None) -> HostReport:
    from packaging.specifiers import SpecifierSet
    from packaging.version import Version

    group, name, expected, _ = ENTRY_POINTS[host]
    found = [ep for ep in metadata.entry_points(group=group) if ep.name == name]
    values = sorted({ep.value for ep in found})
    return HostReport(
        name=host, installed=installed, supported=SUPPORTED[host],
        version_ok=installed is not None and Version(installed) in SpecifierSet(SUPPORTED[host]),
        entry_point=", ".join(f"{group}:{name} -> {value}" for value in values) or None,
        entry_point_ok=values == [expected],
    )


def probe_host(host: str) -> tuple[bool, str | None]:
    """Run the host's own plugin loading in a fresh interpreter. Returns (registered, error or None)."""
    try:
        proc = subprocess.run([sys.executable, "-c", PROBES[host], ENTRY_POINTS[host][2]], capture_output=True, text=True,
                              timeout=PROBE_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return False, f"the {host} probe did not finish in {PROBE_TIMEOUT_S}s"
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        return False, f"the {host} probe exited with {proc.returncode}: " + " | ".join(tail)
    result = json.loads(lines[-1])
    if result["registered"] and result["module_loaded"]:
        return True, None
    if result["error"]:
        return False, result["error"]
    if not result["module_loaded"]:
        return False, f"{host} did not load the npr entry point"
    return False, "the npr entry point was loaded but register() did not complete"


def _host_warnings(host: HostReport) -> list[str]:
    group, name, expected, env_var = ENTRY_POINTS[host.name]
    if host.installed is None:
        return [f"{host.name} is not installed (optional; supported {host.name}{host.supported}). "
                "Install both hosts with `bash scripts/setup_env.sh`; see README "
                "\"Installing verl and SGLang together\"."]
    out = []
    if not host.version_ok:
        out.append(f"{host.name} {host.installed} is installed but NPR supports {host.name}{host.supported}: "
                   f"pip install '{host.name}{host.supported}'.")
    if not host.entry_point_ok:
        seen = host.entry_point or "none"
        out.append(f"entry point {group}:{name} should point to {expected}, found {seen}: reinstall this "
                   "package (pip install -e .) in the same environment as the host; PYTHONPATH alone "
                   "does not register entry points.")
    if host.loaded is False:
        filt = os.environ.get(env_var)
        hint = f" {env_var}={filt!r} is set: unset it or list 'npr' in it." if filt else ""
        out.append(f"{host.name} does not load the npr plugin: {host.load_error.rstrip('.')}.{hint}")
    return out


def render(report: Report) -> str:
    lines = [f"python        {report.python} ({report.executable}; {report.platform})"]
    for dist, version in report.versions.items():
        extra = f"  (CUDA {report.torch_cuda})" if dist == "torch" else ""
        lines.append(f"{dist:<13} {version or 'not installed'}{extra}")
    for host in report.hosts.values():
        if host.installed is None:
            status = "host not installed"
        elif not host.entry_point_ok:
            status = "entry point missing"
        elif host.loaded is None:
            status = "entry point found (load not checked)"
        else:
            status = "loaded and registered" if host.loaded else "NOT loaded"
        lines.append(f"plugin {host.name:<7}{status}  [{host.entry_point or 'no entry point'}]")
    lines += [f"PROBLEM: {p}" for p in report.problems] + [f"warning: {w}" for w in report.warnings]
    verdict = "core OK" if report.core_ok else "core BROKEN"
    if report.warnings:
        hosts = "see warnings for the hosts"
    elif not report.is_load_checked:
        hosts = "host plugin loading not checked (run without --no-load)"
    else:
        hosts = "both hosts load the plugins"
    lines.append(f"{verdict}; {hosts}.")
    return "\n".join(lines)
