"""The engines `npr eval` and `npr sample` drive. The reference decoder (`npr.decoding`) lives here; the
SGLang engines (in-process `sglang.Engine`, a server over HTTP) live in `sglang_npr` and are found through
the `npr.engines` entry-point group, so `npr` never imports a host plugin. Every engine turns requests
(prompt ids, a per-request seed, a mode) into `Trajectory`s plus text, in `parallel` (fork-join) or
`sequential` mode (the same model, never forking), and keeps up to `concurrency` of them in flight
(`stream`), yielding each as it finishes. Request i of a `stream` samples from its own seed alone, so
its output does not depend on which other requests share the engine with it."""

from __future__ import annotations

import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Sequence

from npr.errors import NprError
from npr.forkjoin import Trajectory, derive_seed

MODES = ("parallel", "sequential")
GROUP = "npr.engines"  # name -> engine class with from_options(**options); sglang_npr registers sglang, http
ALIASES = {"server": "http"}  # `npr sample --engine server` is eval's engine=http
ENGINES = ("reference", "sglang", "http")  # the names this project ships (a plugin may add more)


class EngineError(NprError, ValueError):
    """An engine that cannot run the requested evaluation; the message names the fix."""


@dataclass(frozen=True)
class Sampling:
    """Sampling settings of a run (recorded in the summary). temperature 0 = greedy."""

    temperature: float = 1.0
    top_p: float = 0.7
    top_k: int = 0
    max_new_tokens: int = 30000
    max_total_tokens: int | None = None
    max_branches: int = 5


@dataclass
class Output:
    trajectory: Trajectory
    text: str


@dataclass(frozen=True)
class Request:
    """One sequence to decode: `seed` alone fixes its sampling streams (stream (seed, block, branch), the
    convention of SGLang's `sampling_seed`); `script`: branch lengths per block (parallel mode only);
    `key`: the caller's id, handed back with the output."""

    prompt_ids: tuple[int, ...]
    seed: int
    mode: str = "parallel"
    script: tuple[tuple[int, ...], ...] | None = None
    key: Any = None


@dataclass(frozen=True)
class Finished:
    """A request's output; `latency_s`: from handing the request to the engine to its whole response."""

    request: Request
    output: Output
    latency_s: float


def request_seed(seed: int, sample: int) -> int:
    """The seed of sample `sample` of a problem whose seed is `seed` (31 bits: SGLang's sampling_seed)."""
    return derive_seed(seed, sample, 0, 0) % (2 ** 31)


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise EngineError(f"unknown mode {mode!r}; expected one of {MODES}")
    return mode


def check_concurrency(concurrency: int) -> int:
    if not isinstance(concurrency, int) or isinstance(concurrency, bool) or concurrency < 1:
        raise EngineError(f"concurrency must be an int >= 1 (requests in flight), got {concurrency!r}")
    return concurrency


def stream_threaded(one: Callable[[Request], Output], requests: Iterable[Request],
                    concurrency: int) -> Iterator[Finished]:
    """`one(request)` on up to `concurrency` threads, a new request handed over as one finishes; yields in
    the order they finish. For clients of engines that batch concurrent requests themselves (a server)."""
    check_concurrency(concurrency)
    pending: dict[Any, tuple[Request, float]] = {}
    todo = iter(requests)

    def timed_one(request: Request) -> tuple[Output, float]:
        start = time.perf_counter()
        out = one(request)
        return out, time.perf_counter() - start

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        try:
            while True:
                while len(pending) < concurrency:
                    request = next(todo, None)
                    if request is None:
                        break
                    pending[pool.submit(timed_one, request)] = (request, 0.0)
                if not pending:
                    return
                done, _ = wait(list(pending), return_when=FIRST_COMPLETED)
                for future in done:
                    request, _ = pending.pop(future)
                    out, latency = future.result()
                    yield Finished(request, out, latency)
        finally:
            for future in pending:
                future.cancel()


