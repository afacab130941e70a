"""Train to a time budget (`train.max_minutes`, `sqlft train --time-budget 60`): the steps are planned, not guessed.

    budget 10 min: ~5.6 s a step measured -> 105 steps; evaluation ~2 min

1. Costs, right after the process's first step (left out of the timing: one-off costs such as compilation,
   allocator growth and cold caches): a held-out loss batch, the end-of-training evaluation (the base model's half
   is run now: it doesn't depend on training) and a checkpoint are timed. The fine-tuned half is expected to take
   FINETUNED_EVAL_RATIO times the base half: a fine-tuned model writes SQL that runs (the base model's mostly fails
   at once). They come before the timed steps so those run as the rest of the run will, after a generation pass:
   on the demo, steps timed before the base evaluation ran at 209 tokens/s and the ones after it at ~155, a plan
   25 % short (bench/results/demo_recipe.json, the EPYC record of 2026-12-07).
2. Calibration: the next steps are timed, ending within the warmup where the warmup is long enough: there
   the learning rate doesn't depend on the total, so the schedule built after calibration gives every step the
   same rate a schedule built from the start for that total would have (until then the scheduler is built for
   PROVISIONAL_STEPS, which is the peak rate held, should calibration outlast the warmup).
3. The plan: the most steps for which start-up so far + the steps (each step's time from its tokens, known in
   advance from the batch plan) + periodic checkpoints and held-out losses + the final checkpoint, held-out loss
   and evaluation fit in the budget; at most train.max_steps. The LR schedule is built for that total once, and
   the plan is recorded in the checkpoint (state.json `budget`, and train.max_steps of its config.yaml): a resumed
   run keeps it, so it ends where an uninterrupted one ends, on whatever machine it resumes.

The clock counts from the start of the training process (its imports included). Everything here is plain
arithmetic over injected clocks and callables: tests run it with a fake clock.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Callable

# The scheduler's total before the plan exists: only steps past the warmup read it, and with a total this large
# their rate is the peak one (cosine / linear decay over a million steps: unchanged for the first few).
PROVISIONAL_STEPS = 1_000_000
LEAST_TIMED, MOST_TIMED = 2, 8  # timed steps: at least (even past the warmup), at most
# The fine-tuned half of the end-of-training evaluation over the base half: 1.08-1.42 in the demo's seven recorded
# runs, median 1.2 (bench/results/demo_recipe.json, seconds.eval_finetuned / eval_base, Xeon and EPYC); planning
# with 1.0 left the EPYC runs of 2026-12-07 23-40 s over their plan.
FINETUNED_EVAL_RATIO = 1.2


def process_started_at() -> float:
    """Wall-clock time (time.time()) at which this process started: the budget includes its imports."""
    import psutil

    return psutil.Process().create_time()


@dataclass
class BudgetPlan:
    """What a budgeted run planned; stored in the checkpoint's state.json (`budget`)."""

    max_minutes: float
    total_steps: int
    planned_at_step: int  # the step after which the plan was made (the calibration's last)
    step_s: float  # mean seconds of the timed steps
    s_per_weight: float  # seconds per token (per step for GRPO): each future step's time is its tokens x this
    elapsed_s: float  # seconds of the run when the plan was made (start-up, calibration, the timings below)
    eval_s: float  # expected end-of-training evaluation (execution, fine-tuned half): the base half measured x
    # FINETUNED_EVAL_RATIO
    loss_batch_s: float  # one held-out loss batch
    checkpoint_s: float
    expected_s: float  # the whole run's expected wall time under this plan
    cap: int | None = None  # train.max_steps when the plan was made
    capped: bool = False  # the cap, not the budget, ended the plan

    def line(self) -> str:
        evaluation = f"; evaluation ~{_duration(self.eval_s)}" if self.eval_s else ""
        cap = " (train.max_steps)" if self.capped else ""
        return (f"budget {self.max_minutes:g} min: ~{self.step_s:.{1 if self.step_s >= 1 else 2}f} s a step measured "
                f"-> {self.total_steps} steps{cap}{evaluation}; start-up and calibration {_duration(self.elapsed_s)}, "
                f"expected end at {_duration(self.expected_s)}")

    def to_dict(self) -> dict:
        return asdict(self)


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def kept_plan(saved: dict | None, max_minutes: float | None, max_steps: int | None) -> BudgetPlan | None:
    """The plan of the checkpoint a run resumes, when it was made for the same budget and cap (train.max_minutes,
    train.max_steps): a resumed run keeps it, wherever it resumes. Another budget or cap is planned again."""
    if not saved or max_minutes is None or (saved.get("max_minutes"), saved.get("cap")) != (max_minutes, max_steps):
        return None
    return BudgetPlan(**saved)


@dataclass
class Costs:
    """What runs besides steps, timed once: one held-out loss batch, the end-of-training evaluation's expected time
    (its base half, measured), a checkpoint."""

    loss_batch_s: float = 0.0
    eval_s: float = 0.0
    checkpoint_s: float = 0.0


