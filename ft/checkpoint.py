"""Atomic checkpoints on shared storage: write to a temp folder, publish once, mark COMPLETED last.

Layout of `<output_dir>/checkpoints/step-000050/`:
    adapter/            LoRA adapter (safetensors), loadable by PeftModel.from_pretrained; no base weights
    tokenizer files
    optimizer.pt        optimizer state (identical on every DDP rank, so saved once)
    deepspeed/          instead of optimizer.pt under DeepSpeed: the engine's checkpoint, written by every rank (its
                        optimizer shard + fp32 master copy of the adapter); the frozen base is left out
    scheduler.pt
    rng-rank<R>.pt      RNG states of every process
    state.json          step, epoch, position in the data, W&B run id, world size, training data hash and databases
    config.yaml         the resolved config
    COMPLETED           written last; resume ignores folders without it
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import random
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

MARKER = "COMPLETED"
DEEPSPEED_DIR, DEEPSPEED_TAG = "deepspeed", "state"
_STEP_DIR = re.compile(r"^step-(\d+)$")


@dataclass
class TrainState:
    step: int = 0  # optimizer steps done
    examples_seen: int = 0
    target_tokens_seen: int = 0
    tokens_seen: int = 0
    wandb_run_id: str | None = None
    world_size: int = 1
    data_sha1: str | None = None  # of the training rows: a resumed run must train on the same data
    train_dbs: list[str] | None = None  # databases of the training rows (evaluation tells seen from unseen ones)


def checkpoints_root(output_dir: str | Path) -> Path:
    return Path(output_dir) / "checkpoints"


def step_dir(output_dir: str | Path, step: int) -> Path:
    return checkpoints_root(output_dir) / f"step-{step:06d}"


def temp_dir(output_dir: str | Path, step: int) -> Path:
    # Deterministic name: every rank knows where to write without a broadcast.
    return checkpoints_root(output_dir) / f".tmp-step-{step:06d}"


def is_complete(path: Path) -> bool:
    return (path / MARKER).is_file()


def complete_checkpoints(output_dir: str | Path) -> list[Path]:
    root = checkpoints_root(output_dir)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_DIR.match(p.name)) and is_complete(p)]
    return [p for _, p in sorted(found)]


def find_resume(output_dir: str | Path, resume: str) -> Path | None:
    """`auto`: newest complete checkpoint (or None); `none`: None; else the given folder, which must be complete."""
    if resume == "none":
        return None
    if resume == "auto":
        found = complete_checkpoints(output_dir)
        return found[-1] if found else None
    path = Path(resume)
    if not is_complete(path):
        raise FileNotFoundError(f"checkpoint.resume '{path}' is not a complete checkpoint (no {MARKER} marker).")
    return path


class CheckpointError(RuntimeError):
    """A checkpoint could not be written (the previous one is intact); the message says why and where."""


def _disk_full(e: BaseException, folder: Path) -> bool:
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    # torch.save on a full disk fails in its zip writer ("unexpected pos ..."), not with ENOSPC: ask the disk.
    try:
        return shutil.disk_usage(folder).free < 64 * 2**20
    except OSError:
        return False


@contextlib.contextmanager
def writing(tmp: Path, output_dir: str | Path):
    """Around writing a checkpoint's temp folder: on failure the folder is removed (the newest complete checkpoint
    stays the one to resume), and a full disk is said in those words instead of a zip writer's error."""
    try:
        yield
    except Exception as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if _disk_full(e, Path(output_dir)):
            free = shutil.disk_usage(output_dir).free / 2**20
            raise CheckpointError(
                f"no space left on {Path(output_dir).resolve()} (filesystem of train.output_dir; {free:.0f} MiB free) "
                f"while writing the checkpoint of step {tmp.name.rsplit('-', 1)[-1].lstrip('0') or 0}; the temp folder "
                f"is removed and the previous checkpoint is intact: free space, then run the same command to resume"
            ) from None
        raise


