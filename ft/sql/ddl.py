"""CREATE TABLE text for a live database's tables, as the prompt, the validator and the linker read schemas.

Introspection (engine_postgres, engine_duckdb) collects `TableInfo`s and renders them here: types, NOT NULL, primary
and foreign keys inline when they span one column (as table constraints otherwise), and comments as `--` after the
table's `(` and after each column, the layout ft/data/linking.py reads column comments from. A table without
comments stays on one line, as compact as the bundled schemas.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from .parse import _SQLITE_KEYWORDS

_PLAIN = re.compile(r"[a-z_][a-z0-9_]*")
# PostgreSQL's format_type() spellings -> the short forms people write (both are valid PostgreSQL).
_SHORT_TYPES = [(re.compile(p), r) for p, r in (
    (r"^character varying", "varchar"), (r"^character\(", "char("), (r"^timestamp without time zone", "timestamp"),
    (r"^timestamp with time zone", "timestamptz"), (r"^time without time zone", "time"))]


def quote_ident(name: str) -> str:
    """A double-quoted identifier: the same in SQLite, DuckDB and PostgreSQL."""
    return '"' + name.replace('"', '""') + '"'


def ident(name: str) -> str:
    """`name` bare when every engine reads it as written (lower-case, not a keyword), else double-quoted."""
    if _PLAIN.fullmatch(name) and name not in _SQLITE_KEYWORDS:
        return name
    return '"' + name.replace('"', '""') + '"'


def short_type(t: str) -> str:
    for pattern, repl in _SHORT_TYPES:
        t = pattern.sub(repl, t)
    return t


def _one_line(text: str | None) -> str:
    return " ".join((text or "").split())


@dataclass
class ColumnInfo:
    name: str
    type: str
    not_null: bool = False
    comment: str | None = None


@dataclass
class TableInfo:
    name: str  # as it is written in queries (schema-qualified when outside the default schema)
    columns: list[ColumnInfo] = field(default_factory=list)
    primary_key: list[str] = field(default_factory=list)
    foreign_keys: list[tuple[list[str], str, list[str]]] = field(default_factory=list)  # (cols, table, ref cols)
    comment: str | None = None
    view_sql: str | None = None  # a view: its definition


def render(t: TableInfo) -> str:
    if t.view_sql is not None:
        head = f"CREATE VIEW {t.name} AS"
        return (f"-- {_one_line(t.comment)}\n" if t.comment else "") + f"{head} {t.view_sql.strip().rstrip(';')};"
    single_pk = t.primary_key[0] if len(t.primary_key) == 1 else None
    inline_fk = {cols[0]: (table, refs) for cols, table, refs in t.foreign_keys if len(cols) == 1}
    items: list[tuple[str, str | None]] = []
    for c in t.columns:
        code = f"{ident(c.name)} {short_type(c.type)}"
        if c.name == single_pk:
            code += " PRIMARY KEY"
        elif c.not_null:
            code += " NOT NULL"
        if c.name in inline_fk:
            table, refs = inline_fk[c.name]
            code += f" REFERENCES {table}" + (f"({ident(refs[0])})" if refs else "")
        items.append((code, _one_line(c.comment) or None))
    if len(t.primary_key) > 1:
        items.append((f"PRIMARY KEY ({', '.join(ident(c) for c in t.primary_key)})", None))
    for cols, table, refs in t.foreign_keys:
        if len(cols) > 1:
            ref = f"({', '.join(ident(c) for c in refs)})" if refs else ""
            items.append((f"FOREIGN KEY ({', '.join(ident(c) for c in cols)}) REFERENCES {table}{ref}", None))
    if not t.comment and not any(note for _, note in items):
        return f"CREATE TABLE {t.name} ({', '.join(code for code, _ in items)});"
    lines = [f"CREATE TABLE {t.name} (" + (f" -- {_one_line(t.comment)}" if t.comment else "")]
    for k, (code, note) in enumerate(items):
        lines.append("  " + code + ("," if k < len(items) - 1 else "") + (f" -- {note}" if note else ""))
    return "\n".join(lines) + "\n);"


def render_schema(tables: list[TableInfo]) -> str:
    return "\n\n".join(render(t) for t in tables)
