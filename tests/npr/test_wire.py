"""The answer's meta_info["npr"] record has one builder and one parser (`npr.wire`): a record made from a
Trajectory parses back to it, a SGLang output turns into the same Trajectory, and a record that is not this
plugin's fails with a message naming what is missing."""

import re

import pytest

from npr.forkjoin import Trajectory
from npr.wire import NprRecord, NprRecordError, make_npr_record, parse_npr_record, trajectory_from_output

STATS = {"total_tokens": 7, "critical_path_tokens": 5, "num_forks": 1, "max_width": 2}


def trajectory(**over):
    values = dict(prompt_ids=[1, 2], token_ids=[10, 11, 12, 13, 14, 15, 16], logprobs=[-0.5] * 7,
                  finish_reason="stop", stats=dict(STATS), refused_forks=[9], blocks=[["stop", "length"]],
                  notes=["a note"])
    return Trajectory(**{**values, **over})


def test_record_round_trip():
    traj = trajectory()
    record = make_npr_record(traj)
    assert record == {"stats": STATS, "blocks": [["stop", "length"]], "refused_forks": [9], "notes": ["a note"],
                      "finish_reason": "stop"}
    assert "positions" not in record
    parsed = parse_npr_record(record)
    assert parsed == NprRecord.of(traj) and parsed.as_dict() == record
    with_positions = make_npr_record(traj, positions=range(2, 9))
    assert with_positions["positions"] == list(range(2, 9))
    assert parse_npr_record(with_positions).positions == tuple(range(2, 9))


def test_an_extended_record_parses_to_its_core():
    record = {**make_npr_record(trajectory()), "is_valid": True, "max_branches": 4}  # verl's extra_fields["npr"]
    assert parse_npr_record(record) == NprRecord.of(trajectory())


@pytest.mark.parametrize("bad,missing", [
    ({"refused_forks": []}, "stats"),
    ({"stats": STATS}, "refused_forks"),
    ({"stats": {"total_tokens": 1}, "refused_forks": []}, "stats.critical_path_tokens"),
    ({"stats": [1, 2], "refused_forks": []}, "stats (a dict)"),
])
def test_malformed_record_names_what_is_missing(bad, missing):
    with pytest.raises(NprRecordError, match=r"lacks \[.*'" + re.escape(missing) + "'"):
        parse_npr_record(bad)
    with pytest.raises(NprRecordError, match="must be a dict"):
        parse_npr_record([1, 2])
    assert parse_npr_record(None) is None


def sglang_output(traj, record=True, finish="stop"):
    meta = {"output_token_logprobs": [[x, t, None] for x, t in zip(traj.logprobs, traj.token_ids)],
            "finish_reason": {"type": finish}}
    if record:
        meta["npr"] = make_npr_record(traj)
    return {"output_ids": list(traj.token_ids), "meta_info": meta}


def test_trajectory_from_output_is_the_engine_trajectory():
    traj = trajectory()
    assert trajectory_from_output(traj.prompt_ids, sglang_output(traj)) == traj
    cut = trajectory(finish_reason="length")
    assert trajectory_from_output(cut.prompt_ids, sglang_output(cut, finish="length")).finish_reason == "length"


def test_plain_request_is_a_sequence_that_never_forked():
    traj = trajectory()
    got = trajectory_from_output(traj.prompt_ids, sglang_output(traj, record=False))
    assert got.stats == {"total_tokens": 7, "critical_path_tokens": 7, "num_forks": 0, "max_width": 1}
    assert (got.refused_forks, got.blocks, got.notes) == ([], [], [])


def test_missing_logprobs_fail_with_the_fix():
    out = sglang_output(trajectory())
    out["meta_info"]["output_token_logprobs"] = []
    with pytest.raises(NprRecordError, match="0 log-probs for 7 output ids; the request needs return_logprob=True"):
        trajectory_from_output([1, 2], out)
