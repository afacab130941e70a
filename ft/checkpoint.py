"""Atomic checkpoints on shared storage: write to a temp folder, publish once, mark COMPLETED last.

Layout of `<output_dir>/checkpoints/step-000050/`:
    adapter/            LoRA adapter (safetensors), loadable by PeftModel.from_pretrained; no base weights
    tokenizer files
    optimizer.pt        optimizer state (identical on every DDP rank, so saved once)
    deepspeed/          instead of optimizer.pt under DeepSpeed: the engine's checkpoint, written by every rank (its
                        optimizer shard + fp32 master copy of the adapter); the frozen base is left out
    scheduler.pt
    rng-rank<R>.pt      RNG states of every process
    state.json          step, epoch, position in the data, W&B run id, world size, training data hash and databases,
                        the time budget's plan
    config.yaml         the resolved config
    manifest.json       size and SHA-256 of every file above (every rank's), written before the marker
    COMPLETED           written last; resume ignores folders without it

Resume checks a checkpoint against its manifest before loading it: a damaged newest checkpoint (bit rot, a truncated
or missing file) is named with the file and why, moved to checkpoints/damaged/, and the newest one that verifies is
used instead. Checkpoints of older versions (no manifest) are checked by reading every file back.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import random
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ft.files import is_disk_full

MARKER = "COMPLETED"
MANIFEST = "manifest.json"
DAMAGED = "damaged"  # checkpoints/damaged/: checkpoints that failed verification, kept for inspection
DEEPSPEED_DIR, DEEPSPEED_TAG = "deepspeed", "state"
_STEP_DIR = re.compile(r"^step-(\d+)$")
log = logging.getLogger("sqlft")


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
    budget: dict | None = None  # train.max_minutes: the plan (ft/budget.py BudgetPlan), kept by a resumed run


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


def find_resume(output_dir: str | Path, resume: str, say=log.warning) -> Path | None:
    """`auto`: the newest complete checkpoint that verifies (or None); `none`: None; else the given folder, which must
    be complete and verify. Main process only (it may move damaged checkpoints aside): ft.distributed.on_main.

    Under `auto`, every newer folder passed over is named through `say` with the reason (no COMPLETED marker, or the
    file that failed verification and why); damaged ones move to checkpoints/damaged/ so that they are neither
    resumed nor counted by `prune`. If complete checkpoints exist but none verifies, that is an error, not a fresh
    start: the run's progress would be lost without a word."""
    from ft.config import ConfigError

    if resume == "none":
        return None
    if resume != "auto":
        path = Path(resume)
        if not is_complete(path):
            raise FileNotFoundError(f"checkpoint.resume '{path}' is not a complete checkpoint (no {MARKER} marker).")
        problems = verify(path, say)
        if problems:
            raise ConfigError(f"checkpoint.resume '{path}' is damaged: {_listed(problems)}.")
        return path
    root = checkpoints_root(output_dir)
    found = sorted(((int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_DIR.match(p.name))),
                   reverse=True) if root.is_dir() else []
    damaged: list[tuple[Path, str]] = []
    passed_over = False
    for _, path in found:
        if not is_complete(path):
            say(f"checkpoint {path} skipped: no {MARKER} marker (its writing never finished)")
            passed_over = True
            continue
        problems = verify(path, say)
        if problems:
            say(f"checkpoint {path} skipped: {_listed(problems)}")
            damaged.append((path, problems[0]))
            continue
        for bad, _ in damaged:
            say(f"checkpoint {bad.name} moved to {set_aside_damaged(bad)} (kept for inspection)")
        if damaged or passed_over:
            say(f"resuming from {path}, the newest checkpoint that verifies")
        return path
    if damaged:
        listed = "; ".join(f"{p.name}: {why}" for p, why in damaged)
        raise ConfigError(f"no checkpoint in {root} verifies ({listed}). Nothing was moved or deleted. Copy intact "
                          f"checkpoints back if you have them, or start this run afresh with --checkpoint.resume none "
                          f"(its files move to {PREVIOUS}/<date-time>/ first).")
    return None


def _listed(problems: list[str]) -> str:
    more = len(problems) - 1
    return problems[0] + (f" (and {more} more: {'; '.join(problems[1:3])}{' ...' if more > 2 else ''})" if more else "")


def set_aside_damaged(path: Path) -> Path:
    """Main process: a checkpoint that failed verification moves to checkpoints/damaged/<name>-<date-time>."""
    import datetime

    dest = path.parent / DAMAGED / f"{path.name}-{datetime.datetime.now().strftime('%Y%m%d-%H%M%S-%f')}"
    dest.parent.mkdir(exist_ok=True)
    os.rename(path, dest)
    return dest


# ------------------------------------------------------------------------------------------------
# verification: a manifest of every file's size and checksum, written before the marker


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                  if p.is_file() and p.name not in (MANIFEST, MARKER))


def write_manifest(folder: Path) -> None:
    """Main process, once every rank's files are in `folder`: size and SHA-256 of each."""
    names = _files(folder)
    digests = _parallel(lambda n: _sha256(folder / n), names)
    doc = {"format": 1, "hash": "sha256",
           "files": {n: {"bytes": (folder / n).stat().st_size, "sha256": d} for n, d in zip(names, digests)}}
    with open(folder / MANIFEST, "w") as f:
        f.write(json.dumps(doc, indent=1))
        f.flush()
        os.fsync(f.fileno())


