"""Supervised fine-tuning (train.objective sft): cross-entropy on the answer tokens, the mean over every target token
of the accumulation window on all processes (ft.objectives.base.backward_window)."""
from __future__ import annotations

import logging
from functools import partial
from typing import TYPE_CHECKING

from ft.config import Config
from ft.data.batching import Plan, StepCounts
from ft.data.prefix import no_step_message, plan_for
from ft.data.rows import DataError
from ft.objectives.base import Learner, StepData, StepResult, backward_window, optimizer_step, token_loss_sum

if TYPE_CHECKING:
    from ft.data.encoded import EncodedData

log = logging.getLogger("sqlft")


class SFT:
    """The training rows encoded as prompt + answer, laid out in packed bins, prefix-shared groups (a schema once, its
    questions as branches under a tree mask: ft/data/prefix.py) or padded single examples."""

    updates_per_step = 1

    def __init__(self, cfg: Config):
        self.data, self.train, self.attn = cfg.data, cfg.train, cfg.model.attn_implementation
        self.examples: list = []
        self.plan: Plan | None = None
        self.pad_id: int | None = None
        self.report: dict = {}  # the encoding's counts (kept, truncated, skipped), for the start-up log line

    def prepare(self, encoded: EncodedData, tokenizer, world_size: int, device=None) -> Plan:
        data, train = self.data, self.train
        # Encoded once for the run (ft/data/encoded.py); with schema linking, training rows keep their gold tables.
        self.examples, self.report = encoded.train, encoded.encoding
        if not self.examples:
            raise DataError(f"No training examples left from '{data.source}' after encoding ({self.report}).")
        self.plan = plan_for(self.examples, data, train, world_size, attn=self.attn, device=device)
        if data.prefix_sharing:
            log.info("prefix sharing: %s", self.plan.stats())
        if self.plan.steps_per_epoch() == 0:
            raise DataError(no_step_message(self.plan, len(self.examples), data, train, world_size))
        self.pad_id = tokenizer.pad_token_id
        return self.plan

    def start(self, run: Learner, attn: str) -> None:
        pass

    def step(self, run: Learner, data: StepData) -> StepResult:
        batches = [self.plan.collate(rows, self.examples, self.pad_id) for rows in data.micro]
        loss_sum, targets, window_targets = backward_window(
            run.model, run.accelerator, batches, partial(token_loss_sum, multiple=self.data.pad_to_multiple_of))
        grad_norm = optimizer_step(run, self.train.max_grad_norm)
        return StepResult(loss_sum, targets, window_targets, data.counts.tokens, grad_norm)

    def step_weight(self, counts: StepCounts) -> float:
        return float(counts.tokens)  # a step's time follows its tokens

    def window_metrics(self, sums: dict[str, float]) -> dict[str, float]:
        return {}
