"""Deprecated alias of `npr.rejection` (Stage-2 rejection sampling; the name `sampling` collided with the
decoder's sampler and SamplingParams). Kept for one release; import `npr.rejection` instead: every name
resolves to `npr.rejection`'s, and `problem_seed` is `npr.rejection.trials_seed`. (A package, not a module,
so that git follows npr/sampling.py to npr/rejection.py.)"""

import npr.rejection as _rejection


def __getattr__(name: str):
    if name == "problem_seed":
        return _rejection.trials_seed
    return getattr(_rejection, name)
