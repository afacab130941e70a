"""The one interface to a database, whichever engine holds it: SQLite, DuckDB or PostgreSQL.

    db = database("postgresql://analyst@warehouse:5432/sales")   # or duckdb:///x.duckdb, sqlite:///x.sqlite, a path
    res = db.execute(sql, macros, timeout_s=5, max_rows=10000)     # untrusted SQL, read-only: an ExecResult
    ddl = db.schema()                                              # CREATE TABLE text from the live database
    fns = db.functions()                                           # the database's own functions, as macros
    err = db.compile_error(sql, macros)                            # the engine's verdict without running (EXPLAIN)
    db.dialect, db.display                                         # "postgres", "PostgreSQL": prompts, sqlglot

Naming a database: `sqlite:///relative/x.sqlite` or `sqlite:////absolute/x.sqlite` (SQLAlchemy's convention; a bare
path is SQLite too, or DuckDB when it ends in .duckdb / .ddb), `duckdb:///x.duckdb`, `postgresql://user@host:port/db`
(any libpq URI; `?host=/socket/dir` for a unix socket). A password is never part of the name: PostgreSQL reads it
from PGPASSWORD / PGPASSFILE / ~/.pgpass (libpq's rules), so a row, a config file, a log line or W&B never holds one;
a URL that carries one is refused (and shown with the password masked).

Each engine's safety layers live in its own module (ft/sql/execute.py for SQLite, engine_duckdb.py,
engine_postgres.py); what they share (one read statement, no function that reaches outside the database or builds a
huge value) is `check_statement` here. Rows come back in canonical form (ft/sql/values.py), so results compare
across engines. Every call opens its own connection and closes it: nothing is shared between processes or threads.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

from . import engine_duckdb, engine_postgres, engine_sqlite
from .ddl import quote_ident
from .execute import ExecResult
from .guard import DatabaseError, redact

ENGINES = ("sqlite", "duckdb", "postgres")
DISPLAY = {"sqlite": "SQLite", "duckdb": "DuckDB", "postgres": "PostgreSQL"}
# Dialect names people write (and fence languages models emit) -> sqlglot's name.
DIALECT_ALIASES = {"sqlite": "sqlite", "sqlite3": "sqlite", "duckdb": "duckdb", "postgres": "postgres",
                   "postgresql": "postgres", "pg": "postgres", "psql": "postgres", "pgsql": "postgres"}
_DUCKDB_SUFFIXES = (".duckdb", ".ddb")


def dialect_name(name: str | None) -> str:
    """sqlglot's name for a dialect as people write it ("postgresql" -> "postgres"); other sqlglot dialects pass."""
    if not name:
        return "sqlite"
    key = name.strip().lower()
    return DIALECT_ALIASES.get(key, key)


def display_name(dialect: str | None) -> str:
    """How a prompt or a message names a dialect: SQLite, PostgreSQL, DuckDB (others as sqlglot spells them)."""
    d = dialect_name(dialect)
    return DISPLAY.get(d, d.capitalize())


# ---------------------------------------------------------------------------------------------------- naming


@dataclass(frozen=True)
class Database:
    """A database by name: the engine and where it is. Holds no connection (every call opens and closes its own)."""

    engine: str  # sqlite | duckdb | postgres
    location: str  # an absolute file path (sqlite, duckdb) or a libpq URI without a password (postgres)

    @property
    def url(self) -> str:
        """The canonical name, safe to print, log and store: a SQLite file as its path, others as URLs."""
        if self.engine == "sqlite":
            return self.location
        if self.engine == "duckdb":
            return "duckdb:///" + quote(self.location, safe="/:")
        return self.location

    @property
    def dialect(self) -> str:
        return self.engine  # sqlglot's dialect names are the engine names

    @property
    def display(self) -> str:
        return DISPLAY[self.engine]

    @property
    def is_file(self) -> bool:
        return self.engine != "postgres"

    def __str__(self) -> str:
        return self.url

    # -- the engine interface: each engine module has these functions -----------------------------------------

    def _backend(self):
        return _BACKENDS[self.engine]

    def execute(self, sql: str, macros: list[dict] | None = None, *, timeout_s: float = 5.0,
                max_rows: int = 10000) -> ExecResult:
        """Run one untrusted read query; rows in canonical form, at most `max_rows` (`truncated` says so).
        Never raises: a refusal, an error or a timeout is the result's `error`."""
        return self._backend().execute(self, sql, macros, timeout_s, max_rows)

    def compile_error(self, sql: str, macros: list[dict] | None = None, *, timeout_s: float = 5.0) -> str | None:
        """The engine's own error for `sql` without running it (EXPLAIN), None when it compiles; ConnectionError
        when the database can't be reached (no verdict)."""
        return self._backend().compile_error(self, sql, macros, timeout_s)

    def schema(self, *, timeout_s: float = 30.0) -> str:
        """CREATE TABLE statements of the live database: types, primary and foreign keys, comments (as `--`)."""
        return self._backend().schema(self, timeout_s)

    def functions(self, *, timeout_s: float = 30.0) -> list[dict]:
        """The database's own functions / macros as macro entries {"name", "params", "doc"} (no body: they run
        where they are), for the prompt and for validation; [] for SQLite (its macros travel with the rows)."""
        return self._backend().functions(self, timeout_s)

    def builtin_functions(self) -> frozenset[str] | None:
        """Lowercased names of every function the engine knows (None when it can't be listed)."""
        return self._backend().builtin_functions(self)

    def problem(self) -> str | None:
        """Why this database can't be used (missing file, not that engine's file, server unreachable), or None."""
        return self._backend().problem(self)

    # -- neighbour databases (test-suite accuracy, ft/sql/neighbours.py) ------------------------------------

    def label(self) -> str:
        """A short name for cache folders: the file's stem, the PostgreSQL database's name."""
        return self._backend().label(self)

    def fingerprint(self) -> str:
        """A digest that changes when the database does (files: their bytes; PostgreSQL: schema and row counts)."""
        return self._backend().fingerprint(self)

    def sample(self, rows: int):
        """ft.sql.sample.Sample: the tables' keys, up to `rows` rows of each in key order, and the engine's DDL
        to recreate the schema (trusted catalog reads, in the engine's read-only session)."""
        return self._backend().sample(self, rows)

    def neighbour_writer(self, folder, tag: str, scratch: str | None):
        """Where this database's neighbours live and how one is written (ft.sql.neighbours.NeighbourWriter):
        files under `folder`, or (PostgreSQL) schemas named with `tag` in the `scratch` database."""
        return self._backend().neighbour_writer(self, folder, tag, scratch)

    def session(self, macros: list[dict] | None = None, timeout_s: float = 5.0, max_rows: int = 10000):
        """For many trusted reads (distillation): `run(sql, reverse=False, timeout_s=None)` -> rows or None."""
        return self._backend().session(self, macros, timeout_s, max_rows)

    def distinct_values(self, table: str, columns: list[str], per_column: int,
                        timeout_s: float = 2.0) -> ExecResult:
        """Up to `per_column` distinct non-NULL values of each column of `table`, as rows (column index, value):
        one read query through execute(), identifiers quoted, so no name can make it anything but a read."""
        parts = [f"SELECT {k} AS k, v FROM (SELECT DISTINCT {quote_ident(c)} AS v FROM {quote_ident(table)} "
                 f"WHERE {quote_ident(c)} IS NOT NULL LIMIT {int(per_column)}) AS s{k}" for k, c in enumerate(columns)]
        return self.execute(" UNION ALL ".join(parts), timeout_s=timeout_s, max_rows=per_column * len(columns))


