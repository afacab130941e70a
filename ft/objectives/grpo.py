"""GRPO with an execution reward (train.objective grpo): each step samples grpo.group_size completions per prompt from
the current policy, rewards them by executing them, then takes grpo.updates_per_batch optimizer steps on those
samples, each a backward window of the clipped policy-gradient loss, normalised as the SFT loss is. The machinery
(rollouts, rewards, advantages, the loss, its metrics) is ft/grpo.py's; this module is its step of the loop.

    objective.update(run, prompts, step)    # = learn(run, sample(run, prompts, step)): one step on given prompts
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ft import distributed as dist
from ft import grpo
from ft.config import Config
from ft.data.batching import Plan, StepCounts
from ft.data.rows import DataError, Row
from ft.distributed import sum_across
from ft.objectives.base import Learner, StepData, StepResult, backward_window, optimizer_step

if TYPE_CHECKING:
    from ft.data.encoded import EncodedData

log = logging.getLogger("sqlft")


@dataclass
class Sampled:
    """One step's rollouts on this process: the groups of each micro-batch, scored, and the time each part took."""

    groups: list[list[grpo.Group]]  # [micro-batch][prompt]
    generation_s: float
    reward_s: float

    @property
    def flat(self) -> list[grpo.Group]:
        return [grp for micro in self.groups for grp in micro]


class GRPO:
    """Prompts (training rows with a database to run answers on), laid out as the SFT plan's micro-batches
    (deterministic, resumable by step); a micro-batch holds train.per_device_batch_size prompts."""

    def __init__(self, cfg: Config):
        self.cfg, self.grpo, self.train, self.data = cfg, cfg.grpo, cfg.train, cfg.data
        self.updates_per_step = cfg.grpo.updates_per_batch
        self.rows: list[Row] = []
        self.tokenizer = None
        self.rollout: grpo.Rollout | None = None
        self.report: dict = {}  # prompts kept and skipped, for the start-up log line

    def prepare(self, encoded: EncodedData, tokenizer, world_size: int, device=None) -> Plan:
        d = self.data
        self.rows, lengths, self.report = grpo.prompt_rows(encoded.train_rows, tokenizer, d.template, d.max_length,
                                                           self.grpo.max_new_tokens, d.source)
        plan = grpo.prompt_plan(lengths, self.train, d.max_length, world_size)
        if plan.steps_per_epoch() == 0:
            raise DataError(grpo.no_step_message(len(self.rows), self.train, world_size))
        self.tokenizer = tokenizer
        return plan

    def step_weight(self, counts: StepCounts) -> float:
        return 1.0  # sampled completions dominate, and their lengths aren't known in advance

    def start(self, run: Learner, attn: str) -> None:
        """The policy's sampler: the bare model, in lockstep under ZeRO-3."""
        acc, t = run.accelerator, self.train
        self.rollout = grpo.Rollout(acc.unwrap_model(run.model), self.tokenizer, self.cfg, attn=attn,
                                    synced_gpus=dist.needs_lockstep(acc), device=acc.device)
        log.info("grpo: %d prompts x %d completions per step | %s",
                 t.per_device_batch_size * acc.num_processes * t.gradient_accumulation_steps, self.grpo.group_size,
                 "shared prompts (tree mask)" if self.rollout.shared
                 else f"a row per completion (attention {attn} takes no tree mask)")

    def step(self, run: Learner, data: StepData) -> StepResult:
        prompts = [[self.rows[i] for row in rows for i in row] for rows in data.micro]
        return self.update(run, prompts, data.step)

    def update(self, run: Learner, prompts: list[list[Row]], step: int) -> StepResult:
        """One GRPO step on this process's prompts per micro-batch."""
        return self.learn(run, self.sample(run, prompts, step))

    def sample(self, run: Learner, prompts: list[list[Row]], step: int) -> Sampled:
        """grpo.group_size completions per prompt, seeded by (train.seed, step, the micro-batch's place in the step),
        then rewarded by execution (advantages within each group)."""
        world, rank = run.accelerator.num_processes, run.accelerator.process_index
        t0 = time.perf_counter()
        groups = [self.rollout.sample(rows, grpo.rollout_seed(self.train.seed, step, m * world + rank))
                  for m, rows in enumerate(prompts)]
        t1 = time.perf_counter()
        for micro in groups:
            self.rollout.score(micro)
        return Sampled(groups, t1 - t0, time.perf_counter() - t1)

    def learn(self, run: Learner, sampled: Sampled) -> StepResult:
        """grpo.updates_per_batch optimizer steps on the sampled groups (reference / sampling-policy log-probs first
        when the KL penalty or several updates need them). The loss sums and targets add up over the updates; the
        gradient norm is the last update's."""
        g, acc = self.grpo, run.accelerator
        t0 = time.perf_counter()
        batches = [self.rollout.batch(micro) for micro in sampled.groups]
        if g.updates_per_batch > 1 or g.kl_beta > 0:
            grpo.add_reference(acc.unwrap_model(run.model), batches, g.temperature,
                               sampling=g.updates_per_batch > 1, reference=g.kl_beta > 0)
        loss = grpo.PolicyLoss(g.clip_eps, g.kl_beta, g.temperature)
        total, count = 0.0, 0
        for _ in range(g.updates_per_batch):
            loss_sum, n, window_targets = backward_window(run.model, acc, batches, loss)
            grad_norm = optimizer_step(run, self.train.max_grad_norm)
            total, count = total + loss_sum, count + n
        tokens = int(sum_across(acc, sum(int(b["tokens"]) for b in batches)))
        flat = sampled.flat
        stats = grpo.rollout_stats(flat) | loss.stats | {
            "steps": 1, "generation_s": sampled.generation_s, "reward_s": sampled.reward_s,
            "update_s": time.perf_counter() - t0}
        return StepResult(total, count, window_targets, tokens, grad_norm, stats=stats,
                          tables={"train/rollouts": grpo.rollout_table(flat)})

    def window_metrics(self, sums: dict[str, float]) -> dict[str, float]:
        """Rewards, sample EX, zero-variance groups, KL, clipping, and generation vs reward vs update time."""
        return grpo.window_metrics(sums, kl=self.grpo.kl_beta > 0, clipping=self.grpo.updates_per_batch > 1)
