"""Checks of a `main_ppo` run that fail in seconds, before Ray starts (verl would fail minutes later, deep
inside a Ray worker): no GPU and no VERL_PLATFORM=cpu, the model path left at verl's example default or
missing, data files missing, prompts longer than the rollout's prompt length while `data.truncation` is
'error'. `Preflight` is the Hydra callback the Stage-1 and Stage-3 recipes configure (`hydra.callbacks`)."""

from __future__ import annotations

import os
import re
import sys
from typing import Any, Iterable

from npr.errors import NprError

# verl's model.path default (verl/trainer/config/model/hf_model.yaml): set in every real run
VERL_EXAMPLE_MODEL = "~/models/deepseek-llm-7b-chat"
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
REMOTE = ("hdfs://", "s3://", "gs://", "http://", "https://")


class PreflightError(NprError, ValueError):
    """A run config that cannot work; the message lists every problem with its fix."""


def preflight_problems(config: Any, *, has_cuda: bool | None = None, environ: dict | None = None) -> list[str]:
    """Every problem of a composed main_ppo config (`config`: an OmegaConf DictConfig or a nested dict),
    each a sentence naming the value and the fix. Empty: the run may start."""
    environ = os.environ if environ is None else environ
    # Joining a running Ray cluster: the GPUs and the files may live on other nodes than this driver's,
    # so only what is wrong everywhere is checked (verl's example model path; prompts of files seen here).
    joins_cluster = bool(environ.get("RAY_ADDRESS") or _get(config, "ray_kwargs.ray_init.address"))
    problems = [] if joins_cluster else _platform_problems(config, _has_cuda() if has_cuda is None else has_cuda,
                                                            environ)
    model_problems = _model_problems(config, check_exists=not joins_cluster)
    data_problems = [] if joins_cluster else _data_problems(config)
    problems += model_problems + data_problems
    if not model_problems and not data_problems:
        problems += _prompt_length_problems(config)
    return problems


def check(config: Any, **kwargs: Any) -> None:
    """Raises PreflightError listing every problem `preflight_problems` finds."""
    problems = preflight_problems(config, **kwargs)
    if problems:
        raise PreflightError("this run cannot work:\n" + "\n".join(f"  - {p}" for p in problems)
                             + "\n(to run without these checks, add ~hydra.callbacks.npr_preflight to the command)")


try:  # Hydra is verl's dependency; without it there is no main_ppo to check
    from hydra.experimental.callback import Callback as _Callback
except ImportError:  # pragma: no cover
    _Callback = object


class Preflight(_Callback):
    """Hydra callback (hydra.callbacks.npr_preflight._target_: verl_npr.preflight.Preflight): runs the
    checks when the job starts, before verl's task function (and so before Ray); on a problem prints them
    and exits with status 2, without a traceback. `--cfg job` (composition only) does not run it."""

    def on_job_start(self, config: Any, **kwargs: Any) -> None:
        try:
            check(config)
        except PreflightError as err:
            print(f"npr preflight: {err}", file=sys.stderr, flush=True)
            raise SystemExit(2) from None


def _get(config: Any, dotted: str, default: Any = None) -> Any:
    node = config
    for key in dotted.split("."):
        try:
            node = node[key]
        except (KeyError, TypeError, IndexError):
            return default
        except Exception:  # noqa: BLE001 - an OmegaConf interpolation that does not resolve
            return default
    return default if node is None else node


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _platform_problems(config: Any, has_cuda: bool, environ) -> list[str]:
    platform = environ.get("VERL_PLATFORM")
    if has_cuda or platform == "cpu":
        return []
    got = f"VERL_PLATFORM={platform!r}" if platform else "VERL_PLATFORM is not set"
    return [f"no CUDA device is visible and {got}: verl would pick its nvidia platform and fail inside Ray "
            "('ProcessGroupNCCL is only supported with GPUs'). On a CPU machine run with VERL_PLATFORM=cpu and a "
            "tiny_cpu recipe (`CONFIG=tiny_cpu bash recipes/<stage>/run.sh` sets it); otherwise run where "
            "torch.cuda.is_available() is true"]


def _is_local(path: str) -> bool:
    return not path.startswith(REMOTE) and not (HUB_ID.fullmatch(path) and not os.path.exists(path))


