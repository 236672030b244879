"""verl_npr.preflight: a main_ppo run that cannot work is refused in seconds, before Ray starts, with every
problem and its fix: no CUDA and no VERL_PLATFORM=cpu, verl's example model path or a missing one, missing
data files, `npr data` prompts longer than the rollout's prompt length under data.truncation 'error'. The
recipes' tiny_cpu prompt length fits `npr data` prompts. The last tests run the recipe commands themselves."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from verl_npr.preflight import PreflightError, check, preflight_problems

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from npr.tiny import save_tiny

    return save_tiny(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def npr_data(tmp_path_factory):
    """A parquet as `npr data` writes it: our instruction as the system message, then the question."""
    from npr.data import convert, write_parquet

    path = tmp_path_factory.mktemp("data") / "train.parquet"
    write_parquet(convert([{"question": "What is 6*7?", "answer": "42"},
                           {"question": "How many primes are below 30? " * 3, "answer": "10"}], "toy").rows, path)
    return str(path)


def config(model, data, max_prompt_length=2048, **data_extra):
    return {"actor_rollout_ref": {"model": {"path": model}, "rollout": {"prompt_length": max_prompt_length}},
            "data": {"train_files": data, "val_files": [data], "max_prompt_length": max_prompt_length,
                     "truncation": "error", "prompt_key": "prompt", **data_extra}}


def test_a_good_config_passes(tiny_model, npr_data):
    assert preflight_problems(config(tiny_model, npr_data), has_cuda=False, environ={"VERL_PLATFORM": "cpu"}) == []
    assert preflight_problems(config(tiny_model, npr_data), has_cuda=True, environ={}) == []


def test_no_cuda_and_no_cpu_platform_says_the_fix(tiny_model, npr_data):
    for environ, got in [({}, "VERL_PLATFORM is not set"), ({"VERL_PLATFORM": "nvidia"}, "VERL_PLATFORM='nvidia'")]:
        [problem] = preflight_problems(config(tiny_model, npr_data), has_cuda=False, environ=environ)
        assert got in problem and "run with VERL_PLATFORM=cpu" in problem


@pytest.mark.parametrize("path, needle", [
    ("~/models/deepseek-llm-7b-chat", "still verl's example default '~/models/deepseek-llm-7b-chat'"),
    ("/nowhere/model", "actor_rollout_ref.model.path '/nowhere/model' does not exist"),
    ("TINY_MODEL_DIR", "'TINY_MODEL_DIR' does not exist"),
])
def test_model_path_refusals(path, needle, npr_data):
    [problem] = preflight_problems(config(path, npr_data), has_cuda=True, environ={})
    assert needle in problem


def test_a_hub_name_and_missing_data_files(npr_data):
    assert preflight_problems(config("Qwen/Qwen3-4B-Instruct-2507", npr_data), has_cuda=True, environ={}) == []
    problems = preflight_problems(config("Qwen/Qwen3-4B", "/nowhere/train.parquet"), has_cuda=True, environ={})
    assert [p.split(" '")[0] for p in problems] == ["data.train_files", "data.val_files"]
    assert all("npr data --input" in p for p in problems)


def test_prompts_longer_than_the_prompt_length_are_refused(tiny_model, npr_data):
    from npr.tiny import make_tiny_tokenizer
    from verl_npr.preflight import _prompt_lengths, _read_prompts

    lengths = _prompt_lengths(make_tiny_tokenizer(), _read_prompts(npr_data, "prompt"), {})
    longest = max(lengths)
    assert 128 < longest < 2048  # the instruction alone is longer than the old tiny_cpu limit of 128
    problems = preflight_problems(config(tiny_model, npr_data, max_prompt_length=longest - 1), has_cuda=True, environ={})
    assert len(problems) == 2  # train and val files
    assert f"1 of 2 prompts in data.train_files '{npr_data}' are longer than rollout.prompt_length={longest - 1}" in problems[0]
    assert f"the longest: {longest} tokens, row 1" in problems[0] and f"data.max_prompt_length={longest}" in problems[0]
    assert preflight_problems(config(tiny_model, npr_data, max_prompt_length=longest), has_cuda=True, environ={}) == []
    for extra in ({"truncation": "left"}, {"filter_overlong_prompts": True}):  # verl truncates / filters on purpose
        assert preflight_problems(config(tiny_model, npr_data, 128, **extra), has_cuda=True, environ={}) == []
    with pytest.raises(PreflightError, match="this run cannot work:\n  - 2 of"):
        check(config(tiny_model, npr_data, 16), has_cuda=True, environ={})


def test_joining_a_ray_cluster_checks_only_what_is_wrong_everywhere(tiny_model, npr_data):
    """A CPU-only head node driving GPU workers, files on the workers' disks: no platform or path refusal."""
    remote = config("/on/the/workers/model", "/on/the/workers/train.parquet")
    for environ, cfg in [({"RAY_ADDRESS": "10.0.0.1:6379"}, remote),
                         ({}, {**remote, "ray_kwargs": {"ray_init": {"address": "auto"}}})]:
        assert preflight_problems(cfg, has_cuda=False, environ=environ) == []
    [problem] = preflight_problems(config("~/models/deepseek-llm-7b-chat", npr_data), has_cuda=False,
                                   environ={"RAY_ADDRESS": "auto"})
    assert "example default" in problem
    problems = preflight_problems(config(tiny_model, npr_data, 128), has_cuda=False, environ={"RAY_ADDRESS": "auto"})
    assert len(problems) == 2 and all("are longer than rollout.prompt_length=128" in p for p in problems)


