"""Evaluation by execution: generate SQL for each question, run it safely, compare with the gold result.

Used three ways: `python -m ft.eval` (a model or model + adapter on any dataset), periodically during training on a
fixed sample (`eval.every`), and at the end of training (base vs fine-tuned, the adapter switched off and on).
"""
from __future__ import annotations

import json
import math
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ft.data.prompt import encode_prompt
from ft.data.rows import Row
from ft.sql.execute import execute, query_has_order_by, results_match
from ft.sql.parse import extract_sql, normalize_sql
from ft.sql.validate import validate

STOP = "\n```"


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


# ------------------------------------------------------------------------------------------------
# generation


def _left_pad(seqs: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.tensor([[pad_id] * (width - len(s)) + s for s in seqs], device=device)
    mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in seqs], device=device)
    return ids, mask


@torch.no_grad()
def generate_batch(model, tokenizer, prompts: list[list[int]], max_new_tokens: int, *, sample: bool = False,
                   num_return_sequences: int = 1, synced_gpus: bool = False) -> list[str]:
    """Greedy (or sampled) continuations of tokenized prompts, left-padded, with the KV cache on."""
    device = next(p for p in model.parameters()).device
    ids, mask = _left_pad(prompts, tokenizer.pad_token_id, device)
    out = model.generate(
        input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=sample,
        temperature=0.8 if sample else None, top_p=0.95 if sample else None, top_k=None,
        num_return_sequences=num_return_sequences, use_cache=True,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        stop_strings=[STOP], tokenizer=tokenizer, synced_gpus=synced_gpus,
    )
    return tokenizer.batch_decode(out[:, ids.shape[1]:], skip_special_tokens=True)


def sql_from_output(text: str) -> str:
    # The prompt ends inside an opened ```sql fence, so the continuation is the fence's body.
    return extract_sql("```sql\n" + text)


def generate_sql(model, tokenizer, rows: list[Row], template: str, batch_size: int, max_new_tokens: int,
                 synced_gpus: bool = False, reuse_schema_cache: bool = False) -> list[tuple[str, float]]:
    """(raw output, latency) per row. Rows are batched by prompt length (less padding), results in input order.

    reuse_schema_cache (schema_first template): each schema's KV cache is computed once and reused for all its
    questions (ft/prefix_cache.py); same greedy output. Not with synced_gpus, whose ranks must run equal batches.
    """
    if reuse_schema_cache and not synced_gpus:
        from ft.prefix_cache import generate_sql_shared

        return generate_sql_shared(model, tokenizer, rows, template, batch_size, max_new_tokens)
    prompts = [encode_prompt(r, tokenizer, template) for r in rows]
    order = sorted(range(len(rows)), key=lambda i: len(prompts[i]))
    results: list[tuple[str, float] | None] = [None] * len(rows)
    was_training = model.training
    model.eval()
    for s in range(0, len(order), batch_size):
        chunk = order[s : s + batch_size]
        t0 = time.perf_counter()
        texts = generate_batch(model, tokenizer, [prompts[i] for i in chunk], max_new_tokens, synced_gpus=synced_gpus)
        latency = time.perf_counter() - t0  # each answer of a batch is ready when the batch is
        for i, text in zip(chunk, texts):
            results[i] = (text, latency)
    model.train(was_training)
    return results  # type: ignore[return-value]


# ------------------------------------------------------------------------------------------------
# scoring


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


def _rates(preds: list[Prediction]) -> dict:
    n = len(preds)
    if n == 0:
        return {"n": 0}
    return {
        "n": n,
        "ex": sum(p.correct for p in preds) / n,
        "ex_set": sum(p.correct_set for p in preds) / n,
        "em": sum(p.exact_match for p in preds) / n,
        "valid": sum(p.valid for p in preds) / n,
        "hallucination": sum(bool(p.hallucinated) for p in preds) / n,
    }


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


# ------------------------------------------------------------------------------------------------
# output


def write_results(out_dir: str | Path, preds: list[Prediction], metrics: dict, name: str = "") -> tuple[Path, Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    prefix = f"{name}_" if name else ""
    pred_path, metrics_path = out_dir / f"{prefix}predictions.jsonl", out_dir / f"{prefix}metrics.json"
    tmp = pred_path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(asdict(p)) + "\n" for p in preds))
    tmp.replace(pred_path)
    tmp = metrics_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(metrics, indent=2))
    tmp.replace(metrics_path)
    return pred_path, metrics_path


def format_table(results: dict[str, dict]) -> str:
    """Console table: one column per model (e.g. base / fine-tuned), rows = overall and per-tier metrics."""
    names = list(results)
    lines = [f"{'metric':<28}" + "".join(f"{n:>14}" for n in names)]
    keys = ["ex", "ex_set", "em", "valid", "hallucination"]
    keys += [k for k in ("ex_without_retry", "retry_rate", "retry_found_valid") if any(k in results[n] for n in names)]
    for k in keys:
        lines.append(f"{k:<28}" + "".join(f"{100 * results[n].get(k, 0):>13.1f}%" for n in names))
    for k in ("latency_p50_s", "latency_p95_s", "questions_per_s"):
        if all(k in results[n] for n in names):
            lines.append(f"{k:<28}" + "".join(f"{results[n][k]:>14.2f}" for n in names))
    tiers = sorted({t for n in names for t in results[n].get("tiers", {})})
    for t in tiers:
        label = f"ex[{t}] (n={results[names[0]]['tiers'].get(t, {}).get('n', 0)})"
        lines.append(f"{label:<28}" + "".join(f"{100 * results[n]['tiers'].get(t, {}).get('ex', 0):>13.1f}%" for n in names))
    return "\n".join(lines)


def prediction_table_rows(preds: list[Prediction]) -> tuple[list[str], list[list]]:
    cols = ["question", "gold", "predicted", "correct", "error", "tier", "hallucinated"]
    return cols, [[p.question, p.gold, p.predicted, p.correct, p.error, p.tier, ", ".join(p.hallucinated)] for p in preds]


def compare(a_path: str | Path, b_path: str | Path) -> str:
    """Two prediction files side by side, question by question (matched by question text and gold SQL)."""

    def load(path):
        path = Path(path)
        if path.is_dir():
            path = path / "predictions.jsonl"
        return {(r["question"], r["gold"]): r for r in map(json.loads, path.read_text().splitlines())}

    a, b = load(a_path), load(b_path)
    lines, wins, losses = [], 0, 0
    for key in a:
        if key not in b:
            continue
        ra, rb = a[key], b[key]
        mark = "  " if ra["correct"] == rb["correct"] else ("+B" if rb["correct"] else "+A")
        wins += mark == "+B"
        losses += mark == "+A"
        lines.append(f"{mark} [{'x' if ra['correct'] else ' '}|{'x' if rb['correct'] else ' '}] {ra['question']}")
        if mark != "  ":
            lines.append(f"      A: {ra['predicted']}\n      B: {rb['predicted']}\n   gold: {ra['gold']}")
    common = [k for k in a if k in b]
    ex_a = sum(a[k]["correct"] for k in common) / max(len(common), 1)
    ex_b = sum(b[k]["correct"] for k in common) / max(len(common), 1)
    lines.append(f"\n{len(common)} common questions: EX A {100 * ex_a:.1f}%  B {100 * ex_b:.1f}%  "
                 f"(B right where A wrong: {wins}; A right where B wrong: {losses})")
    return "\n".join(lines)
