"""Protocol pieces: npr.forkjoin imports no torch; Trajectory round-trips JSON and gives the layout
(refused forks included); the slot manager checks ownership and hands out low ids first."""

import json
import subprocess
import sys

import pytest

from npr.errors import PoolExhaustedError
from npr.forkjoin import SlotManager, Trajectory, derive_seed


def test_importing_the_protocol_leaves_torch_out():
    code = ("import sys, npr.forkjoin, npr.forkjoin.contract, npr.templates, npr.schema, npr.errors; "
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_trajectory_json_round_trip_and_layout(tags, templates):
    prompt = [10, 11, 12]
    response = [tags.guideline_open, tags.plan_open, 20, tags.plan_close, tags.plan_open, 21, tags.plan_close,
                tags.guideline_close, 22, 23]
    refused = [len(prompt) + 7]  # the engine declined the fork at that </guideline>
    traj = Trajectory(prompt, response, [-1.0] * len(response), "length",
                      {"total_tokens": 10, "critical_path_tokens": 10, "num_forks": 0, "max_width": 1},
                      refused_forks=refused, notes=["fork refused"])
    again = Trajectory.from_json(traj.to_json())
    assert again == traj and json.loads(traj.to_json())["refused_forks"] == refused
    layout = again.layout(tags)
    assert layout.num_forks == 0 and layout.position_ids.tolist() == list(range(13))
    assert [i.name for i in layout.issues] == ["fork_refused"]
    without = Trajectory.from_dict({**traj.to_dict(), "refused_forks": []}).layout(tags)
    assert without.num_forks == 1  # without the record a trainer would read a fork that never happened


@pytest.mark.parametrize("bad, match", [
    (dict(logprobs=[-1.0]), "one log-prob per response token"),
    (dict(finish_reason="done"), "finish_reason"),
    (dict(stats={}), "stats lack"),
])
def test_trajectory_refuses_inconsistent_records(bad, match):
    fields = dict(prompt_ids=[1], token_ids=[2, 3], logprobs=[-1.0, -2.0], finish_reason="stop",
                  stats={"total_tokens": 2, "critical_path_tokens": 2, "num_forks": 0, "max_width": 1})
    with pytest.raises(ValueError, match=match):
        Trajectory(**{**fields, **bad})
    with pytest.raises(ValueError, match="unknown Trajectory fields"):
        Trajectory.from_dict({**fields, "extra": 1})


def test_slot_manager_ownership():
    slots = SlotManager(4)
    a, b = object(), object()
    first = slots.alloc(3, a)
    assert first == [0, 1, 2] and slots.num_free == 1
    with pytest.raises(PoolExhaustedError, match="2 slots wanted, 1 free of 4"):
        slots.alloc(2, b)
    with pytest.raises(RuntimeError, match="owned by"):
        slots.free([0], b)
    slots.transfer([1], a, b)
    with pytest.raises(RuntimeError, match="moved from"):
        slots.transfer([1], a, b)
    slots.free([0, 2], a)
    slots.free([1], b)
    assert slots.num_used == 0 and slots.alloc(1, a) == [0]  # lowest id first: the K/V tensor stays small
    assert SlotManager().can_alloc(10**9) and SlotManager().num_free is None


def test_seeds_depend_on_every_coordinate():
    base = derive_seed(0, 0, 0, 0)
    assert len({base, derive_seed(1, 0, 0, 0), derive_seed(0, 1, 0, 0), derive_seed(0, 0, 1, 0),
                derive_seed(0, 0, 0, 1)}) == 5
    assert derive_seed(5, 3, 2, 1) == derive_seed(5, 3, 2, 1) < 2**63
