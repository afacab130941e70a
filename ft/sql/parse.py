"""Parsing helpers: schema catalogs, table references, canonical forms, and pulling the SQL out of a model's
free-form output.

All SQL parsing goes through sqlglot, in the row's dialect (`dialect`: sqlglot's name, "sqlite" unless the data says
otherwise: ft.sql.engine.dialect_name).
"""
from __future__ import annotations

import contextlib
import functools
import logging
import re
import sqlite3
import threading

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError
from sqlglot.optimizer.scope import traverse_scope
from sqlglot.tokens import TokenType

DIALECT = "sqlite"
# sqlglot parses recursively: pathological model output (thousands of nested parentheses or subqueries)
# raises RecursionError, which must count as "cannot parse", never crash an evaluation.
SQLGLOT_ERRORS = (ParseError, TokenError, RecursionError)

# SQLite's keywords (https://sqlite.org/lang_keywords.html): identifiers spelled like one stay quoted
# in normalize_sql so the canonical form is still valid SQL.
_SQLITE_KEYWORDS = frozenset("""
abort action add after all alter always analyze and as asc attach autoincrement before begin between
by cascade case cast check collate column commit conflict constraint create cross current current_date
current_time current_timestamp database default deferrable deferred delete desc detach distinct do drop
each else end escape except exclude exclusive exists explain fail filter first following for foreign
from full generated glob group groups having if ignore immediate in index indexed initially inner insert
instead intersect into is isnull join key last left like limit match materialized natural no not
nothing notnull null nulls of offset on or order others outer over partition plan pragma preceding
primary query raise range recursive references regexp reindex release rename replace restrict returning
right rollback row rows savepoint select set table temp temporary then ties to transaction trigger
unbounded union unique update using vacuum values view virtual when where window with without
""".split())
_SIMPLE_IDENT = re.compile(r"[a-z_][a-z0-9_]*")


# sqlglot logs a warning for every statement it can only keep as an opaque Command (PRAGMA,
# WITHOUT ROWID tables, ...). Our callers handle that case, so while they parse the warning is noise;
# a thread-local flag keeps other users of sqlglot (and other threads) unaffected.
_parsing = threading.local()


