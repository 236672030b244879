"""verl_npr.registries: the one rule for claiming our names in verl's registries — a free name is written,
our own entry again is left as it is, another plugin's entry is refused with the name, the holder and the fix,
and a refused claim writes none of its names."""

import pytest

from verl_npr.registries import Claim, claim_name, claim_names


def ours(x):
    return x


def test_free_name_is_registered_once():
    registry, writes = {}, []

    def write():
        writes.append(1)
        registry["npr"] = ours

    claim_name("reward manager", "npr", registry, ours, write)
    claim_name("reward manager", "npr", registry, ours, write)  # ours already: nothing written
    assert registry == {"npr": ours} and writes == [1]


def test_another_plugins_name_is_refused_and_nothing_is_written():
    first, second = {}, {"npr": "theirs"}
    claims = [Claim.of("advantage estimator", "npr", first, ours, lambda: first.update(npr=ours)),
              Claim.of("policy loss", "npr", second, ours, lambda: second.update(npr=ours))]
    with pytest.raises(ValueError, match="verl policy loss 'npr' is already registered by 'theirs'; uninstall the "
                                         "other plugin or pick another name"):
        claim_names(*claims)
    assert first == {} and second == {"npr": "theirs"}


def test_is_ours_compares_an_entry_that_is_not_the_object():
    registry = {"npr_parallel": {"_target_": "pkg.Loop"}}
    same = lambda held: dict(held) == {"_target_": "pkg.Loop"}  # noqa: E731
    claim_name("agent loop", "npr_parallel", registry, None, lambda: pytest.fail("must not rewrite"), is_ours=same)
    registry["npr_parallel"] = {"_target_": "other.Loop"}
    with pytest.raises(ValueError, match="agent loop 'npr_parallel' is already registered"):
        claim_name("agent loop", "npr_parallel", registry, None, lambda: None, is_ours=same)
