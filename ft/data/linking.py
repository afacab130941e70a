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
"""
from __future__ import annotations

import dataclasses
import math
import os
import re
import statistics
from collections import deque
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable

from ft.data.rows import DataError, Row

CORE_SHARE, MAX_CORE = 0.25, 12  # tables scoring at least this share of the best come first (at most MAX_CORE)
NEIGHBOR_SHARE = 0.3  # of its best-matched foreign-key neighbour's score added to a matched table's own
MAX_BRIDGE = 2  # bridge tables allowed on the foreign-key path that joins a table to the kept ones
MAX_HINTS_PER_COLUMN = 3
MAX_HINT_CHARS = 48  # longer values are never hinted (a cut value would be a wrong literal)
VALUES_PER_COLUMN = 500  # distinct values read per text column (the most frequent first is not needed: a lookup)
VALUE_READ_TIMEOUT_S = 2.0

# ----------------------------------------------------------------------------------------------------- words

_STOP = frozenset("""
a an the of in on at to for from by with and or not no is are was were be been being do does did has have had
what which who whom whose when where why how many much more most less least than then there their them they it its
this that these those each every all any some per show list give find tell me top over under above below between
during within into out as same other also only just both either about after before since until can could would
should will may please display get whose ever never yes one two three four five ten
""".split())

# Abbreviations found in table and column names -> the word a question would use.
_ABBREV = {
    "qty": "quantity", "amt": "amount", "num": "number", "nbr": "number", "dept": "department", "emp": "employee",
    "cust": "customer", "addr": "address", "desc": "description", "fin": "finance", "mkt": "marketing",
    "mfg": "manufacturing", "sup": "support", "prod": "product", "proc": "procurement", "prj": "project",
    "fac": "facility", "acct": "account", "txn": "transaction", "mgr": "manager", "loc": "location",
    "cat": "category", "yr": "year", "dob": "birth", "org": "organization", "pct": "percent", "lvl": "level",
    "wh": "warehouse", "inv": "invoice", "hr": "employee", "mktg": "marketing", "ctry": "country", "po": "purchase",
}
# Question words -> the word a schema would use.
_SYNONYMS = {
    "staff": "employee", "worker": "employee", "personnel": "employee", "hire": "employee", "client": "customer",
    "buyer": "customer", "spend": "amount", "spent": "amount", "paid": "payment", "pay": "salary", "wage": "salary",
    "earn": "salary", "ship": "shipment", "shipped": "shipment", "deliver": "delivery", "delivered": "delivery",
    "sold": "sale", "sell": "sale", "bought": "order", "purchased": "order", "price": "price", "cost": "cost",
    "revenue": "amount", "country": "country", "nation": "country", "town": "city", "kid": "child",
}

_CAMEL = re.compile(r"([a-z0-9])([A-Z])")
_WORD = re.compile(r"[a-z0-9]+")


def _stem(w: str) -> str:
    """A light stemmer: plural and -ing / -ed / -ment endings, so 'shipped', 'shipments' and 'ship' meet."""
    if len(w) > 4 and w.endswith("ies"):
        w = w[:-3] + "y"
    elif len(w) > 4 and (w.endswith(("sses", "shes", "ches", "xes")) or w.endswith("tuses")):
        w = w[:-2]  # addresses, boxes, statuses
    elif len(w) > 3 and w.endswith("s") and not w.endswith(("ss", "us", "is")):
        w = w[:-1]
    for suffix, keep in (("ment", 4), ("ing", 3), ("ed", 3)):
        if w.endswith(suffix) and len(w) - len(suffix) >= keep:
            w = w[: -len(suffix)]
            if len(w) > 3 and w[-1] == w[-2] and w[-1] not in "aeiouls":
                w = w[:-1]  # shipp -> ship
            break
    return w


@lru_cache(maxsize=200_000)
def _name_terms(name: str) -> tuple[str, ...]:
    """Stemmed words of an identifier or comment: snake_case and camelCase split, abbreviations expanded (both the
    abbreviation and its expansion are kept)."""
    out: list[str] = []
    for w in _WORD.findall(_CAMEL.sub(r"\1 \2", name).lower()):
        if w.isdigit():
            continue
        out.append(_stem(w))
        if w in _ABBREV:
            out.append(_stem(_ABBREV[w]))
    return tuple(out)


def question_terms(text: str) -> tuple[str, ...]:
    """The question's content words, stemmed (stop words and numbers dropped), synonyms added, in order."""
    out: list[str] = []
    for w in _WORD.findall(_CAMEL.sub(r"\1 \2", text).lower()):
        if w in _STOP or w.isdigit() or len(w) < 2:
            continue
        s = _stem(w)
        if s in _STOP:
            continue
        out.append(s)
        syn = _SYNONYMS.get(w) or _SYNONYMS.get(s)
        if syn and _stem(syn) != s:
            out.append(_stem(syn))
    return tuple(dict.fromkeys(out))