def test_the_refusal_says_how_to_skip_the_checks(npr_data):
    with pytest.raises(PreflightError, match=r"add ~hydra.callbacks.npr_preflight to the command"):
        check(config("~/models/deepseek-llm-7b-chat", npr_data), has_cuda=True, environ={})


@pytest.mark.parametrize("recipe", ["npr_zero", "npr_rl"])
def test_tiny_cpu_prompt_length_fits_npr_data_prompts(recipe, npr_data):
    from npr.tiny import make_tiny_tokenizer
    from verl_npr.preflight import _prompt_lengths, _read_prompts

    limit = yaml.safe_load((ROOT / "recipes" / recipe / "tiny_cpu.yaml").read_text())["data"]["max_prompt_length"]
    assert max(_prompt_lengths(make_tiny_tokenizer(), _read_prompts(npr_data, "prompt"), {})) <= limit


def _main_ppo(recipe: str, *overrides: str, env: dict, cwd) -> subprocess.CompletedProcess:
    from tests.hosts import make_env

    return subprocess.run([sys.executable, "-m", "verl.trainer.main_ppo", "--config-path", str(ROOT / "recipes" / recipe),
                           "--config-name", "tiny_cpu", *overrides], capture_output=True, text=True, timeout=600,
                          env=make_env({"VERL_USE_EXTERNAL_PLUGINS": None, **env}), stdin=subprocess.DEVNULL,
                          cwd=cwd)  # Hydra writes its outputs/ folder there


@pytest.mark.verl
@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["npr_zero", "npr_rl"])
def test_bare_recipe_run_is_refused_before_ray(recipe, tmp_path):
    """The bare command with no GPU and no VERL_PLATFORM: exit 2, every problem listed, Ray never started."""
    from tests.hosts import require_host

    require_host("verl")
    proc = _main_ppo(recipe, env={"VERL_PLATFORM": None, "CUDA_VISIBLE_DEVICES": ""}, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "npr preflight: this run cannot work:" in proc.stderr and "Traceback" not in proc.stderr
    for needle in ["VERL_PLATFORM is not set", "run with VERL_PLATFORM=cpu", "deepseek-llm-7b-chat",
                   "data.train_files '~/data/rlhf/gsm8k/train.parquet' does not exist"]:
        assert needle in proc.stderr
    assert "ray init" not in proc.stdout + proc.stderr  # verl's run_ppo prints it just before ray.init


@pytest.mark.verl
@pytest.mark.slow
def test_overlong_prompts_are_refused_before_ray(tiny_model, npr_data, tmp_path):
    from tests.hosts import require_host

    require_host("verl")
    proc = _main_ppo("npr_rl", f"actor_rollout_ref.model.path={tiny_model}", f"data.train_files={npr_data}",
                     f"data.val_files={npr_data}", "data.max_prompt_length=128", env={"VERL_PLATFORM": "cpu"},
                     cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "are longer than rollout.prompt_length=128" in proc.stderr and "no CUDA device" not in proc.stderr
    assert "ray init" not in proc.stdout + proc.stderr
