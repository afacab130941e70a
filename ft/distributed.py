"""The few distribution-specific pieces, so the recipe reads the same for 1 process and for 64."""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
from pathlib import Path

import torch

from ft.config import ConfigError
from ft.system import cpu_count

log = logging.getLogger("sqlft")


def cpu_rehearsal_shim() -> None:
    """Let several CPU processes (gloo) rehearse DDP and DeepSpeed on a host without a GPU.

    accelerate 1.x decides a run is not distributed when no GPU is present, even when torchrun started several
    processes: each then believes it is alone. On CPU-only hosts started by a distributed launcher, ask for
    MULTI_CPU (DDP over gloo) and, under DeepSpeed, report a gloo backend instead of "not distributed".
    Inactive whenever CUDA is available or the process runs alone.
    """
    if torch.cuda.is_available() or int(os.environ.get("WORLD_SIZE", "1")) <= 1 or "LOCAL_RANK" not in os.environ:
        return
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() != "true":
        os.environ["ACCELERATE_USE_CPU"] = "true"
        return
    # Not ACCELERATE_USE_CPU here: accelerate only takes the DeepSpeed path when cpu is off.
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType

    original = PartialState._prepare_backend
    if getattr(original, "_sqlft_shim", False):
        return

    def _prepare_backend(self, cpu=False, sagemaker_dp=False, backend=None):
        backend_out, dist_type = original(self, cpu, sagemaker_dp, backend)
        if dist_type == DistributedType.NO:
            return "gloo", DistributedType.MULTI_CPU
        return backend_out, dist_type

    _prepare_backend._sqlft_shim = True
    PartialState._prepare_backend = _prepare_backend