def _partial(a: str, b: str) -> bool:
    """One word is a prefix of the other, both at least 4 letters long ('employ' / 'employee')."""
    return len(a) >= 4 and len(b) >= 4 and (a.startswith(b) or b.startswith(a))


# -------------------------------------------------------------------------------------------------- the DDL

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


# --------------------------------------------------------------------------------------------- database values


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


# ------------------------------------------------------------------------------------------------------ scoring


def score_tables(terms: tuple[str, ...], index: SchemaIndex,
                 value_hits: list[tuple[int, str, str, str]] = ()) -> tuple[dict[str, float], dict[tuple, float]]:
    """(table -> score, (table, column) -> score) for the question's terms and value matches."""
    tscore: dict[str, float] = {}
    cscore: dict[tuple[str, str], float] = {}
    qset = set(terms)
    for q in terms:
        near = index.partials(q)  # other words of the schema that q is a prefix of, or that are a prefix of q
        touched = set(index.term_tables.get(q, ()))
        for v in near:
            touched.update(index.term_tables[v])
        if not touched:
            continue
        w = index.idf.get(q) or 1.0
        for ti in sorted(touched):
            t = index.tables[ti]
            if q in t.area:  # only the subject-area prefix: a weak hint
                best = 1.0
            elif q in t.terms:
                best = 3.0
            else:
                best = 1.5 if any(v in near and v not in t.area for v in t.terms) else 0.0
            for c in t.columns:
                cs = 2.0 if q in c.terms else (1.0 if any(v in near for v in c.terms) else 0.0)
                if not cs and q in c.comment_terms:
                    cs = 0.7
                if cs:
                    key = (t.key, c.name.lower())
                    cscore[key] = cscore.get(key, 0.0) + cs * w
                    best = max(best, cs)
            if best < 1.0 and q in t.comment_terms:
                best = 1.0
            if best:
                tscore[t.key] = tscore.get(t.key, 0.0) + best * w
    for t in index.tables:
        core = [x for x in t.terms if len(x) > 2 and x not in t.area]
        if core and all(x in qset for x in core):
            tscore[t.key] = tscore.get(t.key, 0.0) + 2.0  # every word of the table's name is in the question
    spread: dict[str, int] = {}  # in how many columns a matched value occurs: the fewer, the more it says
    for _, table, column, value in value_hits:
        spread[value.lower()] = spread.get(value.lower(), 0) + 1
    for size, table, column, value in value_hits:
        w = (6.0 + 4.0 * size) / math.sqrt(spread[value.lower()])
        if size == 1 and _stem(value.lower()) in index.idf:
            w /= 2  # a one-word value that is also a word of the schema ('paid', 'employee'): weaker evidence
        tscore[table] = tscore.get(table, 0.0) + w
        key = (table, column.lower())
        cscore[key] = cscore.get(key, 0.0) + w
    # Tables join: a matched table next to a strongly matched one is likelier to be needed (the department of the
    # employees asked about), so each gets a share of its best neighbour's own score.
    own = dict(tscore)
    for k, s in own.items():
        best = max((own.get(n, 0.0) for n in index.neighbors.get(k, ())), default=0.0)
        tscore[k] = s + NEIGHBOR_SHARE * best
    return tscore, cscore


# ----------------------------------------------------------------------------------------------- token counting


class TokenCounter:
    """Tokens of a text under a tokenizer (no special tokens), memoized; or any `count(text) -> int`."""

    def __init__(self, tokenizer_or_fn):
        self._fn = tokenizer_or_fn if not hasattr(tokenizer_or_fn, "encode") and callable(tokenizer_or_fn) else None
        self._tok = None if self._fn else tokenizer_or_fn
        self._memo: dict[str, int] = {}

    def __call__(self, text: str) -> int:
        n = self._memo.get(text)
        if n is None:
            n = self._fn(text) if self._fn else len(self._tok(text, add_special_tokens=False)["input_ids"])
            if len(self._memo) > 50_000:
                self._memo.clear()
            self._memo[text] = n
        return n


