"""GRPO with an execution reward: the building blocks of `train.objective: grpo` (its step: ft/objectives/grpo.py).

    rollout = Rollout(model, tokenizer, cfg, attn=attn)      # once; `model` is the bare (unwrapped) PEFT model
    groups = rollout.sample(rows, seed)                      # G completions per prompt from the current policy
    rollout.score(groups)                                    # rewards by execution, group-normalised advantages
    batch = rollout.batch(groups)                            # one row per prompt: the prompt once, G branches
    add_reference(model, [batch], ...)                       # no grad: sampling-policy / reference log-probs
    backward_window(model, accelerator, [batch], PolicyLoss(...))   # ft.objectives.base's, with this loss

Sampling is ft.eval.generation.Generator's (samples=G, no greedy answer, one prompt pass per micro-batch), with the
LoRA adapter on: the policy being trained. Its RNG is torch's global one, seeded for each micro-batch from
(train.seed, step, the micro-batch's place in the step): a resumed run and a run on another number of processes draw
the same completions for the same prompts (and the global RNG state the rest of training uses, e.g. dropout, is left
as it was: `fork_rng`).

Rewards (ft.eval.scoring: the evaluation's own safe execution and comparison with the gold result): grpo.reward_match
for a result equal to the gold one; otherwise partial credit, grpo.reward_executes when the SQL runs plus
grpo.reward_valid when it passes schema validation; minus grpo.penalty_no_fence when the answer lacks the closing
fence (ft.data.prompt.STOP: the model didn't stop). A question whose gold query fails gives no reward and no gradient.

Advantages: (r - mean) / (std + 1e-4) within each prompt's group (std unbiased, as TRL's GRPOTrainer). A group whose
rewards are all equal carries no signal: its completions are left out of the loss (no gradient, their tokens not in
the normaliser) and counted (grpo/zero_variance_groups).

Loss per completion token, summed and divided by the completion tokens of the whole accumulation window on all
processes (ft.objectives.base.backward_window, ft.distributed.loss_scale: exactly the SFT loss's normalisation):

    -min(ratio * A, clip(ratio, 1 - eps, 1 + eps) * A) + kl_beta * KL,     ratio = exp(logp - logp_sampling)

logp at grpo.temperature (the distribution the tokens were sampled from). With grpo.updates_per_batch 1 the
sampling log-probs are logp itself, detached (ratio 1, the plain policy gradient, no extra forward); with more
updates on one batch they come from a no-grad forward before the first update. KL: the k3 estimator
exp(ref - logp) - (ref - logp) - 1 against the reference, which is the same model with its adapter disabled
(`disable_adapter()`: no second copy in memory); with an SFT adapter to start from (model.adapter) that is the base
model, not the SFT one.

Shared prompts: the G completions of a prompt are one row, ft.data.prefix.collate_prefix's tree mask: the prompt
(but its last token) is the prefix, each branch is [last prompt token] + completion. collate_prefix never makes a
branch's first token a target (in a shared row the token before it is another branch's last), so the last prompt
token opens every branch and the first completion token is predicted from it, at its own position: each branch's
log-probabilities are those of [prompt + completion] run alone (tests/test_grpo.py), the prompt is computed once.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ft.data.batching import BatchPlan, collate
from ft.data.prefix import collate_prefix
from ft.data.prompt import STOP, Encoded, prompt_ids
from ft.data.rows import DataError, Row
from ft.eval.generation import Generator
from ft.eval.scoring import check_answer, gold_result, judge
from ft.system import TREE_ATTENTION

# Keys of a GRPO micro-batch the model takes; the others are the loss's (advantages, sampling / reference log-probs).
MODEL_KEYS = ("input_ids", "attention_mask", "position_ids")
TABLE_COLUMNS = ["question", "gold", "sample", "reward", "outcome"]


# ------------------------------------------------------------------------------------------------
# data: prompts with a database


def prompt_rows(rows: list[Row], tokenizer, template: str, max_length: int, max_new_tokens: int,
                source: str) -> tuple[list[Row], list[int], dict]:
    """(the rows GRPO samples for, their prompt lengths, counts). Every row needs a database to run its answers on:
    rows without a database (db / db_path) are refused, naming the source; prompts that leave no room for
    grpo.max_new_tokens within data.max_length are skipped and counted."""
    missing = [r for r in rows if not r.db]
    if missing:
        first = missing[0].origin or repr(missing[0].question[:60])
        raise DataError(
            f"train.objective grpo rewards answers by running them on their database, but {len(missing)} of "
            f"{len(rows)} training rows from '{source}' have no db_path or db (first: {first}). Give every row a "
            f"database (db_path: a SQLite file relative to the data file; db: a URL such as postgresql://... or "
            f"duckdb:///...; or data.db for all), or leave those rows out, or train with train.objective sft.")
    kept, lengths = [], []
    for r in rows:
        n = len(prompt_ids(r, tokenizer, template)[0])
        if n + max_new_tokens <= max_length:
            kept.append(r)
            lengths.append(n)
    return kept, lengths, {"prompts": len(kept), "skipped_overlong": len(rows) - len(kept)}


def prompt_plan(lengths: list[int], train, max_length: int, world_size: int) -> BatchPlan:
    """Prompts -> micro-batches -> ranks, the SFT plan's deterministic, resumable layout: a micro-batch holds
    train.per_device_batch_size prompts (each becomes a group of grpo.group_size completions)."""
    return BatchPlan(lengths, train.per_device_batch_size, max_length, False, False, train.seed, world_size,
                     train.gradient_accumulation_steps)


def no_step_message(n_prompts: int, train, world_size: int) -> str:
    need = world_size * train.gradient_accumulation_steps * train.per_device_batch_size
    return (f"{n_prompts} prompts (training rows with a database whose prompt + grpo.max_new_tokens fit "
            f"data.max_length) are fewer than one GRPO step takes: {world_size} processes x "
            f"{train.gradient_accumulation_steps} accumulation steps x {train.per_device_batch_size} prompts "
            f"(train.per_device_batch_size) = {need}. Lower train.per_device_batch_size or "
            f"train.gradient_accumulation_steps, or add data.")


# ------------------------------------------------------------------------------------------------
# rollouts


@dataclass
class Completion:
    ids: list[int]  # the sampled tokens, up to the closing fence / EOS (what the loss is on)
    text: str
    reward: float = 0.0
    outcome: str = ""  # ft.eval.scoring's: correct | wrong | invalid | truncated | gold_failed
    correct: bool = False
    fenced: bool = False
    advantage: float = 0.0


@dataclass
class Group:
    row: Row
    prompt: list[int]
    completions: list[Completion] = field(default_factory=list)
    gold_failed: bool = False

    @property
    def active(self) -> bool:
        """Carries a learning signal: its rewards differ (else every advantage is 0)."""
        return any(c.advantage != 0.0 for c in self.completions)


def rollout_seed(seed: int, step: int, index: int) -> int:
    """The sampling seed of one micro-batch: its step and its place in the step ([micro][rank], as the plan lays
    steps out), so the same prompts get the same completions on 1 process or on N, and after a resume."""
    return ((seed * 1_000_003 + step) * 10_007 + index) % 2**63


def completion_ids(ids: list[int], tokenizer) -> list[int]:
    """A sampled continuation's own tokens, without the padding generate puts after a finished sequence: up to the
    token that completed the closing fence (generation stops there; the prompt's last line break counts, as for
    generate's stop strings), else up to and including the first EOS, else all (grpo.max_new_tokens reached). The
    fence is looked for first: with pad = EOS the padding after it would otherwise pass for a sampled EOS."""
    eos = tokenizer.eos_token_id
    limit = ids.index(eos) if eos in ids else len(ids)

    def stopped(n: int) -> bool:
        return STOP in "\n" + tokenizer.decode(ids[:n], skip_special_tokens=True)

    if limit and stopped(limit):
        lo, hi = 1, limit  # the shortest prefix holding the fence (adding tokens only adds text)
        while lo < hi:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if stopped(mid) else (mid + 1, hi)
        return ids[:lo]
    return ids[: limit + 1] if limit < len(ids) else ids


class Rollout:
    """Sampling, scoring and batching for GRPO: one per run, around the bare model (LoRA on while sampling)."""

    def __init__(self, model, tokenizer, cfg, *, attn: str = "sdpa", synced_gpus: bool = False, device=None):
        g = cfg.grpo
        self.cfg, self.g, self.tok, self.attn, self.device = cfg, g, tokenizer, attn, device
        self.gen = Generator(model, tokenizer, cfg.data.template, g.max_new_tokens, samples=g.group_size,
                             temperature=g.temperature, top_p=g.top_p, synced_gpus=synced_gpus)
        # flash-attn can't take a tree mask: each completion then runs as its own row with the whole prompt.
        self.shared = g.shared_prompts and attn in TREE_ATTENTION
        self.golds: dict = {}  # gold results, computed once per question
        # grpo.reward_test_suite: "matches" means on the database and on its kept neighbours (eval.test_suite K)
        self.suite = None
        if g.reward_test_suite:
            from ft.eval.testsuite import TestSuite

            self.suite = TestSuite(cfg.eval)

    def sample(self, rows: list[Row], seed: int) -> list[Group]:
        """grpo.group_size completions for each row, from one prompt pass (Generator.run), seeded."""
        device = next(self.gen.model.parameters()).device
        devices = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            self.gen.run(rows, greedy=False)
        seqs, n = self.gen.sample_ids.tolist(), self.g.group_size
        groups = []
        for k, row in enumerate(rows):
            grp = Group(row, self.gen.encode(row)[0])
            for ids in seqs[k * n:(k + 1) * n]:
                own = completion_ids(ids, self.tok)
                grp.completions.append(Completion(own, self.tok.decode(own, skip_special_tokens=True)))
            groups.append(grp)
        return groups

    def score(self, groups: list[Group]) -> None:
        if self.suite is not None:  # neighbours built once per database, each question distilled once
            self.suite.prepare([grp.row for grp in groups])
        score_groups(groups, self.g, self.cfg.eval.timeout_s, self.cfg.eval.max_rows, self.golds, self.suite)

    def batch(self, groups: list[Group]) -> dict:
        return collate_groups(groups, self.tok.pad_token_id, self.attn, shared=self.shared, device=self.device,
                              multiple=self.cfg.data.pad_to_multiple_of, limit=self.cfg.data.max_length)


# ------------------------------------------------------------------------------------------------
# rewards and advantages


def reward(g, correct: bool, runs: bool, validates: bool, fenced: bool) -> float:
    """One completion's reward (the grpo section's weights)."""
    r = g.reward_match if correct else g.reward_executes * runs + g.reward_valid * validates
    return r - (0.0 if fenced else g.penalty_no_fence)


def group_advantages(rewards: list[float], eps: float = 1e-4) -> list[float]:
    """(r - mean) / (std + eps) within a group; all 0 when the rewards are all equal (no signal)."""
    if max(rewards) - min(rewards) < 1e-9:
        return [0.0] * len(rewards)
    mean, std = statistics.fmean(rewards), statistics.stdev(rewards)
    return [(r - mean) / (std + eps) for r in rewards]


def score_groups(groups: list[Group], g, timeout_s: float, max_rows: int, golds: dict | None = None,
                 suite=None) -> None:
    """Rewards (by executing every completion against the gold result; with a test suite, also on the question's
    kept neighbour databases) and advantages, in place."""
    for grp in groups:
        gold = gold_result(grp.row, timeout_s, max_rows, golds)
        grp.gold_failed = gold is None or not gold.ok
        for c in grp.completions:
            c.fenced = STOP in "\n" + c.text  # the prompt ends with a line break inside the opened ```sql fence
            if grp.gold_failed:
                c.outcome, c.reward = "gold_failed", 0.0
                continue
            cand = check_answer(grp.row, c.text, timeout_s, max_rows)
            p = judge(grp.row, cand, gold, suite=suite)
            c.outcome, c.correct = p.outcome, p.correct_ts if suite is not None else p.correct
            c.reward = reward(g, c.correct, cand.runs, not cand.validation_errors, c.fenced)
        advantages = [0.0] * len(grp.completions) if grp.gold_failed else \
            group_advantages([c.reward for c in grp.completions])
        for c, a in zip(grp.completions, advantages):
            c.advantage = a


# ------------------------------------------------------------------------------------------------
# tensors


def collate_groups(groups: list[Group], pad_id: int, attn: str = "sdpa", *, shared: bool = True,
                   device=None, multiple: int = 1, limit: int | None = None) -> dict:
    """One micro-batch: the completions of the groups that carry a signal, with labels on their tokens and their
    advantages aligned with the labels (`advantages`, [rows, T]).

    shared: one row per group (ft.data.prefix.collate_prefix: prompt but its last token once, then the branches
    [last prompt token + completion]). Unshared: one right-padded row per completion (ft.data.batching.collate), any
    attention. When no group of the micro-batch carries a signal, its first completion alone stays, with no target:
    every rank runs the same forwards and backwards (DDP's all-reduce, ZeRO-3's gathering) whatever it sampled.
    `multiple`, `limit`: the width rounded up as SFT's batches are (data.pad_to_multiple_of, data.max_length).
    """
    live = [grp for grp in groups if grp.active]
    picked = [(grp, grp.completions) for grp in live] or [(groups[0], groups[0].completions[:1])]
    examples, layout, spans = [], [], []  # spans: (row, first target position, last + 1, advantage)
    for grp, comps in picked:
        p = len(grp.prompt)
        members = []
        for c in comps:
            labels = [-100] * p + (c.ids if live else [-100] * len(c.ids))
            examples.append(Encoded(grp.prompt + c.ids, labels, "kept", p - 1))
            members.append(len(examples) - 1)
        layout.append(members)
    if shared:
        batch = collate_prefix([[m] for m in layout], examples, pad_id, attn, device, multiple=multiple)
        for r, ((grp, comps), members) in enumerate(zip(picked, layout)):
            t = len(grp.prompt) - 1
            for c in comps:  # each branch: the last prompt token, then the completion
                spans.append((r, t + 1, t + 1 + len(c.ids), c.advantage))
                t += 1 + len(c.ids)
    else:
        batch = collate([[i] for m in layout for i in m], examples, pad_id, packed=False, multiple=multiple,
                        limit=limit)
        r = 0
        for grp, comps in picked:
            for c in comps:
                spans.append((r, len(grp.prompt), len(grp.prompt) + len(c.ids), c.advantage))
                r += 1
    adv = torch.zeros(batch["input_ids"].shape, dtype=torch.float32)
    for r, s, e, a in spans:
        adv[r, s:e] = a
    batch["advantages"] = adv
    # Tokens the forward processes, padding excluded (perf/tokens_per_s): the prompt once per group when shared.
    batch["tokens"] = torch.tensor(sum(len(e.input_ids) for e in examples) - (
        sum((len(m) - 1) * (len(grp.prompt) - 1) for (grp, _), m in zip(picked, layout)) if shared else 0))
    return batch


def _targets(batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(positions whose logits predict a target, [B, T] bool; the targets in that order)."""
    labels = batch["labels"]
    keep = torch.zeros_like(labels, dtype=torch.bool)
    keep[:, :-1] = labels[:, 1:] != -100
    return keep, labels[:, 1:][keep[:, :-1]]