def set_cpu_threads(requested: int = 0) -> int:
    """Torch threads for a CPU run: `requested`, or (0) this process's share of the cores it may run on.

    `accelerate launch` sets OMP_NUM_THREADS=1 on a host without a GPU unless told otherwise, which leaves all
    but one core idle in a single-process CPU run. No-op (returns 0) when CUDA is available.
    """

    if torch.cuda.is_available():
        return 0
    local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    threads = requested or max(1, cpu_count() // local)
    torch.set_num_threads(threads)
    return threads


# ------------------------------------------------------------------------------------------------
# DeepSpeed: what the loop needs to know, in one place


def zero_stage(accelerator) -> int | None:
    """The ZeRO stage when running under DeepSpeed, else None."""
    if accelerator.distributed_type.name != "DEEPSPEED":
        return None
    return int(accelerator.state.deepspeed_plugin.zero_stage)


def configure_deepspeed(accelerator, cfg) -> None:
    """Derive DeepSpeed's batch arithmetic and clipping from the run config, before `accelerator.prepare`.

    The shipped accelerate configs leave these "auto"; a DeepSpeed JSON (`deepspeed_config_file`) that sets one of
    them to a value other than the run config's is an error, so the two can never disagree. Clipping then happens
    inside the engine's step (accelerate's `clip_grad_norm_` only reports the engine's norm under DeepSpeed).
    """
    stage = zero_stage(accelerator)
    if stage is None:
        return
    t = cfg.train
    values = {
        "train_micro_batch_size_per_gpu": t.per_device_batch_size,
        "gradient_accumulation_steps": t.gradient_accumulation_steps,
        "train_batch_size": t.per_device_batch_size * t.gradient_accumulation_steps * accelerator.num_processes,
        "gradient_clipping": float(t.max_grad_norm),
    }
    plugin = accelerator.state.deepspeed_plugin
    ds = plugin.deepspeed_config
    for key, ours in values.items():
        theirs = ds.get(key, "auto")
        if theirs not in ("auto", None) and float(theirs) != float(ours):
            raise ConfigError(
                f"The DeepSpeed config sets {key}={theirs}, but the run config gives {ours} "
                f"(train.per_device_batch_size={t.per_device_batch_size}, train.gradient_accumulation_steps="
                f"{t.gradient_accumulation_steps}, train.max_grad_norm={t.max_grad_norm}, {accelerator.num_processes} "
                f"processes). Set it to \"auto\" in the DeepSpeed config: it is derived from the run config."
            )
        ds[key] = ours
    plugin.gradient_accumulation_steps = t.gradient_accumulation_steps
    plugin.gradient_clipping = float(t.max_grad_norm)
    # Only read by accelerate to compare with DeepSpeed's value (and warn); it never rescales the loss under DeepSpeed.
    accelerator.gradient_accumulation_steps = t.gradient_accumulation_steps
    if stage == 3 and cfg.quantization.mode != "none" and not plugin.zero3_init_flag and accelerator.is_main_process:
        log.warning("ZeRO-3 without zero3_init_flag: every process first loads the whole quantized model, then "
                    "DeepSpeed shards it; set zero3_init_flag: true (accelerate_configs/zero3.yaml) for large models.")


def deepspeed_accumulation(accelerator) -> int:
    """DeepSpeed's engine divides every backward by its gradient accumulation steps; 1 when not under DeepSpeed."""
    if zero_stage(accelerator) is None:
        return 1
    return int(accelerator.state.deepspeed_plugin.deepspeed_config["gradient_accumulation_steps"])


@contextlib.contextmanager
def accumulating(accelerator, model):
    """Context for the backward of a micro-batch that is not the last of its window: gradients stay local, no step.

    DDP: skip the gradient all-reduce (`no_sync`). DeepSpeed: `accelerator.backward` tells the engine whether this is
    an accumulation boundary from `accelerator.sync_gradients` and, when it is, runs `engine.step()` (clip, optimizer
    step, zero grad) right there. Left True, every micro-batch would be an optimizer step.
    """
    previous = accelerator.sync_gradients
    accelerator.sync_gradients = False
    try:
        with accelerator.no_sync(model):
            yield
    finally:
        accelerator.sync_gradients = previous


def needs_lockstep(accelerator) -> bool:
    """True when every forward pass is a collective: ZeRO-3 gathers each layer's shards from all ranks, so all ranks
    must run the same number of forward passes (evaluation and generation included), or one waits forever."""
    return zero_stage(accelerator) == 3 and accelerator.num_processes > 1


def lockstep_shard(items: list, accelerator) -> list[tuple[object, bool]]:
    """This rank's share of `items` (every world_size-th) as (item, counts) pairs.

    Under ZeRO-3 the share is padded with repeats of the first item, marked counts=False, so every rank runs the same
    number of forward passes; elsewhere no padding is needed.
    """
    world, rank = accelerator.num_processes, accelerator.process_index
    mine = [(x, True) for x in items[rank::world]]
    if needs_lockstep(accelerator) and items:
        mine += [(items[0], False)] * (math.ceil(len(items) / world) - len(mine))
    return mine


def on_main(accelerator, fn, *args, **kwargs):
    """`fn(*args, **kwargs)` on the main process only; every process returns its result (which must pickle) or
    raises its exception. For decisions one process makes for all (which checkpoint to resume, whether the folder's
    lock was taken): the others never wait in a barrier the main one left with an error."""
    result, error = None, None
    if accelerator.is_main_process:
        try:
            result = fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - handed to every process, raised there
            error = e
    if accelerator.num_processes > 1:
        import pickle

        from accelerate.utils import broadcast_object_list

        sent = error
        try:
            pickle.dumps(error)
        except Exception:  # noqa: BLE001 - an exception that doesn't pickle goes as its text
            sent = RuntimeError(f"{type(error).__name__}: {error}")
        box = [result, sent]
        broadcast_object_list(box, from_process=0)
        if not accelerator.is_main_process:
            result, error = box
    if error is not None:
        raise error
    return result


def trainable_state_dict(accelerator, model) -> dict[str, torch.Tensor]:
    """Full values of the trainable (adapter) parameters as CPU tensors, keyed like `state_dict()`; call on every rank.

    Under ZeRO-3 a parameter is a local shard (shape [0] outside a forward) until gathered; `GatheredParameters` is a
    collective over all ranks and gathers only these small tensors, never the frozen base (DeepSpeed #4295).
    """
    unwrapped = accelerator.unwrap_model(model)
    named = [(n, p) for n, p in unwrapped.named_parameters() if p.requires_grad]
    gather = contextlib.nullcontext()
    if zero_stage(accelerator) == 3:
        import deepspeed

        gather = deepspeed.zero.GatheredParameters([p for _, p in named], modifier_rank=None)
    with gather:
        return {n: p.detach().to("cpu", copy=True) for n, p in named}


def write_exit_status(code: int, step: int | None, message: str | None, reported: bool = False) -> None:
    """`$SQLFT_STATUS_DIR/rank-<R>.json`: this process's exit code, for launchers that lose it (accelerate turns a
    worker's 75 into 1). `reported`: the process printed `message` itself (the launcher doesn't repeat it). Written
    atomically; nothing when the variable is unset."""
    folder = os.environ.get("SQLFT_STATUS_DIR")
    if not folder:
        return
    path = Path(folder) / f"rank-{os.environ.get('RANK', '0')}.json"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"exit_code": code, "step": step, "message": message, "reported": reported}))
        tmp.replace(path)
    except OSError as e:
        log.warning("could not write the exit status to %s: %s", path, e)


def sum_across(accelerator, value: float | int) -> float:
    t = torch.tensor([float(value)], device=accelerator.device, dtype=torch.float64)
    if accelerator.num_processes > 1:
        t = accelerator.reduce(t, reduction="sum")
    return float(t.item())


def max_across(accelerator, value: float) -> float:
    t = torch.tensor([float(value)], device=accelerator.device, dtype=torch.float64)
    if accelerator.num_processes > 1:
        t = accelerator.gather(t).max()
    return float(t.max().item())


def loss_scale(num_processes: int, global_target_tokens: float, deepspeed_accumulation: int = 1) -> float:
    """Factor turning a micro-batch's summed token loss into its share of the window's mean token loss.

    DDP and ZeRO average gradients over processes (x num_processes undoes it); DeepSpeed's engine also divides
    each backward by its accumulation steps (x deepspeed_accumulation undoes it). The result: the gradient of
    (sum of token losses over the whole window on all ranks) / (target tokens in that window on all ranks).
    """
    return num_processes * deepspeed_accumulation / max(global_target_tokens, 1.0)
