"""Prompts and tokenization: one function builds the prompt for training and for inference.

Training example = prompt tokens (labels -100) + answer tokens + EOS (labels = ids), so the loss is on the SQL,
the closing fence and EOS only. Labels are built from positions, never from `input_ids == pad_token_id`: with
pad == eos (the usual set-up) the latter would mask every EOS and the model would never learn to stop.
"""
from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from ft.data.rows import DataError, Row
from ft.sql.engine import display_name
from ft.sql.macros import describe_macros
from ft.sql.parse import extract_sql

TASK = "Generate a SQL query to answer the following question:"
SYSTEM = "You are an expert SQL assistant. Answer with one SQLite query in a ```sql fenced block."


def task_line(row: Row) -> str:
    """The task sentence, naming the SQL's dialect (SQLite keeps the wording adapters were trained on)."""
    dialect = row.sql_dialect
    return TASK if dialect == "sqlite" else TASK.replace("a SQL query", f"a {display_name(dialect)} query")


def system_line(row: Row) -> str:
    return SYSTEM.replace("SQLite", display_name(row.sql_dialect))


_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_HEADING = re.compile(r"^[ \t]*#{3,}", re.M)
FENCE, FENCE_STANDIN = "```", "'" * 3


def _inline(text: str) -> str:
    """User text on one line, without code fences: a question or hint can't start a `### Answer` section of its own
    or open / close the answer's fence, so it can't forge the prompt's structure (training and inference alike)."""
    return _LINE_BREAK.sub(" ", text.strip()).replace(FENCE, FENCE_STANDIN)


def _ddl(text: str) -> str:
    """Schema text with the same guard: no fence, no line that starts a `###` section (it becomes a SQL comment)."""
    return _HEADING.sub(lambda m: "-- " + m.group(0), text.strip().replace(FENCE, FENCE_STANDIN))


def _question_block(row: Row) -> str:
    text = f"### Task\n{task_line(row)} `{_inline(row.question)}`"
    if row.evidence:
        text += f"\nHint: {_inline(row.evidence)}"
    return text


def _schema_block(row: Row, schema: str | None = None) -> str:
    body = _ddl(schema if schema is not None else row.schema)
    macros = describe_macros(row.macros)
    if macros:
        body += "\n" + macros
    return f"### Database Schema\n{body}"


def _hints(row: Row) -> str:
    """The question's value hints (schema linking), guarded like the schema (they are database values)."""
    return _ddl(row.value_hints) if row.value_hints else ""


ANSWER_HEADER = "### Answer\n```sql\n"
# The answer's closing fence: generation stops at it, and every training answer ends with it (build_answer).
STOP = "\n```"


def sql_from_output(text: str) -> str:
    """The SQL in a model's continuation of our prompt (which ends inside an opened ```sql fence)."""
    return extract_sql("```sql\n" + text)


def build_prompt(row: Row, template: str = "default", tokenizer=None, schema: str | None = None) -> str:
    """The text the model sees before its answer. `schema` overrides row.schema (truncation)."""
    hints = "\n" + _hints(row) if row.value_hints else ""  # right under the schema's DDL
    if template == "default":  # the seed article's question-first format
        return f"{_question_block(row)}\n\n{_schema_block(row, schema)}{hints}\n\n{ANSWER_HEADER}"
    if template == "schema_first":  # shared-prefix friendly: the schema comes before anything per-question
        return "".join(prompt_parts(row, template, tokenizer, schema))
    if template == "chat":
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise DataError("data.template 'chat' needs a tokenizer with a chat template.")
        user = f"{_question_block(row)}\n\n{_schema_block(row, schema)}{hints}"
        messages = [{"role": "system", "content": system_line(row)}, {"role": "user", "content": user}]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) + "```sql\n"
    raise DataError(f"Unknown prompt template '{template}' (data.template): use default, chat or schema_first.")


def prompt_parts(row: Row, template: str = "default", tokenizer=None, schema: str | None = None) -> tuple[str, str]:
    """(shared prefix, per-question rest) of the prompt; the prefix is "" unless the template is schema_first.

    The two parts are tokenized separately (ft.data.prompt.prompt_ids) for training and for inference alike, so
    the tokens of one schema are the same for every question on it: the condition for sharing them (its KV
    cache at inference, one copy per packed row in training, ft/data/prefix.py). A question's value hints differ
    from question to question: they open its own part, right after the shared schema.
    """
    if template == "schema_first":
        hints = _hints(row) + "\n\n" if row.value_hints else ""
        return f"{_schema_block(row, schema)}\n\n", f"{hints}{_question_block(row)}\n\n{ANSWER_HEADER}"
    return "", build_prompt(row, template, tokenizer, schema)


