"""`npr inspect`: one response as a terminal tree and as a standalone HTML page that shows every branch
of every block side by side — checked in headless Chromium (Debian's `chromium`), which lays the page
out and runs its check script. Without chromium the browser test skips, unless NPR_REQUIRE_CHROMIUM=1
(set by .ci/run, which installs it) turns the skip into a failure."""

import json
import os
import re
import shutil
import subprocess

import pytest

from npr.eval import load_record, render_html, render_terminal

TEXT = ("<guideline><plan>1: try small cases</plan><plan>2: use algebra</plan></guideline>"
        "<step>\n1: n=1 gives 2, n=2 gives 4</step><step>\n2: 2n by linearity</step>"
        "<takeaway>both say 2n</takeaway>"
        "<guideline><plan>1: check n=3</plan><plan>2: check n=4</plan><plan>3: check n=0</plan></guideline>"
        "<step>\n1: six</step><step>\n2: eight</step><step>\n3: zero &amp; <b>bold</b></step>"
        "<takeaway>consistent</takeaway>So the answer is \\boxed{2n}.")
RECORD = {"benchmark": "aime25", "mode": "parallel", "problem_id": "7", "sample": 1, "correct": True,
          "answer": "2n", "reference": "2n", "total_tokens": 60, "critical_path_tokens": 41, "widths": [2, 3],
          "finish_reason": "stop", "text": TEXT}
STEPS = ["n=1 gives 2, n=2 gives 4", "2n by linearity", "six", "eight", "zero &amp; <b>bold</b>"]


def _write(tmp_path, records):
    path = tmp_path / "samples.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_terminal_tree_shows_every_branch_and_the_answer():
    tree = render_terminal(RECORD)
    assert "block: 2 plans, 2 parallel steps" in tree and "block: 3 plans, 3 parallel steps" in tree
    for step in STEPS:
        assert step in tree
    assert tree.count("takeaway:") == 2 and "\\boxed{2n}" in tree.splitlines()[-2]
    assert "widths [2, 3]" in tree and "correct" in tree.splitlines()[0]


def test_html_is_standalone_and_escapes_text():
    page = render_html(RECORD)
    assert "http://" not in page and "https://" not in page and "<link" not in page  # nothing fetched
    for b, width in ((1, 2), (2, 3)):
        assert f"id='block-{b}' data-width='{width}'" in page
        for i in range(1, width + 1):
            assert f"id='block-{b}-step-{i}'" in page
    assert "zero &amp;amp; &lt;b&gt;bold&lt;/b&gt;" in page  # model text never becomes markup


def test_cli_selects_records_and_writes_html(tmp_path, capsys):
    from npr.cli import main

    other = dict(RECORD, problem_id="8", text="plain answer \\boxed{3}", widths=[])
    path = _write(tmp_path, [other, RECORD])
    html = tmp_path / "view.html"
    assert main(["inspect", str(path), "--problem", "7", "--html", str(html)]) == 0
    out = capsys.readouterr().out
    assert "problem_id 7" in out and html.read_text().startswith("<!DOCTYPE html>")
    assert main(["inspect", str(path), "--index", "5"]) == 2
    assert "--index 5 is out of range; 2 matching record(s)" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"token_ids": [1, 2]}) + "\n")
    assert main(["inspect", str(bad)]) == 2
    assert "has no \"text\"" in capsys.readouterr().err
    assert main(["inspect", str(tmp_path / "absent.jsonl")]) == 2


def test_inspect_on_a_real_eval_record(tmp_path):
    """A record as `npr eval` writes it (the tiny model under a forced structure) renders its branches."""
    from npr.decoding import Decoder, DecodingConfig, SamplingParams, ScriptedStructure
    from npr.tiny import make_tiny_model, make_tiny_tokenizer

    tokenizer = make_tiny_tokenizer()
    decoder = Decoder(make_tiny_model(tokenizer, seed=0), tokenizer, DecodingConfig(max_new_tokens=64))
    [result] = decoder.generate([[5, 6, 7]], SamplingParams(temperature=0.0), script=ScriptedStructure([[3, 5, 2]]))
    record = load_record(str(_write(tmp_path, [{"text": result.text, "widths": [3]}])))
    page = render_html(record)
    assert all(f"id='block-1-step-{i}'" in page for i in (1, 2, 3))


def _chromium() -> str | None:
    found = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
    if found is None:
        message = "headless Chromium absent: apt-get install chromium (Debian)"
        if os.environ.get("NPR_REQUIRE_CHROMIUM") == "1":
            pytest.fail(message + "; NPR_REQUIRE_CHROMIUM=1 says this machine must have it")
        pytest.skip(message)
    return found


def test_html_renders_in_headless_chromium_with_branches_side_by_side(tmp_path):
    browser = _chromium()
    page = tmp_path / "view.html"
    page.write_text(render_html(RECORD))
    proc = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1280,900",
                           f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", page.as_uri()],
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = proc.stdout
    body = re.search(r"<body[^>]*>", dom).group(0)
    # set by the page's script after layout: every branch rendered, each block's branches in one row
    assert 'data-rendered-branches="5"' in body and 'data-side-by-side="true"' in body, body
    for step in STEPS[:-1]:
        assert step in dom
    assert "zero &amp;amp; &lt;b&gt;bold&lt;/b&gt;" in dom and "<b>" not in dom  # shown as text, not markup
