"""Measurement: gold-table and gold-column recall of a linked schema, and prompt tokens before / after linking over
a set of rows (sqlft data's report, bench/schema_linking.py)."""
from __future__ import annotations

import statistics
from typing import Callable

from ft.data.linking.fitting import _budget
from ft.data.linking.schema import _gold, parse_schema
from ft.data.linking.selection import Linked, as_counter, link_schema
from ft.data.rows import Row


def recall(row: Row, linked: Linked) -> tuple[float, float, bool] | None:
    """(gold-table recall, gold-column recall, all gold tables kept) of one linked schema; None when the gold query
    can't be parsed or uses no table of the schema."""
    index = parse_schema(row.schema)
    try:
        tables, cols = _gold(row.query, row.schema)
    except ValueError:
        return None
    if not tables:
        return None
    kept = {k: v for k, v in linked.shown_columns.items()} if linked.changed else {t.key: None for t in index.tables}
    t_hit = sum(t in kept for t in tables)
    c_hit = sum(t in kept and (kept[t] is None or c in kept[t]) for t, c in cols)
    return t_hit / len(tables), (c_hit / len(cols) if cols else 1.0), t_hit == len(tables)



def _dist(values: list[int]) -> dict:
    if not values:
        return {}
    s = sorted(values)
    return {"mean": round(statistics.mean(s), 1), "median": statistics.median(s), "p90": s[int(0.9 * (len(s) - 1))],
            "max": s[-1]}


def measure(rows: list[Row], tokenizer, template: str, budget: int | None, d=None, *, value_hints: bool = False,
            max_value_hints: int = 8, linker: Callable | None = None, over: int | None = None) -> dict:
    """Prompt tokens before / after linking and gold recall over `rows` at a fixed schema `budget` (or, with
    budget None, the room data.max_length leaves each row, as training would); the inference linker (gold unseen)
    unless `linker(row, budget, count) -> Linked` is given. over=N: the same figures again, under "over_limit", for
    the rows whose whole prompt is over N tokens."""
    from ft.data.prompt import build_answer

    count = as_counter(tokenizer)
    exact = count._tok is not None  # a tokenizer: the prompt's own ids; a count function: its count of the text
    per_row = []
    for row in rows:
        rest = len(_prompt_ids(row, count._tok, template, "")) if exact else count(_prompt_text(row, template))
        b = budget
        if b is None:
            b = _budget(d, max(0, d.max_length - rest - count(build_answer(row)) - 5))
        if linker is not None:
            linked = linker(row, b, count)
        else:
            linked = link_schema(row, b, count, gold=False, value_hints=value_hints, max_value_hints=max_value_hints)
        full_prompt = rest + count(row.schema)
        per_row.append((full_prompt, rest + linked.tokens if linked.changed else full_prompt, linked.changed,
                        len(linked.hints), recall(row, linked)))
    out = _summary(per_row)
    if over is not None:
        out["over_limit"] = _summary([p for p in per_row if p[0] > over])
    return out


def _summary(per_row: list[tuple]) -> dict:
    before = [p[0] for p in per_row]
    after = [p[1] for p in per_row]
    scored = [p[4] for p in per_row if p[4] is not None]
    t_rec, c_rec, full = [r[0] for r in scored], [r[1] for r in scored], sum(r[2] for r in scored)
    changed, hints, rows = sum(p[2] for p in per_row), sum(p[3] for p in per_row), per_row
    n = len(t_rec)
    return {
        "rows": len(rows), "rows_linked": changed, "rows_scored": n,
        "gold_table_recall": round(sum(t_rec) / n, 4) if n else None,
        "all_gold_tables_kept": round(full / n, 4) if n else None,
        "gold_column_recall": round(sum(c_rec) / n, 4) if n else None,
        "prompt_tokens_before": _dist(before), "prompt_tokens_after": _dist(after),
        "value_hints_per_row": round(hints / len(rows), 2) if rows else 0,
    }


def _prompt_text(row: Row, template: str) -> str:
    from ft.data.prompt import build_prompt

    return build_prompt(row, "default" if template == "chat" else template, schema="")


def _prompt_ids(row: Row, tokenizer, template: str, schema: str | None = None) -> list[int]:
    from ft.data.prompt import prompt_ids

    return prompt_ids(row, tokenizer, template, schema=schema)[0]
