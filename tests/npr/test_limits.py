"""The four fork-join limits are declared once (`npr.forkjoin.limits.LimitFields`): every config that carries
them derives from it, so a default changed there changes everywhere; each keeps its own validation errors."""

import dataclasses

import pytest

from npr.decoding import DecodingConfig
from npr.forkjoin import Limits
from npr.forkjoin.limits import LIMIT_FIELDS, LimitFields
from npr.wire import NprParams, NprParamsError

BASE = {f.name: f.default for f in dataclasses.fields(LimitFields)}


@pytest.mark.parametrize("cls", [Limits, DecodingConfig, NprParams])
def test_every_limits_config_derives_the_four_fields(cls):
    assert issubclass(cls, LimitFields)
    names = [f.name for f in dataclasses.fields(cls)]
    assert names[:4] == list(LIMIT_FIELDS)  # positional order kept
    defaults = {f.name: f.default for f in dataclasses.fields(cls) if f.name in LIMIT_FIELDS}
    # only max_new_tokens may be loosened to None (resolved per request); the rest is the base's
    assert {k: v for k, v in defaults.items() if k != "max_new_tokens"} == \
        {k: v for k, v in BASE.items() if k != "max_new_tokens"}
    assert defaults["max_new_tokens"] in (BASE["max_new_tokens"], None)


def test_decoding_config_holds_the_same_limits():
    config = DecodingConfig(max_branches=3, max_new_tokens=40, max_total_tokens=90, min_fork_budget=2,
                            stop_token_ids=[7])
    assert config.limits == Limits(3, 40, 90, 2, True, (7,))
    assert config.limit_values() == {"max_branches": 3, "max_new_tokens": 40, "max_total_tokens": 90,
                                     "min_fork_budget": 2}
    assert DecodingConfig().limits == Limits()


@pytest.mark.parametrize("name,value", [("max_branches", 0), ("max_new_tokens", 0), ("max_total_tokens", True),
                                        ("min_fork_budget", -1)])
def test_one_validation_rule_with_each_configs_error(name, value):
    with pytest.raises(ValueError, match=f"^{name} must be an int >= "):
        Limits(**{name: value})
    with pytest.raises(ValueError, match=f"^{name} must be an int >= "):
        DecodingConfig(**{name: value})
    with pytest.raises(NprParamsError, match=rf"custom_params\['npr'\]\['{name}'\] must be an int >= "):
        NprParams(**{name: value})


def test_none_only_where_the_default_is_none():
    with pytest.raises(ValueError, match="max_new_tokens must be an int >= 1, got None"):
        Limits(max_new_tokens=None)
    assert NprParams(max_new_tokens=None).max_new_tokens is None
    assert Limits(max_total_tokens=None).total_budget == BASE["max_branches"] * BASE["max_new_tokens"]


def test_verl_rollout_settings_derive_them_too():
    pytest.importorskip("verl")
    from verl_npr.agent_loop import NprRolloutSettings

    test_every_limits_config_derives_the_four_fields(NprRolloutSettings)
    settings = NprRolloutSettings.from_rollout_config({"response_length": 64, "custom": {"npr": {}}})
    assert (settings.max_branches, settings.min_fork_budget) == (BASE["max_branches"], BASE["min_fork_budget"])
    assert settings.wire() == {"max_branches": BASE["max_branches"], "max_new_tokens": 64, "max_total_tokens": 64,
                               "min_fork_budget": BASE["min_fork_budget"]}
