"""Wire protocol of NPR requests: custom_params["npr"] parses into validated NprParams; every bad value
fails with a message naming it and the fix; the client-side encoder round-trips through the parser."""

import pytest

from sglang_npr.client import NprServerError, npr_sampling_params, require_npr_server
from npr.wire import FIELDS, NprParams, NprParamsError, encode_npr_params, parse_npr_params


def test_absent_or_none_means_plain_request():
    assert parse_npr_params(None) is None
    assert parse_npr_params({}) is None
    assert parse_npr_params({"other": 1}) is None


@pytest.mark.parametrize("custom_params, needle", [
    ("npr", "sampling_params['custom_params'] must be a JSON object (a dict"),
    (["npr"], "got array ['npr']"),
    (7, "got number 7"),
    ({"npr": "fork"}, "custom_params['npr'] must be a JSON object of limits (a dict"),
    ({"npr": [4]}, "got array [4]"),
    ({"npr": 4}, "got number 4"),
    ({"npr": None}, "got null None; leave the 'npr' key out for a plain request"),
    ({"npr": True}, "got boolean True"),
])
def test_wrong_json_types_name_the_expected_shape(custom_params, needle):
    """What a client sends instead of a dict (custom_params "npr" once gave HTTP 500 TypeError)."""
    with pytest.raises(NprParamsError) as info:
        parse_npr_params(custom_params)
    assert needle in str(info.value)


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
    (3, "must be a JSON object of limits"),
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


def test_intake_refuses_empty_and_out_of_vocabulary_prompts():
    """The checks every request passes at intake (sglang_npr.patches.request_intake), without a server."""
    from types import SimpleNamespace

    from sglang_npr.patches.request_intake import PromptError, check_prompt

    def request(ids, text=None, **extra):
        return SimpleNamespace(input_ids=ids, input_text=text, input_embeds=None, mm_inputs=None, **extra)

    with pytest.raises(PromptError, match=r"the prompt is empty \(text '' gives 0 tokens\)"):
        check_prompt(request([], text=""), vocab_size=100)
    with pytest.raises(PromptError, match=r"token id 100, outside the model's vocabulary \[0, 100\) \(vocabulary size 100\)"):
        check_prompt(request([3, 100, 7]), vocab_size=100)
    with pytest.raises(PromptError, match="token id -2"):
        check_prompt(request([-2, 5]), vocab_size=100)
    check_prompt(request([0, 99]), vocab_size=100)  # the edges are in the vocabulary
    check_prompt(request(None), vocab_size=100)  # embeddings / multimodal prompts are SGLang's to check
    check_prompt(SimpleNamespace(input_ids=[], input_text=None, input_embeds=[[0.1]], mm_inputs=None), vocab_size=100)
