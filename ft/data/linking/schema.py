"""The schema as linking sees it: CREATE TABLE statements parsed into tables, columns, keys and comments
(SchemaIndex), rendered back whole or with some columns only in their own layout, and the tables and columns a
query reads (gold_columns)."""
from __future__ import annotations

import math
import re
from collections import deque
from dataclasses import dataclass, field
from functools import lru_cache

from ft.data.linking.terms import _name_terms, _partial

MAX_BRIDGE = 2  # bridge tables allowed on the foreign-key path that joins a table to the kept ones

_IDENT = r'(?:"(?:[^"]|"")*"|`[^`]*`|\[[^\]]*\]|[A-Za-z_][\w$]*)'
_CONSTRAINT_WORDS = ("PRIMARY", "FOREIGN", "UNIQUE", "CHECK", "CONSTRAINT")
_TYPE_STOP = {"PRIMARY", "NOT", "NULL", "REFERENCES", "DEFAULT", "UNIQUE", "CHECK", "CONSTRAINT", "COLLATE",
              "GENERATED", "AS"}
_FK_TABLE = re.compile(r"FOREIGN\s+KEY\s*\(([^)]*)\)\s*REFERENCES\s+(" + _IDENT + r")\s*(?:\(([^)]*)\))?", re.I)
_PK_TABLE = re.compile(r"PRIMARY\s+KEY\s*\(([^)]*)\)", re.I)
_INLINE_REF = re.compile(r"\bREFERENCES\s+(" + _IDENT + r")\s*(?:\(\s*(" + _IDENT + r")\s*\))?", re.I)
_TEXT_TYPES = ("CHAR", "CLOB", "TEXT", "STRING")


def _unquote(name: str) -> str:
    name = name.strip()
    if len(name) >= 2 and name[0] in "\"`[":
        inner = name[1:-1]
        return inner.replace('""', '"') if name[0] == '"' else inner
    return name


def _idents(text: str) -> list[str]:
    return [_unquote(m.group(0)) for m in re.finditer(_IDENT, text)]


@dataclass
class Column:
    name: str
    type: str
    comment: str
    pk: bool
    terms: tuple[str, ...]  # name terms
    comment_terms: tuple[str, ...]

    @property
    def is_text(self) -> bool:
        t = self.type.upper()
        return not t or any(k in t for k in _TEXT_TYPES)


@dataclass
class _Item:
    code: str  # the column definition or table constraint, on one line
    comment: str
    column: str | None  # lower-cased column name, or None for a table constraint
    uses: frozenset[str] = frozenset()  # lower-cased columns a constraint names


@dataclass
class Table:
    name: str
    text: str  # the CREATE statement as written
    comment: str = ""
    columns: list[Column] = field(default_factory=list)
    fks: list[tuple[str, str, str | None]] = field(default_factory=list)  # (column, table, column) lower-cased
    items: list[_Item] | None = None  # parsed column list (None: can only be shown whole)
    head: str = ""
    tail: str = ""
    multiline: bool = False
    terms: tuple[str, ...] = ()  # name terms
    comment_terms: frozenset[str] = frozenset()
    area: frozenset[str] = frozenset()  # terms of a subject-area prefix shared with other tables (`fin_`, `hr_`)
    vocab: frozenset[str] = frozenset()  # every term of the table: name, columns, comments

    def __post_init__(self):
        self.key = self.name.lower()

    def column(self, name: str) -> Column | None:
        name = name.lower()
        return next((c for c in self.columns if c.name.lower() == name), None)


