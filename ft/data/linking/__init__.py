"""Schema linking and value hints: the part of a large schema a question needs, under a token budget.

    link = make_linker(cfg.data, tokenizer, cfg.data.template)            # training: gold tables always kept
    rows = [link(r) for r in rows]                                        # (encode_rows(..., link=link) does it)
    row = fit_prompt(row, tokenizer, template, cfg.data, context_length, reserve=max_new_tokens)   # inference
    linked = link_schema(row, budget=1024, count=TokenCounter(tokenizer))                         # the details

One procedure for training and inference, so the model learns on pruned schemas like those it will be given:

1. **Score** every table and column against the question (and its evidence): lexical matches of the question's
   words with table and column names (snake_case / camelCase split, singular / plural, a few common abbreviations),
   with the comments in the DDL, and with distinct text values read from the database. Words are weighted by how
   few tables use them (an IDF over the schema), so `id` or `date` decide nothing in a 200-table warehouse.
2. **Select** greedily under the budget (tokens of the schema text, counted with the model's tokenizer): the
   best-scoring tables first, each with the foreign-key path that joins it to the tables already kept (through at
   most MAX_BRIDGE bridge tables), in full when it fits, else in a compact form (keys, matched and gold columns);
   then the tables next to the kept ones, then the rest, as long as they fit. Kept tables stay in schema order.
3. **Value hints** (`data.value_hints`): text values of the database that occur in the question are shown after
   the schema as `-- values of table.column: 'Paris', 'Lyon'` (Row.value_hints: in the question's own part of the
   prompt, so the questions on one schema keep sharing its prefix, ft/data/prompt.py); at most
   MAX_HINTS_PER_COLUMN per column and `data.max_value_hints` in all, each at most MAX_HINT_CHARS characters.
   Values are read once per database through the engine's read-only execution (ft.sql.engine: SQLite, DuckDB or
   PostgreSQL; one SELECT per table).

In training (`gold=True`) the gold query's tables and columns are always kept (never dropped, whatever the
budget); the rest of the budget goes to the linker's own best-ranked tables, the distractors the model will meet at
inference. At inference the gold query is never looked at. Same question, same schema, same database: same output.
A schema that fits its budget whole is returned unchanged, its text too (value hints, if any, come apart).

One job per module, in the order a question goes through them:

    terms.py      the words of questions and names (stop words, abbreviations, synonyms, stemming)
    schema.py     DDL -> SchemaIndex (tables, columns, keys, comments), rendering, the tables a query reads
    values.py     the database's text values (through the engine interface), those a question names, hint lines
    scoring.py    tables and columns scored against the question's terms and values
    selection.py  link_schema: the tables and hints kept under the budget (a _Linker per question)
    fitting.py    the room a prompt leaves, the training linker, the inference fitter
    measuring.py  recall of the gold tables and columns, prompt tokens before / after
"""
from ft.data.linking.fitting import fit_prompt, make_fitter, make_linker, schema_room, with_linked
from ft.data.linking.measuring import measure, recall
from ft.data.linking.schema import MAX_BRIDGE, Column, SchemaIndex, Table, gold_columns, parse_schema
from ft.data.linking.scoring import NEIGHBOR_SHARE, score_tables
from ft.data.linking.selection import CORE_SHARE, MAX_CORE, Linked, TokenCounter, as_counter, link_schema
from ft.data.linking.terms import question_terms
from ft.data.linking.values import (
    MAX_HINT_CHARS,
    MAX_HINTS_PER_COLUMN,
    VALUE_READ_TIMEOUT_S,
    VALUES_PER_COLUMN,
    ValueIndex,
    match_values,
    value_index,
)

__all__ = [
    "CORE_SHARE", "MAX_BRIDGE", "MAX_CORE", "MAX_HINTS_PER_COLUMN", "MAX_HINT_CHARS", "NEIGHBOR_SHARE",
    "VALUES_PER_COLUMN", "VALUE_READ_TIMEOUT_S", "Column", "Linked", "SchemaIndex", "Table", "TokenCounter",
    "ValueIndex", "as_counter", "fit_prompt", "gold_columns", "link_schema", "make_fitter", "make_linker",
    "match_values", "measure", "parse_schema", "question_terms", "recall", "schema_room", "score_tables",
    "value_index", "with_linked",
]