def prompt_ids(row: Row, tokenizer, template: str = "default", schema: str | None = None) -> tuple[list[int], int]:
    """Prompt token ids and how many of them are the shared prefix (BOS, if the tokenizer adds one, is in it)."""
    prefix, rest = prompt_parts(row, template, tokenizer, schema)
    if not prefix:
        return tokenizer(rest, add_special_tokens=True)["input_ids"], 0
    head = _prefix_ids(tokenizer, prefix)
    return list(head) + tokenizer(rest, add_special_tokens=False)["input_ids"], len(head)


@functools.lru_cache(maxsize=16)
def _prefix_ids(tokenizer, prefix: str) -> tuple[int, ...]:
    # A schema's prefix is the same text for every question on it: tokenized once while they come in a row (the
    # encoded-data build goes schema by schema). Keyed by the tokenizer object, which is never changed once used.
    return tuple(tokenizer(prefix, add_special_tokens=True)["input_ids"])


def build_answer(row: Row) -> str:
    return row.query.strip().rstrip(";").strip() + STOP


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]
    outcome: str  # kept | truncated_schema
    prefix_len: int = 0  # leading tokens that are the schema prefix (schema_first), shareable across questions


def _encode_parts(row: Row, tokenizer, template: str, schema: str | None = None) -> tuple[list[int], list[int], int]:
    # Prompt and answer are tokenized separately so inference (prompt only) sees exactly the training prompt ids.
    prompt, prefix_len = prompt_ids(row, tokenizer, template, schema)
    answer_ids = tokenizer(build_answer(row), add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return prompt, answer_ids, prefix_len


def encode_prompt(row: Row, tokenizer, template: str = "default") -> list[int]:
    return prompt_ids(row, tokenizer, template)[0]


def _drop_unused_tables(row: Row) -> str | None:
    """Schema with only the CREATE TABLE blocks the gold query uses (None when that removes nothing)."""
    from ft.sql.parse import split_ddl, tables_in_query

    try:
        used = tables_in_query(row.query, row.sql_dialect)
        blocks = split_ddl(row.schema)
    except Exception:
        return None
    kept = [text for name, text in blocks if name.lower() in used]
    if not kept or len(kept) == len(blocks):
        return None
    return "\n\n".join(kept)


def encode_example(row: Row, tokenizer, template: str, max_length: int, overlong: str,
                   link=None) -> Encoded | None:
    """Tokenize one training example. Returns None when `overlong == "skip"` (or truncation can't fit it).

    `link` (ft.data.linking.make_linker, with data.schema_linking): Row -> Row whose schema is linked to the question
    (gold tables kept) within max_length; the overlong policy then applies only to what still doesn't fit."""
    # ---- schema linking hook (ft/data/linking.py) ----
    linked = link(row) if link is not None else row
    outcome = "kept" if linked is row else "linked_schema"
    row = linked
    # ---- end of hook ----
    prompt, answer_ids, prefix_len = _encode_parts(row, tokenizer, template)
    if len(prompt) + len(answer_ids) > max_length:
        if overlong == "error":
            raise DataError(
                f"Row {row.origin or row.question[:60]!r} is {len(prompt) + len(answer_ids)} tokens, over "
                f"data.max_length={max_length}. Set data.overlong to skip or truncate_schema, or raise max_length."
            )
        if overlong == "truncate_schema":
            schema = _drop_unused_tables(row)
            if schema is not None:
                prompt, answer_ids, prefix_len = _encode_parts(row, tokenizer, template, schema=schema)
                outcome = "truncated_schema"
        if len(prompt) + len(answer_ids) > max_length:
            return None  # never cut the answer: a truncated SQL teaches the model to stop mid-query
    return Encoded(prompt + answer_ids, [-100] * len(prompt) + answer_ids, outcome, prefix_len)


def encode_rows(rows: list[Row], tokenizer, template: str, max_length: int,
                overlong: str, link=None) -> tuple[list[Encoded], dict]:
    """Encode many rows; returns the kept examples and counts of each outcome (reported, never silent)."""
    counts: dict = {}
    out = [enc for _, enc in iter_encoded(rows, tokenizer, template, max_length, overlong, link, counts)]
    return out, counts


def iter_encoded(rows: Iterable[Row], tokenizer, template: str, max_length: int, overlong: str, link=None,
                 counts: dict | None = None) -> Iterator[tuple[int, Encoded]]:
    """encode_rows one row at a time: (index of the row, its example) for each kept row, so a caller can write them
    out as they come (ft/data/encoded.py); `counts` is filled in as encode_rows returns it."""
    counts = {} if counts is None else counts
    counts.update({"kept": 0, "truncated_schema": 0, "skipped_overlong": 0})
    for i, row in enumerate(rows):
        enc = encode_example(row, tokenizer, template, max_length, overlong, link)  # link: schema linking hook
        if enc is None:
            counts["skipped_overlong"] += 1
            continue
        counts[enc.outcome] = counts.get(enc.outcome, 0) + 1  # "linked_schema" appears only with a link
        yield i, enc