def _split_items(text: str, open_at: int):
    """(items [(code, comment)], table comment, index of the closing ')') of a CREATE TABLE column list."""
    items: list[list] = []
    table_comment: list[str] = []
    code: list[str] = []
    comments: list[str] = []
    seen_code = newline = False
    i, n, depth = open_at + 1, len(text), 1

    def finish():
        nonlocal code, comments, seen_code, newline
        body = " ".join("".join(code).split())
        if body:
            items.append([body, comments])
        elif comments:  # a comment with no definition after it: it goes with the previous item
            (items[-1][1] if items else table_comment).extend(comments)
        code, comments, seen_code, newline = [], [], False, False

    def attach(note: str):
        note = " ".join(note.split())
        if not note:
            return
        if not seen_code and not newline:  # on the line of the previous ',' or of '(': the previous item's
            (items[-1][1] if items else table_comment).append(note)
        elif not seen_code and not items:  # a comment line before the first column: the table's
            table_comment.append(note)
        else:
            comments.append(note)

    while i < n:
        c = text[i]
        if c in "'\"`[":
            close = "]" if c == "[" else c
            j = i + 1
            while j < n:
                if text[j] == close:
                    if close != "]" and j + 1 < n and text[j + 1] == close:
                        j += 2
                        continue
                    break
                j += 1
            code.append(text[i:j + 1])
            seen_code = True
            i = j + 1
            continue
        if text.startswith("--", i):
            j = text.find("\n", i)
            j = n if j == -1 else j
            attach(text[i + 2:j])
            i = j
            continue
        if text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j == -1 else j + 2
            attach(text[i + 2:j - 2])
            i = j
            continue
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                finish()
                return items, table_comment, i
        elif c == "," and depth == 1:
            finish()
            i += 1
            continue
        if c == "\n":
            newline = True
        elif not c.isspace():
            seen_code = True
        code.append(c)
        i += 1
    return None


def _open_paren(text: str) -> int | None:
    """Where the column list of `CREATE TABLE name (` opens (outside quotes and comments); None for AS SELECT."""
    m = re.match(r"\s*CREATE\s+(?:TEMP\s+|TEMPORARY\s+|VIRTUAL\s+)?TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?"
                 r"(?:" + _IDENT + r"\s*\.\s*)?" + _IDENT + r"\s*(?:--[^\n]*\n\s*|/\*.*?\*/\s*)*\(", text, re.I | re.S)
    return m.end() - 1 if m else None


def _parse_table(name: str, text: str) -> Table:
    t = Table(name=name, text=text)
    open_at = _open_paren(text)
    parsed = _split_items(text, open_at) if open_at is not None else None
    if parsed is not None:
        raw_items, table_comment, close_at = parsed
        t.comment = " ".join(table_comment)
        t.head, t.tail = text[:open_at + 1].rstrip(), text[close_at + 1:].strip()
        t.multiline = "\n" in text[open_at:close_at]
        t.items = []
        pks: set[str] = set()
        for code, notes in raw_items:
            note = "; ".join(notes)
            first = code.split(None, 1)[0].upper() if code.split() else ""
            if first in _CONSTRAINT_WORDS:
                uses: set[str] = set()
                if m := _PK_TABLE.search(code):
                    cols = {c.lower() for c in _idents(m.group(1))}
                    pks |= cols
                    uses |= cols
                for m in _FK_TABLE.finditer(code):
                    src = [c.lower() for c in _idents(m.group(1))]
                    dst = [c.lower() for c in _idents(m.group(3) or "")]
                    for k, s in enumerate(src):
                        t.fks.append((s, _unquote(m.group(2)).lower(), dst[k] if k < len(dst) else None))
                    uses |= set(src)
                if not uses:
                    uses = {c.lower() for c in _idents(re.sub(r"'(?:[^']|'')*'", "", code))}
                t.items.append(_Item(code, note, None, frozenset(uses)))
                continue
            m = re.match(_IDENT, code)
            if not m:
                continue
            col = _unquote(m.group(0))
            rest = code[m.end():]
            words = rest.split()
            type_words = []
            for w in words:
                if w.upper().strip("(),") in _TYPE_STOP:
                    break
                type_words.append(w)
            is_pk = bool(re.search(r"\bPRIMARY\s+KEY\b", rest, re.I))
            if ref := _INLINE_REF.search(rest):
                t.fks.append((col.lower(), _unquote(ref.group(1)).lower(),
                              _unquote(ref.group(2)).lower() if ref.group(2) else None))
            t.columns.append(Column(col, " ".join(type_words), note, is_pk, _name_terms(col), _name_terms(note)))
            t.items.append(_Item(code, note, col.lower()))
        for c in t.columns:
            c.pk = c.pk or c.name.lower() in pks
    t.terms = _name_terms(name)
    t.comment_terms = frozenset(_name_terms(t.comment))
    vocab = set(t.terms) | set(t.comment_terms)
    for c in t.columns:
        vocab |= set(c.terms) | set(c.comment_terms)
    t.vocab = frozenset(vocab)
    return t


