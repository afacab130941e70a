"""Run untrusted, model-written SQL on a SQLite database (result comparison: ft.sql.compare).

Generated SQL is treated as hostile. Layers of defence, each enough on its own for writes:
  1. the file is opened read-only (`mode=ro` URI) and `PRAGMA query_only` is on;
  2. only one statement, and it must start like a read (SELECT / WITH / VALUES);
  3. an authorizer allows only reads, recursive CTEs, functions other than a small deny list and a
     few introspection pragmas; it refuses everything else (ATTACH, VACUUM [INTO], writes, ...);
  4. a progress handler aborts the query at a deadline, and size limits bound single values.
Errors come back in `ExecResult.error`, never raised, so an evaluation loop keeps going.
"""
from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from sqlglot.tokens import TokenType

from .compare import query_has_order_by, results_match  # noqa: F401 - re-exported for importers of ft.sql.execute
from .macros import register_macros
from .parse import first_statement, tokenize

# Pragmas that only describe the schema; their argument is a name, never a setting.
_READ_ONLY_PRAGMAS = frozenset({
    "table_info", "table_xinfo", "table_list", "index_list", "index_info", "index_xinfo",
    "foreign_key_list", "function_list", "collation_list", "pragma_list", "module_list",
})
# Built-ins that reach outside the database (or have had memory-safety bugs with crafted input).
_DENIED_FUNCTIONS = frozenset({"load_extension", "fts3_tokenizer", "readfile", "writefile", "edit"})
# Largest string/blob a query may build (SQLite's default is 1e9 bytes: a memory bomb).
_MAX_VALUE_BYTES = 50_000_000
_PROGRESS_EVERY_N_OPS = 1000


def read_only_authorizer(action, arg1, arg2, db_name, trigger):
    """sqlite3 authorizer that permits reads only; see the module docstring."""
    if action in (sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_RECURSIVE):
        return sqlite3.SQLITE_OK
    if action == sqlite3.SQLITE_FUNCTION:
        return sqlite3.SQLITE_DENY if (arg2 or "").lower() in _DENIED_FUNCTIONS else sqlite3.SQLITE_OK
    if action == sqlite3.SQLITE_PRAGMA and (arg1 or "").lower() in _READ_ONLY_PRAGMAS:
        return sqlite3.SQLITE_OK
    # Writes, DDL, ATTACH (also how VACUUM [INTO] starts), transactions and other pragmas.
    return sqlite3.SQLITE_DENY


def install_read_only_authorizer(conn: sqlite3.Connection) -> None:
    # The first use of a table-valued function on a connection registers it in the in-memory
    # schema, which the authorizer would see as a write to sqlite_master; do that beforehand.
    try:
        conn.execute("SELECT count(*) FROM json_each('[]'), json_tree('[]')").fetchall()
    except sqlite3.Error:  # a build without JSON support
        pass
    conn.set_authorizer(read_only_authorizer)


@dataclass
class ExecResult:
    rows: list[tuple] | None
    columns: list[str] | None
    error: str | None
    elapsed_s: float
    truncated: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None


class ExecSession:
    """Many trusted reads of one database through its engine's own execute (read-only, time limit, row cap): what
    distillation uses on engines without a session of their own (DuckDB, PostgreSQL). It can't scan backwards."""

    def __init__(self, db, macros: list[dict] | None, timeout_s: float, max_rows: int):
        self.db, self.macros, self.timeout_s, self.max_rows = db, macros, timeout_s, max_rows
        self.timed_out = False

    def run(self, sql: str, reverse: bool = False, timeout_s: float | None = None) -> list[tuple] | None:
        if reverse:
            raise ValueError(f"{self.db.display} can't scan backwards: read the neighbour's mirror")
        res = self.db.execute(sql, self.macros, timeout_s=self.timeout_s if timeout_s is None else timeout_s,
                              max_rows=self.max_rows)
        self.timed_out = bool(res.error and res.error.startswith("timeout"))
        return res.rows if res.ok and not res.truncated else None

    def close(self) -> None:
        pass


def _single_read_statement(sql: str) -> tuple[str | None, str | None]:
    """(statement without trailing ';', None) or (None, reason it is refused)."""
    first = first_statement(sql)
    rest = sql[len(first) + 1:]
    try:
        # Only whitespace, comments and empty statements (';') may follow the first ';'.
        if any(t.token_type != TokenType.SEMICOLON for t in tokenize(rest)):
            return None, "only one SQL statement is allowed"
    except Exception:  # noqa: BLE001
        return None, "only one SQL statement is allowed"
    try:
        tokens = tokenize(first)
    except Exception:  # noqa: BLE001 - e.g. an unterminated string or comment
        # Refused, not passed on: this layer must hold without the others, and what it can't read it can't check.
        return None, "SQL that cannot be tokenized (unterminated string, quote or comment) is refused"
    if not tokens:
        return None, "empty SQL"
    keyword = tokens[0].text.upper()
    if keyword not in ("SELECT", "WITH", "VALUES"):
        return None, f"only read queries (SELECT) are allowed, got {keyword}"
    return first, None


def _ro_uri(db_path) -> str:
    # Percent-encode the path: '?', '#' or '%' in a file name would otherwise change the URI.
    return "file:" + quote(str(Path(db_path).resolve())) + "?mode=ro"


def execute(db_path, sql: str, macros: list[dict] | None = None, timeout_s: float = 5.0,
            max_rows: int = 10000) -> ExecResult:
    """Run one untrusted read query; at most `max_rows` rows come back (`truncated` says so)."""
    start = time.monotonic()

    def failed(msg: str) -> ExecResult:
        return ExecResult(None, None, msg, time.monotonic() - start, False)

    statement, refusal = _single_read_statement(sql or "")
    if refusal:
        return failed(refusal)
    if not Path(db_path).is_file():  # SQLite would say "unable to open database file"
        return failed(f"database file not found: {db_path}")

    deadline = start + timeout_s
    timed_out = False

    def past_deadline() -> int:
        nonlocal timed_out
        timed_out = time.monotonic() > deadline
        return int(timed_out)  # non-zero aborts the running statement

    conn = None
    try:
        conn = sqlite3.connect(_ro_uri(db_path), uri=True, timeout=min(timeout_s, 1.0), isolation_level=None)
        # Real-world databases (BIRD) hold some text that isn't valid UTF-8.
        conn.text_factory = lambda b: b.decode("utf-8", errors="replace")
        conn.execute("PRAGMA query_only = ON")
        if hasattr(conn, "setlimit"):  # Python >= 3.11
            conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, _MAX_VALUE_BYTES)
            conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
        register_macros(conn, macros)
        install_read_only_authorizer(conn)
        conn.set_progress_handler(past_deadline, _PROGRESS_EVERY_N_OPS)

        cur = conn.execute(statement)
        columns = [d[0] for d in cur.description] if cur.description else []
        rows = cur.fetchmany(max_rows + 1)
        truncated = len(rows) > max_rows
        return ExecResult(rows[:max_rows], columns, None, time.monotonic() - start, truncated)
    except Exception as e:  # noqa: BLE001 - any failure is the query's result, not ours
        if timed_out:
            return failed(f"timeout: query exceeded {timeout_s:g}s")
        return failed(f"{type(e).__name__}: {e}")
    finally:
        if conn is not None:
            conn.close()
