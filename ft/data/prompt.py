"""Prompts and tokenization: one function builds the prompt for training and for inference.

Training example = prompt tokens (labels -100) + answer tokens + EOS (labels = ids), so the loss is on the SQL,
the closing fence and EOS only. Labels are built from positions, never from `input_ids == pad_token_id`: with
pad == eos (the usual set-up) the latter would mask every EOS and the model would never learn to stop.
"""
from __future__ import annotations

from dataclasses import dataclass

from ft.data.rows import DataError, Row
from ft.sql.macros import describe_macros

TASK = "Generate a SQL query to answer the following question:"
SYSTEM = "You are an expert SQL assistant. Answer with one SQLite query in a ```sql fenced block."


def _question_block(row: Row) -> str:
    text = f"### Task\n{TASK} `{row.question.strip()}`"
    if row.evidence:
        text += f"\nHint: {row.evidence.strip()}"
    return text


def _schema_block(row: Row, schema: str | None = None) -> str:
    body = (schema if schema is not None else row.schema).strip()
    macros = describe_macros(row.macros)
    if macros:
        body += "\n" + macros
    return f"### Database Schema\n{body}"


ANSWER_HEADER = "### Answer\n```sql\n"


def build_prompt(row: Row, template: str = "default", tokenizer=None, schema: str | None = None) -> str:
    """The text the model sees before its answer. `schema` overrides row.schema (truncation)."""
    if template == "default":  # the seed article's question-first format
        return f"{_question_block(row)}\n\n{_schema_block(row, schema)}\n\n{ANSWER_HEADER}"
    if template == "schema_first":  # shared-prefix friendly: the schema comes before anything per-question
        return f"{_schema_block(row, schema)}\n\n{_question_block(row)}\n\n{ANSWER_HEADER}"
    if template == "chat":
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise DataError("data.template 'chat' needs a tokenizer with a chat template.")
        user = f"{_question_block(row)}\n\n{_schema_block(row, schema)}"
        messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) + "```sql\n"
    raise DataError(f"Unknown prompt template '{template}' (data.template): use default, chat or schema_first.")


def build_answer(row: Row) -> str:
    return row.query.strip().rstrip(";").strip() + "\n```"


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]
    outcome: str  # kept | truncated_schema


def _encode_parts(prompt: str, answer: str, tokenizer) -> tuple[list[int], list[int]]:
    # Prompt and answer are tokenized separately so inference (prompt only) sees exactly the training prompt ids.
    prompt_ids = tokenizer(prompt, add_special_tokens=True)["input_ids"]
    answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return prompt_ids, answer_ids


def encode_prompt(row: Row, tokenizer, template: str = "default") -> list[int]:
    return tokenizer(build_prompt(row, template, tokenizer), add_special_tokens=True)["input_ids"]


def _drop_unused_tables(row: Row) -> str | None:
    """Schema with only the CREATE TABLE blocks the gold query uses (None when that removes nothing)."""
    from ft.sql.parse import split_ddl, tables_in_query

    try:
        used = tables_in_query(row.query)
        blocks = split_ddl(row.schema)
    except Exception:
        return None
    kept = [text for name, text in blocks if name.lower() in used]
    if not kept or len(kept) == len(blocks):
        return None
    return "\n\n".join(kept)


def encode_example(row: Row, tokenizer, template: str, max_length: int, overlong: str) -> Encoded | None:
    """Tokenize one training example. Returns None when `overlong == "skip"` (or truncation can't fit it)."""
    prompt_ids, answer_ids = _encode_parts(build_prompt(row, template, tokenizer), build_answer(row), tokenizer)
    outcome = "kept"
    if len(prompt_ids) + len(answer_ids) > max_length:
        if overlong == "error":
            raise DataError(
                f"Row {row.origin or row.question[:60]!r} is {len(prompt_ids) + len(answer_ids)} tokens, over "
                f"data.max_length={max_length}. Set data.overlong to skip or truncate_schema, or raise max_length."
            )
        if overlong == "truncate_schema":
            schema = _drop_unused_tables(row)
            if schema is not None:
                prompt_ids, answer_ids = _encode_parts(
                    build_prompt(row, template, tokenizer, schema=schema), build_answer(row), tokenizer
                )
                outcome = "truncated_schema"
        if len(prompt_ids) + len(answer_ids) > max_length:
            return None  # never cut the answer: a truncated SQL teaches the model to stop mid-query
    return Encoded(prompt_ids + answer_ids, [-100] * len(prompt_ids) + answer_ids, outcome)


def encode_rows(rows: list[Row], tokenizer, template: str, max_length: int, overlong: str) -> tuple[list[Encoded], dict]:
    """Encode many rows; returns the kept examples and counts of each outcome (reported, never silent)."""
    out, counts = [], {"kept": 0, "truncated_schema": 0, "skipped_overlong": 0}
    for row in rows:
        enc = encode_example(row, tokenizer, template, max_length, overlong)
        if enc is None:
            counts["skipped_overlong"] += 1
            continue
        counts[enc.outcome] += 1
        out.append(enc)
    return out, counts
