"""Static checks of generated SQL against a schema: unknown tables / columns / functions, wrong macro
arity, non-read statements, syntax errors, each with the nearest valid name as a suggestion.

Two passes, in the SQL's dialect (sqlglot's name: sqlite, postgres, duckdb, ...):
  1. A name resolver over sqlglot's scopes reports every problem it finds, with suggestions.
  2. The engine itself compiles the query (EXPLAIN, nothing runs): SQLite against an empty in-memory copy of
     the schema; PostgreSQL and DuckDB on the live database when there is one (`db`). The engine is the ground
     truth: if it compiles the query, the query is valid and pass-1 findings are dropped (so resolver blind spots
     can't give false positives); if it doesn't and pass 1 found nothing, its error becomes the issue. Without an
     engine to ask (another dialect, no database) pass 1 decides.

Double-quoted names: SQLite reads an unqualified "x" that matches no column as the string 'x'
(its legacy double-quoted-string behaviour, on in Python's sqlite3). So an unqualified
double-quoted name that resolves to nothing is *not* reported; a qualified one (t."x") is.
"""
from __future__ import annotations

import difflib
import functools
import re
import sqlite3
from dataclasses import asdict, dataclass, field

from sqlglot import exp
from sqlglot.optimizer.scope import Scope, traverse_scope

from .engine_sqlite import sqlite_functions
from .execute import install_read_only_authorizer
from .macros import register_macros
from .parse import DIALECT, parse_statements, schema_catalog

ISSUE_KINDS = ("parse", "unknown_table", "unknown_column", "ambiguous_column", "unknown_function",
               "macro_arity", "not_select")
_READ_ROOTS = (exp.Select, exp.SetOperation, exp.Subquery, exp.Values)
_WRITE_NODES = (exp.Insert, exp.Update, exp.Delete, exp.Merge, exp.Create, exp.Drop, exp.Alter,
                exp.Command, exp.Pragma, exp.Attach, exp.Detach, exp.Transaction, exp.Commit,
                exp.Rollback)
_ROWID_NAMES = frozenset({"rowid", "oid", "_rowid_"})
_MISSING = object()


@dataclass
class Issue:
    kind: str  # one of ISSUE_KINDS
    name: str | None  # the offending identifier
    suggestion: str | None  # nearest valid name, if any is close
    message: str

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Validation:
    ok: bool
    errors: list[Issue] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"ok": self.ok, "errors": [e.to_dict() for e in self.errors]}


# ---------------------------------------------------------------------------------------------
# Helpers


def _suggest(name: str, candidates) -> str | None:
    """Nearest candidate (original spelling) to `name`, compared case-insensitively."""
    by_lower = {}
    for c in candidates:
        by_lower.setdefault(c.lower(), c)
    hit = difflib.get_close_matches(name.lower(), list(by_lower), n=1, cutoff=0.6)
    return by_lower[hit[0]] if hit else None