def _render(t: Table, columns: set[str] | None) -> str:
    """The table's CREATE statement: as written (columns None), or with only `columns` (and the constraints that
    name only those), in the statement's own layout."""
    if columns is None or t.items is None:
        return t.text
    items = [it for it in t.items if (it.column in columns if it.column else it.uses <= columns)]
    if t.multiline:
        lines = []
        for k, it in enumerate(items):
            line = "  " + it.code + ("," if k < len(items) - 1 else "")
            lines.append(line + (f" -- {it.comment}" if it.comment else ""))
        head = t.head + (f" -- {t.comment}" if t.comment else "")
        return head + "\n" + "\n".join(lines) + "\n)" + t.tail
    body = ", ".join(it.code + (f" /* {it.comment} */" if it.comment else "") for it in items)
    head = t.head + (f" /* {t.comment} */ " if t.comment else "")
    return head + body + ")" + t.tail


@dataclass
class SchemaIndex:
    """A parsed schema: tables in schema order, foreign-key neighbours, term weights."""

    tables: list[Table]
    by_key: dict[str, Table]
    neighbors: dict[str, list[str]]
    idf: dict[str, float]
    term_tables: dict[str, list[int]] = field(default_factory=dict)  # term -> tables (positions) using it
    _partials: dict[str, frozenset[str]] = field(default_factory=dict)

    _base: dict[str, frozenset[str]] = field(default_factory=dict)

    def base_columns(self, t: Table) -> frozenset[str]:
        """What a compact form of `t` always shows: its keys and its first text column (usually its name)."""
        if t.key not in self._base:
            keep = {c.name.lower() for c in t.columns if c.pk} | {fk for fk, _, _ in t.fks}
            first_text = next((c for c in t.columns if c.is_text and not c.pk), None)
            if first_text is not None:
                keep.add(first_text.name.lower())
            self._base[t.key] = frozenset(keep)
        return self._base[t.key]

    def partials(self, q: str) -> frozenset[str]:
        if q not in self._partials:
            self._partials[q] = frozenset(v for v in self.term_tables if v != q and _partial(q, v))
        return self._partials[q]

    def path_to(self, start: str, kept: set[str], max_bridge: int = MAX_BRIDGE) -> list[str] | None:
        """Bridge tables on a shortest foreign-key path from `start` to any kept table ([] when adjacent or when
        `start` is kept); None when no kept table is within max_bridge + 1 hops. Breadth-first in schema order."""
        if start in kept or not kept:
            return [] if start in kept else None
        prev: dict[str, str | None] = {start: None}
        frontier = deque([(start, 0)])
        while frontier:
            node, dist = frontier.popleft()
            if dist > max_bridge:
                continue
            for nxt in self.neighbors.get(node, ()):
                if nxt in prev:
                    continue
                prev[nxt] = node
                if nxt in kept:
                    path, cur = [], node
                    while cur is not None and cur != start:
                        path.append(cur)
                        cur = prev[cur]
                    return path[::-1]
                frontier.append((nxt, dist + 1))
        return None


