"""Wire protocol of NPR requests: custom_params["npr"] parses into validated NprParams; every bad value
fails with a message naming it and the fix; the client-side encoder round-trips through the parser."""

import pytest

from sglang_npr.client import NprServerError, npr_sampling_params, require_npr_server
from npr.wire import FIELDS, NprParams, NprParamsError, encode_npr_params, parse_npr_params


def test_absent_or_none_means_plain_request():
    assert parse_npr_params(None) is None
    assert parse_npr_params({}) is None
    assert parse_npr_params({"other": 1}) is None
    assert parse_npr_params({"npr": None}) is None


def test_defaults_and_resolution():
    params = parse_npr_params({"npr": {}})
    assert params == NprParams()
    resolved = params.resolved(request_max_new_tokens=40)
    assert (resolved.max_new_tokens, resolved.max_total_tokens) == (40, 5 * 40)
    explicit = parse_npr_params({"npr": {"max_new_tokens": 10, "max_total_tokens": 25}}).resolved(40)
    assert (explicit.max_new_tokens, explicit.max_total_tokens) == (10, 25)


def test_encode_round_trip_keeps_scalars_only():
    wire = encode_npr_params(max_branches=3, max_new_tokens=64, script=[[3, 5], [4, 4, 6]])
    assert all(isinstance(v, (int, str)) for v in wire.values())  # survives msgpack IPC as well as pickle
    assert wire["script"] == "[[3,5],[4,4,6]]"
    params = parse_npr_params({"npr": wire})
    assert params.script == ((3, 5), (4, 4, 6)) and params.max_branches == 3 and params.max_new_tokens == 64


def test_script_as_lists_is_accepted_too():
    assert parse_npr_params({"npr": {"script": [[2], [1, 0]]}}).script == ((2,), (1, 0))


@pytest.mark.parametrize("raw, needle", [
    (3, "must be a dict of limits"),
    ({"max_branch": 2}, "unknown key(s) ['max_branch']"),
    ({"max_branches": 0}, "'max_branches'] must be an int >= 1, got 0"),
    ({"max_new_tokens": "64"}, "'max_new_tokens'] must be an int >= 1, got '64'"),
    ({"max_total_tokens": 2.5}, "'max_total_tokens'] must be an int >= 1, got 2.5"),
    ({"min_fork_budget": -1}, "'min_fork_budget'] must be an int >= 0, got -1"),
    ({"max_branches": True}, "got True"),
    ({"script": "[[3,"}, "must be JSON text"),
    ({"script": "[3, 5]"}, "must be a list of blocks"),
    ({"script": "[]"}, "has no block"),
    ({"script": "[[]]"}, "block 0 has 0 branches"),
    ({"script": "[[1,2,3]]", "max_branches": 2}, "block 0 has 3 branches [1, 2, 3]"),
    ({"script": "[[1,-2]]"}, "branch length -2"),
])
def test_bad_values_name_the_value_and_fix(raw, needle):
    with pytest.raises(NprParamsError) as info:
        parse_npr_params({"npr": raw})
    assert needle in str(info.value)
    assert isinstance(info.value, ValueError)  # SGLang turns ValueError at intake into a client error


def test_unknown_key_lists_the_valid_ones():
    with pytest.raises(NprParamsError, match="valid keys") as info:
        parse_npr_params({"npr": {"branches": 2}})
    assert all(name in str(info.value) for name in FIELDS)


def test_missing_budget_fails_at_resolution():
    with pytest.raises(NprParamsError, match="needs max_new_tokens"):
        parse_npr_params({"npr": {}}).resolved(None)


def test_client_sampling_params_copy():
    base = {"max_new_tokens": 8, "custom_params": {"keep": 1}}
    out = npr_sampling_params(base, max_branches=2, script=[[1, 2]])
    assert base == {"max_new_tokens": 8, "custom_params": {"keep": 1}}
    assert out["custom_params"] == {"keep": 1, "npr": {"max_branches": 2, "script": "[[1,2]]"}}
    with pytest.raises(NprParamsError):
        npr_sampling_params(base, max_branches=1, script=[[1, 2]])


def test_client_refuses_a_server_without_the_plugin():
    with pytest.raises(NprServerError, match="does not run the NPR plugin"):
        require_npr_server({"attention_backend": "flashinfer", "version": "0.5.23"})
    with pytest.raises(NprServerError, match="fork-join is off"):
        require_npr_server({"npr": {"fork_join_enabled": False, "missing": ["not built"]}})
    info = {"fork_join_enabled": True}
    assert require_npr_server({"npr": info}) is info
