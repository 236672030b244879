"""Deprecated alias of `npr.rejection` (Stage-2 rejection sampling; the name `sampling` collided with the
decoder's sampler and SamplingParams). Kept for one release; import `npr.rejection` instead.
`problem_seed` is `npr.rejection.trials_seed`."""

from npr.rejection import (Engine, Problem, ReferenceEngine, RejectionSampler, Summary, Verdict,  # noqa: F401
                           iter_kept, load_problems, read_records, sft_rows, trials_seed)

problem_seed = trials_seed

__all__ = ["Engine", "Problem", "ReferenceEngine", "RejectionSampler", "Summary", "Verdict", "iter_kept",
           "load_problems", "problem_seed", "read_records", "sft_rows", "trials_seed"]
