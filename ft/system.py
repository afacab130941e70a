"""Facts about the machine a run is on: cores, memory, GPU, git state, and the hardware defaults `auto` stands for.

Kept apart from tracking so that the distribution helpers and the config resolution can ask without importing it.
"""
from __future__ import annotations

import importlib.util
import math
import os
import subprocess
from pathlib import Path

import torch


def set_process_defaults() -> None:
    """Environment defaults of a process that loads a model: the main() of train, eval, generate and merge calls this
    first (importing this module changes nothing).

    DeepSpeed logs "Setting accelerator to CPU" whenever it is imported on a machine without a GPU (transformers'
    model loading imports it when accelerate is installed), in commands that never use DeepSpeed too: tell it the
    answer instead of letting it guess aloud.
    """
    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")


def _git(*args: str) -> str | None:
    try:
        return subprocess.run(["git", *args], capture_output=True, text=True, check=True, timeout=10,
                              cwd=Path(__file__).resolve().parent).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def git_commit() -> str | None:
    return _git("rev-parse", "HEAD")


def git_dirty() -> bool | None:
    """Uncommitted changes to tracked files (the commit alone does not reproduce the run)."""
    out = _git("status", "--porcelain", "--untracked-files=no")
    return None if out is None else bool(out)


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))  # the cores this process may use (Slurm's cgroup), not the host's
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def process_rss_mb() -> float:
    """Resident memory of this process now (Linux /proc), else its peak."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def system_info(device, world_size: int) -> dict:
    """Static facts about where the run runs, as sys/* keys (strings and numbers)."""
    import torch

    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world_size) or world_size)
    info = {"sys/cpu_count": cpu_count(), "sys/world_size": world_size,
            "sys/nodes": max(1, math.ceil(world_size / max(local_world, 1))), "sys/torch": torch.__version__,
            "sys/torch_threads": torch.get_num_threads()}
    if getattr(device, "type", "") == "cuda" and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(device)
        info |= {"sys/gpu_name": props.name, "sys/gpu_count": torch.cuda.device_count(),
                 "sys/gpu_memory_gb": round(props.total_memory / 2**30, 1)}
    return info




def peak_memory_mb(device) -> float:
    """Peak GPU memory allocated by this process; on CPU the process's peak RSS."""
    if torch.cuda.is_available() and getattr(device, "type", "") == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux -> MiB


def available_memory_bytes() -> int | None:
    """Memory this machine can still give (MemAvailable), None when unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 matmuls natively (AVX512-BF16 / AMX), as oneDNN reports it."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def fastest_dtype() -> torch.dtype:
    """bfloat16 where this hardware really computes in it, else float32 (what `auto` dtypes resolve to).

    Without native bf16 (e.g. AVX2-only CPUs) a bf16 matmul is ~70x slower than fp32: measured 1.2 vs 84 GFLOP/s.
    """
    if torch.cuda.is_available():
        # Never float16 by default: training in it needs loss scaling, which this loop doesn't do (an fp16 gradient
        # underflows to zero); pre-Ampere GPUs compute in float32 instead, slower but right.
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    return torch.bfloat16 if cpu_has_native_bf16() else torch.float32


def has_cuda() -> bool:
    return torch.cuda.is_available()


def has_flash_attention() -> bool:
    return torch.cuda.is_available() and importlib.util.find_spec("flash_attn") is not None


# Attention implementations that take a custom (tree-shaped) mask, as prefix sharing needs.
TREE_ATTENTION = ("sdpa", "eager", "flex_attention")


def has_flex_attention() -> bool:
    """FlexAttention with a backward pass: CUDA only (torch has no FlexAttention backward on CPU)."""
    if not torch.cuda.is_available():
        return False
    try:
        from torch.nn.attention.flex_attention import create_block_mask  # noqa: F401
    except ImportError:
        return False
    return True


def choose_attention(requested: str, tree_mask: bool = False) -> str:
    """What `model.attn_implementation: auto` means here; `tree_mask`: prefix sharing's tree-shaped mask.

    flash-attn's varlen kernels only express block-diagonal masks, so a tree mask gets FlexAttention on CUDA (a
    BlockMask, no T x T tensor) and SDPA with a 4-D boolean mask elsewhere.
    """
    if requested != "auto":
        return requested
    if tree_mask:
        return "flex_attention" if has_flex_attention() else "sdpa"
    return "flash_attention_2" if has_flash_attention() else "sdpa"