def target_logprobs(model, batch: dict, temperature: float = 1.0) -> torch.Tensor:
    """Log-probability of every target (completion) token at `temperature`, flat in row-major order; the LM head
    runs only where a target is predicted (as ft.objectives.base.token_loss_sum)."""
    keep, targets = _targets(batch)
    inputs = {k: v for k, v in batch.items() if k in MODEL_KEYS}
    logits = model(**inputs, use_cache=False, logits_to_keep=keep).logits
    logits = logits.reshape(-1, logits.shape[-1]).float()
    return -F.cross_entropy(logits / temperature, targets, reduction="none")


def target_values(batch: dict, key: str) -> torch.Tensor:
    """A per-position tensor of the batch (e.g. advantages) at the target positions, in target_logprobs' order."""
    return batch[key][:, 1:][batch["labels"][:, 1:] != -100]


@torch.no_grad()
def add_reference(model, batches: list[dict], temperature: float, *, sampling: bool, reference: bool) -> None:
    """Before the first update on these batches, with the bare model (no DDP / DeepSpeed forward; ZeRO-3 gathers in
    lockstep, every rank has the same number of micro-batches) in eval mode, as it sampled: `sampling` stores the
    sampling policy's log-probs (`old_logp`, for grpo.updates_per_batch > 1), `reference` the reference's (the adapter
    off: `ref_logp`, for the KL penalty)."""
    was_training = model.training
    model.eval()
    try:
        for b in batches:
            if sampling:
                b["old_logp"] = target_logprobs(model, b, temperature).cpu()
            if reference:
                with model.disable_adapter():
                    b["ref_logp"] = target_logprobs(model, b, temperature).cpu()
    finally:
        model.train(was_training)


