"""Property tests: on arbitrary text and tag soup the reward returns a number in range and never raises."""

import asyncio

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from npr.schema import TAG_STRINGS
from reward import compute_score, extract_answer, format_score, last_boxed
from reward.verify import clear_cache

PIECES = list(TAG_STRINGS) + [
    "\\boxed{", "\\boxed ", "\\fbox{", "{", "}", "\\{", "\\}", "\n", "1:", "2:", "42", " ", "$", "\\frac{1}{2}",
    "<", ">", "</", "<step", "answer is ", "Answer: ", "(B)", "x=", "\\%", "^{", "\\sqrt", "\\\\",
]
tag_soup = st.lists(st.one_of(st.sampled_from(PIECES), st.text(max_size=6)), max_size=80).map("".join)
texts = st.one_of(st.text(max_size=300), tag_soup)
references = st.one_of(
    st.sampled_from(["42", "B", "(C)", "\\frac{1}{2}", "True", "x=3", "[1,2)", "50\\%", ""]),
    st.text(max_size=12), st.integers(), st.floats(), st.none(), st.lists(st.text(max_size=6), max_size=3),
)
FUZZ = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(text=texts, reference=references, stage=st.sampled_from(["zero", "papo"]))
def test_reward_is_in_range_and_never_raises(text, reference, stage):
    result = compute_score("fuzz", text, reference, {"options": ["a", "b"]}, stage=stage, timeout_s=2.0)
    score = result["score"]
    assert -1.0 <= result["format_score"] <= 0.0
    assert result["is_valid"] == (result["format_score"] == 0.0) == (result["violations"] == "")
    if stage == "papo" or result["is_valid"]:
        assert score in (1.0, -1.0)
    else:
        assert -2.0 <= score < -1.0


@FUZZ
@given(text=texts)
def test_format_and_extraction_are_total(text):
    score, violations = format_score(text)
    assert -1.0 <= score <= 0.0 and (score == 0.0) == (violations == [])
    assert len(set(violations)) == len(violations)
    boxed = last_boxed(text)
    assert boxed is None or boxed in text
    answer = extract_answer(text)
    assert answer.source in ("boxed", "phrase", "none")


@FUZZ
@given(prefix=tag_soup, answer=st.text(alphabet="0123456789", min_size=1, max_size=6))
def test_a_final_box_after_the_last_takeaway_is_the_answer(prefix, answer):
    text = prefix + "</takeaway>\nSo \\boxed{" + answer + "}."
    assert extract_answer(text).text == answer


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=st.lists(st.tuples(texts, st.sampled_from(["42", "B", "\\frac{1}{2}", "x=3"])), min_size=1, max_size=6))
def test_threads_and_asyncio_give_the_sequential_results(batch):
    boxed = [(text + "\\boxed{" + ref + "}", ref) for text, ref in batch]  # make math-verify do work

    def score(item):
        return compute_score("fuzz", item[0], item[1], stage="zero", timeout_s=2.0)

    clear_cache()
    expected = [score(item) for item in boxed]

    async def on_loop():
        loop = asyncio.get_running_loop()
        clear_cache()
        inline = [score(item) for item in boxed]  # on the loop's own thread
        clear_cache()
        in_threads = await asyncio.gather(*(loop.run_in_executor(None, score, item) for item in boxed))
        return inline, list(in_threads)

    inline, in_threads = asyncio.run(on_loop())
    assert inline == expected and in_threads == expected


# Degenerate rollouts (long runs of one unit, as an RL policy in collapse writes them) are scored in a child
# process: a hang fails the test at the deadline instead of hanging the suite. The deadline is generous
# (about 100x what linear code needs on 2 busy cores); quadratic code needed minutes for these sizes.
DEADLINE_S = 240
_CHILD = r"""
import json, sys
from hypothesis import HealthCheck, given, settings, strategies as st
from reward import check_format, compute_score, extract_answer

UNITS = json.loads(sys.argv[1])
runs = st.lists(st.tuples(st.sampled_from(UNITS), st.integers(1, 20_000)), min_size=1, max_size=4)

def score(parts):
    print(json.dumps(parts), file=sys.stderr, flush=True)  # the input being scored, for a failure report
    text = "".join(unit * count for unit, count in parts)
    extract_answer(text)
    check_format(text)
    result = compute_score("fuzz", text, "42", stage="zero", timeout_s=0.5)
    assert -2.0 <= result["score"] <= 1.0

@settings(max_examples=int(sys.argv[2]), deadline=None, database=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
@given(runs)
def fuzz(parts):
    score(parts)

for parts in json.loads(sys.argv[3]):
    score(parts)
fuzz()
print("done", file=sys.stderr)
"""
UNITS = ["\\boxed{", "\\boxed ", "\\fbox{", "{", "}", "\\{", "(", ")", "((", "))", "</plan>", "<plan>", "<step>",
         "</step>", "<guideline>", "</guideline>", "<takeaway>", "</takeaway>", "\\text{", "answer:", "answer is ",
         "\n", " ", " .", "$", "\\", "1:", "x", "\\frac{1}{2}", "50\\%", "(A) or "]
# The reproductions of issue #13, scaled so that quadratic code needs over 10 minutes each (the issue
# measured 247 s for 30k boxes, 15 s for 5k unclosed boxes in a rollout, 46 s for 100k stray </plan>).
ISSUE_CASES = [
    [["\\boxed{", 50_000]],
    [["<guideline><plan>1: a</plan></guideline><step>1: b</step><takeaway>c</takeaway>", 1],
     ["So \\boxed{", 40_000]],
    [["<guideline><plan>1: a", 1], ["</plan>", 400_000], ["</guideline>", 1]],
    [["<guideline><plan>1: ", 1], ["<step>x", 100_000]],
]


def test_degenerate_rollouts_finish_within_a_generous_deadline():
    import json
    import subprocess
    import sys

    cmd = [sys.executable, "-c", _CHILD, json.dumps(UNITS), "40", json.dumps(ISSUE_CASES)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=DEADLINE_S, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        stderr = exc.stderr.decode() if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        last = stderr.strip().splitlines()[-1:] or ["(nothing)"]
        raise AssertionError(f"scoring did not finish in {DEADLINE_S} s; last input (unit, repeats): {last[0]}")
    assert proc.returncode == 0 and proc.stderr.rstrip().endswith("done"), proc.stderr[-3000:]