class ReferenceEngine:
    """The reference fork-join decoder on an HF model (CPU or GPU). `stream` decodes up to `concurrency`
    requests per decoder call (the decoder takes no request mid-call)."""

    name = "reference"

    def __init__(self, model: str, device: str | None = None, dtype: str = "auto", **decoder_kwargs):
        from npr.loading import load

        self.model_name = model
        self.model, self.tokenizer = load(model, device, dtype)
        self.decoder_kwargs = decoder_kwargs
        self._decoders: dict[tuple, Any] = {}

    @classmethod
    def from_options(cls, *, model: str | None = None, device: str | None = None, dtype: str = "auto",
                     engine_args: dict[str, Any] | None = None, **_):
        if not model:
            raise EngineError("engine reference needs model (a local folder or hub name)")
        return cls(model, device, dtype, **(engine_args or {}))

    def check(self, mode: str) -> None:
        if check_mode(mode) == "parallel":
            from npr.schema import TagIds

            try:
                TagIds.from_tokenizer(self.tokenizer)
            except ValueError as err:
                raise EngineError(f"{self.model_name}: parallel mode needs the eight tags as single tokens ({err}); "
                                  "use a Stage-2/3 model (npr prepare-model), or modes=[sequential]") from None

    def decoder(self, mode: str, sampling: Sampling):
        from npr.decoding import Decoder, DecodingConfig

        key = (mode, sampling.max_new_tokens, sampling.max_total_tokens, sampling.max_branches)
        if key not in self._decoders:
            config = DecodingConfig(max_branches=sampling.max_branches, max_new_tokens=sampling.max_new_tokens,
                                    max_total_tokens=sampling.max_total_tokens, parallel=mode == "parallel",
                                    **self.decoder_kwargs)
            self._decoders[key] = Decoder(self.model, self.tokenizer, config)
        return self._decoders[key]

    def _params(self, sampling: Sampling, seed: int):
        from npr.decoding import SamplingParams

        return SamplingParams(temperature=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k, seed=seed)

    def generate(self, prompts: Sequence[Sequence[int]], sampling: Sampling, mode: str, seed: int,
                 script: Sequence[Sequence[int]] | None = None) -> list[Output]:
        """One call; prompt i gets the sampling streams of (seed, i)."""
        from npr.decoding import ScriptedStructure

        structure = ScriptedStructure(branch_lengths=script) if script and mode == "parallel" else None
        results = self.decoder(mode, sampling).generate([list(p) for p in prompts], self._params(sampling, seed),
                                                        script=structure)
        return [Output(r.trajectory(), r.text) for r in results]

    def stream(self, requests: Iterable[Request], sampling: Sampling, concurrency: int = 1) -> Iterator[Finished]:
        """Requests in decoder calls of up to `concurrency` (consecutive requests of one mode); each call's
        outputs are yielded when it returns, with the call's wall time as their latency."""
        from npr.decoding import ScriptedStructure

        check_concurrency(concurrency)
        chunk: list[Request] = []
        todo = iter(requests)
        while True:
            request = next(todo, None)
            if request is not None and (not chunk or (request.mode == chunk[0].mode and len(chunk) < concurrency)):
                chunk.append(request)
                continue
            if chunk:
                mode = chunk[0].mode
                scripts = [ScriptedStructure(branch_lengths=[list(b) for b in r.script])
                           if r.script and mode == "parallel" else None for r in chunk]
                start = time.perf_counter()
                results = self.decoder(mode, sampling).generate(
                    [list(r.prompt_ids) for r in chunk], self._params(sampling, 0), script=scripts,
                    seeds=[r.seed for r in chunk])
                latency = time.perf_counter() - start
                for r, result in zip(chunk, results):
                    yield Finished(r, Output(result.trajectory(), result.text), latency)
            if request is None:
                return
            chunk = [request]

    def close(self) -> None:
        pass


def registered_engines() -> dict[str, str]:
    """name -> target of the engines in the `npr.engines` entry-point group (metadata only), and reference."""
    from importlib.metadata import entry_points

    return {"reference": f"{__name__}:ReferenceEngine", **{ep.name: ep.value for ep in entry_points(group=GROUP)}}


def engine_class(kind: str):
    """The engine class registered as `kind` (aliases: server = http). Raises EngineError listing the names."""
    from importlib.metadata import entry_points

    kind = ALIASES.get(kind, kind)
    if kind == "reference":
        return ReferenceEngine
    found = [ep for ep in entry_points(group=GROUP) if ep.name == kind]
    if not found:
        names = ", ".join(sorted(registered_engines()))
        hint = (" (SGLang engines: install native-parallel-reasoner[sglang], e.g. pip install -e '.[sglang]', "
                "so sglang_npr registers them)" if kind in ENGINES else "")
        raise EngineError(f"unknown engine {kind!r}; registered: {names}{hint}")
    return found[0].load()


def make_engine(kind: str, *, model: str | None = None, url: str | None = None, device: str | None = None,
                dtype: str = "auto", engine_args: dict[str, Any] | None = None, api: str = "native"):
    """The engine of `kind` ("reference" | "sglang" | "http", or a plugin's); raises EngineError for a bad
    choice or missing option."""
    return engine_class(kind).from_options(model=model, url=url, device=device, dtype=dtype,
                                           engine_args=dict(engine_args or {}), api=api)


def __getattr__(name: str):
    """SGLangEngine and HttpEngine, the classes sglang_npr registers (found through the entry points)."""
    if name in ("SGLangEngine", "HttpEngine"):
        return engine_class({"SGLangEngine": "sglang", "HttpEngine": "http"}[name])
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start