@lru_cache(maxsize=128)
def parse_schema(ddl: str) -> SchemaIndex:
    """Parse a schema's CREATE TABLE statements once (cached by text: thousands of rows share a few schemas)."""
    from ft.sql.parse import split_ddl

    try:
        blocks = split_ddl(ddl)
    except ValueError:
        blocks = []
    tables, by_key = [], {}
    for name, text in blocks:
        if not re.match(r"\s*CREATE\s+(?:TEMP\s+|TEMPORARY\s+|VIRTUAL\s+)?TABLE\b", text, re.I):
            continue  # views are not pruned (they stay out of a pruned schema's tables)
        t = _parse_table(name, text)
        if t.key not in by_key:
            tables.append(t)
            by_key[t.key] = t
    neighbors: dict[str, set[str]] = {t.key: set() for t in tables}
    for t in tables:
        for _, ref, _ in t.fks:
            if ref in by_key and ref != t.key:
                neighbors[t.key].add(ref)
                neighbors[ref].add(t.key)
    # Subject-area prefixes: a first word of the name that at least 3 tables share (`sales_`, `fin_`, `hr_`).
    firsts: dict[str, int] = {}
    for t in tables:
        parts = re.split(r"[_\W]+|(?<=[a-z0-9])(?=[A-Z])", t.name)
        if len(parts) > 1:
            firsts[parts[0].lower()] = firsts.get(parts[0].lower(), 0) + 1
    for t in tables:
        first = re.split(r"[_\W]+|(?<=[a-z0-9])(?=[A-Z])", t.name)[0].lower()
        if firsts.get(first, 0) >= 3:
            rest = set(_name_terms(t.name[len(first):]))
            t.area = frozenset(x for x in _name_terms(first) if x not in rest)
    order = {t.key: i for i, t in enumerate(tables)}
    df: dict[str, int] = {}
    for t in tables:
        for term in t.vocab:
            df[term] = df.get(term, 0) + 1
    n = max(1, len(tables))
    idf = {term: math.log(1 + n / k) for term, k in df.items()}
    term_tables: dict[str, list[int]] = {}
    for i, t in enumerate(tables):
        for term in sorted(t.vocab):
            term_tables.setdefault(term, []).append(i)
    return SchemaIndex(tables, by_key, {k: sorted(v, key=order.__getitem__) for k, v in neighbors.items()}, idf,
                       term_tables)



# ------------------------------------------------------------------------------------------- gold tables / columns


def gold_columns(query: str, schema: str | SchemaIndex) -> tuple[set[str], set[tuple[str, str]]]:
    """(tables, (table, column) pairs) of the schema that a query reads, lower-cased. An unqualified column counts
    for every table of its SELECT that has it (an over-estimate is safe: these are kept, never dropped). Raises
    ValueError when the query doesn't parse."""
    from sqlglot import exp
    from sqlglot.optimizer.scope import traverse_scope

    from ft.sql.parse import SQLGLOT_ERRORS, parse_one, tables_in_query

    index = parse_schema(schema) if isinstance(schema, str) else schema
    tables = {t for t in tables_in_query(query) if t in index.by_key}
    cols: set[tuple[str, str]] = set()
    try:
        tree = parse_one(query)
        scopes = traverse_scope(tree)
    except (*SQLGLOT_ERRORS, ValueError) as e:
        raise ValueError(f"cannot parse SQL: {e}") from None
    for scope in scopes:
        sources = {alias.lower(): src.name.lower() for alias, src in scope.sources.items()
                   if isinstance(src, exp.Table) and src.name}
        for c in scope.columns:
            name = c.name.lower()
            if not name or name == "*":
                continue
            if c.table:
                owners = [sources.get(c.table.lower())]
            else:
                owners = list(sources.values())
            for owner in owners:
                t = index.by_key.get(owner or "")
                if t is not None and t.column(name) is not None:
                    cols.add((t.key, name))
    return tables, cols



@lru_cache(maxsize=20_000)
def _gold(query: str, schema: str) -> tuple[set[str], set[tuple[str, str]]]:
    return gold_columns(query, schema)