# ------------------------------------------------------------------------------------------------
# the loss


def clipped_objective(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor,
                      clip_eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token loss -min(ratio * A, clip(ratio) * A) and where the clip binds (no gradient flows there)."""
    ratio = torch.exp(logp - old_logp)
    unclipped = ratio * advantages
    clipped = ratio.clamp(1 - clip_eps, 1 + clip_eps) * advantages
    return -torch.minimum(unclipped, clipped), clipped < unclipped


def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token KL(policy || reference) estimate exp(ref - logp) - (ref - logp) - 1 (>= 0, 0 where they agree)."""
    d = ref_logp - logp
    return torch.exp(d) - d - 1


class PolicyLoss:
    """ft.objectives.base.backward_window's loss for GRPO: (the micro-batch's summed per-token objective, its completion
    tokens). Keeps the sums of the KL and of the clipped tokens for the metrics."""

    def __init__(self, clip_eps: float, kl_beta: float, temperature: float):
        self.clip_eps, self.kl_beta, self.temperature = clip_eps, kl_beta, temperature
        self.stats = {"tokens": 0.0, "kl_sum": 0.0, "clipped": 0.0}

    def __call__(self, model, batch: dict) -> tuple[torch.Tensor, int]:
        logp = target_logprobs(model, batch, self.temperature)
        adv = target_values(batch, "advantages").to(logp.device)
        old = batch["old_logp"].to(logp.device) if "old_logp" in batch else logp.detach()
        loss, clipped = clipped_objective(logp, old, adv, self.clip_eps)
        if self.kl_beta:
            kl = kl_k3(logp, batch["ref_logp"].to(logp.device))
            loss = loss + self.kl_beta * kl
            self.stats["kl_sum"] += float(kl.detach().sum())
        self.stats["tokens"] += logp.numel()
        self.stats["clipped"] += float(clipped.sum())
        return loss.sum(), int(logp.numel())


# ------------------------------------------------------------------------------------------------
# metrics


def rollout_stats(groups: list[Group]) -> dict[str, float]:
    """Sums over one step's groups (summed over steps and processes, then turned into means by window_metrics)."""
    comps = [c for grp in groups for c in grp.completions if not grp.gold_failed]
    return {
        "samples": len(comps), "reward_sum": sum(c.reward for c in comps),
        "reward_sq_sum": sum(c.reward ** 2 for c in comps), "correct": sum(c.correct for c in comps),
        "no_fence": sum(not c.fenced for c in comps), "completion_tokens": sum(len(c.ids) for c in comps),
        "groups": sum(not grp.gold_failed for grp in groups),
        "zero_variance_groups": sum(not grp.active and not grp.gold_failed for grp in groups),
        "gold_failed": sum(grp.gold_failed for grp in groups),
    }


def add_stats(into: dict, stats: dict) -> dict:
    for k, v in stats.items():
        into[k] = into.get(k, 0.0) + v
    return into


def window_metrics(sums: dict, kl: bool, clipping: bool) -> dict:
    """grpo/* and the time split of a logging window from its statistics summed over its steps and all processes
    (seconds: the mean per step and process; `steps` counts one per step and process)."""
    n = max(sums.get("samples", 0.0), 1.0)
    per_step = max(sums.get("steps", 0.0), 1.0)
    mean = sums.get("reward_sum", 0.0) / n
    out = {
        "grpo/reward_mean": mean,
        "grpo/reward_std": math.sqrt(max(sums.get("reward_sq_sum", 0.0) / n - mean ** 2, 0.0)),
        "grpo/sample_ex": sums.get("correct", 0.0) / n,
        "grpo/no_fence": sums.get("no_fence", 0.0) / n,
        "grpo/completion_tokens": sums.get("completion_tokens", 0.0) / n,
        "grpo/zero_variance_groups": sums.get("zero_variance_groups", 0.0) / max(sums.get("groups", 0.0), 1.0),
        "grpo/gold_failed": sums.get("gold_failed", 0.0),
        "perf/generation_s": sums.get("generation_s", 0.0) / per_step,
        "perf/reward_s": sums.get("reward_s", 0.0) / per_step,
        "perf/update_s": sums.get("update_s", 0.0) / per_step,
    }
    if kl:
        out["grpo/kl"] = sums.get("kl_sum", 0.0) / max(sums.get("tokens", 0.0), 1.0)
    if clipping:
        out["grpo/clip_fraction"] = sums.get("clipped", 0.0) / max(sums.get("tokens", 0.0), 1.0)
    return out


def rollout_table(groups: list[Group]) -> tuple[list[str], list[list]]:
    """train/rollouts: per prompt its question, gold query, first sample and that sample's reward and outcome."""
    rows = [[grp.row.question, grp.row.query, grp.completions[0].text, round(grp.completions[0].reward, 4),
             grp.completions[0].outcome] for grp in groups if grp.completions]
    return TABLE_COLUMNS, rows
