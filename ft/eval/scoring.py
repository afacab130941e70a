"""Scoring by execution: candidates checked and run, the answer picked, compared with the gold result; summaries.

    p = score_one(row, raw_output, seconds, timeout_s, max_rows)       # one answer: validate, execute both, compare
    preds, summary = evaluate(model, tokenizer, rows, ...)            # generate + pick + score a dataset

Every answer ends in exactly one outcome: correct, wrong, invalid (doesn't validate against the schema or doesn't
run), truncated (a result cut at `eval.max_rows` can't be compared: never correct), or gold_failed (the gold query
couldn't run: the question is left out of every rate and counted by database). Anything parsing, validating or
executing model output raises is an invalid answer, never a crash.

Picking the answer among candidates is one mechanism with two rules (`pick`): with `eval.samples N` (execution-guided
decoding) the greedy answer and N samples are grouped by their results and the largest group of valid candidates
wins; with `eval.retries N` (retry with validation) N samples are drawn only when the greedy answer fails schema
validation, and the first that validates replaces it. An invalid candidate never wins over a valid one.
"""
from __future__ import annotations

import math
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

from ft.data.prompt import sql_from_output
from ft.data.rows import Row
from ft.eval.generation import Generator
from ft.sql.compare import order_matters, query_has_order_by, results_match
from ft.sql.execute import ExecResult, execute
from ft.sql.parse import normalize_sql
from ft.sql.validate import validate


@dataclass
class Prediction:
    question: str
    gold: str
    predicted: str
    tier: str | None = None
    db_id: str | None = None
    raw_output: str = ""
    outcome: str = "wrong"  # correct | wrong | invalid | truncated | gold_failed
    error: str | None = None  # why the predicted SQL didn't run (or the gold query, for gold_failed)
    correct: bool = False  # Spider-style: multiset, order-aware when the gold query has ORDER BY
    correct_set: bool = False  # BIRD-style: set comparison
    exact_match: bool = False
    valid: bool = False  # parses and executes
    truncated: bool = False  # the predicted or the gold result hit eval.max_rows
    hallucinated: list[str] = field(default_factory=list)  # tables / columns not in the schema
    validation_errors: list[str] = field(default_factory=list)
    db_seen: bool | None = None  # the question's database was among the training data's (None: unknown)
    retried: bool = False  # first answer failed validation and alternatives were sampled
    correct_first: bool = False  # correctness of the first (greedy) answer, before any retry or vote
    candidates: int = 0  # answers considered (greedy + samples), with eval.samples / eval.retries
    valid_candidates: int = 0  # of them, those that validate and execute
    agreement: float | None = None  # share of the valid candidates in the winning group (eval.samples)
    voted: bool = False  # the answer was picked by execution-guided decoding (eval.samples)
    vote_changed: bool = False  # the vote picked another result than the greedy answer's
    latency_s: float = 0.0  # generation share of its batch + executing its candidates


@dataclass
class Candidate:
    """One answer, checked against the schema and run (not yet compared with the gold result)."""

    raw: str
    sql: str
    validation_errors: list[str]
    hallucinated: list[str]
    result: ExecResult | None
    logprob: float = 0.0
    greedy: bool = False

    @property
    def runs(self) -> bool:
        return self.result is not None and self.result.ok

    @property
    def valid(self) -> bool:
        """Validates against the schema and returns a complete result: what may win a vote."""
        return not self.validation_errors and self.runs and not self.result.truncated


def check_answer(row: Row, raw: str, timeout_s: float, max_rows: int, *, logprob: float = 0.0,
                 greedy: bool = False) -> Candidate:
    """Extract, validate and (when the row has a database) execute one model answer. Never raises."""
    try:
        sql = sql_from_output(raw)
        v = validate(sql, row.schema, row.macros)
        errors = [i.message + (f" (did you mean {i.suggestion}?)" if i.suggestion else "") for i in v.errors]
        hallucinated = [i.name for i in v.errors if i.kind in ("unknown_table", "unknown_column")]
    except Exception as e:  # noqa: BLE001 - model output is hostile input: it is invalid, not a crash
        sql, errors, hallucinated = raw.strip()[:2000], [f"could not analyse the answer ({type(e).__name__})"], []
    result = execute(row.db_path, sql, row.macros, timeout_s=timeout_s, max_rows=max_rows) if row.db_path else None
    return Candidate(raw, sql, errors, hallucinated, result, logprob, greedy)


