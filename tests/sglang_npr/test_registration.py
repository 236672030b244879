"""Registration with the real SGLang, each case in a fresh interpreter: `launch_server --help` lists npr;
register() twice (and load_plugins() again) changes nothing; an unsupported SGLang version fails naming
installed and supported versions and leaves "npr" unregistered; CPU hooks only without CUDA."""

import subprocess
import sys

import pytest

from sglang_npr.backend import INNER_ENV, NprBackendError, inner_backend_name
from tests.hosts import make_env, require_host, run_json

pytestmark = pytest.mark.sglang
require_host("sglang")

STATE = """
import json, sys
from sglang.srt.plugins import load_plugins
from sglang.srt.plugins.hook_registry import HookRegistry
from sglang.srt.server_args import ATTENTION_BACKEND_CHOICES
from sglang.srt.layers.attention.attention_registry import ATTENTION_BACKENDS

def state():
    import sglang_npr.registration as reg
    from sglang_npr.backend import create_npr_backend
    targets = reg.installed_patches()
    return {"choices": ATTENTION_BACKEND_CHOICES.count("npr"), "factory": ATTENTION_BACKENDS.get("npr") is create_npr_backend,
            "targets": targets, "hooks": {t: len(HookRegistry._hooks[t]) for t in targets},
            "applied": all(t in HookRegistry._patched for t in targets)}
"""

TWICE = STATE + """
load_plugins()
first = state()
import sglang_npr
sglang_npr.register()
sglang_npr.register()
load_plugins()
HookRegistry.apply_hooks()
print(json.dumps({"first": first, "again": state()}))
"""


def test_register_twice_is_a_no_op():
    out = run_json(TWICE)
    assert out["first"] == out["again"]
    first = out["first"]
    assert first["choices"] == 1 and first["factory"] and first["applied"]
    assert set(first["hooks"].values()) == {1}
    names = " ".join(first["targets"])
    assert "Scheduler.get_init_info" in names and "TokenizerManager._create_tokenized_object" in names
    # this machine has no CUDA: the two CPU compatibility hooks are installed, and only then
    assert "RotaryEmbedding.__init__" in names and "release_memory_occupation" in names


UNSUPPORTED = """
import json
import npr.versions
npr.versions.installed_version = lambda dist: "0.4.6" if dist == "sglang" else None
import sglang_npr
try:
    sglang_npr.register()
    error = None
except Exception as exc:
    error = f"{type(exc).__name__}: {exc}"
from sglang.srt.server_args import ATTENTION_BACKEND_CHOICES
print(json.dumps({"error": error, "registered": sglang_npr.is_registered(), "choice": "npr" in ATTENTION_BACKEND_CHOICES}))
"""


def test_unsupported_sglang_version_fails_loudly():
    out = run_json(UNSUPPORTED, env={"NPR_SKIP_VERSION_CHECK": None})
    assert out["error"].startswith("HostVersionError: sglang 0.4.6 is installed")
    assert "supports sglang>=0.5.23,<0.6" in out["error"]
    assert out == {**out, "registered": False, "choice": False}


@pytest.mark.slow
def test_launch_server_help_lists_npr():
    proc = subprocess.run([sys.executable, "-m", "sglang.launch_server", "--help"], capture_output=True, text=True,
                          timeout=300, env=make_env(), stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    help_text = " ".join(proc.stdout.split())
    start = help_text.index("--attention-backend")
    assert "npr" in help_text[start:start + 1500].replace(",", " ").replace("{", " ").replace("}", " ").split()


def test_inner_backend_choice():
    assert inner_backend_name("cpu", env={}) == "torch_native"
    assert inner_backend_name("cuda", env={}) == "flashinfer"
    assert inner_backend_name("cuda", env={INNER_ENV: "fa3"}) == "fa3"
    with pytest.raises(NprBackendError, match="choose one of"):
        inner_backend_name("cuda", env={INNER_ENV: "flex_attention"})
    with pytest.raises(NprBackendError, match="needs a GPU"):
        inner_backend_name("cpu", env={INNER_ENV: "triton"})