class _WhileParsingHere(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(_parsing, "active", False)


logging.getLogger("sqlglot").addFilter(_WhileParsingHere())


@contextlib.contextmanager
def _quiet_sqlglot():
    _parsing.active = True
    try:
        yield
    finally:
        _parsing.active = False


def parse_statements(sql: str, dialect: str = DIALECT) -> list[exp.Expr]:
    """All non-empty statements in `sql` (raises sqlglot's ParseError / TokenError).

    A statement sqlglot has no grammar for comes back as an `exp.Command`.
    """
    with _quiet_sqlglot():
        statements = sqlglot.parse(sql, read=dialect)
    # Empty statements: None, or a Semicolon node holding a trailing comment ("SELECT 1; -- done").
    return [s for s in statements if s is not None and not isinstance(s, exp.Semicolon)]


def parse_one(sql: str, dialect: str = DIALECT) -> exp.Expr:
    """Exactly one statement; ValueError when there are several (or none)."""
    statements = parse_statements(sql, dialect)
    if len(statements) != 1:
        raise ValueError(f"expected one SQL statement, found {len(statements)}")
    return statements[0]


# ---------------------------------------------------------------------------------------------
# DDL


def tokenize(sql: str, dialect: str = DIALECT):
    """sqlglot tokens of `sql`; raises TokenError on e.g. an unterminated string."""
    return sqlglot.Dialect.get_or_raise(dialect).tokenize(sql)


def _statements(sql: str) -> list[tuple[int, int, list]]:
    """(start, end, tokens) of each statement, `end` past its ';' when it has one.

    Uses the tokenizer, so ';' inside strings, quoted names and comments is not a boundary, and a
    statement starts at its first token (comments before it are not part of it). DDL dumped from
    sqlite_master has no ';' at all, so a CREATE outside parentheses also starts a new statement.
    """
    out, start, depth, last_end, toks = [], None, 0, 0, []
    for tok in tokenize(sql):
        if tok.token_type == TokenType.SEMICOLON:
            if start is not None:
                out.append((start, tok.end + 1, toks))
            start, depth, toks = None, 0, []
            continue
        if tok.token_type == TokenType.CREATE and depth == 0 and start is not None:
            out.append((start, last_end, toks))
            start, toks = None, []
        if start is None:
            start = tok.start
        toks.append(tok)
        depth += (tok.token_type == TokenType.L_PAREN) - (tok.token_type == TokenType.R_PAREN)
        last_end = tok.end + 1
    if start is not None:
        out.append((start, last_end, toks))
    return out


def _created_table_name(toks: list) -> str | None:
    """Name of the table (or view) a CREATE statement (its tokens) creates; None otherwise."""
    if not toks or toks[0].token_type != TokenType.CREATE:
        return None
    i = 1
    while i < len(toks) and toks[i].text.upper() in ("TEMP", "TEMPORARY", "VIRTUAL"):
        i += 1
    if i >= len(toks) or toks[i].text.upper() not in ("TABLE", "VIEW"):
        return None
    i += 1
    if [t.text.upper() for t in toks[i:i + 3]] == ["IF", "NOT", "EXISTS"]:
        i += 3
    if i + 2 < len(toks) and toks[i + 1].token_type == TokenType.DOT:  # schema-qualified: main.t
        i += 2
    return toks[i].text if i < len(toks) else None


def split_ddl(ddl: str) -> list[tuple[str, str]]:
    """[(table_name, statement_text)] for each CREATE TABLE / VIEW statement in `ddl`.

    The statement text is the original text from CREATE through its ';' (if it has one), so the
    kept blocks re-join, in the schema's own style, into a smaller schema. Statements may also be
    separated by nothing but whitespace (as sqlite_master stores them). Other statements (CREATE
    INDEX, INSERT, ...) are dropped.
    """
    return list(_split_ddl(ddl))


@functools.lru_cache(maxsize=32)
def _split_ddl(ddl: str) -> tuple[tuple[str, str], ...]:
    # sqlglot's tokenizer is pure Python (~0.1 s for a 170-table, 80 kB schema) and callers split the same schema for
    # every question on it (encoding goes schema by schema; evaluation and serving see few schemas): split once.
    try:
        statements = _statements(ddl)
    except TokenError as e:
        raise ValueError(f"cannot tokenize schema DDL: {e}") from None
    out = []
    for start, end, toks in statements:
        name = _created_table_name(toks)
        if name is not None:
            out.append((name, ddl[start:end].strip()))
    return tuple(out)


def _column_names_sqlglot(create: exp.Create, catalog: dict[str, list[str]]) -> list[str]:
    schema = create.this
    if isinstance(schema, exp.Schema):  # CREATE TABLE t (col defs, constraints)
        cols = []
        for e in schema.expressions:
            if isinstance(e, exp.ColumnDef):
                cols.append(e.name)
            elif isinstance(e, exp.Identifier):  # a column with no type: CREATE TABLE t (a, b)
                cols.append(e.name)
        return cols
    query = create.expression  # CREATE VIEW v AS SELECT ... / CREATE TABLE t AS SELECT ...
    if isinstance(query, exp.Query):
        return _query_output_names(query, catalog)
    return []


def _query_output_names(query: exp.Query, catalog: dict[str, list[str]]) -> list[str]:
    """Best-effort output column names of a view's SELECT (stars expanded from the catalog)."""
    while isinstance(query, exp.SetOperation):  # a compound SELECT is named by its left-most SELECT
        query = query.left
    if not isinstance(query, exp.Select):
        return []
    lookup = {k.lower(): v for k, v in catalog.items()}
    aliases = {t.alias_or_name.lower(): t.name.lower() for t in query.find_all(exp.Table)}
    names = []
    for proj in query.expressions:
        if isinstance(proj, exp.Star):
            for table in aliases.values():
                names.extend(lookup.get(table, []))
        elif isinstance(proj, exp.Column) and isinstance(proj.this, exp.Star):
            names.extend(lookup.get(aliases.get(proj.table.lower(), ""), []))
        elif proj.alias_or_name:
            names.append(proj.alias_or_name)
        else:
            names.append(proj.sql(DIALECT))  # SQLite names an un-aliased expression by its text
    return names


def _column_names_sqlite(statement: str, name: str) -> list[str]:
    """Fallback for DDL sqlglot can't parse: let SQLite itself parse it in a scratch database."""
    conn = sqlite3.connect(":memory:")
    try:
        conn.execute(statement.rstrip().rstrip(";"))
        return [r[1] for r in conn.execute("SELECT * FROM pragma_table_info(?)", (name,))]
    finally:
        conn.close()


def schema_catalog(ddl: str, dialect: str = DIALECT) -> dict[str, list[str]]:
    """table -> column names (case preserved) from the CREATE TABLE / VIEW statements in `ddl`.

    A statement sqlglot can't parse is handed to SQLite in a scratch in-memory database (SQLite
    accepts some syntax sqlglot does not); if that fails too, ValueError names the statement.
    """
    catalog: dict[str, list[str]] = {}
    for name, text in split_ddl(ddl):
        try:
            create = parse_one(text, dialect)
            if not isinstance(create, exp.Create):  # e.g. a Command: syntax sqlglot doesn't model
                raise ValueError("sqlglot cannot parse this statement")
            cols = _column_names_sqlglot(create, catalog)
        except (*SQLGLOT_ERRORS, ValueError) as e:
            try:
                cols = _column_names_sqlite(text, name)
            except sqlite3.Error as sqlite_error:
                snippet = " ".join(text.split())[:200]
                raise ValueError(f"cannot parse schema statement for table {name!r}: {snippet!r} "
                                 f"(sqlglot: {str(e).splitlines()[0]}; sqlite: {sqlite_error})") from None
        catalog[name] = cols
    return catalog


def tables_in_query(sql: str, dialect: str = DIALECT) -> set[str]:
    """Lowercased names of the schema tables a query reads; CTE names are not included.

    Raises ValueError when the query doesn't parse (a caller pruning a prompt should then keep
    every table).
    """
    try:
        tree = parse_one(sql, dialect)
    except SQLGLOT_ERRORS as e:
        raise ValueError(f"cannot parse SQL: {str(e).splitlines()[0]}") from None
    names = set()
    # Scopes resolve names properly: a source that is a CTE maps to a Scope, not a Table.
    for scope in traverse_scope(tree):
        for source in scope.sources.values():
            if isinstance(source, exp.Table) and source.name:  # name '' = table-valued function
                names.add(source.name.lower())
    # DML has no scopes; still report its tables (minus CTE names)
    if not names:
        ctes = {c.alias_or_name.lower() for c in tree.find_all(exp.CTE)}
        names = {t.name.lower() for t in tree.find_all(exp.Table) if t.name} - ctes
    return names


# ---------------------------------------------------------------------------------------------
# Canonical form


def _lower_identifier(node: exp.Expr) -> exp.Expr:
    if isinstance(node, exp.Identifier):
        name = node.this.lower()
        # SQLite names are case-insensitive even when quoted; quotes stay only where needed
        quoted = not _SIMPLE_IDENT.fullmatch(name) or name in _SQLITE_KEYWORDS
        return exp.Identifier(this=name, quoted=quoted)
    return node


_QUOTED_OR_OTHER = re.compile(r"('(?:[^']|'')*'?)|([^']+)")


def _fallback_normalize(sql: str) -> str:
    # Lowercase everything but string literals; collapse whitespace runs to one space.
    parts = []
    for m in _QUOTED_OR_OTHER.finditer(sql):
        parts.append(m.group(1) if m.group(1) is not None else re.sub(r"\s+", " ", m.group(2).lower()))
    return _clean("".join(parts))


def normalize_sql(sql, dialect: str = DIALECT) -> str:
    """Canonical text for exact-match: sqlglot round trip (in `dialect`) with lowercased identifiers.

    Keywords come out upper-case, whitespace single-spaced, string literals untouched. If sqlglot
    can't parse `sql`, falls back to lowercasing (outside string literals) and collapsing spaces.
    """
    sql = str(sql or "")
    try:
        return parse_one(sql, dialect).transform(_lower_identifier).sql(dialect=dialect)
    except Exception:  # noqa: BLE001 - any failure: parse errors, and sqlglot's own bugs on odd input (a KeyError
        # in its SQLite generator for `CREATE TABLE t (a INT, PRIMARY KEY (b))`); model output must never crash us
        return _fallback_normalize(sql)


# ---------------------------------------------------------------------------------------------
# Pulling SQL out of model output

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*(?:\n|$)(.*?)(```|\Z)", re.S)
_SQL_FENCE_LANGS = {"sql", "sqlite", "sqlite3", "postgres", "postgresql", "psql", "pgsql", "plpgsql", "duckdb"}
# A statement starts at SQL's first keyword; prose before it is skipped. WITH must look like a CTE
# ("WITH name AS (" / "WITH name(") so that prose such as "With the schema above, ..." is not taken.
_WITH_CTE = r"WITH\s+(?:RECURSIVE\s+)?[\w\"`\[\]]+\s*(?:\(|AS\s*\()"
_LINE_START_SQL = re.compile(r"^[ \t]*(?:SELECT\b|" + _WITH_CTE + ")", re.I | re.M)
_ANY_SELECT = re.compile(r"\bSELECT\b", re.I)
_STATEMENT_START = re.compile(
    r"(?:SELECT\b|" + _WITH_CTE + r"|(?:VALUES|INSERT|UPDATE|DELETE|REPLACE|CREATE|DROP|ALTER|ATTACH|"
    r"DETACH|PRAGMA|VACUUM)\s)", re.I)
# Where a statement written as plain text ends: a blank line, a "###" heading, a code fence, or a
# chat template's special token.
_TEXT_STOP = re.compile(r"\n[ \t]*\n|^[ \t]*###|```|<\||</s>|<eos>|<end_of_turn>", re.M)


def first_statement(sql: str) -> str:
    """Text up to the first ';' outside string literals, quoted names and comments (all of it if
    there is none). A plain scanner, so it also works on text the tokenizer rejects."""
    i, n = 0, len(sql)
    while i < n:
        c = sql[i]
        if c in "'\"`[":
            close = "]" if c == "[" else c
            j = sql.find(close, i + 1)
            while j != -1 and close != "]" and sql[j + 1:j + 2] == close:  # doubled quote escape
                j = sql.find(close, j + 2)
            if j == -1:  # unterminated (output cut off): the rest is inside the literal
                return sql
            i = j + 1
        elif sql.startswith("--", i):
            j = sql.find("\n", i)
            i = n if j == -1 else j + 1
        elif sql.startswith("/*", i):
            j = sql.find("*/", i + 2)
            i = n if j == -1 else j + 2
        elif c == ";":
            return sql[:i]
        else:
            i += 1
    return sql


def _clean(sql: str) -> str:
    sql = sql.strip()
    while sql.endswith(";"):
        sql = sql[:-1].rstrip()
    return sql


def _sql_start(text: str) -> int | None:
    """Where the first statement in `text` starts: at the start if the text opens with a SQL
    keyword, else at the first line starting with SELECT / WITH; None if neither."""
    stripped = text.lstrip()
    if _STATEMENT_START.match(stripped):
        return len(text) - len(stripped)
    m = _LINE_START_SQL.search(text)
    return m.start() if m else None


def extract_sql(text: str) -> str:
    """The SQL statement in a model's output.

    1. The first ```sql (or ```sqlite) fenced block holding SQL; else the first such block with no
       language. An unterminated fence (generation cut off, or the prompt opened the fence) ends
       like plain text (below).
    2. Otherwise plain text: from the start if it opens with a SQL keyword, else from the first
       line starting with SELECT / WITH (else the first SELECT anywhere), up to a blank line, a
       line starting with '###', a code fence or a chat special token.
    Either way only the first statement is kept (up to the first ';' outside quotes), stripped,
    without the trailing ';'. Text with nothing SQL-like comes back stripped.
    """
    text = text or ""
    blocks = [(m.group(1).lower(), m.group(2), bool(m.group(3))) for m in _FENCE.finditer(text)]
    for wanted in (lambda lang: lang in _SQL_FENCE_LANGS, lambda lang: not lang):
        for lang, block, closed in blocks:
            at = _sql_start(block) if wanted(lang) else None
            if at is not None:  # skips prose in a fence, e.g. "```sql\nHere it is:\n```sql\n..."
                # A closed fence delimits the SQL (blank lines and all); an open one may run on
                # into prose, so it ends where plain text would.
                return _clean(first_statement(block[at:] if closed else _until_stop(block[at:])))

    at = _sql_start(text)
    if at is None:
        m = _ANY_SELECT.search(text)
        at = m.start() if m else len(text) - len(text.lstrip())
    return _clean(first_statement(_until_stop(text[at:])))


def _until_stop(text: str) -> str:
    stop = _TEXT_STOP.search(text)
    return text[:stop.start()] if stop else text
