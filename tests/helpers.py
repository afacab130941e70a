"""What the tests share: configs for the tiny models, running the recipe, reading a run folder back.

    cfg = write_config(tmp_path, tiny_model, rows_file, train={"max_steps": 4})   # RECIPE, merged per section
    run_train(cfg)                                                                # ft/train.py, exit 0 checked
    metrics(tmp_path / "run"), metrics_by_step(...), curve(..., "train/loss"), trace(...), adapter_tensors(...)

A base config is a dict of sections; "{folder}" in a value stands for the folder the config is written to.
"""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import yaml
from conftest import REPO

TRAIN = [sys.executable, str(REPO / "ft" / "train.py")]

# The recipe tests' run: the tiny random Llama in float32 (no quantization), LoRA on q/v and the LM head, a quarter of
# the rows held out, 30 steps, a checkpoint at the end only, no W&B, no final evaluation.
RECIPE = {
    "model": {"gradient_checkpointing": False},
    "quantization": {"mode": "none", "dtype": "float32", "compute_dtype": "float32"},
    "lora": {"r": 16, "alpha": 16, "dropout": 0.0, "target_modules": ["q_proj", "v_proj", "lm_head"]},
    "data": {"eval_fraction": 0.25, "max_length": 256},
    "train": {"output_dir": "{folder}/run", "max_steps": 30, "per_device_batch_size": 4, "learning_rate": 1e-2,
              "warmup_steps": 2, "log_every": 2, "seed": 0},
    "checkpoint": {"every": 0},
    "tracking": {"wandb": False},
    "eval": {"at_end": False},
}

# The launchers' runs (`sqlft train`, `sqlft submit`): the same model, LoRA r 8 on q/v, 10 steps of 2 rows; the
# output folder is the launcher's to choose.
LAUNCH = {
    "model": {"gradient_checkpointing": False},
    "quantization": {"mode": "none", "dtype": "float32", "compute_dtype": "float32"},
    "lora": {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]},
    "data": {"eval_fraction": 0.25, "max_length": 256},
    "train": {"max_steps": 10, "per_device_batch_size": 2, "learning_rate": 1e-2, "warmup_steps": 2,
              "log_every": 2, "seed": 0},
    "checkpoint": {"every": 0},
    "tracking": {"wandb": False},
    "eval": {"at_end": False},
}


def merged(base: dict, **sections) -> dict:
    """A copy of `base` with each of `sections` merged into its section (keys given win)."""
    out = copy.deepcopy(base)
    for section, values in sections.items():
        out[section] = out.get(section, {}) | values
    return out


def _fill(value, folder: Path):
    if isinstance(value, dict):
        return {k: _fill(v, folder) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, folder) for v in value]
    return value.replace("{folder}", str(folder)) if isinstance(value, str) else value


def write_config(folder: Path, model: Path, rows: Path, base: dict = RECIPE, **sections) -> Path:
    """<folder>/config.yaml: `base` training `model` on `rows`, each of `sections` merged into its section."""
    cfg = merged(base, model={"name_or_path": str(model)}, data={"source": str(rows)})
    cfg = _fill(merged(cfg, **sections), folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def run_train(config: Path, *extra: str, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    """ft/train.py --config CONFIG [overrides], W&B offline; its output captured."""
    proc = subprocess.run(TRAIN + ["--config", str(config), *extra], capture_output=True, text=True,
                          env=os.environ | {"WANDB_MODE": "offline"} | (env or {}), timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def run_logged(cmd: list[str], log: Path, env: dict, check: bool = True) -> subprocess.CompletedProcess:
    """A command with its output in `log` (shown when it fails)."""
    with open(log, "w") as out:
        proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=os.environ | env, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}: {' '.join(cmd)}\n{log.read_text()[-6000:]}")
    return proc


def metrics(run_dir: Path) -> list[dict]:
    """metrics.jsonl's records, in order."""
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def metrics_by_step(run_dir: Path) -> dict[int, dict]:
    """Step -> its metrics merged; a step logged again after a resume: the later record."""
    out: dict[int, dict] = {}
    for rec in metrics(run_dir):
        out.setdefault(rec["step"], {}).update(rec)
    return out


def curve(run_dir: Path, key: str) -> dict[int, float]:
    return {s: m[key] for s, m in metrics_by_step(run_dir).items() if key in m}


def trace(run_dir: Path, missing_ok: bool = False) -> dict:
    """examples.jsonl: step -> the examples it trained on (a replayed step after a resume: the later line)."""
    path = run_dir / "examples.jsonl"
    if missing_ok and not path.is_file():
        return {}
    return {r["step"]: r["examples"] for r in map(json.loads, path.read_text().splitlines())}


def adapter_tensors(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(path / "adapter_model.safetensors")


def max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)
