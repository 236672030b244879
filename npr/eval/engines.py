"""The engines `npr eval` drives: the reference decoder (`npr.decoding`), SGLang's in-process `Engine`,
and an SGLang server over HTTP (native `/generate`). Each turns a batch of prompt ids into
`Trajectory`s plus text, in `parallel` (fork-join) or `sequential` mode (the same model, never forking:
the speed baseline). A parallel run against SGLang checks for the NPR plugin before the first request.
SGLang is imported only inside these engines (`npr` never imports sglang_npr at module level)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Sequence

from npr.errors import NprError
from npr.forkjoin import Trajectory, derive_seed
from npr.wire import NprRecordError, trajectory_from_output

MODES = ("parallel", "sequential")
ENGINES = ("reference", "sglang", "http")


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


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise EngineError(f"unknown mode {mode!r}; expected one of {MODES}")
    return mode


class ReferenceEngine:
    """The reference fork-join decoder on an HF model (CPU or GPU)."""

    name = "reference"

    def __init__(self, model: str, device: str | None = None, dtype: str = "auto", **decoder_kwargs):
        from npr.cli.generate import load

        self.model_name = model
        self.model, self.tokenizer = load(model, device, dtype)
        self.decoder_kwargs = decoder_kwargs
        self._decoders: dict[tuple, Any] = {}

    def check(self, mode: str) -> None:
        if check_mode(mode) == "parallel":
            from npr.schema import TagIds

            try:
                TagIds.from_tokenizer(self.tokenizer)
            except ValueError as err:
                raise EngineError(f"{self.model_name}: parallel mode needs the eight tags as single tokens ({err}); "
                                  "use a Stage-2/3 model (npr prepare-model), or modes=[sequential]") from None

    def _decoder(self, mode: str, sampling: Sampling):
        from npr.decoding import Decoder, DecodingConfig

        key = (mode, sampling.max_new_tokens, sampling.max_total_tokens, sampling.max_branches)
        if key not in self._decoders:
            config = DecodingConfig(max_branches=sampling.max_branches, max_new_tokens=sampling.max_new_tokens,
                                    max_total_tokens=sampling.max_total_tokens, parallel=mode == "parallel",
                                    **self.decoder_kwargs)
            self._decoders[key] = Decoder(self.model, self.tokenizer, config)
        return self._decoders[key]

    def generate(self, prompts: Sequence[Sequence[int]], sampling: Sampling, mode: str, seed: int,
                 script: Sequence[Sequence[int]] | None = None) -> list[Output]:
        """One call; prompt i gets the sampling streams of (seed, i)."""
        from npr.decoding import SamplingParams, ScriptedStructure

        params = SamplingParams(temperature=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k, seed=seed)
        structure = ScriptedStructure(branch_lengths=script) if script and mode == "parallel" else None
        results = self._decoder(mode, sampling).generate([list(p) for p in prompts], params, script=structure)
        return [Output(r.trajectory(), r.text) for r in results]

    def close(self) -> None:
        pass


def _sglang_params(sampling: Sampling, mode: str, seed: int, script) -> dict[str, Any]:
    params: dict[str, Any] = {"max_new_tokens": sampling.max_new_tokens, "temperature": sampling.temperature,
                              "top_p": sampling.top_p, "sampling_seed": seed}
    if sampling.top_k:
        params["top_k"] = sampling.top_k
    if mode == "parallel":
        from sglang_npr.client import npr_sampling_params

        limits = {"max_branches": sampling.max_branches}
        if sampling.max_total_tokens is not None:
            limits["max_total_tokens"] = sampling.max_total_tokens
        params = npr_sampling_params(params, script=script or None, **limits)
    return params


def trajectory_from_sglang(prompt: Sequence[int], out: dict[str, Any]) -> Trajectory:
    """A Trajectory from one SGLang output (engine or /generate): `npr.wire.trajectory_from_output`, its
    errors as EngineError."""
    try:
        return trajectory_from_output(prompt, out)
    except NprRecordError as err:
        raise EngineError(str(err)) from None


def _output(tokenizer, prompt, out: dict[str, Any]) -> Output:
    """The text decoded here as the reference decoder does (tags kept): SGLang's own "text" skips special
    tokens by default, which would drop the tags the format score and `npr inspect` read."""
    trajectory = trajectory_from_sglang(prompt, out)
    return Output(trajectory, tokenizer.decode(trajectory.token_ids, skip_special_tokens=False))


class SGLangEngine:
    """SGLang's in-process `sglang.Engine` (the NPR plugin loads through its entry point)."""

    name = "sglang"

    def __init__(self, model: str, **engine_args):
        import sglang
        from transformers import AutoTokenizer

        self.model_name = model
        self.tokenizer = AutoTokenizer.from_pretrained(model)
        self.engine = sglang.Engine(model_path=model, **engine_args)

    def check(self, mode: str) -> None:
        if check_mode(mode) == "parallel":
            from sglang_npr.client import require_npr_server

            require_npr_server(self.engine.get_server_info(), where="this sglang.Engine")

    def generate(self, prompts, sampling: Sampling, mode: str, seed: int, script=None) -> list[Output]:
        from sglang_npr.client import engine_generate

        params = [_sglang_params(sampling, mode, derive_seed(seed, i, 0, 0) % (2**31), script) for i in range(len(prompts))]
        outs = engine_generate(self.engine, input_ids=[list(p) for p in prompts], sampling_params=params,
                               return_logprob=True)
        return [_output(self.tokenizer, p, o) for p, o in zip(prompts, outs)]

    def close(self) -> None:
        self.engine.shutdown()


