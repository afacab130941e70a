"""SQLite behind ft.sql.engine's interface. The sandbox itself is ft/sql/execute.py (read-only URI, query_only, an
authorizer, a deadline, value size limits); in-house macros are registered functions (ft/sql/macros.py)."""
from __future__ import annotations

import functools
import importlib
import sqlite3
from pathlib import Path

from .execute import ExecResult, install_read_only_authorizer
from .execute import _ro_uri as ro_uri
from .macros import register_macros

# The sandbox module itself (ft.sql re-exports a function under the module's name), called through so that it
# stays the one place SQLite runs untrusted SQL.
_sandbox = importlib.import_module(__package__ + ".execute")

_HEADER = b"SQLite format 3\x00"
# Table-valued functions SQLite has built in (they don't show up in pragma_function_list).
_TABLE_FUNCTIONS = frozenset({"json_each", "json_tree"})


@functools.lru_cache(maxsize=1)
def sqlite_functions() -> frozenset[str]:
    """Lowercased names of the functions this SQLite build provides (it varies by version)."""
    conn = sqlite3.connect(":memory:")
    try:
        names = {r[0].lower() for r in conn.execute("SELECT name FROM pragma_function_list")}
    except sqlite3.Error:  # very old SQLite: fall back to the long-standing core set
        names = set("""abs avg changes char coalesce count date datetime glob group_concat hex
            ifnull iif instr julianday last_insert_rowid length like likelihood likely lower ltrim
            max min nullif printf quote random randomblob replace round rtrim sign soundex
            sqlite_version strftime substr substring sum time total total_changes trim typeof
            unicode unixepoch unlikely upper zeroblob row_number rank dense_rank percent_rank
            cume_dist ntile lag lead first_value last_value nth_value""".split())
    finally:
        conn.close()
    return frozenset(names | _TABLE_FUNCTIONS)


def execute(db, sql: str, macros, timeout_s: float, max_rows: int) -> ExecResult:
    return _sandbox.execute(db.location, sql, macros, timeout_s=timeout_s, max_rows=max_rows)


def _connect(db) -> sqlite3.Connection:
    conn = sqlite3.connect(ro_uri(db.location), uri=True, timeout=1.0)
    conn.execute("PRAGMA query_only = ON")
    return conn


def compile_error(db, sql: str, macros, timeout_s: float) -> str | None:
    conn = _connect(db)
    try:
        register_macros(conn, macros)
        install_read_only_authorizer(conn)
        conn.execute("EXPLAIN " + sql)  # compiles and lists the program; runs nothing
        return None
    except (sqlite3.Error, sqlite3.Warning) as e:
        return str(e)
    finally:
        conn.close()


def schema(db, timeout_s: float) -> str:
    """The CREATE statements as the database stores them (with their comments), separated by blank lines."""
    conn = _connect(db)
    try:
        rows = conn.execute("SELECT sql FROM sqlite_master WHERE type IN ('table', 'view') AND sql IS NOT NULL "
                            "AND name NOT LIKE 'sqlite_%' ORDER BY rowid").fetchall()
    finally:
        conn.close()
    return "\n\n".join(sql.strip() + ";" for (sql,) in rows)


def functions(db, timeout_s: float) -> list[dict]:
    return []  # a SQLite file holds no functions: the rows' macros are registered on each connection


def builtin_functions(db) -> frozenset[str]:
    return sqlite_functions()


def problem(db) -> str | None:
    p = Path(db.location)
    if not p.is_file():
        return f"'{p}' does not exist" if not p.exists() else f"'{p}' is not a file"
    try:
        with open(p, "rb") as f:
            head = f.read(len(_HEADER))
    except OSError as e:
        return f"'{p}' cannot be read ({e.strerror})"
    if head != _HEADER and p.stat().st_size > 0:  # an empty file is an empty SQLite database
        return f"'{p}' is not a SQLite database"
    return None