def gold_result(row: Row, timeout_s: float, max_rows: int, cache: dict | None = None) -> ExecResult | None:
    """The gold query's result (once per question and database), None when the row has no database."""
    if not row.db_path:
        return None
    key = (row.db_path, row.query, str(row.macros))
    if cache is None or key not in cache:
        res = execute(row.db_path, row.query, row.macros, timeout_s=timeout_s * 4, max_rows=max_rows)
        if cache is None:
            return res
        cache[key] = res
    return cache[key]


def judge(row: Row, cand: Candidate, gold: ExecResult | None, seconds: float = 0.0,
          train_dbs: set[str] | None = None) -> Prediction:
    """The Prediction for a chosen candidate: its one outcome against the gold result."""
    try:
        em = bool(cand.sql) and normalize_sql(cand.sql) == normalize_sql(row.query)
    except Exception:  # noqa: BLE001 - normalize_sql has its own fallback; this is the last line
        em = False
    p = Prediction(question=row.question, gold=row.query, predicted=cand.sql, tier=row.difficulty, db_id=row.db_id,
                   raw_output=cand.raw, exact_match=em, validation_errors=cand.validation_errors,
                   hallucinated=cand.hallucinated, latency_s=seconds,
                   db_seen=None if train_dbs is None or row.db_id is None else row.db_id in train_dbs)
    got = cand.result
    if gold is None or not gold.ok:
        p.outcome = "gold_failed"
        p.error = ("gold query failed: " + gold.error) if gold is not None else "no database to execute on (no db_path)"
        return p
    p.latency_s += got.elapsed_s if got is not None else 0.0
    p.valid, p.error = got.ok, got.error
    if not got.ok:
        p.outcome = "invalid"
        return p
    if got.truncated or gold.truncated:
        p.truncated, p.outcome = True, "truncated"
        cap = len(got.rows if got.truncated else gold.rows)
        p.error = f"{'predicted' if got.truncated else 'gold'} result has more than eval.max_rows={cap} rows"
        return p
    # Spider's test-suite rule: rows as a list when the gold query's text has ORDER BY (ft.sql.compare)
    p.correct = results_match(gold.rows, got.rows, mode="multiset", ordered=order_matters(row.query))
    p.correct_set = results_match(gold.rows, got.rows, mode="set")
    p.outcome = "correct" if p.correct else "wrong"
    return p


def score_one(row: Row, raw: str, latency: float, timeout_s: float, max_rows: int,
              train_dbs: set[str] | None = None) -> Prediction:
    """One answer scored: the greedy answer of evaluate() without candidates."""
    p = judge(row, check_answer(row, raw, timeout_s, max_rows, greedy=True), gold_result(row, timeout_s, max_rows),
              latency, train_dbs)
    p.correct_first = p.correct
    return p


# ------------------------------------------------------------------------------------------------
# picking among candidates


def _same_result(a: Candidate, b: Candidate) -> bool:
    """The comparison execution accuracy uses (multiset, columns may permute); rows in order only when both
    queries order them. No gold query is looked at: the vote happens as it would at inference."""
    ordered = query_has_order_by(a.sql) and query_has_order_by(b.sql)
    return results_match(a.result.rows, b.result.rows, mode="multiset", ordered=ordered)


def vote(candidates: list[Candidate]) -> tuple[Candidate, list[Candidate]]:
    """(winner, its group): the largest group of valid candidates with the same result; ties go to the group that
    holds the greedy answer, then to the group with the higher mean token log-probability. The winner is the
    group's greedy answer if it has it, else its most likely member. With no valid candidate: the greedy answer."""
    groups: list[list[Candidate]] = []
    for c in candidates:
        if not c.valid:
            continue
        for g in groups:
            if _same_result(g[0], c):
                g.append(c)
                break
        else:
            groups.append([c])
    greedy = next((c for c in candidates if c.greedy), candidates[0])
    if not groups:
        return greedy, []
    best = max(groups, key=lambda g: (len(g), any(c.greedy for c in g),
                                      statistics.fmean(c.logprob for c in g if not c.greedy)
                                      if any(not c.greedy for c in g) else -math.inf))
    winner = next((c for c in best if c.greedy), None) or max(best, key=lambda c: c.logprob)
    return winner, best


