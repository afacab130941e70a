"""Scoring by execution: one answer against the gold result, summaries overall and per tier, retries.

    p = score_one(row, raw_output, latency_s, timeout_s, max_rows)     # validate, execute both, compare
    preds, summary = evaluate(model, tokenizer, rows, ...)           # generate + score (+ retry) a dataset
"""
from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field

from ft.data.prompt import encode_prompt, sql_from_output
from ft.data.rows import Row
from ft.eval.generation import generate_batch, generate_sql
from ft.sql.execute import execute, query_has_order_by, results_match
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
    error: str | None = None  # execution error of the predicted SQL (or why it couldn't run)
    correct: bool = False  # Spider-style: multiset, order-aware when the gold query has ORDER BY
    correct_set: bool = False  # BIRD-style: set comparison
    exact_match: bool = False
    valid: bool = False  # parses and executes
    hallucinated: list[str] = field(default_factory=list)  # tables / columns not in the schema
    validation_errors: list[str] = field(default_factory=list)
    retried: bool = False  # first answer failed validation and alternatives were sampled
    correct_first: bool = False  # correctness of the first (greedy) answer, before any retry
    latency_s: float = 0.0


def score_one(row: Row, raw: str, latency: float, timeout_s: float, max_rows: int) -> Prediction:
    pred_sql = sql_from_output(raw)
    p = Prediction(question=row.question, gold=row.query, predicted=pred_sql, tier=row.difficulty, db_id=row.db_id,
                   raw_output=raw, latency_s=latency)
    v = validate(pred_sql, row.schema, row.macros)
    p.validation_errors = [i.message + (f" (did you mean {i.suggestion}?)" if i.suggestion else "") for i in v.errors]
    p.hallucinated = [i.name for i in v.errors if i.kind in ("unknown_table", "unknown_column")]
    p.exact_match = bool(pred_sql) and normalize_sql(pred_sql) == normalize_sql(row.query)
    if not row.db_path:
        p.error = "no database to execute on (row has no db_path)"
        return p
    t0 = time.perf_counter()
    got = execute(row.db_path, pred_sql, row.macros, timeout_s=timeout_s, max_rows=max_rows)
    gold = execute(row.db_path, row.query, row.macros, timeout_s=timeout_s * 4, max_rows=max_rows)
    p.latency_s += time.perf_counter() - t0
    if gold.error:
        p.error = f"gold query failed: {gold.error}"
        return p
    p.valid = got.ok
    p.error = got.error
    if got.ok:
        p.correct = results_match(gold.rows, got.rows, mode="multiset", ordered=query_has_order_by(row.query))
        p.correct_set = results_match(gold.rows, got.rows, mode="set")
    p.correct_first = p.correct
    return p


def _pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))]


# What each rate of ft.metrics.RATES counts, per prediction.
RATE_OF = {
    "ex": lambda p: p.correct,
    "ex_set": lambda p: p.correct_set,
    "em": lambda p: p.exact_match,
    "valid": lambda p: p.valid,
    "hallucination": lambda p: bool(p.hallucinated),
}


def _rates(preds: list[Prediction]) -> dict:
    n = len(preds)
    if n == 0:
        return {"n": 0}
    return {"n": n} | {k: sum(bool(f(p)) for p in preds) / n for k, f in RATE_OF.items()}


def summarize(preds: list[Prediction], wall_s: float | None = None) -> dict:
    """Overall and per-tier metrics; latency p50 / p95 and questions per second."""
    out = _rates(preds)
    lat = [p.latency_s for p in preds]
    out["latency_p50_s"] = statistics.median(lat) if lat else 0.0
    out["latency_p95_s"] = _pct(lat, 0.95)
    if wall_s:
        out["questions_per_s"] = len(preds) / wall_s
    out.update(_retry_rates(preds))
    tiers = sorted({p.tier for p in preds if p.tier})
    out["tiers"] = {}
    for t in tiers:
        in_tier = [p for p in preds if p.tier == t]
        out["tiers"][t] = {**_rates(in_tier), **_retry_rates(in_tier)}
    return out


def _retry_rates(preds: list[Prediction]) -> dict:
    """What retry-with-validation did: how often it triggered, how often a sampled alternative validated, and
    execution accuracy had the greedy answer been kept (empty when nothing was retried)."""
    retried = [p for p in preds if p.retried]
    if not retried:
        return {}
    return {"retry_rate": len(retried) / len(preds),
            "retry_found_valid": sum(not p.validation_errors for p in retried) / len(retried),
            "ex_without_retry": sum(p.correct_first for p in preds) / len(preds)}


def first_valid_alternative(model, tokenizer, row: Row, template: str, retries: int, max_new_tokens: int) -> str | None:
    """Sample up to `retries` answers; the raw output of the first whose SQL validates against the schema."""
    prompt = encode_prompt(row, tokenizer, template)
    for text in generate_batch(model, tokenizer, [prompt], max_new_tokens, sample=True, num_return_sequences=retries):
        if validate(sql_from_output(text), row.schema, row.macros).ok:
            return text
    return None


def retry_invalid(model, tokenizer, rows: list[Row], preds: list[Prediction], template: str, retries: int,
                  max_new_tokens: int, timeout_s: float, max_rows: int) -> None:
    """For answers that fail schema validation, sample alternatives and keep the first valid one (in place)."""
    for k, (row, p) in enumerate(zip(rows, preds)):
        if not p.validation_errors or retries <= 0:
            continue
        p.retried = True
        text = first_valid_alternative(model, tokenizer, row, template, retries, max_new_tokens)
        if text is not None:
            new = score_one(row, text, p.latency_s, timeout_s, max_rows)
            new.retried, new.correct_first = True, p.correct
            preds[k] = new


def evaluate(model, tokenizer, rows: list[Row], *, template: str = "default", batch_size: int = 8,
             max_new_tokens: int = 192, timeout_s: float = 5.0, max_rows: int = 10000, retries: int = 0,
             synced_gpus: bool = False, reuse_schema_cache: bool = False) -> tuple[list[Prediction], dict]:
    t0 = time.perf_counter()
    outputs = generate_sql(model, tokenizer, rows, template, batch_size, max_new_tokens, synced_gpus, reuse_schema_cache)
    preds = [score_one(r, text, lat, timeout_s, max_rows) for r, (text, lat) in zip(rows, outputs)]
    if retries:
        was_training = model.training
        model.eval()
        retry_invalid(model, tokenizer, rows, preds, template, retries, max_new_tokens, timeout_s, max_rows)
        model.train(was_training)
    return preds, summarize(preds, time.perf_counter() - t0)