APIS = ("native", "openai")


class HttpEngine:
    """An SGLang server at any host:port (one request per prompt, sent concurrently), through its native
    `/generate` (api="native") or its OpenAI-compatible `/v1/completions` (api="openai": prompt ids in,
    token ids and log-probs out via SGLang's return_token_ids; the fork-join stats, which that API does not
    carry, are recomputed from the ids' layout). `tokenizer` names the model's tokenizer."""

    name = "http"

    def __init__(self, url: str, tokenizer: str, timeout: float = 3600, api: str = "native"):
        from transformers import AutoTokenizer

        if not url.startswith(("http://", "https://")):
            raise EngineError(f"url {url!r}: expected http://HOST:PORT of an SGLang server")
        if api not in APIS:
            raise EngineError(f"api {api!r}: expected one of {APIS}")
        self.url, self.timeout, self.model_name, self.api = url.rstrip("/"), timeout, tokenizer, api
        self.tokenizer = AutoTokenizer.from_pretrained(tokenizer)

    def check(self, mode: str) -> None:
        if check_mode(mode) == "parallel":
            from sglang_npr.client import _get_json, require_npr_server

            require_npr_server(_get_json(f"{self.url}/server_info", self.timeout), where=self.url)

    def generate(self, prompts, sampling: Sampling, mode: str, seed: int, script=None) -> list[Output]:
        from concurrent.futures import ThreadPoolExecutor

        from sglang_npr.client import http_generate

        import urllib.error

        def one(i):
            params = _sglang_params(sampling, mode, derive_seed(seed, i, 0, 0) % (2**31), script)
            try:
                if self.api == "openai":
                    return self._openai(prompts[i], params, sampling)
                payload = {"input_ids": list(prompts[i]), "return_logprob": True, "sampling_params": params}
                return _output(self.tokenizer, prompts[i], http_generate(self.url, payload, self.timeout))
            except urllib.error.HTTPError as err:  # the server's own message says what it refused
                detail = err.read().decode("utf-8", "replace")[:1000]
                raise EngineError(f"{self.url} answered HTTP {err.code} ({self.api} API): {detail}") from None

        with ThreadPoolExecutor(max_workers=min(64, max(1, len(prompts)))) as pool:
            return list(pool.map(one, range(len(prompts))))

    def _openai(self, prompt, params: dict[str, Any], sampling: Sampling) -> Output:
        import json
        import urllib.request

        # logprobs 0: the chosen tokens' log-probs only (the plugin refuses top-k log-probs in fork-join)
        body = {"model": "default", "prompt": list(prompt), "max_tokens": params["max_new_tokens"],
                "temperature": params["temperature"], "top_p": params["top_p"], "seed": params["sampling_seed"],
                "logprobs": 0, "return_token_ids": True, "skip_special_tokens": False}
        if "custom_params" in params:
            body["custom_params"] = params["custom_params"]
        if "top_k" in params:
            body["top_k"] = params["top_k"]
        request = urllib.request.Request(f"{self.url}/v1/completions", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
            choice = json.loads(response.read())["choices"][0]
        ids = list(choice.get("token_ids") or [])
        logprobs = list((choice.get("logprobs") or {}).get("token_logprobs") or [])
        out = {"output_ids": ids, "meta_info": {"output_token_logprobs": [[x] for x in logprobs],
                                                "finish_reason": {"type": choice.get("finish_reason") or "stop"}}}
        trajectory = trajectory_from_sglang(prompt, out)
        if "custom_params" in params:  # stats from the layout of the ids (the API returns no meta_info)
            from npr.eval.metrics import structure_of
            from npr.schema import TagIds

            s = structure_of(trajectory, TagIds.from_tokenizer(self.tokenizer), sampling.max_branches)
            trajectory.stats = {"total_tokens": s.total_tokens, "critical_path_tokens": s.critical_path_tokens,
                                "num_forks": len(s.widths), "max_width": s.max_width}
        return Output(trajectory, self.tokenizer.decode(ids, skip_special_tokens=False))

    def close(self) -> None:
        pass


def make_engine(kind: str, *, model: str | None = None, url: str | None = None, device: str | None = None,
                dtype: str = "auto", engine_args: dict[str, Any] | None = None, api: str = "native"):
    """The engine of `kind` ("reference" | "sglang" | "http"); raises EngineError for a bad choice."""
    if kind not in ENGINES:
        raise EngineError(f"unknown engine {kind!r}; expected one of {ENGINES}")
    if kind == "http":
        if not url or not model:
            raise EngineError("engine http needs url (http://HOST:PORT) and model (for its tokenizer)")
        return HttpEngine(url, model, api=api)
    if not model:
        raise EngineError(f"engine {kind} needs model (a local folder or hub name)")
    if kind == "reference":
        return ReferenceEngine(model, device, dtype, **(engine_args or {}))
    return SGLangEngine(model, **(engine_args or {}))


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start