class Calibration:
    """Times the steps of this process: its first one is left out (the costs are measured after it: `costs_due`),
    then steps up to `end` are timed."""

    def __init__(self, start_step: int, warmup_steps: int, clock: Callable[[], float] = time.perf_counter):
        self.clock = clock
        self.first = start_step + 1  # left out
        # within the warmup where it is long enough (the rates don't depend on the plan there)
        self.end = max(self.first + LEAST_TIMED, min(warmup_steps, self.first + MOST_TIMED))
        self.durations: list[float] = []
        self.weights: list[float] = []
        self.costs: Costs | None = None
        self._t0: float | None = None

    def step_started(self) -> None:
        self._t0 = self.clock()

    def step_done(self, step: int, weight: float) -> bool:
        """Record `step` (1-based, just done) and its weight (tokens); True once the last calibration step is done."""
        if step > self.first and self._t0 is not None:
            self.durations.append(self.clock() - self._t0)
            self.weights.append(max(weight, 1.0))
        return step >= self.end

    def costs_due(self, step: int) -> bool:
        """True after the left-out step: time the costs now, before the timed steps."""
        return step == self.first and self.costs is None


@dataclass
class Recurring:
    """What happens besides steps, and how often (from the config)."""

    checkpoint_every: int = 0  # checkpoint.every
    loss_every: int = 0  # eval.loss_every
    loss_batches: int = 0  # batches of each periodic held-out loss
    final_loss_batches: int = 0  # batches of the final held-out loss (the whole split)
    exec_every: int = 0  # eval.every: the periodic execution evaluation
    exec_fraction: float = 0.0  # its questions / the final evaluation's


def plan_steps(max_minutes: float, elapsed_s: float, at_step: int, calib: Calibration, weight: Callable[[int], float],
               recurring: Recurring, *, loss_batch_s: float = 0.0, eval_s: float = 0.0, checkpoint_s: float = 0.0,
               cap: int | None = None) -> BudgetPlan:
    """The plan made after step `at_step`: the largest total whose expected wall time fits in the budget.

    `weight(step)`: the tokens of a (1-based) step, from the batch plan (1 where unknown, e.g. GRPO). Each step after
    the plan costs its weight x the measured seconds per weight; a checkpoint or held-out loss every N steps costs
    what one was measured to; the last step is followed by a checkpoint, the whole held-out loss and the evaluation.
    At least `at_step` (nothing more when the budget is already spent). `elapsed_s`: the run's seconds so far, plus
    what runs right after planning (the checkpoint that records the plan). `eval_s`: the base half of the
    evaluation, as measured; the fine-tuned half (at the end, and a share of it at each periodic evaluation) is
    expected to take FINETUNED_EVAL_RATIO times that."""
    if not calib.durations or sum(calib.durations) <= 0:
        raise ValueError("no timed steps to plan from")
    rate = sum(calib.durations) / sum(calib.weights)
    budget_s = 60.0 * max_minutes
    eval_s *= FINETUNED_EVAL_RATIO
    r = recurring
    final = checkpoint_s + r.final_loss_batches * loss_batch_s + eval_s
    periodic_exec = eval_s * r.exec_fraction

    def after(step: int) -> float:  # what runs after a step that is not the last
        cost = checkpoint_s if r.checkpoint_every and step % r.checkpoint_every == 0 else 0.0
        cost += r.loss_batches * loss_batch_s if r.loss_every and step % r.loss_every == 0 else 0.0
        return cost + (periodic_exec if r.exec_every and step % r.exec_every == 0 else 0.0)

    total, spent, capped = at_step, elapsed_s, False
    while True:
        if cap is not None and total >= cap:
            capped = total == cap and cap > at_step
            break
        nxt = total + 1
        step_cost = rate * max(weight(nxt), 1.0)
        before_next = after(total) if total > at_step else 0.0  # `total` stops being the last step
        if spent + before_next + step_cost + final > budget_s:
            break
        spent += before_next + step_cost
        total = nxt
    return BudgetPlan(max_minutes=max_minutes, total_steps=total, planned_at_step=at_step,
                      step_s=sum(calib.durations) / len(calib.durations), s_per_weight=rate, elapsed_s=elapsed_s,
                      eval_s=eval_s, loss_batch_s=loss_batch_s, checkpoint_s=checkpoint_s,
                      expected_s=spent + final, cap=cap, capped=capped)


def timed(fn: Callable[[], object], clock: Callable[[], float] = time.perf_counter) -> float:
    """Seconds `fn()` took."""
    t0 = clock()
    fn()
    return clock() - t0


def rebuild_scheduler(old, optimizer, build: Callable[[], object]):
    """The scheduler for the planned total, continuing where `old` (built for PROVISIONAL_STEPS) is: the same step
    count, and the rate it set for the next step kept (a new scheduler resets the optimizer's rate on creation)."""
    rates = [g["lr"] for g in optimizer.param_groups]
    new = build()
    new.load_state_dict(old.state_dict())
    for group, lr in zip(optimizer.param_groups, rates):
        group["lr"] = lr
    return new
