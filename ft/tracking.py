"""Metrics out: Weights & Biases (through Accelerate's trackers) and local files, main process only.

Metric names (docs/metrics.md has the full list): `train/*` (loss, lr, grad_norm, epoch), `eval/*` (loss,
execution metrics, per difficulty tier under `eval/tier/<tier>/*`), `final/{base,finetuned}/*` (end-of-training
evaluation), `perf/*` (tokens/s, samples/s, MFU, memory), `sys/*` (process and machine). The step is the optimizer
step, so a resumed run continues the same curve.

Local files, written whether W&B is on or off (`python -m ft.report RUN_DIR` turns them into a page):
    metrics.jsonl                     one JSON object per log call: {"step", "time", ...metrics}; after a resume,
                                      replayed steps appear again (readers keep the later record)
    run.json                          run id, git commit, resolved config, machine, one entry per (re)start
    tables/<name>/step-NNNNNN.jsonl   the rows of each logged table (e.g. tables/eval/predictions/...)
    examples.jsonl                    the trace: one JSON object per optimizer step, {"step", "examples"}: the
                                      example indices it trained on, per (process, micro-batch)

The logging window (the steps since the last `train/*` record) is a `Window`: the loop adds each step's result and
the tracker turns it into metrics (`log_window`), summed over processes.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from ft.constants import EXIT_PREEMPTED
from ft.distributed import sum_across
from ft.files import naming
from ft.system import git_commit, git_dirty, peak_memory_mb, process_rss_mb, system_info

if TYPE_CHECKING:
    from ft.checkpoint import TrainState
    from ft.objectives.base import StepResult

# Dense BF16 tensor-core peak per GPU, in TFLOP/s (vendor datasheets, without sparsity). First match wins, so
# the more specific names come first. Unknown GPUs get no perf/mfu unless SQLFT_PEAK_TFLOPS gives the peak.
PEAK_TFLOPS = [
    (r"GH200", 989.0),
    (r"H100.*PCIe", 756.0),
    (r"H100.*NVL", 835.0),
    (r"H100|H200|H800", 989.0),
    (r"B200", 2250.0),
    (r"B100", 1750.0),
    (r"A100|A800", 312.0),
    (r"L40S", 362.0),
    (r"L40\b", 181.0),
    (r"\bL4\b", 121.0),
    (r"\bA10\b", 125.0),
]


def new_run_id() -> str:
    """A W&B-style run id (8 lowercase alphanumerics), kept in checkpoints so a resumed run continues it."""
    import secrets
    import string

    return "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))


def peak_flops(gpu_name: str | None) -> float | None:
    """Dense BF16 peak of one GPU in FLOP/s, from SQLFT_PEAK_TFLOPS or the table; None when unknown."""
    if os.environ.get("SQLFT_PEAK_TFLOPS"):
        return float(os.environ["SQLFT_PEAK_TFLOPS"]) * 1e12
    for pattern, tflops in PEAK_TFLOPS:
        if gpu_name and re.search(pattern, gpu_name):
            return tflops * 1e12
    return None


def model_params(model) -> int:
    """Parameters a token's forward pass multiplies with: all of them, frozen or not, without the input embedding
    table (a lookup, no matmul). 4-bit weights count unpacked; ZeRO-3 shards count whole."""
    def numel(p) -> int:
        # A 4-bit weight is stored packed (two values a byte, in quant_storage's dtype: 4 per bf16 element); its
        # quant_state keeps the real shape. Under ZeRO-3 DeepSpeed's ds_numel counts that packed storage, so the
        # quant_state comes first, else MFU reads ~4x low for a 4-bit model.
        qs = getattr(p, "quant_state", None)
        if qs is not None and getattr(qs, "shape", None) is not None:
            return math.prod(qs.shape)
        if getattr(p, "ds_numel", None):
            return int(p.ds_numel)
        return p.numel()

    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    skip = {id(p) for p in emb.parameters()} if emb is not None else set()
    return sum(numel(p) for p in model.parameters() if id(p) not in skip)


def mfu(n_params: int, tokens_per_s: float, world_size: int, peak_per_gpu: float | None) -> float | None:
    """Model FLOPs utilization with the usual 6·N FLOPs per token (forward 2N + backward 4N).

    tokens_per_s counts all processes; the peak is per GPU. With LoRA the frozen weights get no weight gradient, so
    the work really done is nearer 4·N per token: by this convention a LoRA run's MFU reads up to 1.5x high. It is
    for comparing runs and GPUs with each other, as other reports do, not a measurement of the hardware.
    """
    if not peak_per_gpu or world_size <= 0:
        return None
    return 6.0 * n_params * tokens_per_s / (peak_per_gpu * world_size)


# ------------------------------------------------------------------------------------------------
# the logging window


@dataclass
class Window:
    """The steps since the last `train/*` record: this process's loss sum and target tokens, the steps' tokens and
    examples (all processes'), the objective's sums, its tables (the last step's), and the wall time the steps took
    (evaluation and checkpoints are set aside: `exclude`)."""

    loss_sum: float = 0.0
    targets: int = 0
    tokens: int = 0
    examples: int = 0
    grad_norm: object = None  # the last step's (a float or a 0-d tensor; None when clipping is off)
    stats: dict[str, float] = field(default_factory=dict)
    tables: dict[str, tuple[list[str], list[list]]] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)

    def add(self, result: StepResult, examples: int) -> None:
        self.loss_sum += result.loss_sum
        self.targets += result.targets
        self.tokens += result.tokens
        self.examples += examples
        self.grad_norm = result.grad_norm
        for k, v in result.stats.items():
            self.stats[k] = self.stats.get(k, 0.0) + v
        self.tables |= result.tables

    def exclude(self, seconds: float) -> None:
        self.started += seconds


def sum_stats(accelerator, stats: dict) -> dict:
    """Every process's sums added up, in one all-reduce (every rank has the same keys)."""
    import torch

    keys = sorted(stats)
    t = torch.tensor([float(stats[k]) for k in keys], device=accelerator.device, dtype=torch.float64)
    if accelerator.num_processes > 1:
        t = accelerator.reduce(t, reduction="sum")
    return dict(zip(keys, t.tolist()))


# ------------------------------------------------------------------------------------------------
# the tracker


def _read_existing(path: Path) -> tuple[int, dict]:
    """Highest step in an existing metrics.jsonl (-1 when none) and the last value of each scalar.

    A torn last line (a process killed mid-write) is ignored.
    """
    best, latest = -1, {}
    if path.is_file():
        with open(path) as f:
            for line in f:
                try:
                    rec = json.loads(line)
                    best = max(best, int(rec["step"]))
                except (ValueError, KeyError, TypeError):
                    continue
                latest |= {k: v for k, v in rec.items() if k != "time" and isinstance(v, (int, float))}
    return best, latest


class Tracker:
    def __init__(self, accelerator, cfg, run_id: str, resumed: bool):
        self.accelerator = accelerator
        self.cfg = cfg
        self.enabled = accelerator.is_main_process
        self.out = Path(cfg.train.output_dir)
        self.path = self.out / "metrics.jsonl"
        self.use_wandb = cfg.tracking.wandb
        self.run_id = run_id
        self.t0 = time.time()
        self.latest: dict = {}  # last value of every scalar logged: artifact metadata
        self.window = Window()
        self._trace = None  # examples.jsonl, opened on the first step
        self._n_params: int | None = None
        # W&B drops a step lower than one it already has. A resumed run replays the steps between its checkpoint
        # and the point it was killed: those stay in metrics.jsonl (readers keep the later record) but are not
        # sent to W&B, whose curve keeps the first attempt's values (the replay is deterministic, so the same).
        self.wandb_floor = -1
        if resumed and self.enabled:
            self.wandb_floor, self.latest = _read_existing(self.path)
        self.sys_info = system_info(accelerator.device, accelerator.num_processes)
        self._sys_pending = dict(self.sys_info)  # static sys/* go into the first local record
        commit, dirty = (git_commit(), git_dirty()) if self.enabled else (None, None)
        if self.use_wandb:
            t = cfg.tracking
            run_config = cfg.to_dict() | {"git_commit": commit, "git_dirty": dirty,
                                          "sys": {k.split("/", 1)[1]: v for k, v in self.sys_info.items()}}
            accelerator.init_trackers(
                t.project,
                config=run_config,
                init_kwargs={"wandb": {
                    "id": run_id, "resume": "allow", "name": t.run_name or Path(cfg.train.output_dir).name,
                    "entity": t.entity, "group": t.group, "tags": list(t.tags) or None,
                    "dir": str(Path(cfg.train.output_dir).resolve()),
                    # quiet: no ~30-line history/summary dump at the end; the run folder and metrics.jsonl hold them
                    "settings": {"quiet": True},
                }},
            )
            self.summary(self.sys_info)
        if self.enabled:
            self.out.mkdir(parents=True, exist_ok=True)
            self._write_run_json(commit, dirty, resumed)

    # ---- local run description --------------------------------------------------------------

    def _write_run_json(self, commit, dirty, resumed: bool) -> None:
        path = self.out / "run.json"
        try:
            previous = json.loads(path.read_text()).get("attempts", []) if path.is_file() else []
        except (OSError, ValueError):
            previous = []
        doc = {
            "run_id": self.run_id, "project": self.cfg.tracking.project, "group": self.cfg.tracking.group,
            "wandb": self.use_wandb, "git_commit": commit, "git_dirty": dirty, "config": self.cfg.to_dict(),
            "attempts": previous + [{"started": self.t0, "resumed": resumed, "git_commit": commit, **self.sys_info}],
        }
        tmp = path.with_suffix(".tmp")
        with naming(path):
            tmp.write_text(json.dumps(doc, indent=2, default=str))
        tmp.replace(path)

    # ---- logging -----------------------------------------------------------------------------

    def _wandb_run(self):
        return self.accelerator.get_tracker("wandb", unwrap=True)

    @contextlib.contextmanager
    def _wandb_guard(self, what: str):
        """A W&B failure never costs a checkpoint or the exit code: where a stop signal reaches every process (Slurm
        signals all of a job's processes; SIGTERM ends a Go program such as W&B's service whatever its disposition)
        the service can die before the trainer has checkpointed, and the next call would raise. W&B is switched off
        and let go quietly; metrics.jsonl goes on, and the resumed run continues the same W&B run id."""
        try:
            yield
        except Exception as e:  # noqa: BLE001
            logging.getLogger("sqlft").warning("W&B %s failed (%s: %s); W&B logging is off for the rest of this run, "
                                               "metrics.jsonl continues", what, type(e).__name__, e)
            self.use_wandb = False
            self._let_go_of_wandb(broken=True)

    def _let_go_of_wandb(self, broken: bool) -> None:
        """accelerate's end_training must not finish the run again; with the service gone, wandb's exit hook would
        print a traceback to the terminal (its teardown is done now, quietly, instead)."""
        self.accelerator.trackers = [t for t in self.accelerator.trackers if t.name != "wandb"]
        if broken:
            import wandb

            with contextlib.suppress(Exception, SystemExit):  # (it exits with the dead service's status)
                wandb.teardown()

    def log(self, metrics: dict, step: int) -> None:
        if not self.enabled:
            return
        record = {"step": step, "time": time.time(), **metrics, **self._sys_pending}
        self._sys_pending = {}
        with naming(self.path), open(self.path, "a") as f:  # local first: a later resume's floor misses no W&B step
            f.write(json.dumps(record) + "\n")
        self.latest |= {k: v for k, v in metrics.items() if isinstance(v, (int, float))} | {"step": step}
        if self.use_wandb and step > self.wandb_floor:
            with self._wandb_guard("log"):
                self.accelerator.log(metrics, step=step)
        elif self.use_wandb:  # a replayed step: W&B's history has it; its summary still gets new keys (final/*)
            self.summary(metrics)

    def log_table(self, name: str, columns: list[str], rows: list[list], step: int) -> None:
        if not self.enabled:
            return
        folder = self.out / "tables" / name
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"step-{step:06d}.jsonl"
        with naming(path):
            path.write_text("".join(json.dumps(dict(zip(columns, r)), default=str) + "\n" for r in rows))
        if self.use_wandb and step > self.wandb_floor:
            import wandb

            with self._wandb_guard("table"):
                self.accelerator.log({name: wandb.Table(columns=columns, data=rows)}, step=step)

    def step_done(self, step: int, result: StepResult, examples: list[list[int]], n_examples: int) -> None:
        """A step into the logging window, and its examples into the trace (flushed: a killed run keeps it)."""
        self.window.add(result, n_examples)
        if not self.enabled:
            return
        path = self.out / "examples.jsonl"
        with naming(path):  # a full disk: one line naming the file
            if self._trace is None:
                self._trace = open(path, "a")
            self._trace.write(json.dumps({"step": step, "examples": examples}) + "\n")
            self._trace.flush()

    def log_window(self, state: TrainState, model, *, lr: float, epoch: float,
                   objective_metrics: Callable[[dict], dict]) -> dict:
        """The window's `train/*`, `perf/*`, `sys/*` and the objective's metrics (e.g. grpo/*) and tables, summed over
        processes (every rank calls this); a new window starts. Returns the metrics."""
        w, acc = self.window, self.accelerator
        elapsed = time.perf_counter() - w.started
        loss = sum_across(acc, w.loss_sum) / max(sum_across(acc, w.targets), 1)
        targets = sum_across(acc, w.targets)
        metrics = {
            "train/loss": loss, "train/lr": lr, "train/epoch": epoch, "train/examples_seen": state.examples_seen,
            "train/tokens_seen": state.tokens_seen, "train/target_tokens_seen": state.target_tokens_seen,
            "perf/target_tokens_per_s": targets / elapsed, "perf/tokens_per_s": w.tokens / elapsed,
            "perf/samples_per_s": w.examples / elapsed, "perf/peak_memory_mb": peak_memory_mb(acc.device),
        } | self.resource_metrics(model, w.tokens / elapsed)  # sys/rss_mb; on CUDA perf/mfu, sys/gpu_reserved_mb
        if w.grad_norm is not None:
            metrics["train/grad_norm"] = float(w.grad_norm)
        if w.stats:
            metrics |= objective_metrics(sum_stats(acc, w.stats))
        for name, (columns, rows) in w.tables.items():
            self.log_table(name, columns, rows, step=state.step)
        self.log(metrics, step=state.step)
        self.window = Window()
        return metrics

    def model_params(self, model) -> int:
        """Parameters a token's forward multiplies with (what MFU counts), the same on 1 process and under ZeRO-3."""
        if self._n_params is None:
            self._n_params = model_params(self.accelerator.unwrap_model(model))
        return self._n_params

    def resource_metrics(self, model, tokens_per_s: float) -> dict:
        """sys/rss_mb always; on CUDA sys/gpu_reserved_mb and perf/mfu (when the GPU's peak is known).

        No perf/mfu on CPU: a CPU has no single peak FLOP/s figure comparable with a GPU's tensor-core peak
        (it depends on the vector units, cores and clocks in use), so a ratio would mean nothing.
        """
        import torch

        out = {"sys/rss_mb": process_rss_mb()}
        device = self.accelerator.device
        if getattr(device, "type", "") == "cuda" and torch.cuda.is_available():
            out["sys/gpu_reserved_mb"] = torch.cuda.memory_reserved(device) / 2**20
            value = mfu(self.model_params(model), tokens_per_s, self.accelerator.num_processes,
                        peak_flops(self.sys_info.get("sys/gpu_name")))
            if value is not None:
                out["perf/mfu"] = value
        return out

    def summary(self, values: dict) -> None:
        if self.enabled and self.use_wandb:
            with self._wandb_guard("summary"):
                run = self._wandb_run()
                for k, v in values.items():
                    run.summary[k] = v

    # ---- adapters as artifacts ---------------------------------------------------------------

    def log_adapter(self, path: str | Path, step: int, aliases: tuple[str, ...] = ()) -> None:
        """The adapter folder as a W&B model artifact, with the metrics known at `step` as metadata.

        By reference to the shared-storage path (nothing uploaded; W&B records each file's checksum), unless
        tracking.upload_adapters. A referenced checkpoint pruned later (checkpoint.keep_last) leaves its artifact
        version pointing at a deleted folder; the final adapter (<output_dir>/adapter) is never pruned.
        """
        if not (self.enabled and self.use_wandb):
            return
        import wandb

        path = Path(path).resolve()
        if path.name != "adapter" and (path / "adapter").is_dir():
            path = path / "adapter"  # a checkpoint folder: its adapter, not the optimizer state
        c = self.cfg
        meta = {"step": step, "path": str(path), "base_model": c.model.name_or_path,
                "quantization": c.quantization.mode, "lora_r": c.lora.r, "lora_alpha": c.lora.alpha,
                "lora_target_modules": list(c.lora.target_modules),
                "metrics": {k: v for k, v in self.latest.items() if k != "step"}}
        with self._wandb_guard("artifact"):
            art = wandb.Artifact(f"adapter-{self.run_id}", type="model", metadata=meta,
                                 description=f"LoRA adapter of run {self.run_id} at step {step}")
            if getattr(c.tracking, "upload_adapters", False):
                art.add_dir(str(path))
            else:
                art.add_reference("file://" + str(path), checksum=True)
            self._wandb_run().log_artifact(art, aliases=[f"step-{step}", *aliases])

    def finish(self, exit_code: int = 0) -> None:
        """End the W&B run: finished (exit_code 0), or stopped by a signal (75: marked preempting, then finished
        with that code, so W&B shows it preempted and the resumed run, the same run id, continues it)."""
        if self._trace is not None:
            self._trace.close()
            self._trace = None
        # The final adapter, written by this process after the end-of-training evaluation: logged with those
        # metrics (final/*) and the alias "final".
        adapter = self.out / "adapter"
        if self.enabled and self.use_wandb and (adapter / "adapter_model.safetensors").is_file() \
                and adapter.stat().st_ctime >= self.t0:
            self.log_adapter(adapter, int(self.latest.get("step", 0)), aliases=("final",))
        if self.enabled and self.use_wandb:
            with self._wandb_guard("finish"):
                run = self._wandb_run()
                if exit_code == EXIT_PREEMPTED:
                    run.mark_preempting()
                run.finish(exit_code=exit_code)
                self._let_go_of_wandb(broken=False)


def wandb_offline_default() -> None:
    """No credentials and no explicit mode: stay offline rather than prompting for a login."""
    netrc = Path(os.environ.get("NETRC", "~/.netrc")).expanduser()
    logged_in = "WANDB_API_KEY" in os.environ or (netrc.is_file() and "api.wandb.ai" in netrc.read_text())
    if "WANDB_MODE" not in os.environ and not logged_in:
        os.environ["WANDB_MODE"] = "offline"
