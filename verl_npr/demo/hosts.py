"""The demo's hosts in one process: verl's platform and quiet logs, the fork-join engine of every
evaluation and PAPO rollout (npr.eval's engine classes: the reference decoder, or SGLang's `Engine` with
the NPR plugin), and the hand-over of the actor's weights to the engine."""

from __future__ import annotations

import os
from typing import Any

from verl_npr.demo.config import DemoConfig


def quiet_hosts() -> None:
    """Keep the demo's progress readable: no weight-loading progress bars, no warnings about optional verl
    engines (torchtitan, megatron, ...) or CUDA-only SGLang kernels that a CPU run never uses. verl's
    start-up prints go to verl.log."""
    import logging
    import threading
    import warnings

    import datasets
    import tqdm
    from transformers.utils import logging as hf_logging

    warnings.filterwarnings("ignore", message=r".* engine is not available")
    for message in ("Only CUDA", "Triton is not supported"):  # SGLang on a CPU (its subprocesses: make_engine)
        warnings.filterwarnings("ignore", message=message, category=UserWarning)
    logging.getLogger("torch.fx._symbolic_trace").setLevel(logging.ERROR)  # a deprecation note on each update
    hf_logging.disable_progress_bar()
    datasets.disable_progress_bars()
    # tqdm's default lock holds a multiprocessing semaphore, registered with multiprocessing's resource
    # tracker; SGLang's shutdown kills every child process, that tracker included, and the tracker relaunched
    # at exit prints a KeyError traceback (harmless, but it reads like a crash). A thread lock is all the
    # demo's progress bars (datasets' thread_map) need.
    tqdm.tqdm.set_lock(threading.RLock())


def setup_env() -> None:
    """verl picks its platform on first import: the plugin's cpu platform, one local rank."""
    from verl_npr.local_actor import setup_env as setup

    setup("cpu")


def make_engine(cfg: DemoConfig, model_dir: str):
    """The engine every evaluation and every PAPO rollout uses (npr.eval's engine classes)."""
    from npr.eval import ReferenceEngine, SGLangEngine

    if cfg.engine == "reference":
        return ReferenceEngine(model_dir, "cpu", "float32")
    # SGLang's real engine on the CPU: scheduler subprocess, KV pool, the NPR backend over torch_native.
    # Its subprocesses warn at import that CUDA-only quantizations and Triton are unavailable: not for a CPU run.
    os.environ.setdefault("PYTHONWARNINGS", "ignore:Only CUDA:UserWarning,ignore:Triton is not supported:UserWarning")
    return SGLangEngine(model_dir, attention_backend="npr", device="cpu",
                        disable_cuda_graph=True, dtype="float32", mem_fraction_static=0.3, max_total_tokens=16384,
                        max_running_requests=64, log_level="error", random_seed=cfg.seed,
                        sleep_on_idle=True)  # an idle scheduler otherwise spins a core the trainer needs


def load_weights(engine, state: dict[str, Any], hf_model, model_dir: str) -> None:
    """Put the actor's weights into the HF model (saved to model_dir) and into the engine."""
    missing, unexpected = hf_model.load_state_dict(state, strict=False)
    if unexpected or [k for k in missing if "rotary" not in k]:
        raise RuntimeError(f"the actor's parameters do not match the model: missing {missing}, unexpected {unexpected}")
    hf_model.save_pretrained(model_dir)
    if engine.name == "reference":
        engine.model.load_state_dict(hf_model.state_dict())
    else:
        ok, message = engine.engine.update_weights_from_disk(model_dir)[:2]
        if not ok:
            raise RuntimeError(f"SGLang did not load the weights from {model_dir}: {message}")

