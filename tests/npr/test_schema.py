"""TagIds, the incremental Tracker and the text parser; text -> ids segment by segment."""

import pytest

from npr.layout import build_layout, render_block_text
from npr.schema import Event, Phase, TagIds, TagTokenError, Tracker
from npr.text import parse_text
from npr.tiny import make_tiny_tokenizer


def test_tag_ids_from_tokenizer(tokenizer, tags):
    assert len(tags.all) == 8
    for name, value in tags.as_dict().items():
        assert tokenizer.convert_ids_to_tokens(value) == {
            "guideline_open": "<guideline>", "guideline_close": "</guideline>", "plan_open": "<plan>",
            "plan_close": "</plan>", "step_open": "<step>", "step_close": "</step>",
            "takeaway_open": "<takeaway>", "takeaway_close": "</takeaway>"}[name]


def test_tag_ids_error_names_the_tags_and_the_fix():
    with pytest.raises(TagTokenError) as err:
        TagIds.from_tokenizer(make_tiny_tokenizer(with_tags=False))
    assert "'<guideline>' ->" in str(err.value) and "npr prepare-model" in str(err.value)
    assert isinstance(err.value, ValueError)


def test_tag_ids_must_be_distinct():
    with pytest.raises(ValueError, match="distinct"):
        TagIds(1, 1, 2, 3, 4, 5, 6, 7)


def test_tracker_says_when_to_fork_and_join(sym, tags):
    tracker = Tracker(tags)
    seq = sym("x <guideline> <plan> a </plan> <plan> b </plan> </guideline> <step> h </step> <step> h </step> "
              "<takeaway> t </takeaway>")
    events, phases = [], []
    for token in seq:
        events.append(tracker.feed(token))
        phases.append(tracker.phase)
    assert events[8] is Event.FORK and tracker.num_plans == 2
    assert events[9] is Event.BRANCH_START and events[11] is Event.STEP_END
    assert events[12] is Event.BRANCH_START and events[15] is Event.JOIN
    assert phases[0] is Phase.OUTSIDE and phases[3] is Phase.GUIDELINE and phases[10] is Phase.STEP
    assert phases[11] is Phase.REGION and phases[15] is Phase.TAKEAWAY and phases[-1] is Phase.OUTSIDE
    assert tracker.finish() == []


def test_tracker_no_fork_on_bad_plan_count(sym, tags):
    tracker = Tracker(tags, max_branches=2)
    events = [tracker.feed(t) for t in sym("<guideline> <plan> a </plan> <plan> b </plan> <plan> c </plan> </guideline>")]
    assert events[-1] is Event.NO_FORK and tracker.phase is Phase.OUTSIDE
    assert [i.name for i in tracker.finish()] == ["plan_count"]


def test_tracker_rejects_bad_max_branches(tags):
    with pytest.raises(ValueError, match="max_branches"):
        Tracker(tags, max_branches=0)


def test_parse_text_blocks_and_offsets():
    text = ("Intro.<guideline><plan>1: a</plan><plan>2: b</plan></guideline><step>\n1: x</step>\n"
            "<step>\n2: y</step><takeaway>ok</takeaway> \\boxed{1}")
    parsed = parse_text(text)
    assert parsed.is_valid
    [block] = parsed.blocks
    assert block.plans == ["1: a", "2: b"] and block.steps == ["\n1: x", "\n2: y"] and block.takeaway == "ok"
    assert parsed.final == " \\boxed{1}" and parsed.outside == [(0, "Intro.")]
    bad = parse_text("<guideline><plan>a</plan></guideline><step>\n1: <guideline>x</step>")
    nested_at = bad.text.index("<guideline>", 1)
    assert [(i.name, i.offset) for i in bad.issues] == [("nested_guideline", nested_at), ("unclosed_block", len(bad.text))]


def test_parse_text_never_raises_on_garbage():
    for text in ["", "</takeaway></takeaway>", "<step><step><guideline></guideline>", "<plan>" * 50]:
        parse_text(text)
    with pytest.raises(TypeError):
        parse_text(None)


def test_text_to_ids_segment_by_segment_equals_canonical(tokenizer, templates, tags):
    plans = ["1: try small cases", "2: use algebra", "3: parity"]
    steps = [" n=1 gives 1, n=2 gives 4", " (n+1)^2 - n^2 = 2n+1", " odd+even"]
    takeaway = " all three agree: \\boxed{2n+1}"
    text = render_block_text(plans, steps, takeaway)
    ids = templates.text_to_ids(text)
    assert ids == templates.block_ids(plans, steps, takeaway)
    assert tokenizer.decode(ids) == text
    # the forced header is its own segment: a whole-text tokenizer call may merge across it
    assert ids[ids.index(tags.step_open) + 1: ids.index(tags.step_open) + 1 + len(templates.encode("\n1:"))] == \
        templates.encode("\n1:")
    assert build_layout(ids, tags, 0).is_valid


def test_engine_style_block_equals_text_conversion(tokenizer, templates, tags):
    """An engine writes <step> h_i at the fork and <takeaway> at the join around model content ids;
    the same text converted segment by segment gives identical ids."""
    enc = templates.encode
    guideline = [tags.guideline_open, tags.plan_open] + enc("1: a") + [tags.plan_close, tags.plan_open] + enc("2: b") + \
        [tags.plan_close, tags.guideline_close]
    engine = guideline
    for i, content in enumerate([" first", " second one"], start=1):
        engine = engine + templates.branch_header(i) + enc(content) + [tags.step_close]
    engine = engine + templates.join_header() + enc(" both") + [tags.takeaway_close]
    assert templates.text_to_ids(tokenizer.decode(engine)) == engine


def test_templates_reject_bad_branch_index(templates):
    with pytest.raises(ValueError, match="1-based"):
        templates.branch_header(0)
