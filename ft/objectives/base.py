"""What every training objective is made of: the interface the loop calls, the result of one step, and the pieces a
step is built from (the token loss, one backward window, one optimizer step).

    objective = OBJECTIVES[cfg.train.objective](cfg)     # ft/objectives/__init__.py: the one table of objectives
    plan = objective.prepare(encoded, tokenizer, world_size, device)   # encoded data -> its steps
    objective.start(run, attn)                           # once the model exists (GRPO: its sampler)
    result = objective.step(run, StepData(...))          # one step of ft/train.py's loop: a StepResult
    metrics = objective.window_metrics(sums)             # its own metrics of a logging window (summed `stats`)

`run` is anything with `accelerator`, `model`, `optimizer` and `scheduler` (ft.train.Setup): the `Learner` protocol.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import torch
import torch.nn.functional as F

from ft import distributed as dist
from ft import nonfinite
from ft.data.batching import Plan, StepCounts
from ft.distributed import loss_scale, sum_across

if TYPE_CHECKING:
    from ft.data.encoded import EncodedData


class Learner(Protocol):
    """What a step changes: the prepared model, its optimizer and schedule, on this accelerator."""

    accelerator: Any
    model: Any
    optimizer: Any
    scheduler: Any


@dataclass(frozen=True)
class StepData:
    """One step of the plan, as the loop hands it to the objective."""

    step: int  # optimizer steps done before this one (seeds GRPO's sampling)
    micro: list[list[list[int]]]  # this process's micro-batches: rows of indices into the objective's examples
    counts: StepCounts  # what the step holds on all processes (follows from the plan)


@dataclass(frozen=True)
class StepResult:
    """What one step of the loop did, for every objective (torchtune's GRPOStats, named for all of them)."""

    loss_sum: float  # this process's summed loss over its target tokens
    targets: int  # this process's target tokens
    window_targets: float  # target tokens of the step on all processes (the loss's normaliser)
    tokens: int  # tokens the step's forwards processed, padding excluded, on all processes
    grad_norm: float | torch.Tensor | None  # before clipping, of the step's last optimizer step (measured always)
    # The objective's own sums (added up over a logging window and over processes, then `window_metrics`), and the
    # tables it logs with the window (the window's last step's).
    stats: dict[str, float] = field(default_factory=dict)
    tables: dict[str, tuple[list[str], list[list]]] = field(default_factory=dict)


class Objective(Protocol):
    """A training objective: what the one loop in ft/train.py's `fit` calls, whatever it optimises."""

    updates_per_step: int  # optimizer (and scheduler) steps per step of the loop

    def step_weight(self, counts: StepCounts) -> float:
        """What a step of the plan costs relative to another (train.max_minutes plans future steps from timed ones)."""
    report: dict  # what prepare kept and left out (the start-up log line's "encoding")

    def prepare(self, encoded: EncodedData, tokenizer, world_size: int, device=None) -> Plan:
        """The run's data (ft/data/encoded.py: training rows and examples) as this objective trains on it, laid out
        in steps (deterministic, resumable by step); a DataError naming what to change when they make no step."""
        ...

    def start(self, run: Learner, attn: str) -> None:
        """Once the model is prepared, before the first step."""
        ...

    def step(self, run: Learner, data: StepData) -> StepResult:
        """One step: forward, backward and `updates_per_step` optimizer steps on this process's micro-batches."""
        ...

    def window_metrics(self, sums: dict[str, float]) -> dict[str, float]:
        """Its metrics of a logging window, from its `StepResult.stats` summed over the steps and processes."""
        ...


# ------------------------------------------------------------------------------------------------
# the pieces of a step


def token_loss_sum(model, batch: dict, multiple: int = 1) -> tuple[torch.Tensor, int]:
    """Summed cross-entropy over target tokens, and their count.

    The LM head runs only where the next token is a target (`logits_to_keep` as a boolean mask): prompts are
    mostly schema, so most logits would be thrown away anyway. `multiple` (data.pad_to_multiple_of): the kept
    positions are rounded up to a multiple of it with positions that carry no target, so the logits, the largest
    tensors of a step ([targets, vocabulary]), come in a few sizes rather than a new one each step.
    """
    labels = batch["labels"]
    targets = torch.full_like(labels, -100)
    targets[:, :-1] = labels[:, 1:]  # what each position predicts
    keep = targets != -100
    n = int(keep.sum())
    if multiple > 1:
        extra = min(-n % multiple, labels.numel() - n)
        if extra:  # the last positions without a target: padding, else the prompt
            free = (~keep).flatten().nonzero().squeeze(1)[-extra:]
            keep = keep.flatten().index_fill(0, free, True).view_as(keep)
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    logits = model(**inputs, use_cache=False, logits_to_keep=keep).logits
    logits = logits.reshape(-1, logits.shape[-1]).float()
    return F.cross_entropy(logits, targets[keep], reduction="sum", ignore_index=-100), n


def target_tokens(batch: dict) -> int:
    return int((batch["labels"][:, 1:] != -100).sum())


def backward_window(model, accelerator, batches: list[dict], loss_fn=token_loss_sum) -> tuple[float, int, float]:
    """Forward + backward over one accumulation window; gradients end up those of the window's token mean.

    Token losses are summed and divided by the target tokens of the whole window on all processes, so a
    short example weighs as much per token as a long one (a mean of per-batch means would not). Under DeepSpeed the
    optimizer step happens inside the last micro-batch's `accelerator.backward` (engine.step). `loss_fn(model,
    batch)` -> (summed loss of the batch's target tokens, their count): the cross-entropy (SFT), or GRPO's clipped
    policy-gradient objective on completion tokens (ft.grpo.PolicyLoss), normalised the same way.
    Returns (local loss sum, local target tokens, global target tokens).
    """
    window_targets = sum_across(accelerator, sum(target_tokens(b) for b in batches))
    scale = loss_scale(accelerator.num_processes, window_targets, dist.deepspeed_accumulation(accelerator))
    total, count = 0.0, 0
    for i, batch in enumerate(batches):
        batch = {k: v.to(accelerator.device) for k, v in batch.items()}
        last = i == len(batches) - 1
        with contextlib.nullcontext() if last else dist.accumulating(accelerator, model):  # sync once per window
            loss_sum, n = loss_fn(model, batch)
            accelerator.backward(loss_sum * scale)
        total, count = total + loss_sum.item(), count + n
    return total, count, window_targets


def optimizer_step(run: Learner, max_grad_norm: float):
    """Clip, step, schedule, zero the gradients; returns the norm before clipping. A non-finite norm skips the
    update (ft/nonfinite.py counts such steps). Under DeepSpeed the engine has stepped (and clipped) in the window's
    last backward: this reads its norm."""
    grad_norm = run.accelerator.clip_grad_norm_(run.model.parameters(), max_grad_norm or math.inf)  # inf: measure only
    if nonfinite.finite(grad_norm):
        run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    return grad_norm