def _model_problems(config: Any, check_exists: bool = True) -> list[str]:
    path = str(_get(config, "actor_rollout_ref.model.path", ""))
    if os.path.expanduser(path) == os.path.expanduser(VERL_EXAMPLE_MODEL):
        return [f"actor_rollout_ref.model.path is still verl's example default {VERL_EXAMPLE_MODEL!r}: give your "
                "model, e.g. actor_rollout_ref.model.path=/path/to/model (MODEL=... for recipes/*/run.sh)"]
    if not path:
        return ["actor_rollout_ref.model.path is empty: give your model folder or hub name"]
    if check_exists and _is_local(path) and not os.path.exists(os.path.expanduser(path)):
        return [f"actor_rollout_ref.model.path {path!r} does not exist: give a model folder (e.g. from "
                "`npr prepare-model`) or a hub name"]
    return []


def _files(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


def _data_problems(config: Any) -> list[str]:
    problems = []
    for key in ("data.train_files", "data.val_files"):
        for path in _files(_get(config, key)):
            if not path.startswith(REMOTE) and not os.path.exists(os.path.expanduser(path)):
                problems.append(f"{key} {path!r} does not exist: make one with `npr data --input PROBLEMS "
                                "--output FILE.parquet` and pass its path")
    return problems


def _prompt_length_problems(config: Any) -> list[str]:
    """verl's agent loop left-truncates a prompt longer than rollout.prompt_length (a warning only), cutting
    the system instruction, even with data.truncation 'error': refuse instead, unless verl filters them."""
    if str(_get(config, "data.truncation", "error")) != "error" or _get(config, "data.filter_overlong_prompts", False):
        return []
    limit = _get(config, "actor_rollout_ref.rollout.prompt_length") or _get(config, "data.max_prompt_length")
    if not limit:
        return []
    tokenizer = _tokenizer(config)
    if tokenizer is None:
        return []  # a hub model not downloaded yet: verl fetches it in the workers; nothing to measure here
    prompt_key = str(_get(config, "data.prompt_key", "prompt"))
    kwargs = dict(_get(config, "data.apply_chat_template_kwargs", {}) or {})
    problems = []
    for key in ("data.train_files", "data.val_files"):
        for path in _files(_get(config, key)):
            if path.startswith(REMOTE) or not os.path.exists(os.path.expanduser(path)):
                continue
            lengths = _prompt_lengths(tokenizer, _read_prompts(path, prompt_key), kwargs)
            over = [(n, i) for i, n in enumerate(lengths) if n > int(limit)]
            if over:
                longest, row = max(over)
                problems.append(
                    f"{len(over)} of {len(lengths)} prompts in {key} {path!r} are longer than rollout.prompt_length="
                    f"{limit} (data.max_prompt_length; the longest: {longest} tokens, row {row}); verl's agent loop "
                    "would cut them from the left, dropping the instruction, although data.truncation is 'error'. "
                    f"Set data.max_prompt_length={longest} or more, or data.filter_overlong_prompts=true to skip them")
    return problems


def _tokenizer(config: Any):
    from transformers import AutoTokenizer

    path = _get(config, "actor_rollout_ref.model.tokenizer_path") or _get(config, "actor_rollout_ref.model.path")
    trust = bool(_get(config, "actor_rollout_ref.model.trust_remote_code", False))
    try:  # a folder, or a hub name already in the local cache: never a download from here
        return AutoTokenizer.from_pretrained(os.path.expanduser(str(path)), trust_remote_code=trust,
                                             local_files_only=True)
    except (OSError, ValueError):
        return None


def _read_prompts(path: str, prompt_key: str) -> list:
    import pandas as pd

    path = os.path.expanduser(path)
    frame = pd.read_json(path, lines=True) if path.endswith((".jsonl", ".json")) else pd.read_parquet(path)
    if prompt_key not in frame.columns:
        return []  # verl reports the missing column itself, at the same point
    return list(frame[prompt_key])


def _prompt_lengths(tokenizer, prompts: Iterable, kwargs: dict) -> list[int]:
    lengths = []
    for prompt in prompts:
        if isinstance(prompt, str):
            lengths.append(len(tokenizer(prompt)["input_ids"]))
            continue
        messages = [dict(m) for m in prompt]
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False,
                                            **kwargs)
        lengths.append(len(ids))
    return lengths