def verify(path: Path, say=log.warning) -> list[str]:
    """What is wrong with a complete checkpoint's files (empty: nothing), each as "FILE: why". Against its manifest;
    a checkpoint without one (written by an older sqlft) is checked by reading every file back, and `say` says so."""
    manifest = path / MANIFEST
    if not manifest.exists():
        say(f"checkpoint {path} has no {MANIFEST} (written by an older sqlft): checking it by reading its files back")
        return _read_back(path)
    try:
        files = json.loads(manifest.read_text())["files"]
        entries = [(str(n), int(e["bytes"]), str(e["sha256"])) for n, e in files.items()]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        return [f"{MANIFEST}: unreadable ({type(e).__name__}: {e})"]
    def problem(entry: tuple[str, int, str]) -> str | None:
        name, size, digest = entry
        f = path / name
        try:
            actual = f.stat().st_size
            if actual != size:
                return f"{name}: {actual} bytes, {size} when written ({'truncated' if actual < size else 'grown'})"
            if _sha256(f) != digest:
                return f"{name}: checksum mismatch (its bytes changed after it was written)"
        except FileNotFoundError:
            return f"{name}: missing"
        except OSError as e:
            return f"{name}: unreadable ({e.strerror or e})"
        return None

    return [p for p in _parallel(problem, entries) if p is not None]


def _parallel(fn, items: list) -> list:
    """fn over items in a few threads (hashlib releases the GIL; shared storage rewards several reads in flight)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(8, max(1, len(items)))) as pool:
        return list(pool.map(fn, items))


def _read_back(path: Path) -> list[str]:
    """A checkpoint without a manifest: the files every checkpoint has are there, and every file reads back (JSON,
    YAML, safetensors with finite values, torch pickles). Catches truncation and missing files, not every bit flip."""
    import yaml

    always = ("state.json", "config.yaml", "scheduler.pt", "adapter/adapter_model.safetensors")
    problems = [f"{n}: missing" for n in always if not (path / n).is_file()]
    if not (path / "optimizer.pt").is_file() and not (path / DEEPSPEED_DIR).is_dir():
        problems.append(f"optimizer.pt: missing (and no {DEEPSPEED_DIR}/)")
    for name in _files(path):
        f = path / name
        try:
            if name == "state.json":
                TrainState(**json.loads(f.read_text()))
            elif name == "config.yaml":
                yaml.safe_load(f.read_text())
            elif name.endswith(".safetensors"):
                from safetensors import safe_open

                with safe_open(f, "pt") as st:
                    for key in st.keys():
                        if not torch.isfinite(st.get_tensor(key)).all():
                            raise ValueError(f"tensor {key} holds NaN or Inf")
            elif name.endswith(".pt"):
                torch.load(f, weights_only=False, map_location="cpu")  # our own files (see load_rng)
        except Exception as e:  # noqa: BLE001 - whatever a damaged file raises, it is this file's problem
            problems.append(f"{name}: unreadable ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})")
    return problems


@contextlib.contextmanager
def loading(path: Path):
    """Around loading a checkpoint that verified: whatever the loaders raise becomes one line naming it. A missing
    optimizer.pt (a DeepSpeed checkpoint resumed without DeepSpeed, or the reverse) stays a FileNotFoundError."""
    try:
        yield
    except (FileNotFoundError, CheckpointError):
        raise
    except Exception as e:  # noqa: BLE001 - SafetensorError, UnpicklingError, a shape mismatch...
        first = str(e).splitlines()[0] if str(e) else ""
        raise CheckpointError(f"checkpoint {path} verified but could not be loaded ({type(e).__name__}: {first}); "
                              "resume it with the settings that wrote it, or start afresh with --checkpoint.resume "
                              "none") from None


class CheckpointError(RuntimeError):
    """A checkpoint could not be written (the previous one is intact); the message says why and where."""


def _disk_full(e: BaseException, folder: Path) -> bool:
    if is_disk_full(e):
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
        from ft.runlock import check_held

        check_held(output_dir)  # another run took the folder over (this one had stalled): write nothing there
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
    """Main process only, once every rank's files are in: the manifest of them all, rename into place, then the marker
    (the last thing, so it proves the rest)."""
    with writing(tmp, output_dir):
        write_manifest(tmp)
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


def publish_adapter(output_dir: str | Path, step: int) -> Path:
    """Main process only: the adapter of the checkpoint of `step` as <output_dir>/adapter, the run's final adapter.

    Copied into a temp folder first, then renamed into place; an adapter already there (an earlier attempt's) is
    renamed aside just before and removed after. A reader finds the old adapter or the new one (or, for the instant
    between the two renames, none), never a half-copied folder; a crash mid-copy leaves the old one in place.
    """
    out = Path(output_dir)
    final, tmp, old = out / "adapter", out / ".adapter.tmp", out / ".adapter.old"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(step_dir(out, step) / "adapter", tmp)
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.rename(final, old)
    os.rename(tmp, final)
    shutil.rmtree(old, ignore_errors=True)
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
    "train.max_steps", "train.epochs", "train.max_minutes", "train.log_every", "train.cpu_threads", "train.output_dir",
    "train.max_nonfinite_steps",
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
