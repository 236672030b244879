"""The SGLang engines of `npr eval` and `npr sample` (registered in the `npr.engines` entry-point group):
SGLang's in-process `sglang.Engine` and a server at any URL (native `/generate`, or the OpenAI-compatible
`/v1/completions`). Both keep up to `concurrency` requests in flight (SGLang batches them), each request
with its own `sampling_seed`. A parallel run checks for the NPR plugin before the first request."""

from __future__ import annotations

import time
from typing import Any, Iterable, Iterator

from npr.eval.engines import EngineError, Finished, Output, Request, Sampling, check_concurrency, check_mode, \
    request_seed, stream_threaded
from npr.forkjoin import Trajectory


def sglang_params(sampling: Sampling, mode: str, seed: int, script) -> dict[str, Any]:
    """SGLang sampling_params of one request (custom_params["npr"] in parallel mode)."""
    from sglang_npr.client import npr_sampling_params

    params: dict[str, Any] = {"max_new_tokens": sampling.max_new_tokens, "temperature": sampling.temperature,
                              "top_p": sampling.top_p, "sampling_seed": seed}
    if sampling.top_k:
        params["top_k"] = sampling.top_k
    if mode == "parallel":
        limits = {"max_branches": sampling.max_branches}
        if sampling.max_total_tokens is not None:
            limits["max_total_tokens"] = sampling.max_total_tokens
        params = npr_sampling_params(params, script=[list(b) for b in script] if script else None, **limits)
    return params


def trajectory_from_sglang(prompt, out: dict[str, Any]) -> Trajectory:
    """A Trajectory from one SGLang output (engine or /generate): `npr.wire.trajectory_from_output`, its
    errors as EngineError."""
    from npr.wire import NprRecordError, trajectory_from_output

    try:
        return trajectory_from_output(prompt, out)
    except NprRecordError as exc:
        raise EngineError(str(exc)) from None


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

    @classmethod
    def from_options(cls, *, model: str | None = None, engine_args: dict[str, Any] | None = None, **_):
        if not model:
            raise EngineError("engine sglang needs model (a local folder or hub name)")
        return cls(model, **(engine_args or {}))

    def check(self, mode: str) -> None:
        if check_mode(mode) == "parallel":
            from sglang_npr.client import require_npr_server

            require_npr_server(self.engine.get_server_info(), where="this sglang.Engine")

    def generate(self, prompts, sampling: Sampling, mode: str, seed: int, script=None) -> list[Output]:
        """One batch; prompt i gets sampling_seed request_seed(seed, i)."""
        from sglang_npr.client import engine_generate

        params = [sglang_params(sampling, mode, request_seed(seed, i), script) for i in range(len(prompts))]
        outs = engine_generate(self.engine, input_ids=[list(p) for p in prompts], sampling_params=params,
                               return_logprob=True)
        return [_output(self.tokenizer, p, o) for p, o in zip(prompts, outs)]

    def stream(self, requests: Iterable[Request], sampling: Sampling, concurrency: int = 1) -> Iterator[Finished]:
        """Up to `concurrency` requests in the engine at once (async_generate on the engine's own event
        loop, which its tokenizer manager is bound to); yields each as it finishes."""
        import asyncio

        check_concurrency(concurrency)
        loop = self.engine.loop

        async def one(request: Request):
            start = time.perf_counter()
            out = await self.engine.async_generate(
                input_ids=list(request.prompt_ids), return_logprob=True,
                sampling_params=sglang_params(sampling, request.mode, request.seed, request.script))
            return Finished(request, _output(self.tokenizer, request.prompt_ids, out), time.perf_counter() - start)

        todo = iter(requests)
        pending: set = set()
        try:
            while True:
                while len(pending) < concurrency:
                    request = next(todo, None)
                    if request is None:
                        break
                    pending.add(loop.create_task(one(request)))
                if not pending:
                    return
                done, pending = loop.run_until_complete(asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED))
                for task in done:
                    yield task.result()
        finally:
            for task in pending:  # a consumer that stops early (or an error): the rest is cancelled
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))

    def close(self) -> None:
        self.engine.shutdown()


APIS = ("native", "openai")


class HttpEngine:
    """An SGLang server at any host:port (one request per prompt, up to `concurrency` in flight), through its
    native `/generate` (api="native") or its OpenAI-compatible `/v1/completions` (api="openai": prompt ids
    in, token ids and log-probs out via SGLang's return_token_ids; the fork-join stats, which that API does
    not carry, are recomputed from the ids' layout). `tokenizer` names the model's tokenizer."""

    name = "http"

    def __init__(self, url: str, tokenizer: str, timeout: float = 3600, api: str = "native"):
        from transformers import AutoTokenizer

        if not url.startswith(("http://", "https://")):
            raise EngineError(f"url {url!r}: expected http://HOST:PORT of an SGLang server")
        if api not in APIS:
            raise EngineError(f"api {api!r}: expected one of {APIS}")
        self.url, self.timeout, self.model_name, self.api = url.rstrip("/"), timeout, tokenizer, api
        self.tokenizer = AutoTokenizer.from_pretrained(tokenizer)

    @classmethod
    def from_options(cls, *, model: str | None = None, url: str | None = None, api: str = "native", **_):
        if not url or not model:
            raise EngineError("engine http needs url (http://HOST:PORT) and model (for its tokenizer)")
        return cls(url, model, api=api)

    def check(self, mode: str) -> None:
        if check_mode(mode) == "parallel":
            from sglang_npr.client import get_json, require_npr_server

            require_npr_server(get_json(f"{self.url}/server_info", self.timeout), where=self.url)

    def _one(self, prompt, params: dict[str, Any], sampling: Sampling) -> Output:
        import urllib.error

        from sglang_npr.client import http_generate

        try:
            if self.api == "openai":
                return self._openai(prompt, params, sampling)
            payload = {"input_ids": list(prompt), "return_logprob": True, "sampling_params": params}
            return _output(self.tokenizer, prompt, http_generate(self.url, payload, self.timeout))
        except urllib.error.HTTPError as err:  # the server's own message says what it refused
            detail = err.read().decode("utf-8", "replace")[:1000]
            raise EngineError(f"{self.url} answered HTTP {err.code} ({self.api} API): {detail}") from None

    def generate(self, prompts, sampling: Sampling, mode: str, seed: int, script=None) -> list[Output]:
        """One request per prompt, all sent at once; prompt i gets sampling_seed request_seed(seed, i)."""
        requests = [Request(tuple(p), request_seed(seed, i), mode, script, i) for i, p in enumerate(prompts)]
        outputs: list[Output | None] = [None] * len(prompts)
        for done in self.stream(requests, sampling, max(1, min(64, len(prompts)))):
            outputs[done.request.key] = done.output
        return outputs  # type: ignore[return-value]

    def stream(self, requests: Iterable[Request], sampling: Sampling, concurrency: int = 1) -> Iterator[Finished]:
        """Up to `concurrency` requests on the server at once (one thread each); yields each as it finishes."""
        def one(request: Request) -> Output:
            params = sglang_params(sampling, request.mode, request.seed, request.script)
            return self._one(request.prompt_ids, params, sampling)

        return stream_threaded(one, requests, concurrency)

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