@functools.lru_cache(maxsize=256)
def _catalog_from_ddl(ddl: str, dialect: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
    # Cached: an eval set validates many queries against the same few schemas.
    return tuple((t, tuple(cols)) for t, cols in schema_catalog(ddl, dialect).items())


def _as_catalog(schema: str | dict, dialect: str = DIALECT) -> dict[str, list[str]]:
    if isinstance(schema, dict):
        return {t: list(cols) for t, cols in schema.items()}
    return {t: list(cols) for t, cols in _catalog_from_ddl(schema, dialect)}


# What to use in SQLite instead of functions other dialects have (difflib would suggest e.g.
# count for CONCAT).
_SQLITE_EQUIVALENTS = {
    "len": "length", "char_length": "length", "character_length": "length", "nvl": "ifnull",
    "isnull": "ifnull", "concat": "||", "if": "iif", "year": "strftime", "month": "strftime",
    "day": "strftime", "hour": "strftime", "extract": "strftime", "date_format": "strftime",
    "to_char": "strftime", "datediff": "julianday", "timestampdiff": "julianday",
    "date_add": "date", "date_sub": "date", "dateadd": "date", "now": "datetime",
    "getdate": "datetime", "curdate": "date", "current_date": "date", "left": "substr",
    "right": "substr", "substring_index": "substr", "locate": "instr", "position": "instr",
    "ucase": "upper", "lcase": "lower", "truncate": "round", "string_agg": "group_concat",
    "listagg": "group_concat", "to_date": "date", "str_to_date": "date",
}


# ... and in PostgreSQL / DuckDB instead of SQLite's own (what a model trained on SQLite reaches for).
_EQUIVALENTS = {
    "sqlite": _SQLITE_EQUIVALENTS,
    "postgres": {"strftime": "to_char", "julianday": "extract", "ifnull": "coalesce", "group_concat": "string_agg",
                 "instr": "strpos", "iif": "CASE", "datetime": "to_timestamp", "printf": "format", "date": "CAST"},
    "duckdb": {"julianday": "julian", "group_concat": "string_agg", "iif": "if", "to_char": "strftime"},
}


def _function_suggestion(name: str, macros: dict, functions: frozenset[str] | None = None,
                         dialect: str = DIALECT) -> str | None:
    known = (sqlite_functions() if functions is None else functions) | set(macros)
    equivalent = _EQUIVALENTS.get(dialect, {}).get(name.lower())
    if equivalent and (equivalent in ("||", "CASE", "CAST") or equivalent in known):
        return equivalent
    return _suggest(name, sorted(known))


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# ---------------------------------------------------------------------------------------------
# Pass 1: name resolution over sqlglot scopes


# Columns of a FROM item: lowercased name -> name as written; None when unknown (accept anything).
Columns = dict[str, str] | None


class _Resolver:
    """Resolves every table, column and function name in a parsed read query."""

    def __init__(self, catalog: dict[str, list[str]], macros: list[dict], dialect: str = DIALECT,
                 functions: frozenset[str] | None = None):
        self.tables = {t.lower(): (t, {c.lower(): c for c in cols}) for t, cols in catalog.items()}
        self.macros = {m["name"].lower(): m for m in macros}
        self.dialect = dialect
        # Functions the engine knows (None: unknown, so unknown names are left to the engine, if any).
        self.functions = functions
        self.issues: list[Issue] = []
        self._seen: set[tuple[str, str]] = set()
        self._outputs: dict[int, dict[str, str] | None] = {}

    def add(self, kind: str, name: str, suggestion: str | None, message: str) -> None:
        if (kind, name.lower()) not in self._seen:
            self._seen.add((kind, name.lower()))
            self.issues.append(Issue(kind, name, suggestion, message))

    def run(self, tree: exp.Expr) -> list[Issue]:
        for scope in traverse_scope(tree):
            try:
                if isinstance(scope.expression, exp.Select):
                    self._check_select(scope)
                elif isinstance(scope.expression, exp.SetOperation):
                    self._check_set_operation(scope)
            except Exception:  # noqa: BLE001 - a construct the resolver doesn't model; SQLite decides
                continue
        self._check_functions(tree)
        return self.issues

    # -- sources ---------------------------------------------------------------------------

    def _source_columns(self, source) -> Columns:
        """Columns a FROM item provides: a schema table, a CTE or a derived table."""
        if isinstance(source, Scope):
            return self._scope_outputs(source)
        if not isinstance(source.this, exp.Identifier):  # table-valued function: json_each(...)
            return None
        entry = self.tables.get(source.name.lower())
        if entry is None:
            self.add("unknown_table", source.name,
                     _suggest(source.name, [name for name, _ in self.tables.values()]),
                     f"no such table: {source.name}")
            return None  # don't cascade into one unknown_column per column of the missing table
        return entry[1]

    def _scope_outputs(self, scope: Scope) -> Columns:
        key = id(scope)
        if key not in self._outputs:
            self._outputs[key] = None  # guards recursive CTEs while computing
            self._outputs[key] = self._compute_outputs(scope)
        return self._outputs[key]

    def _compute_outputs(self, scope: Scope) -> Columns:
        if scope.outer_columns:  # WITH c(x, y) AS (...)
            return {c.lower(): c for c in scope.outer_columns}
        expr = scope.expression.unnest() if isinstance(scope.expression, exp.Subquery) else scope.expression
        if isinstance(expr, exp.SetOperation):  # named by the left-most SELECT
            return self._scope_outputs(scope.set_operation_scopes[0]) if scope.set_operation_scopes else None
        if not isinstance(expr, exp.Select):
            return None  # VALUES etc.
        sources = self._sources(scope)
        names: dict[str, str] = {}
        for proj in expr.expressions:
            if isinstance(proj, exp.Star):
                for cols in sources.values():
                    if cols is None:
                        return None
                    names.update(cols)
            elif isinstance(proj, exp.Column) and isinstance(proj.this, exp.Star):
                cols = sources.get(proj.table.lower())
                if cols is None:
                    return None
                names.update(cols)
            elif isinstance(proj, (exp.Alias, exp.Column)):
                names[proj.alias_or_name.lower()] = proj.alias_or_name
            else:
                return None  # un-aliased expression: SQLite names it by its text; don't guess
        return names

    def _sources(self, scope: Scope) -> dict[str, Columns]:
        """Lowercased alias -> columns, for the FROM / JOIN items of `scope`."""
        return {alias.lower(): self._source_columns(src) for alias, (_, src) in scope.selected_sources.items()}

    # -- columns -----------------------------------------------------------------------------

    @staticmethod
    def _columns(scope: Scope) -> list[exp.Column]:
        return [n for n in scope.walk() if type(n) is exp.Column and not isinstance(n.this, exp.Star)]

    @staticmethod
    def _select_aliases(select: exp.Expr) -> dict[str, str]:
        if not isinstance(select, exp.Select):
            return {}
        return {p.alias.lower(): p.alias for p in select.expressions if isinstance(p, exp.Alias)}

    def _outer_source(self, scope: Scope, qualifier: str):
        """Columns of the enclosing query's FROM item `qualifier` (correlated reference), or
        _MISSING when no enclosing query has it."""
        parent = scope.parent
        while parent is not None:
            if isinstance(parent.expression, exp.Select):
                sources = self._sources(parent)
                if qualifier in sources:
                    return sources[qualifier]
            parent = parent.parent
        return _MISSING

    def _resolves_outside(self, scope: Scope, name: str) -> bool:
        """Whether an unqualified name could be a correlated reference to an enclosing query."""
        parent = scope.parent
        while parent is not None:
            if isinstance(parent.expression, exp.Select):
                if any(cols is None or name in cols for cols in self._sources(parent).values()):
                    return True
                if name in self._select_aliases(parent.expression):
                    return True
            parent = parent.parent
        return False

    def _check_select(self, scope: Scope) -> None:
        select = scope.expression
        sources = self._sources(scope)
        aliases = self._select_aliases(select)
        # Names that USING / NATURAL joins merge, so they are not ambiguous.
        joins = select.args.get("joins") or []
        natural = any(str(j.args.get("method") or "").upper() == "NATURAL" for j in joins)
        using = {i.name.lower() for j in joins for i in (j.args.get("using") or [])}
        in_scope_names = [c for cols in sources.values() if cols for c in cols.values()] + list(aliases.values())

        for col in self._columns(scope):
            name, qualifier = col.name.lower(), col.table.lower()
            if col.args.get("db"):
                continue  # schema-qualified (main.t.c): rare; leave it to SQLite
            if qualifier:
                cols = sources[qualifier] if qualifier in sources else self._outer_source(scope, qualifier)
                if cols is _MISSING:
                    self.add("unknown_table", col.table, _suggest(col.table, list(sources)),
                             f"no such table or alias: {col.table} (in {col.sql(self.dialect)})")
                elif cols is not None and name not in cols and not self._rowid(name):
                    self.add("unknown_column", col.name, _suggest(col.name, cols.values()),
                             f"no such column: {col.table}.{col.name}")
                continue

            hits = [a for a, cols in sources.items() if cols is not None and name in cols]
            if len(hits) > 1 and not (natural or name in using or name in aliases) \
                    and all(cols is not None for cols in sources.values()):
                self.add("ambiguous_column", col.name, f"{hits[0]}.{col.name}",
                         f"ambiguous column name: {col.name} (in {', '.join(hits)}); qualify it")
                continue
            if hits or name in aliases or any(cols is None for cols in sources.values()):
                continue
            if self._rowid(name) and sources:
                continue
            if self._resolves_outside(scope, name):
                continue
            if col.this.quoted and self.dialect == "sqlite":
                continue  # SQLite reads an unresolvable "x" as the string 'x' (module docstring)
            self.add("unknown_column", col.name, self._column_suggestion(col.name, in_scope_names),
                     f"no such column: {col.name}")

    def _rowid(self, name: str) -> bool:
        return name in _ROWID_NAMES and self.dialect in ("sqlite", "duckdb")  # both have a rowid pseudo-column

    def _column_suggestion(self, name: str, in_scope: list[str]) -> str | None:
        # Prefer a column of the tables in the query; else point at a table the query lacks.
        hit = _suggest(name, in_scope)
        if hit:
            return hit
        qualified = {f"{table}.{col}": col for table, cols in self.tables.values() for col in cols.values()}
        by_col: dict[str, str] = {}
        for q, col in qualified.items():
            by_col.setdefault(col.lower(), q)
        hit = _suggest(name, list(by_col))
        return by_col[hit.lower()] if hit else None

    def _check_set_operation(self, scope: Scope) -> None:
        # Only ORDER BY / LIMIT of a compound SELECT live in this scope; they name output columns.
        names: dict[str, str] = {}
        stack = list(scope.set_operation_scopes)
        while stack:
            branch = stack.pop()
            if isinstance(branch.expression, exp.SetOperation):
                stack.extend(branch.set_operation_scopes)
                continue
            outputs = self._scope_outputs(branch)
            if outputs is None:
                return
            names.update(outputs)
            names.update(self._select_aliases(branch.expression))
        for col in self._columns(scope):
            if not col.table and col.name.lower() not in names and not (col.this.quoted and self.dialect == "sqlite"):
                self.add("unknown_column", col.name, _suggest(col.name, names.values()),
                         f"ORDER BY term {col.name} is not a column of the compound SELECT")

    # -- functions ---------------------------------------------------------------------------

    def _check_functions(self, tree: exp.Expr) -> None:
        # sqlglot turns names it knows into typed nodes (Count, Substring, ...); whatever it doesn't
        # know stays Anonymous with the name as written: those must be the engine's built-ins or macros.
        # (Typed nodes the engine lacks, e.g. YEAR() in SQLite, are caught by its compile in pass 2.)
        known = self.functions
        for node in tree.find_all(exp.Anonymous):
            fname = node.name
            lower = fname.lower()
            macro = self.macros.get(lower)
            if macro is not None:
                want, got = len(macro.get("params", [])), len(node.expressions)
                if want != got:
                    self.add("macro_arity", fname, None,
                             f"macro {macro['name']}({', '.join(macro.get('params', []))}) takes "
                             f"{want} argument(s), called with {got}")
            elif known is not None and lower not in known and not lower.startswith("pragma_"):  # pragma_*: pass 2
                self.add("unknown_function", fname, _function_suggestion(fname, self.macros, known, self.dialect),
                         f"no such function: {fname}")


# ---------------------------------------------------------------------------------------------
# Pass 2: SQLite compiles the query against an empty copy of the schema


_NO_REPLICA = "no replica"  # the schema copy couldn't be built, so SQLite can't judge the query


def _sqlite_compile_error(sql: str, catalog: dict[str, list[str]], macros: list[dict]) -> str | None:
    """SQLite's error compiling `sql` against the schema, None if it compiles, or _NO_REPLICA."""
    conn = sqlite3.connect(":memory:")
    try:
        try:
            for table, cols in catalog.items():
                if not cols:  # e.g. a view whose columns couldn't be worked out
                    return _NO_REPLICA
                conn.execute(f"CREATE TABLE {_ident(table)} ({', '.join(_ident(c) for c in cols)})")
            register_macros(conn, macros)
            install_read_only_authorizer(conn)  # checked at compile time: a write fails to compile
        except sqlite3.Error:  # e.g. two tables whose names differ only in case
            return _NO_REPLICA
        try:
            conn.execute("EXPLAIN " + sql)  # compiles and lists the program; runs nothing
        except (sqlite3.Error, sqlite3.Warning) as e:
            return str(e)
        return None
    finally:
        conn.close()


# Engine error messages -> issue kinds (SQLite, PostgreSQL, DuckDB; their wordings don't overlap).
_ENGINE_ERRORS = [
    (re.compile(r"no such table: (?:\w+\.)?(.+)"), "unknown_table"),
    (re.compile(r"no such column: (.+)"), "unknown_column"),
    (re.compile(r"ambiguous column name: (.+)"), "ambiguous_column"),
    (re.compile(r"no such function: (.+)"), "unknown_function"),
    (re.compile(r"wrong number of arguments to function (\w+)\(\)"), "unknown_function"),
    (re.compile(r"not authorized|only read queries|only one SQL statement|is not allowed"), "not_select"),
    (re.compile(r'relation "(?:[^"]+\.)?([^"]+)" does not exist'), "unknown_table"),
    (re.compile(r'missing FROM-clause entry for table "([^"]+)"'), "unknown_table"),
    (re.compile(r'column "?([\w.]+?)"? does not exist'), "unknown_column"),
    (re.compile(r'column reference "([^"]+)" is ambiguous'), "ambiguous_column"),
    (re.compile(r"function ([\w.]+)\(.*?\) does not exist"), "unknown_function"),
    (re.compile(r"Table with name (\S+?)!? does not exist"), "unknown_table"),
    (re.compile(r'Referenced table "([^"]+)" not found'), "unknown_table"),
    (re.compile(r'(?:Referenced column|Column) "?([^"\s]+)"? not found'), "unknown_column"),
    (re.compile(r'Ambiguous reference to column name "([^"]+)"'), "ambiguous_column"),
    (re.compile(r"(?:Scalar|Table|Aggregate) Function with name (\w+) does not exist"), "unknown_function"),
]


def _issue_from_engine(message: str, catalog: dict[str, list[str]], macros: list[dict],
                       functions: frozenset[str] | None = None, dialect: str = DIALECT) -> Issue:
    for pattern, kind in _ENGINE_ERRORS:
        m = pattern.search(message)
        if not m:
            continue
        if kind == "not_select":
            return Issue(kind, None, None, f"only read queries are allowed ({message})")
        name = m.group(1).strip()
        if kind == "unknown_table":
            return Issue(kind, name, _suggest(name, list(catalog)), message)
        if kind in ("unknown_column", "ambiguous_column"):
            name = name.rsplit(".", 1)[-1]
            return Issue(kind, name, _suggest(name, [c for cols in catalog.values() for c in cols]), message)
        name = name.rsplit(".", 1)[-1]
        by_name = {macro["name"].lower(): macro for macro in macros}
        if name.lower() in by_name:
            return Issue("macro_arity", name, None, message)
        suggestion = None if "wrong number" in message else _function_suggestion(name, by_name, functions, dialect)
        return Issue(kind, name, suggestion, message)
    # Any other compile error (syntax, misuse of aggregate, ...).
    return Issue("parse", None, None, message)


def _engine_verdict(sql: str, catalog: dict[str, list[str]], macros: list[dict], dialect: str, db):
    """The engine's compile error, None when it compiles, or _NO_REPLICA when no engine can be asked: SQLite
    against the schema's empty copy; PostgreSQL / DuckDB on the live database."""
    if dialect == "sqlite":
        return _sqlite_compile_error(sql, catalog, macros)
    if db is None or db.dialect != dialect:
        return _NO_REPLICA
    try:
        return db.compile_error(sql, macros)
    except ConnectionError:  # the database can't be reached: pass 1 decides
        return _NO_REPLICA


def _known_functions(dialect: str, db) -> frozenset[str] | None:
    if dialect == "sqlite":
        return sqlite_functions()
    if db is not None and db.dialect == dialect:
        return db.builtin_functions()
    return None


# ---------------------------------------------------------------------------------------------
# Public API


def validate(sql: str, schema: str | dict, macros: list[dict] | None = None, dialect: str = DIALECT,
             db=None) -> Validation:
    """Check `sql` against `schema` (CREATE TABLE text, or a schema_catalog() dict) and macros, in `dialect`;
    `db` (an ft.sql.engine.Database of that dialect) lets PostgreSQL / DuckDB have the final word."""
    macros = list(macros or [])
    catalog = _as_catalog(schema, dialect)
    functions = _known_functions(dialect, db)
    sql = (sql or "").strip()
    while sql.endswith(";"):
        sql = sql[:-1].rstrip()
    if not sql:
        return Validation(False, [Issue("parse", None, None, "empty query")])
    try:
        statements = parse_statements(sql, dialect)
    except Exception as e:  # noqa: BLE001 - parse errors, and any sqlglot bug on odd model output
        # sqlglot misses some syntax of every engine; the engine has the final word on whether it parses.
        error = _engine_verdict(sql, catalog, macros, dialect, db)
        if error is None:
            return Validation(True, [])
        if error is not _NO_REPLICA:
            return Validation(False, [_issue_from_engine(error, catalog, macros, functions, dialect)])
        detail = getattr(e, "errors", None) or [{}]
        return Validation(False, [Issue("parse", detail[0].get("highlight"), None, str(e).splitlines()[0])])

    if len(statements) != 1:
        return Validation(False, [Issue("not_select", None, None, "only one SQL statement is allowed")])
    tree = statements[0]
    write = tree.find(*_WRITE_NODES)
    if not isinstance(tree, _READ_ROOTS) or write is not None:
        node = write or tree
        # An opaque Command (VACUUM, REINDEX, ...) keeps its keyword in `this`.
        kind = str(node.this).upper() if isinstance(node, exp.Command) else type(node).__name__.upper()
        return Validation(False, [Issue("not_select", kind, None,
                                        f"only read queries (SELECT) are allowed, got {kind}")])

    try:
        issues = _Resolver(catalog, macros, dialect, functions).run(tree)
    except RecursionError:  # parsed, but too deep to walk: the engine alone decides
        issues = [Issue("parse", None, None, "query nested too deeply to analyse")]
    except Exception as e:  # noqa: BLE001 - a sqlglot tree the resolver can't walk: the engine alone decides
        issues = [Issue("parse", None, None, f"query could not be analysed ({type(e).__name__})")]
    error = _engine_verdict(sql, catalog, macros, dialect, db)
    if error is _NO_REPLICA:
        return Validation(not issues, issues)
    if error is None:
        return Validation(True, [])  # the engine compiles it: any pass-1 finding was a blind spot
    engine_issue = _issue_from_engine(error, catalog, macros, functions, dialect)
    if not issues or not _explained(engine_issue, error, issues):
        issues.append(engine_issue)
    return Validation(False, issues)


def _explained(engine_issue: Issue, error: str, issues: list[Issue]) -> bool:
    """Whether the engine's (first) error is already covered by pass-1 issues."""
    if engine_issue.kind == "parse":  # a generic compile error, e.g. about an ORDER BY term
        return True
    words = {w.lower() for w in re.findall(r"\w+", error)}
    return any(i.name and i.name.lower() in words | {(engine_issue.name or "").lower()} for i in issues)


def hallucinated_names(sql: str, schema: str | dict, dialect: str = DIALECT, db=None) -> list[str]:
    """Table and column names in `sql` that the schema doesn't have."""
    result = validate(sql, schema, dialect=dialect, db=db)
    return [i.name for i in result.errors if i.kind in ("unknown_table", "unknown_column") and i.name]
