"""pass@k against brute-force enumeration; trigger rate, widths and critical paths on hand-built
trajectories (with a negative control: a refused fork is no block), and agreement of the layout-derived
critical path with the reference decoder's own stats."""

import itertools
import math

import pytest

from npr.eval import avg_at_k, pass_at_k, speedup, structure_from_spans, structure_of, summarize_samples
from npr.forkjoin import Trajectory


def brute_pass_at_k(labels, k):
    subsets = list(itertools.combinations(range(len(labels)), k))
    return sum(any(labels[i] for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 6])
def test_pass_at_k_equals_brute_force(n):
    for c in range(n + 1):
        labels = [True] * c + [False] * (n - c)
        for k in range(1, n + 1):
            assert math.isclose(pass_at_k(n, c, k), brute_pass_at_k(labels, k), abs_tol=1e-12), (n, c, k)


def test_pass_at_1_is_avg_and_bad_args_are_clear():
    assert pass_at_k(8, 3, 1) == pytest.approx(avg_at_k([True] * 3 + [False] * 5)) == 3 / 8
    with pytest.raises(ValueError, match="1 <= k <= n"):
        pass_at_k(4, 1, 5)
    with pytest.raises(ValueError, match="0 <= c <= n"):
        pass_at_k(4, 5, 1)


def _traj(prompt, response, refused=()):
    return Trajectory(prompt, response, [0.0] * len(response), "stop",
                      {"total_tokens": len(response), "critical_path_tokens": 0, "num_forks": 0, "max_width": 1},
                      refused_forks=list(refused))


BLOCK2 = ("<guideline> <plan> p </plan> <plan> q </plan> </guideline> "
          "<step> h x x </step> <step> h y </step> <takeaway> t </takeaway>")  # branches of 5 and 4 tokens
BLOCK3 = ("<guideline> <plan> p </plan> <plan> q </plan> <plan> r </plan> </guideline> "
          "<step> h a </step> <step> h b b b </step> <step> h </step> <takeaway> t </takeaway>")  # 4, 6, 3


def test_widths_and_critical_path_of_hand_built_trajectories(sym, tags):
    prompt = sym("P P")
    response = sym(f"a {BLOCK2} m {BLOCK3} \\boxed{{1}}")
    s = structure_of(_traj(prompt, response), tags)
    assert s.widths == (2, 3) and s.max_width == 3 and s.is_triggered
    assert s.total_tokens == len(response)
    assert s.critical_path_tokens == len(response) - (9 - 5) - (13 - 6)

    plain = structure_of(_traj(prompt, sym("a b c \\boxed{1}")), tags)
    assert plain.widths == () and not plain.is_triggered and plain.critical_path_tokens == 4

    one = structure_of(_traj(prompt, sym("<guideline> <plan> p </plan> </guideline> <step> h x </step> "
                                         "<takeaway> t </takeaway> z")), tags)
    assert one.widths == (1,) and not one.is_triggered  # width 1 is a block but not parallelism


def test_refused_fork_is_not_a_block(sym, tags):
    prompt = sym("P P")
    response = sym(f"{BLOCK2} {BLOCK3}")
    close = len(prompt) + response.index(tags.guideline_close)  # the first block's </guideline>
    s = structure_of(_traj(prompt, response, refused=[close]), tags)
    assert s.widths == (3,)
    assert s.critical_path_tokens == len(response) - (13 - 6)


def test_trigger_rate_and_summary_on_records():
    rec = lambda pid, ok, widths, total, crit, batch, wall: dict(  # noqa: E731
        problem_id=pid, correct=ok, format_score=0.0 if widths else -0.5, widths=widths, total_tokens=total,
        critical_path_tokens=crit, batch_id=batch, batch_wall_s=wall, finish_reason="stop")
    records = [rec("a", True, [2, 3], 30, 20, "b1", 2.0), rec("a", False, [], 10, 10, "b1", 2.0),
               rec("b", False, [1], 12, 12, "b2", 1.0), rec("b", True, [4], 40, 15, "b2", 1.0)]
    m = summarize_samples(records, ks=(1, 2))
    assert m["trigger_rate"] == 0.5  # [2,3] and [4]; [] and [1] do not trigger
    assert m["mean_width"] == pytest.approx((2 + 3 + 1 + 4) / 4) and m["max_width"] == 4
    assert m["width_histogram"] == {"1": 1, "2": 1, "3": 1, "4": 1}
    assert m["blocks_per_response"] == 1.0 and m["critical_path_per_response"] == pytest.approx(57 / 4)
    assert m["avg_at_k"] == 0.5 and m["pass_at_k"] == {"1": 0.5, "2": 1.0}
    assert m["tokens_per_s"] == pytest.approx(92 / 3.0)  # each batch's wall time counted once
    seq = [dict(r, batch_id="s" + r["batch_id"], batch_wall_s=3 * r["batch_wall_s"]) for r in records]
    sp = speedup(records, seq)
    assert sp["wall_speedup"] == pytest.approx(3.0) and sp["num_problems"] == 2


def test_structure_agrees_with_decoder_stats(model32, tokenizer, tags):
    from npr.decoding import Decoder, DecodingConfig, SamplingParams, ScriptedStructure

    decoder = Decoder(model32, tokenizer, DecodingConfig(max_new_tokens=64))
    results = decoder.generate([[5, 6, 7], [8, 9]], SamplingParams(temperature=0.0),
                               script=[ScriptedStructure([[3, 5], [2, 4, 1]]), ScriptedStructure([[6, 1, 2, 3]])])
    for r in results:
        s = structure_of(r.trajectory(), tags)
        assert s.critical_path_tokens == r.stats["critical_path_tokens"]
        assert s.max_width == r.stats["max_width"] and len(s.widths) == r.stats["num_forks"]
    assert structure_of(results[0].trajectory(), tags).widths == (2, 3)


def test_spans_helper():
    assert structure_from_spans(10, [[(1, 3), (3, 7)]]).critical_path_tokens == 8