def first_valid(greedy: Candidate, samples: list[Candidate]) -> Candidate:
    """Retry with validation: the greedy answer if it validates, else the first sample that does."""
    if not greedy.validation_errors:
        return greedy
    return next((c for c in samples if not c.validation_errors), greedy)


# ------------------------------------------------------------------------------------------------
# a dataset


def evaluate(model, tokenizer, rows: list[Row], *, template: str = "default", batch_size: int = 8,
             max_new_tokens: int = 192, timeout_s: float = 5.0, max_rows: int = 10000, retries: int = 0,
             samples: int = 0, temperature: float = 0.8, top_p: float = 0.95, synced_gpus: bool = False,
             reuse_schema_cache: bool = False, constrain: bool = False, train_dbs: set[str] | None = None,
             on_batch: Callable[[list[tuple[int, Prediction]]], None] | None = None,
             should_stop: Callable[[], bool] | None = None, progress: str | None = None,
             prompt_rows: list[Row] | None = None) -> tuple[list[Prediction], dict]:
    """Generate, pick and score every row, batch by batch. `on_batch` gets each batch's (row index, prediction)
    pairs as soon as they are scored (to write them as they come); `should_stop` is asked after every batch, and a
    stop returns what is done (`summary["complete"]` False). `progress`: a progress bar with that label.
    `prompt_rows`: what the model is prompted with when it differs from `rows` (a schema linked to fit the context,
    ft.data.linking.fit_prompt); answers are still validated against the row's whole schema."""
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    gen = Generator(model, tokenizer, template, max_new_tokens, samples=samples, temperature=temperature,
                    top_p=top_p, synced_gpus=synced_gpus, reuse_schema_cache=reuse_schema_cache, constrain=constrain)
    retry_gen = Generator(model, tokenizer, template, max_new_tokens, samples=retries, temperature=temperature,
                          top_p=top_p, constrain=constrain) if retries else None
    golds: dict = {}
    done: dict[int, Prediction] = {}
    bar = tqdm(total=len(rows), desc=progress, disable=progress is None, dynamic_ncols=True, unit="q")
    stopped = False
    prompts = prompt_rows if prompt_rows is not None else rows
    for chunk in gen.batches(prompts, batch_size):
        batch = [rows[i] for i in chunk]
        outs = gen.run([prompts[i] for i in chunk])
        scored = []
        for i, row, g in zip(chunk, batch, outs):
            greedy = check_answer(row, g.text, timeout_s, max_rows, greedy=True)
            cands = [greedy] + [check_answer(row, t, timeout_s, max_rows, logprob=lp)
                                for t, lp in zip(g.samples, g.sample_logprobs)]
            gold = gold_result(row, timeout_s, max_rows, golds)
            first = judge(row, greedy, gold, g.seconds, train_dbs)
            seconds, group = g.seconds, []
            if retry_gen is not None and greedy.validation_errors:
                extra = retry_gen.run([prompts[i]], greedy=False)[0]
                seconds += extra.seconds
                cands += [check_answer(row, t, timeout_s, max_rows, logprob=lp)
                          for t, lp in zip(extra.samples, extra.sample_logprobs)]
                chosen = first_valid(greedy, cands[1:])
            elif samples:
                chosen, group = vote(cands)
            else:
                chosen = greedy
            p = first if chosen is greedy else judge(row, chosen, gold, seconds, train_dbs)
            p.latency_s = seconds + sum(c.result.elapsed_s for c in cands if c.result is not None)
            p.correct_first = first.correct
            p.retried = retry_gen is not None and bool(greedy.validation_errors)
            if len(cands) > 1:
                valid = [c for c in cands if c.valid]
                p.candidates, p.valid_candidates = len(cands), len(valid)
            if samples:
                p.voted, p.vote_changed = True, chosen is not greedy
                p.agreement = len(group) / p.valid_candidates if p.valid_candidates else None
            done[i] = p
            scored.append((i, p))
        if on_batch is not None:
            on_batch(scored)
        bar.update(len(chunk))
        if progress is not None:
            ok = [p for p in done.values() if p.outcome != "gold_failed"]
            bar.set_postfix(ex=f"{100 * sum(p.correct for p in ok) / max(len(ok), 1):.1f}%",
                            q_s=f"{len(done) / (time.perf_counter() - t0):.2f}")
        if should_stop is not None and should_stop():
            stopped = len(done) < len(rows)
            break
    bar.close()
    preds = [done[i] for i in sorted(done)]
    summary = summarize(preds, time.perf_counter() - t0)
    summary["complete"] = not stopped
    if constrain:  # what the identifier constraint did: next tokens it masked, over all answers
        summary["constrain_masked_tokens"] = gen.masked + (retry_gen.masked if retry_gen else 0)
    return preds, summary


