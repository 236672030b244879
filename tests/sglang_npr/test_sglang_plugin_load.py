"""SGLang's real plugin loader (`sglang.srt.plugins.load_plugins`, group `sglang.srt.plugins`) calls our
register() in a fresh process, honours SGLANG_PLUGINS, and stays idempotent when called again."""

import pytest

from tests.hosts import require_host, run_json

pytestmark = pytest.mark.sglang
require_host("sglang")

PROBE = """
import json, sys
from sglang.srt.plugins import load_plugins
load_plugins()
load_plugins()  # idempotent: every SGLang process calls it, some more than once
registration = sys.modules.get("sglang_npr.registration")
print(json.dumps({"loaded": registration is not None,
                  "registered": bool(registration and registration.is_registered())}))
"""


@pytest.mark.parametrize("whitelist", [None, "npr"])
def test_load_plugins_calls_our_register(whitelist):
    assert run_json(PROBE, env={"SGLANG_PLUGINS": whitelist}) == {"loaded": True, "registered": True}


def test_sglang_plugins_whitelist_can_exclude_it():
    assert run_json(PROBE, env={"SGLANG_PLUGINS": "some_other_plugin"}) == {"loaded": False, "registered": False}
