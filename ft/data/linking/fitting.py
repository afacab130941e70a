"""Prompt fitting: the schema room a row's prompt leaves, the training-side linker (gold tables kept) and the
inference-side fitter (never over the model's context)."""
from __future__ import annotations

import dataclasses
from typing import Callable

from ft.data.linking.selection import Linked, TokenCounter, link_schema
from ft.data.rows import DataError, Row


def schema_room(row: Row, tokenizer, template: str, limit: int, reserve: int) -> int:
    """Tokens left for the schema text when the prompt (question, headings, macros) and `reserve` tokens (the
    answer) must fit in `limit`; a few tokens of slack for where the schema meets the text around it."""
    from ft.data.prompt import prompt_ids

    rest = len(prompt_ids(row, tokenizer, template, schema="")[0])
    return max(0, limit - rest - reserve - 4)


def _budget(d, room: int) -> int:
    return min(d.schema_budget, room) if d.schema_budget > 0 else room


def with_linked(row: Row, linked: Linked) -> Row:
    """The row as linking leaves it: its schema pruned, its value hints apart (the row itself when unchanged)."""
    if not linked.changed:
        return row
    return dataclasses.replace(row, schema=linked.schema, value_hints=linked.hint_text or None)


def make_linker(d, tokenizer, template: str, *, training: bool = True) -> Callable[[Row], Row]:
    """The training-side linker for encode_rows(..., link=...): each row's schema pruned to fit data.max_length
    (with its answer) or data.schema_budget, the gold query's tables and columns always kept (training=True).
    Returns the row itself when nothing changes (so rows on a schema that fits keep sharing it)."""
    from ft.data.prompt import build_answer

    count = TokenCounter(tokenizer)

    def link(row: Row) -> Row:
        answer = count(build_answer(row)) + 1  # + EOS
        budget = _budget(d, schema_room(row, tokenizer, template, d.max_length, answer))
        linked = link_schema(row, budget, count, gold=training, value_hints=d.value_hints,
                             max_value_hints=d.max_value_hints)
        return with_linked(row, linked)

    return link


def _where(row: Row) -> str:
    return f"Row {row.origin}" if row.origin else f"The question {row.question[:60]!r}"


def fit_prompt(row: Row, tokenizer, template: str, d, context_length: int, reserve: int = 0,
               count: TokenCounter | None = None) -> Row:
    """The row to prompt a model with at inference, never over its context (`context_length` positions, of which
    `reserve` are kept for the answer: eval.max_new_tokens).

    data.schema_linking on: the schema is linked to the question (never looking at the gold query) within
    data.schema_budget, or within what fits min(context_length, data.max_length) when that is 0 (the room training
    gave it). Off: the row as it is, or DataError when its prompt would not fit, naming data.schema_budget.
    """
    from ft.data.prompt import prompt_ids

    if not d.schema_linking:
        n = len(prompt_ids(row, tokenizer, template)[0])
        if n + reserve > context_length:
            raise DataError(
                f"{_where(row)} makes a prompt of {n} tokens, and {reserve} more are reserved for the answer "
                f"(eval.max_new_tokens): over the model's context of {context_length} tokens. Set "
                f"data.schema_linking: true to give the model only the tables the question needs, within "
                f"data.schema_budget tokens (e.g. --data.schema_linking true --data.schema_budget "
                f"{max(256, (context_length - reserve) // 2)}), or shorten the schema."
            )
        return row
    count = count or TokenCounter(tokenizer)
    limit = min(context_length, d.max_length) if d.max_length else context_length
    budget = _budget(d, schema_room(row, tokenizer, template, limit, reserve))
    linked = link_schema(row, budget, count, gold=False, value_hints=d.value_hints, max_value_hints=d.max_value_hints)
    out = with_linked(row, linked)
    n = len(prompt_ids(out, tokenizer, template)[0])
    if n + reserve > context_length:
        raise DataError(
            f"{_where(row)}: even with schema linking (data.schema_budget {d.schema_budget or 'auto'}: {budget} "
            f"tokens of schema kept) the prompt is {n} tokens + {reserve} for the answer (eval.max_new_tokens), over "
            f"the model's context of {context_length}. Lower data.schema_budget or eval.max_new_tokens."
        )
    return out


def make_fitter(tokenizer, template: str, d, context_length: int, reserve: int = 0) -> Callable[[Row], Row]:
    """fit_prompt with its token counts memoized across rows (many questions share a schema)."""
    count = TokenCounter(tokenizer)
    return lambda row: fit_prompt(row, tokenizer, template, d, context_length, reserve, count)