_BACKENDS = {"sqlite": engine_sqlite, "duckdb": engine_duckdb, "postgres": engine_postgres}


def _file_path(path: str, base_dir) -> str:
    p = Path(os.path.expanduser(unquote(path)))
    if not p.is_absolute() and base_dir is not None:
        p = Path(base_dir) / p
    return str(p.resolve())


def database(name, base_dir=None) -> Database:
    """The Database a name stands for (see the module docstring); relative file paths resolve against `base_dir`
    (a data file's folder), else the working directory. Raises DatabaseError with the name redacted."""
    if isinstance(name, Database):
        return name
    return _database(str(name or "").strip(), None if base_dir is None else str(base_dir), os.getcwd())


@functools.lru_cache(maxsize=4096)
def _database(text: str, base_dir: str | None, cwd: str) -> Database:
    # Cached: a million rows name a handful of databases (the working directory is part of the key).
    if not text:
        raise DatabaseError("empty database name")
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    if not scheme:
        engine = "duckdb" if text.lower().endswith(_DUCKDB_SUFFIXES) else "sqlite"
        return Database(engine, _file_path(text, base_dir))
    if scheme in ("sqlite", "duckdb"):
        parts = urlsplit(text)
        if parts.netloc:
            raise DatabaseError(f"database URL '{redact(text)}' names a host; a {scheme} file is "
                                f"{scheme}:///relative/path or {scheme}:////absolute/path")
        path = parts.path[1:] if parts.path.startswith("/") else parts.path  # sqlite:///x -> x, sqlite:////x -> /x
        if not path or path == ":memory:":
            raise DatabaseError(f"database URL '{redact(text)}' names no file")
        return Database(scheme, _file_path(path, base_dir))
    if scheme in ("postgresql", "postgres"):
        from psycopg.conninfo import conninfo_to_dict

        try:
            params = conninfo_to_dict(text)
        except Exception as e:  # noqa: BLE001 - psycopg's ProgrammingError for a malformed URI
            raise DatabaseError(f"cannot read the PostgreSQL URL '{redact(text)}': {redact(e)}") from None
        if params.get("password"):
            raise DatabaseError(f"the PostgreSQL URL '{redact(text)}' holds a password; sqlft never stores or logs "
                                "one: remove it from the URL and put it in PGPASSWORD or ~/.pgpass (libpq's rules)")
        return Database("postgres", "postgresql://" + text.split("://", 1)[1])
    raise DatabaseError(f"database '{redact(text)}': engine '{scheme}' is not supported; use sqlite:///FILE, "
                        "duckdb:///FILE or postgresql://user@host:port/db (a bare path is a SQLite file)")


def engine_of(name) -> str | None:
    """The engine a database name stands for, from its form alone (no file is looked at); None for no name or an
    engine we don't support."""
    if isinstance(name, Database):
        return name.engine
    text = str(name or "").strip()
    if not text:
        return None
    if "://" not in text:
        return "duckdb" if text.lower().endswith(_DUCKDB_SUFFIXES) else "sqlite"
    return {"sqlite": "sqlite", "duckdb": "duckdb", "postgresql": "postgres",
            "postgres": "postgres"}.get(text.split("://", 1)[0].lower())


def file_of(name) -> str | None:
    """The file path a SQLite / DuckDB name holds, as written (relative paths stay relative); None for a server."""
    text = str(name or "").strip()
    if engine_of(text) not in ("sqlite", "duckdb"):
        return None
    if "://" not in text:
        return text
    path = urlsplit(text).path
    return unquote(path[1:] if path.startswith("/") else path)
