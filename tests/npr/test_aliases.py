"""Modules renamed in the clean-up stay importable under their old name for one release, as the very same
objects (README "Renamed modules")."""

import importlib

import pytest

ALIASES = {
    "sglang_npr.protocol": ("npr.wire", ["FIELDS", "NPR_KEY", "NprParams", "NprParamsError", "encode_npr_params",
                                         "parse_npr_params"]),
    "npr.sampling": ("npr.rejection", ["Engine", "Problem", "ReferenceEngine", "RejectionSampler", "Summary",
                                       "Verdict", "iter_kept", "load_problems", "read_records", "sft_rows"]),
    "npr.render": ("npr.view", ["render_tree", "summarize"]),
    "npr.eval.view": ("npr.view", ["Part", "ViewError", "load_record", "parts_of", "render_html", "render_terminal"]),
}


@pytest.mark.parametrize("old", sorted(ALIASES))
def test_old_module_reexports_the_new_objects(old):
    new, names = ALIASES[old]
    old_module, new_module = importlib.import_module(old), importlib.import_module(new)
    for name in names:
        assert getattr(old_module, name) is getattr(new_module, name), f"{old}.{name} is not {new}.{name}"


def test_problem_seed_of_rejection_sampling_is_trials_seed():
    import npr.rejection
    import npr.sampling

    assert npr.sampling.problem_seed is npr.rejection.trials_seed