def as_counter(count) -> TokenCounter:
    return count if isinstance(count, TokenCounter) else TokenCounter(count)


# ----------------------------------------------------------------------------------------------------- linking


@dataclass
class Linked:
    schema: str  # the pruned schema; the row's own text when all of it is kept
    kept: list[str]  # tables kept, schema order
    dropped: list[str]
    compact: list[str]  # kept tables shown with some of their columns only
    hints: list[tuple[str, str, str]]  # (table, column, value) shown
    tokens: int  # tokens of `schema` and of the hint lines
    full_tokens: int  # tokens of the whole schema
    budget: int
    changed: bool
    shown_columns: dict[str, set[str] | None] = field(default_factory=dict)  # table -> columns (None: all)
    hint_text: str = ""  # the hints as `-- values of t.c: ...` lines, schema order (Row.value_hints)


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


def link_schema(row: Row, budget: int, count, *, gold: bool = False, value_hints: bool = True,
                max_value_hints: int = 8, keep_paths: bool = True, fill: bool = True) -> Linked:
    """The schema of `row` pruned to at most `budget` tokens (see the module docstring).

    gold: training; the gold query's tables and columns are always kept (even over the budget), and when the gold
    query cannot be parsed nothing is dropped. keep_paths / fill exist to measure what they bring (tests, bench).
    """
    count = as_counter(count)
    index = parse_schema(row.schema)
    full_tokens = count(row.schema)
    text = row.question + (" " + row.evidence if row.evidence else "")
    hinting = value_hints and max_value_hints > 0
    if full_tokens <= budget and not hinting:
        return Linked(row.schema, [t.name for t in index.tables], [], [], [], full_tokens, full_tokens, budget, False)
    values = value_index(row.db, index) if row.db and index.tables else None
    hits = match_values(text, values) if values else []
    if full_tokens <= budget and not (hinting and hits):
        return Linked(row.schema, [t.name for t in index.tables], [], [], [], full_tokens, full_tokens, budget, False)
    tscore, cscore = score_tables(question_terms(text), index, hits)

    required: dict[str, set[str]] = {}
    if gold:
        try:
            g_tables, g_cols = _gold(row.query, row.schema)
        except ValueError:
            g_tables = None
        if g_tables is None or (not g_tables and index.tables):  # what it needs is unknown: drop nothing
            return Linked(row.schema, [t.name for t in index.tables], [], [], [], full_tokens, full_tokens, budget,
                          False)
        for t in sorted(g_tables):
            required[t] = {c for tt, c in g_cols if tt == t}

    matched: dict[str, set[str]] = {}
    for (tt, c), sc in cscore.items():
        if sc > 0:
            matched.setdefault(tt, set()).add(c)

    def compact_cols(t: Table) -> set[str]:
        """Keys, the first text column (usually the name), matched and gold columns."""
        return index.base_columns(t) | matched.get(t.key, set()) | required.get(t.key, set())

    sep = count("\n\n") if index.tables else 0
    # Room the hints will take (the greedy pass below counts table blocks only).
    reserve = 0
    if value_hints and max_value_hints > 0:
        reserve = sum(count(f"'{v}', ") for _, _, _, v in hits[:max_value_hints])
        reserve += 8 * len({(t, c) for _, t, c, _ in hits[:max_value_hints]})
    room = budget - min(reserve, budget // 4)
    shown: dict[str, set[str] | None] = {}  # table -> columns shown (None: all of them)
    cost: dict[str, int] = {}
    added: list[str] = []  # in the order they were added (the last ones go first if the real count is over)

    def form_cost(k: str, cols: set[str] | None) -> int:
        return count(_render(index.by_key[k], cols)) + sep

    def add(keys: list[str], full: bool, force: bool = False) -> bool:
        """Add these tables (all or none), in full or compact, if they fit the room (or `force`)."""
        plan, total = [], 0
        for k in keys:
            if k in shown or any(k == p[0] for p in plan):
                continue
            t = index.by_key[k]
            cols = None if (full or t.items is None) else compact_cols(t)
            c = form_cost(k, cols)
            plan.append((k, cols, c))
            total += c
        if not force and sum(cost.values()) + total > room:
            return False
        for k, cols, c in plan:
            shown[k], cost[k] = cols, c
            added.append(k)
        return True

    def upgrade(k: str) -> None:
        if shown.get(k, None) is not None:
            c = form_cost(k, None)
            if sum(cost.values()) - cost[k] + c <= room:
                shown[k], cost[k] = None, c

    def with_path(k: str) -> list[str]:
        path = index.path_to(k, set(shown)) if keep_paths else []
        return (path or []) + [k]  # None: nothing kept is near it, so on its own

    # 1. Training: the gold query's tables, in full (compact if that is all that fits; kept whatever the budget).
    if required:
        gold_keys = sorted(required, key=lambda k: (-tscore.get(k, 0.0), k))
        if not add(gold_keys, full=True):
            add(gold_keys, full=False, force=True)
            for k in gold_keys:
                upgrade(k)
    # 2. The best-ranked tables, compact, each with the foreign-key path to the kept ones: breadth first.
    order = {t.key: i for i, t in enumerate(index.tables)}
    ranked = sorted((k for k in tscore if k not in shown), key=lambda k: (-tscore[k], order[k]))
    top = tscore[ranked[0]] if ranked else 0.0
    for k in [k for k in ranked if tscore[k] >= CORE_SHARE * top][:MAX_CORE]:
        add(with_path(k), full=False)
    # 3. Then in full, best first, while there is room.
    for k in ranked:
        if k in shown:
            upgrade(k)
    # 4. The other matched tables, compact; then (fill) the neighbours of kept tables and the rest of the schema.
    for k in ranked:
        if k not in shown:
            add(with_path(k), full=False)
    if fill:
        near = [k for k in order if k not in shown and any(n in shown for n in index.neighbors.get(k, ()))]
        for k in near + [k for k in order if k not in shown and k not in near]:
            if sum(cost.values()) + sep >= room:
                break
            add([k], full=False)
        for k in [k for k in order if k in shown]:
            upgrade(k)

    hint_limit = max_value_hints if value_hints else 0

    def build() -> tuple[str, list[tuple[str, str, str]]]:
        hints = _pick_hints(hits, shown, hint_limit) if hint_limit > 0 else []
        nonlocal hint_text
        hint_text = _hint_lines(hints, index)
        if len(shown) == len(index.tables) and all(v is None for v in shown.values()):
            return row.schema, hints  # all of it: the very text other questions on this schema share
        return "\n\n".join(_render(t, shown[t.key]) for t in index.tables if t.key in shown), hints

    def tokens_of(schema: str) -> int:
        return count(schema) + (count("\n" + hint_text) if hint_text else 0)

    hint_text = ""

    def unchanged() -> Linked:
        return Linked(row.schema, [t.name for t in index.tables], [], [], [], full_tokens, full_tokens, budget,
                      False, dict(shown))

    whole = len(shown) == len(index.tables) and all(v is None for v in shown.values())
    schema, hints = build()
    if whole and not hints:
        return unchanged()
    tokens = tokens_of(schema)
    # The greedy pass counted blocks one by one (and no hints): settle on the real count of the joined text.
    # Given up first: filler tables (no match with the question), then hints, then the lowest-ranked tables.
    while tokens > budget:
        filler = [k for k in added if k not in required and not tscore.get(k)]
        ranked_added = [k for k in added if k not in required]
        if filler:
            k = filler[-1]
        elif hints:
            hint_limit = len(hints) - 1
            schema, hints = build()
            tokens = tokens_of(schema)
            continue
        elif ranked_added:
            k = ranked_added[-1]
        else:
            break  # only gold tables left (training): kept whatever the budget
        added.remove(k)
        del shown[k], cost[k]
        schema, hints = build()
        tokens = tokens_of(schema)
    if len(shown) == len(index.tables) and all(v is None for v in shown.values()) and not hints:
        return unchanged()
    return Linked(schema, [t.name for t in index.tables if t.key in shown],
                  [t.name for t in index.tables if t.key not in shown],
                  [index.by_key[k].name for k, v in shown.items() if v is not None], hints, tokens, full_tokens,
                  budget, True, dict(shown), hint_text)


# ------------------------------------------------------------------------------------- training and inference


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


# ------------------------------------------------------------------------------------------------- measuring


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


@lru_cache(maxsize=20_000)
def _gold(query: str, schema: str) -> tuple[set[str], set[tuple[str, str]]]:
    return gold_columns(query, schema)


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
