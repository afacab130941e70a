"""The few distribution-specific pieces, so the recipe reads the same for 1 process and for 64."""
from __future__ import annotations

import os
import signal

import torch

# Exit code after a preemption / time-limit signal was handled and a checkpoint written (EX_TEMPFAIL):
# the job should be requeued and will resume from that checkpoint.
EXIT_PREEMPTED = 75

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)


def cpu_rehearsal_shim() -> None:
    """Let several CPU processes (gloo) rehearse DDP and DeepSpeed on a host without a GPU.

    accelerate 1.x decides a run is not distributed when no GPU is present, even when torchrun started several
    processes: each then believes it is alone. On CPU-only hosts started by a distributed launcher, ask for
    MULTI_CPU (DDP over gloo) and, under DeepSpeed, report a gloo backend instead of "not distributed".
    Inactive whenever CUDA is available or the process runs alone.
    """
    if torch.cuda.is_available() or int(os.environ.get("WORLD_SIZE", "1")) <= 1 or "LOCAL_RANK" not in os.environ:
        return
    os.environ["ACCELERATE_USE_CPU"] = "true"
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() != "true":
        return
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


class StopFlag:
    """Remembers a preemption / time-limit signal; the loop checks it between optimizer steps.

    Launchers don't forward USR1/USR2 to every worker, so each rank records what it got and `should_stop`
    all-reduces the flag: if any rank was told to stop, all of them checkpoint and stop together.
    """

    def __init__(self):
        self.received: int | None = None
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        self.received = signum

    def should_stop(self, accelerator) -> bool:
        flag = torch.tensor([1.0 if self.received is not None else 0.0], device=accelerator.device)
        if accelerator.num_processes > 1:
            flag = accelerator.reduce(flag, reduction="sum")
        return bool(flag.item() > 0)


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


def peak_memory_mb(device) -> float:
    if torch.cuda.is_available() and getattr(device, "type", "") == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux -> MiB