# ------------------------------------------------------------------------------------------------
# summaries


# What each rate of ft.metrics.RATES counts, per prediction (over the scored ones: gold_failed are left out).
RATE_OF = {
    "ex": lambda p: p.correct,
    "ex_set": lambda p: p.correct_set,
    "em": lambda p: p.exact_match,
    "valid": lambda p: p.valid,
    "hallucination": lambda p: bool(p.hallucinated),
    "truncated": lambda p: p.truncated,
}


def _pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))]


def _rates(preds: list[Prediction]) -> dict:
    """Rates over the scored predictions, with the picking figures where candidates were picked among."""
    scored = [p for p in preds if p.outcome != "gold_failed"]
    n = len(scored)
    out: dict = {"n": n, "gold_failed": len(preds) - n}
    if n == 0:
        return out
    out |= {k: sum(bool(f(p)) for p in scored) / n for k, f in RATE_OF.items()}
    retried = [p for p in scored if p.retried]
    if retried:
        out |= {"retry_rate": len(retried) / n,
                "retry_found_valid": sum(not p.validation_errors for p in retried) / len(retried),
                "ex_without_retry": sum(p.correct_first for p in scored) / n}
    if any(p.voted for p in scored):
        agreeing = [p.agreement for p in scored if p.agreement is not None]
        out |= {"ex_greedy": sum(p.correct_first for p in scored) / n,
                "vote_changed": sum(p.vote_changed for p in scored) / n,
                "vote_helped": sum(p.vote_changed and p.correct and not p.correct_first for p in scored) / n,
                "vote_hurt": sum(p.vote_changed and not p.correct and p.correct_first for p in scored) / n,
                "valid_candidates": statistics.fmean(p.valid_candidates for p in scored),
                "agreement": statistics.fmean(agreeing) if agreeing else 0.0}
    return out


def summarize(preds: list[Prediction], wall_s: float | None = None) -> dict:
    """Rates overall, per tier and per kind (training databases or not, when known); gold failures by database;
    time per question p50 / p95 and questions per second."""
    out = _rates(preds)
    lat = [p.latency_s for p in preds]
    out["time_per_question_p50_s"] = statistics.median(lat) if lat else 0.0
    out["time_per_question_p95_s"] = _pct(lat, 0.95)
    if wall_s:
        out["questions_per_s"] = len(preds) / wall_s
    failed = Counter(p.db_id or "?" for p in preds if p.outcome == "gold_failed")
    if failed:
        out["gold_failed_by_db"] = dict(sorted(failed.items()))
    out["tiers"] = {t: _rates([p for p in preds if p.tier == t]) for t in sorted({p.tier for p in preds if p.tier})}
    if any(p.db_seen is not None for p in preds):
        kinds = {"seen_db": [p for p in preds if p.db_seen], "unseen_db": [p for p in preds if p.db_seen is False]}
        out["kinds"] = {k: _rates(v) for k, v in kinds.items() if v}
    return out
