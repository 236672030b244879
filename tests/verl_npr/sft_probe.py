"""Runs verl's own SFT trainer (`python -m verl.trainer.sft_trainer`, recipe npr_beta/tiny_cpu) on
tiny-model trajectories and prints one JSON line: per-run step losses. Runs: packed (3 steps), padded,
loss on branch 2 only (all but its first token) with and without sample 0's branch-1 content altered (branch 2 comes after
branch 1, so only the mask can hide it), and that pair padded with transformers' sdpa, whose causal
mask lets branch 2 see branch 1 (negative control). Used by test_sft.py in a fresh process."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "npr_beta"
LOSS_RE = re.compile(r"step:(\d+) - .*?train/loss:(-?[\d.eE+-]+)")


def make_data(root: Path) -> dict:
    import pandas as pd

    from npr.decoding import Decoder, DecodingConfig, SamplingParams, ScriptedStructure
    from npr.tiny import make_tiny_model, make_tiny_tokenizer, save_tiny

    model_dir = save_tiny(root / "model")
    tok = make_tiny_tokenizer()
    decoder = Decoder(make_tiny_model(tok), tok, DecodingConfig(max_new_tokens=128))
    scripts = [ScriptedStructure([[3, 5]]), ScriptedStructure([[4, 2, 3], [2, 2]]), ScriptedStructure([[6]]),
               ScriptedStructure([[2, 7]])]
    prompts = [tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True, tokenize=True)
               for q in ("What is 6*7?", "Add 1 and 2.", "Half of 84?", "Square 5.")]
    prompts = [list(p["input_ids"] if hasattr(p, "keys") else p) for p in prompts]
    results = decoder.generate(prompts, SamplingParams(temperature=1.0, seed=3), script=scripts)
    rows = [{"prompt_ids": p, "response_ids": list(r.token_ids)} for p, r in zip(prompts, results)]
    pd.DataFrame(rows).to_parquet(root / "sft.parquet")
    # loss on the first block's branch 2 only; the altered copy changes sample 0's branch-1 content
    masked, altered = [], []
    for row, r in zip(rows, results):
        p = len(row["prompt_ids"])
        block, branch = r.layout.block_id[p:], r.layout.branch_id[p:]
        mask = ((block == 1) & (branch == 2)).long()
        # not branch 2's first token (its forced <step>): verl scores token j with the logits of token j-1,
        # here branch 1's last token, which sees branch 1 by design (npr.forkjoin's scoring convention)
        mask[int(mask.nonzero()[0]) if mask.any() else 0] = 0
        mask = mask.tolist()
        masked.append({**row, "loss_mask": mask})
        response = list(row["response_ids"])
        if row is rows[0]:
            content = [i for i, (b, k) in enumerate(zip(block.tolist(), branch.tolist())) if b == 1 and k == 1]
            header = len(decoder.templates.branch_header(1))
            for i in content[header:-1]:  # keep <step> "\n2:" and </step>: same structure, other content
                response[i] = (response[i] + 1) if response[i] + 1 not in decoder.templates.tags.all else response[i] + 2
            assert response != row["response_ids"]
        altered.append({**row, "response_ids": response, "loss_mask": mask})
    pd.DataFrame(masked).to_parquet(root / "masked.parquet")
    pd.DataFrame(altered).to_parquet(root / "altered.parquet")
    return {"model": model_dir, "num_branches": [r.stats["max_width"] for r in results],
            "num_loss_tokens": sum(map(sum, (row["loss_mask"] for row in masked)))}


def train(root: Path, model: str, data: str, name: str, *overrides: str) -> list[float]:
    env = dict(os.environ, VERL_PLATFORM="cpu", RANK="0", WORLD_SIZE="1", LOCAL_RANK="0",
               MASTER_ADDR="127.0.0.1", MASTER_PORT=str(29600 + abs(hash(name)) % 300))
    env.pop("VERL_USE_EXTERNAL_PLUGINS", None)
    cmd = [sys.executable, "-m", "verl.trainer.sft_trainer", "--config-path", str(RECIPE), "--config-name",
           "tiny_cpu", f"model.path={model}", f"data.train_files={data}",
           f"trainer.default_local_dir={root / ('ckpt_' + name)}",
           f"hydra.run.dir={root / ('hydra_' + name)}", *overrides]  # Hydra's run files, out of the checkout
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, stdin=subprocess.DEVNULL)
    losses = {int(m.group(1)): float(m.group(2)) for m in LOSS_RE.finditer(proc.stdout + proc.stderr)}
    if proc.returncode != 0 or not losses:
        raise SystemExit(f"{name}: exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return [losses[k] for k in sorted(losses)]


def main(runs: str = "all") -> None:
    root = Path(tempfile.mkdtemp(prefix="npr_sft_"))
    info = make_data(root)
    model = info["model"]
    one = "trainer.total_training_steps=1"
    out = {"root": str(root), **info}
    out["packed"] = train(root, model, str(root / "sft.parquet"), "packed")
    out["padded"] = train(root, model, str(root / "sft.parquet"), "padded", one, "model.use_remove_padding=false")
    out["masked"] = train(root, model, str(root / "masked.parquet"), "masked", one)
    out["altered"] = train(root, model, str(root / "altered.parquet"), "altered", one)
    sdpa = ("model.override_config.attn_implementation=sdpa", "model.use_remove_padding=false")
    out["masked_sdpa"] = train(root, model, str(root / "masked.parquet"), "masked_sdpa", one, *sdpa)
    out["altered_sdpa"] = train(root, model, str(root / "altered.parquet"), "altered_sdpa", one, *sdpa)
    out["checkpoint"] = str(root / "ckpt_packed")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
