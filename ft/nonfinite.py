"""NaN and Inf never become a checkpoint or an adapter.

In the loop, `Guard.check` looks at every step's loss and gradient norm (the same verdict on every process). A
non-finite step's update is skipped (ft/train.py optimizer_step: the norm decides, before the optimizer steps);
`train.max_nonfinite_steps` of them in a row stop the run with an error naming the step. Before any checkpoint is
written, `check_weights` makes sure the adapter holds finite values (under DeepSpeed the engine steps inside the
backward, so a bad update can't be skipped there: this is what stops it being saved). The final adapter is a copy of
the last checkpoint's, so nothing non-finite is published; `sqlft eval / merge / generate` check an adapter's values
again when they load it (ft.inference.resolve_adapter).
"""
from __future__ import annotations

import logging
import math
from pathlib import Path

import torch

log = logging.getLogger("sqlft")


class NonFiniteError(RuntimeError):
    """Training produced NaN or Inf: the run stops; the newest checkpoint (if any) holds the last good weights."""


def finite(value) -> bool:
    return value is None or math.isfinite(float(value))


def _last_good(output_dir: str | Path) -> str:
    from ft.checkpoint import complete_checkpoints

    found = complete_checkpoints(output_dir)
    return (f"the newest checkpoint, {found[-1]}, holds the last good weights and the same command resumes it"
            if found else "no checkpoint had been written yet")


class Guard:
    """Counts consecutive non-finite steps; the `limit`-th in a row raises NonFiniteError."""

    def __init__(self, limit: int, output_dir: str | Path, is_main: bool, skips_updates: bool = True):
        self.limit, self.output_dir, self.is_main, self.skips_updates = limit, output_dir, is_main, skips_updates
        self.streak = 0

    def check(self, accelerator, step: int, loss_sum: float, grad_norm) -> None:
        """After optimizer step `step`: `loss_sum` this process's summed loss, `grad_norm` the (global) norm."""
        from ft.distributed import sum_across

        bad_loss = sum_across(accelerator, 0.0 if math.isfinite(loss_sum) else 1.0) > 0
        if not bad_loss and finite(grad_norm):
            self.streak = 0
            return
        self.streak += 1
        what = " and ".join(w for w, bad in (("the loss", bad_loss), (f"the gradient norm ({float(grad_norm)})",
                                                                        not finite(grad_norm))) if bad)
        if self.streak >= self.limit:
            raise NonFiniteError(
                f"{what} at step {step} is not finite, {self.streak} step(s) in a row (train.max_nonfinite_steps "
                f"{self.limit}): training stopped and nothing was published; {_last_good(self.output_dir)}. Look for "
                f"rows that make the loss overflow, or lower train.learning_rate")
        if self.is_main:
            skipped = ("its update was skipped" if self.skips_updates and not finite(grad_norm)
                       else "its update was applied (the weights are checked before every checkpoint)")
            log.warning("step %d: %s is not finite; %s (%d of train.max_nonfinite_steps %d in a row)", step, what,
                        skipped, self.streak, self.limit)


def check_weights(accelerator, model, step: int, output_dir: str | Path) -> None:
    """Every process, before writing a checkpoint: the trainable weights (this process's ZeRO-3 partitions) are
    finite on every process, or NonFiniteError, and nothing is written."""
    from ft.distributed import sum_across

    bad = 0
    for _, p in accelerator.unwrap_model(model).named_parameters():
        if p.requires_grad:
            data = getattr(p, "ds_tensor", None)  # ZeRO-3: the local partition; p.data is empty outside a forward
            data = p.data if data is None else data
            bad += int((~torch.isfinite(data)).sum().item()) if data.numel() else 0
    if sum_across(accelerator, bad) > 0:
        raise NonFiniteError(f"the adapter weights hold NaN or Inf at step {step}: no checkpoint was written and "
                             f"nothing was published; {_last_good(output_dir)}")