def begin(output_dir: str | Path, step: int, is_main: bool) -> Path:
    """Main process clears any stale temp folder of this step and creates it; callers barrier after this."""
    tmp = temp_dir(output_dir, step)
    if is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    return tmp


def save_rng(folder: Path, rank: int) -> None:
    torch.save(
        {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
         "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None},
        folder / f"rng-rank{rank}.pt",
    )


def load_rng(folder: Path, rank: int) -> bool:
    path = folder / f"rng-rank{rank}.pt"
    if not path.is_file():
        return False
    # weights_only=False on purpose: RNG states hold numpy / Python objects, and the file is our own.
    rng = torch.load(path, weights_only=False)
    random.setstate(rng["python"])
    np.random.set_state(rng["numpy"])
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    return True


def save_deepspeed_state(engine, folder: Path) -> None:
    """Every rank: the engine writes its optimizer shard (and its module state: the adapter only) into `folder`.

    `exclude_frozen_parameters` leaves the frozen base's parameters out (DeepSpeed PR #3953), but the engine still
    builds the whole `module.state_dict()`: bitsandbytes adds the quantization state of every 4-bit layer to it
    (absmax, quant_map: one byte per 64 weights, 1 GB for 70B), and runs its state-dict hook on ZeRO-3's [0]-shaped
    shards. So while the engine saves, its module state is the trainable parameters alone (their shards under ZeRO-3,
    as DeepSpeed saves them; the full values come from the optimizer's fp32 partitions on load).
    """
    trainable = [(n, p) for n, p in engine.module.named_parameters() if p.requires_grad]
    engine.module_state_dict = lambda *args, **kwargs: {n: p.detach() for n, p in trainable}
    try:
        engine.save_checkpoint(str(folder / DEEPSPEED_DIR), tag=DEEPSPEED_TAG, exclude_frozen_parameters=True)
    finally:
        del engine.module_state_dict  # back to the class's method


def load_deepspeed_state(engine, folder: Path) -> None:
    """Every rank: adapter weights, fp32 master weights and this rank's optimizer shard back into the engine.

    `load_module_strict=False`: the frozen base keys are missing on purpose (peft #746). The scheduler is ours
    (scheduler.pt), not the engine's. DeepSpeed's TorchCheckpointEngine reads with torch.load(weights_only=False)
    itself (its files hold Python objects; torch >= 2.6 would refuse them by default).
    """
    path, _ = engine.load_checkpoint(str(folder / DEEPSPEED_DIR), tag=DEEPSPEED_TAG, load_module_strict=False,
                                     load_optimizer_states=True, load_lr_scheduler_states=False)
    if path is None:
        raise FileNotFoundError(f"{folder / DEEPSPEED_DIR} holds no DeepSpeed checkpoint (tag '{DEEPSPEED_TAG}'): "
                                "was it written by a run without DeepSpeed? Resume with the same kind of config.")


def write_state(folder: Path, state: TrainState, config_yaml: str) -> None:
    (folder / "state.json").write_text(json.dumps(asdict(state), indent=2))
    (folder / "config.yaml").write_text(config_yaml)


def read_state(folder: Path) -> TrainState:
    return TrainState(**json.loads((folder / "state.json").read_text()))


def publish(tmp: Path, output_dir: str | Path, step: int) -> Path:
    """Main process only: rename into place, then write the marker (the last thing, so it proves the rest)."""
    final = step_dir(output_dir, step)
    if final.exists():  # a checkpoint of this step from an earlier attempt: replace it, marker first
        (final / MARKER).unlink(missing_ok=True)
        shutil.rmtree(final)
    os.rename(tmp, final)
    with open(final / MARKER, "w") as f:
        f.write("ok\n")
        f.flush()
        os.fsync(f.fileno())
    return final


def prune(output_dir: str | Path, keep_last: int) -> None:
    """Keep the newest `keep_last` complete checkpoints; remove stale temp folders."""
    root = checkpoints_root(output_dir)
    for old in complete_checkpoints(output_dir)[:-keep_last]:
        (old / MARKER).unlink(missing_ok=True)  # unmark first: a half-deleted folder is never taken
        shutil.rmtree(old, ignore_errors=True)
    for tmp in root.glob(".tmp-step-*"):
        shutil.rmtree(tmp, ignore_errors=True)


# ------------------------------------------------------------------------------------------------
# may this run resume that checkpoint?

# Keys that may change between a checkpoint and the run resuming it: how long to train, where and how it runs,
# logging, evaluation. Everything else (model, quantization, LoRA, data, optimization) must match, and the training
# rows too (their hash).
MAY_DIFFER = (
    "train.max_steps", "train.epochs", "train.log_every", "train.cpu_threads", "train.output_dir",
    "model.attn_implementation", "model.gradient_checkpointing", "model.cache_dir", "data.cache_dir",
    "data.max_eval_rows", "data.eval_source", "data.eval_format", "data.eval_split", "data.skip_bad_rows",
    "checkpoint.", "tracking.", "eval.",
)


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in tree.items():
        out |= _flat(v, f"{prefix}{k}.") if isinstance(v, dict) and k != "columns" else {f"{prefix}{k}": v}
    return out


def mismatches(saved_config: dict, config: dict, saved_sha1: str | None, sha1: str | None) -> list[str]:
    """What differs between a checkpoint's run and this one, among what must not (MAY_DIFFER aside). A key the
    checkpoint's config doesn't have (a setting added since) differs only when it is not at its default now."""
    from ft.config import Config

    a, b, default = _flat(saved_config), _flat(config), _flat(Config().to_dict())
    out = [f"{k}: {a.get(k)!r} in the checkpoint, {b.get(k)!r} now" for k in sorted(a.keys() | b.keys())
           if not k.startswith(MAY_DIFFER) and a.get(k) != b.get(k)
           and not (k not in a and k in default and b.get(k) == default[k])]
    if saved_sha1 and sha1 and saved_sha1 != sha1:
        out.append("the training rows differ (same source, other content)")
    return out


def check_resumable(path: Path, config: dict, data_sha1: str) -> None:
    """Refuse to resume a checkpoint of another run (another model, data or training settings)."""
    import yaml

    from ft.config import ConfigError

    try:
        saved = yaml.safe_load((path / "config.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        saved = None
    if saved is None:
        raise ConfigError(f"Checkpoint {path} has no readable config.yaml, so it can't be told to be this run's.")
    diff = mismatches(saved, config, read_state(path).data_sha1, data_sha1)
    if diff:
        listed = "\n".join(f"  {d}" for d in diff[:12])
        listed += f"\n  ... and {len(diff) - 12} more" if len(diff) > 12 else ""
        may = ", ".join(k + "*" if k.endswith(".") else k for k in MAY_DIFFER)
        raise ConfigError(
            f"{path} is a checkpoint of another run, not this one:\n{listed}\n"
            f"Either train into a new folder (--train.output_dir DIR), or start this run from scratch in the same "
            f"folder (--checkpoint.resume none: the other run's files move to {PREVIOUS}/<date-time>/ first). "
            f"These may differ on resume: {may}."
        )


PREVIOUS = "previous"
RUN_FILES = ("checkpoints", "adapter", "eval", "tables", "report", "metrics.jsonl", "examples.jsonl", "run.json")


def set_aside_previous_run(output_dir: str | Path) -> Path | None:
    """Main process, for `checkpoint.resume: none` in a folder another run used: its files move to
    <output_dir>/previous/<date-time>/ (nothing is deleted), so its checkpoints are neither resumed nor pruned."""
    import datetime

    out = Path(output_dir)
    present = [out / name for name in RUN_FILES if (out / name).exists()]
    if not present:
        return None
    dest = out / PREVIOUS / datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    dest.mkdir(parents=True, exist_ok=True)
    for p in present:
        os.rename(p, dest / p.name)
    return dest
