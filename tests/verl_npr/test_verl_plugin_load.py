"""verl's own entry-point loader (`import verl`, group `verl.plugins`) loads and registers our plugin in a
fresh process, honours VERL_USE_EXTERNAL_PLUGINS, and surfaces a failing register() loudly."""

import pytest

from tests.hosts import require_host, run_json, run_python

pytestmark = pytest.mark.verl
require_host("verl")

PROBE = """
import json, sys
import verl
import verl_npr
print(json.dumps({"loaded": "verl_npr.register_on_import" in sys.modules,
                  "registered": verl_npr.is_registered()}))
"""


@pytest.mark.parametrize("policy", [None, "npr"])
def test_import_verl_loads_and_registers_the_plugin(policy):
    assert run_json(PROBE, env={"VERL_USE_EXTERNAL_PLUGINS": policy}) == {"loaded": True, "registered": True}


@pytest.mark.parametrize("policy", ["none", "some_other_plugin"])
def test_plugin_policy_can_switch_it_off(policy):
    assert run_json(PROBE, env={"VERL_USE_EXTERNAL_PLUGINS": policy}) == {"loaded": False, "registered": False}


def test_a_failing_register_is_logged_although_verl_swallows_it(tmp_path):
    # sitecustomize runs before `import verl`: it narrows the supported range so register() fails.
    (tmp_path / "sitecustomize.py").write_text("import npr.versions\nnpr.versions.SUPPORTED['verl'] = '>=99'\n")
    proc = run_python(PROBE, env={"PYTHONPATH": str(tmp_path), "VERL_USE_EXTERNAL_PLUGINS": None,
                                  "NPR_SKIP_VERSION_CHECK": None})
    assert proc.returncode == 0, proc.stderr[-2000:]  # verl itself carries on without the plugin
    assert '"registered": false' in proc.stdout
    assert "did not register" in proc.stderr and "verl>=99" in proc.stderr
