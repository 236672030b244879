"""`EvalConfig`: every setting of an `npr eval` run, frozen and validated, read from YAML files (a base
and overlays, as in `recipes/eval/`) plus `key=value` overrides. Defaults follow the original NPR
evaluation: n=8 samples, temperature 1.0, top-p 0.7, 30000 new tokens."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Mapping, Sequence

from npr.eval.benchmarks import BenchmarkError, get_benchmark
from npr.eval.engines import ALIASES, ENGINES, MODES, EngineError, Sampling, registered_engines


class ConfigError(EngineError):
    """A setting of an eval config that cannot be used; the message names the key, the value and the fix."""


@dataclass(frozen=True)
class BenchmarkSpec:
    """One benchmark to run: its registered name, where its rows come from (local file/folder or hub
    name; None = its default hub dataset) and how many problems to keep (None = all)."""

    name: str
    source: str | None = None
    split: str | None = None
    limit: int | None = None

    def __post_init__(self):
        try:
            object.__setattr__(self, "name", get_benchmark(self.name).name)
        except BenchmarkError as err:
            raise ConfigError(f"benchmarks: {err}") from None
        if self.limit is not None and (not isinstance(self.limit, int) or self.limit < 1):
            raise ConfigError(f"benchmarks[{self.name}].limit must be an int >= 1 or null, got {self.limit!r}")


@dataclass(frozen=True)
class EvalConfig:
    benchmarks: tuple[BenchmarkSpec, ...]
    engine: str = "reference"
    model: str | None = None
    url: str | None = None
    api: str = "native"  # engine http: "native" (/generate) or "openai" (/v1/completions)
    modes: tuple[str, ...] = ("parallel", "sequential")
    n: int = 8
    # the sampling settings: the fields of `Sampling`, with its defaults (the `sampling` property builds it)
    temperature: float = Sampling.temperature
    top_p: float = Sampling.top_p
    top_k: int = Sampling.top_k
    max_new_tokens: int = Sampling.max_new_tokens
    max_total_tokens: int | None = Sampling.max_total_tokens
    max_branches: int = Sampling.max_branches
    seed: int = 0
    concurrency: int = 32  # samples in flight per benchmark and mode (the reference decoder: per call)
    grader: str = "reward"  # a name in the npr.graders entry-point group, or module:attribute
    replay: int = 0  # parallel samples per benchmark timed again against their sequential replay (0 = off)
    pass_k: tuple[int, ...] = (1, 8)
    script: str | None = None  # forced structure ("3,5/4,4,6"): demos and tests on untrained models
    output_dir: str = "out/eval"
    device: str | None = None
    dtype: str = "auto"
    chat_template: bool = True
    progress: bool = True
    engine_args: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        specs = []
        for item in self.benchmarks or ():
            if isinstance(item, BenchmarkSpec):
                specs.append(item)
            elif isinstance(item, str):
                specs.append(BenchmarkSpec(item))
            elif isinstance(item, Mapping):
                unknown = set(item) - {f.name for f in fields(BenchmarkSpec)}
                if unknown:
                    raise ConfigError(f"benchmarks: unknown keys {sorted(unknown)} in {dict(item)}; "
                                      "expected name, source, split, limit")
                specs.append(BenchmarkSpec(**item))
            else:
                raise ConfigError(f"benchmarks: expected a name or a mapping, got {item!r}")
        if not specs:
            raise ConfigError("benchmarks is empty: list at least one, e.g. benchmarks=[aime25]")
        object.__setattr__(self, "benchmarks", tuple(specs))
        modes = (self.modes,) if isinstance(self.modes, str) else tuple(self.modes)
        bad = [m for m in modes if m not in MODES] + ([] if modes else ["(none)"])
        if bad:
            raise ConfigError(f"modes: {bad} not in {MODES}")
        object.__setattr__(self, "modes", modes)
        if self.api not in ("native", "openai"):
            raise ConfigError(f"api: unknown {self.api!r}; expected native (/generate) or openai (/v1/completions)")
        if ALIASES.get(self.engine, self.engine) not in registered_engines():
            raise ConfigError(f"engine: unknown {self.engine!r}; expected one of {sorted(registered_engines())} "
                              f"(the SGLang engines {ENGINES[1:]} are registered by sglang_npr's entry points)")
        for name, low in (("n", 1), ("max_new_tokens", 1), ("max_branches", 1), ("top_k", 0), ("concurrency", 1),
                          ("replay", 0)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ConfigError(f"{name} must be an int >= {low}, got {value!r}")
        if not (isinstance(self.temperature, (int, float)) and 0 <= self.temperature < float("inf")):
            raise ConfigError(f"temperature must be a finite number >= 0, got {self.temperature!r}")
        if not (isinstance(self.top_p, (int, float)) and 0 < self.top_p <= 1):
            raise ConfigError(f"top_p must be in (0, 1], got {self.top_p!r}")
        ks = tuple(sorted({int(k) for k in ((self.pass_k,) if isinstance(self.pass_k, int) else self.pass_k)}))
        if any(k < 1 for k in ks):
            raise ConfigError(f"pass_k values must be >= 1, got {list(self.pass_k)}")
        object.__setattr__(self, "pass_k", ks)
        if self.script:
            from npr.loading import parse_script

            try:
                parse_script(self.script)
            except ValueError as err:
                raise ConfigError(f"script: {err}") from None
        object.__setattr__(self, "engine_args", dict(self.engine_args or {}))

    @property
    def sampling(self) -> Sampling:
        return Sampling(**{f.name: getattr(self, f.name) for f in fields(Sampling)})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _parse_value(text: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_override(data: dict[str, Any], item: str) -> None:
    """key=value (dotted keys reach into mappings; the value is read as YAML: 8, null, [a, b])."""
    if "=" not in item:
        raise ConfigError(f"override {item!r}: expected key=value, e.g. n=4 or benchmarks=[aime25]")
    key, value = item.split("=", 1)
    parts = key.strip().split(".")
    known = {f.name for f in fields(EvalConfig)}
    if parts[0] not in known:
        raise ConfigError(f"override {item!r}: unknown key {parts[0]!r}; valid keys: {', '.join(sorted(known))}")
    target = data
    for part in parts[:-1]:
        target = target.setdefault(part, {})
    target[parts[-1]] = _parse_value(value)


def load_config(files: Sequence[str] = (), overrides: Sequence[str] = ()) -> EvalConfig:
    """EvalConfig from YAML files (later ones overlay earlier ones, key by key) and key=value overrides.
    A file may name its base with `defaults: [other.yaml]` (relative to the file)."""
    import yaml

    data: dict[str, Any] = {}

    def merge(path: str, seen: tuple[str, ...] = ()) -> None:
        path = os.path.abspath(os.path.expanduser(path))
        if path in seen:
            raise ConfigError(f"{path}: defaults loop through {list(seen)}")
        if not os.path.isfile(path):
            raise ConfigError(f"config file {path}: not found")
        with open(path, encoding="utf-8") as f:
            loaded = yaml.safe_load(f) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path}: expected a mapping of settings, got {type(loaded).__name__}")
        for base in loaded.pop("defaults", []) or []:
            merge(os.path.join(os.path.dirname(path), base), seen + (path,))
        unknown = set(loaded) - {f.name for f in fields(EvalConfig)}
        if unknown:
            raise ConfigError(f"config file {path}: unknown keys {sorted(unknown)}; valid keys: "
                              f"{', '.join(sorted(f.name for f in fields(EvalConfig)))}")
        for key, value in loaded.items():
            if key == "engine_args" and isinstance(value, dict):
                data.setdefault(key, {}).update(value)
            else:
                data[key] = value

    for path in files:
        merge(path)
    for item in overrides:
        apply_override(data, item)
    if "benchmarks" not in data:
        raise ConfigError("no benchmarks: set benchmarks in a config file or as benchmarks=[aime25, math500]")
    try:
        return EvalConfig(**data)
    except TypeError as err:
        raise ConfigError(str(err)) from None
