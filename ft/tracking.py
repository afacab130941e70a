"""Metrics out: Weights & Biases (through Accelerate's trackers) and a local metrics.jsonl, main process only.

Metric names: `train/*` (loss, lr, grad_norm, epoch), `eval/*` (loss, execution metrics), `perf/*`
(tokens/s, samples/s, memory). The step is the optimizer step, so a resumed run continues the same curve.
"""
from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path


def new_run_id() -> str:
    """A W&B-style run id (8 lowercase alphanumerics), kept in checkpoints so a resumed run continues it."""
    import secrets
    import string

    return "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))


def git_commit() -> str | None:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
            cwd=Path(__file__).resolve().parent,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


class Tracker:
    def __init__(self, accelerator, cfg, run_id: str, resumed: bool):
        self.accelerator = accelerator
        self.enabled = accelerator.is_main_process
        self.path = Path(cfg.train.output_dir) / "metrics.jsonl"
        self.use_wandb = cfg.tracking.wandb
        if self.use_wandb:
            t = cfg.tracking
            run_config = cfg.to_dict() | {"git_commit": git_commit()}
            accelerator.init_trackers(
                t.project,
                config=run_config,
                init_kwargs={"wandb": {
                    "id": run_id, "resume": "allow", "name": t.run_name or Path(cfg.train.output_dir).name,
                    "entity": t.entity, "group": t.group, "tags": list(t.tags) or None,
                    "dir": str(Path(cfg.train.output_dir).resolve()),
                }},
            )
        if self.enabled and not resumed:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def log(self, metrics: dict, step: int) -> None:
        if not self.enabled:
            return
        if self.use_wandb:
            self.accelerator.log(metrics, step=step)
        record = {"step": step, "time": time.time(), **metrics}
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")

    def log_table(self, name: str, columns: list[str], rows: list[list], step: int) -> None:
        if self.enabled and self.use_wandb:
            import wandb

            self.accelerator.log({name: wandb.Table(columns=columns, data=rows)}, step=step)

    def summary(self, values: dict) -> None:
        if self.enabled and self.use_wandb:
            run = self.accelerator.get_tracker("wandb", unwrap=True)
            for k, v in values.items():
                run.summary[k] = v

    def finish(self) -> None:
        if self.use_wandb:
            self.accelerator.end_training()


def wandb_offline_default() -> None:
    """No credentials and no explicit mode: stay offline rather than prompting for a login."""
    netrc = Path(os.environ.get("NETRC", "~/.netrc")).expanduser()
    logged_in = "WANDB_API_KEY" in os.environ or (netrc.is_file() and "api.wandb.ai" in netrc.read_text())
    if "WANDB_MODE" not in os.environ and not logged_in:
        os.environ["WANDB_MODE"] = "offline"
