"""Database values: the text values of a database read once through the engine interface (ValueIndex), those a
question names (match_values), and the few shown as `-- values of t.c: 'Paris'` lines (value hints)."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass

from ft.data.linking.schema import SchemaIndex
from ft.data.linking.terms import _STOP, _WORD

MAX_HINTS_PER_COLUMN = 3
MAX_HINT_CHARS = 48  # longer values are never hinted (a cut value would be a wrong literal)
VALUES_PER_COLUMN = 500  # distinct values read per text column (the most frequent first is not needed: a lookup)
VALUE_READ_TIMEOUT_S = 2.0

def _hintable(v) -> bool:
    return (isinstance(v, str) and 0 < len(v) <= MAX_HINT_CHARS and v == v.strip() and v.isprintable()
            and "`" not in v and any(ch.isalpha() for ch in v) and not re.fullmatch(r"\d{4}-\d\d(-\d\d)?.*", v))


@dataclass
class ValueIndex:
    """Distinct text values of a database, by their words: phrase -> [(table, column, value)]."""

    phrases: dict[tuple[str, ...], list[tuple[str, str, str]]]
    max_words: int
    queries: int = 0  # read queries it took (each through the engine's read-only execution)


_VALUE_CACHE: dict[tuple, ValueIndex] = {}


def value_index(db: str, schema: SchemaIndex) -> ValueIndex | None:
    """Read the text columns' distinct values once per database (and schema), through the engine's read-only
    execution (ft.sql.engine: SQLite, DuckDB or PostgreSQL): one SELECT per table, identifiers quoted, so no name can
    make it anything but a read. A file is read again when it changes; a server once per process."""
    from ft.sql.engine import DatabaseError, database

    try:
        target = database(db)
        if target.is_file:
            st = os.stat(target.location)
            version = (os.path.realpath(target.location), st.st_mtime_ns, st.st_size)
        else:
            version = (target.url,)
    except (OSError, DatabaseError):
        return None
    key = (*version, tuple(t.key for t in schema.tables))
    if key in _VALUE_CACHE:
        return _VALUE_CACHE[key]
    phrases: dict[tuple[str, ...], list[tuple[str, str, str]]] = {}
    queries = 0
    for t in schema.tables:
        cols = [c for c in t.columns if c.is_text and not c.pk]
        if not cols:
            continue
        queries += 1
        res = target.distinct_values(t.name, [c.name for c in cols], VALUES_PER_COLUMN, VALUE_READ_TIMEOUT_S)
        if not res.ok:
            continue  # a table the DDL names but the database lacks, a timeout...: no hints from it
        for k, v in res.rows:
            if _hintable(v):
                words = tuple(_WORD.findall(v.lower()))
                if words:
                    phrases.setdefault(words, []).append((t.key, cols[k].name, v))
    for hits in phrases.values():
        hits.sort()
    index = ValueIndex(phrases, max((len(p) for p in phrases), default=0), queries)
    if len(_VALUE_CACHE) > 64:
        _VALUE_CACHE.clear()
    _VALUE_CACHE[key] = index
    return index


def match_values(text: str, values: ValueIndex) -> list[tuple[int, str, str, str]]:
    """[(words matched, table, column, value)] for database values whose words occur, in order, in `text`; longest
    first, then in question order. Single words that are stop words or numbers never match on their own."""
    words = _WORD.findall(text.lower())
    found: list[tuple[int, int, str, str, str]] = []
    seen: set[tuple[str, str, str]] = set()
    for size in range(min(values.max_words, 6), 0, -1):
        for i in range(len(words) - size + 1):
            phrase = tuple(words[i:i + size])
            if size == 1 and (phrase[0] in _STOP or phrase[0].isdigit() or len(phrase[0]) < 3):
                continue
            for t, c, v in values.phrases.get(phrase, ()):
                if (t, c, v) not in seen:
                    seen.add((t, c, v))
                    found.append((-size, i, t, c, v))
    found.sort(key=lambda f: (f[0], f[1], f[2], f[3], f[4]))
    return [(-s, t, c, v) for s, _, t, c, v in found]



def _hint_lines(hints: list[tuple[str, str, str]], index: SchemaIndex) -> str:
    """`-- values of t.c: 'a', 'b'` lines, in schema order."""
    by_col: dict[tuple[str, str], list[str]] = {}
    for t, c, v in hints:
        by_col.setdefault((t, c), []).append("'" + v.replace("'", "''") + "'")
    order = {t.key: i for i, t in enumerate(index.tables)}
    lines = []
    for (t, c), vals in sorted(by_col.items(), key=lambda kv: order[kv[0][0]]):  # (stable within a table)
        name = " ".join(f"{index.by_key[t].name}.{c}".split())  # a name can't end the comment line
        lines.append(f"-- values of {name}: {', '.join(vals)}")
    return "\n".join(lines)


def _pick_hints(hits, kept_cols: dict[str, set[str] | None], limit: int) -> list[tuple[str, str, str]]:
    out, per_col = [], {}
    for _, t, c, v in hits:
        if len(out) >= limit:
            break
        if t not in kept_cols:
            continue
        cols = kept_cols[t]
        if cols is not None and c.lower() not in cols:
            continue
        k = (t, c)
        if per_col.get(k, 0) >= MAX_HINTS_PER_COLUMN:
            continue
        per_col[k] = per_col.get(k, 0) + 1
        out.append((t, c, v))
    return out
