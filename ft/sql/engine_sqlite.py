"""SQLite behind ft.sql.engine's interface. The sandbox itself is ft/sql/execute.py (read-only URI, query_only, an
authorizer, a deadline, value size limits); in-house macros are registered functions (ft/sql/macros.py)."""
from __future__ import annotations

import functools
import hashlib
import importlib
import os
import sqlite3
import time
from pathlib import Path

from .ddl import quote_ident
from .execute import ExecResult, install_read_only_authorizer, read_only_authorizer
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


# ------------------------------------------------------------------------------------------------ neighbours


def label(db) -> str:
    return Path(db.location).stem


def fingerprint(db) -> str:
    """The file's content (a changed database gets new neighbours)."""
    h = hashlib.sha1()
    with open(db.location, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def sample(db, rows: int):
    """Tables (keys, UNIQUE sets, a sample of rows in key order) and the CREATE statements to copy: tables, indexes
    and views as the file stores them (no triggers, no virtual tables)."""
    from .sample import Sample, SampledTable, order_clause

    conn = _connect(db)
    conn.text_factory = lambda b: b.decode("utf-8", errors="replace")
    try:
        entries = conn.execute("SELECT type, name, sql FROM sqlite_master WHERE sql IS NOT NULL "
                               "AND name NOT LIKE 'sqlite_%' ORDER BY rowid").fetchall()
        virtual = {n for t, n, s in entries if t == "table" and s.lstrip().upper().startswith("CREATE VIRTUAL")}
        shadow = {n for t, n, _ in entries if any(n.startswith(v + "_") for v in virtual)}
        ddl, tables = [], []
        for kind, name, sql in entries:
            if name in virtual or name in shadow or kind == "trigger":
                continue
            ddl.append(sql)
            if kind != "table":
                continue
            q = quote_ident(name)
            info = conn.execute(f"PRAGMA table_info({q})").fetchall()  # cid, name, type, notnull, dflt, pk
            pk = [r[1] for r in sorted((r for r in info if r[5]), key=lambda r: r[5])]
            fks: dict[int, tuple[list[str], str, list[str]]] = {}
            for fid, _seq, parent, col, to, *_ in conn.execute(f"PRAGMA foreign_key_list({q})").fetchall():
                cols, _, tos = fks.setdefault(fid, ([], parent, []))
                cols.append(col)
                tos.append(to)
            uniques = [[c[2] for c in conn.execute(f"PRAGMA index_info({quote_ident(ix[1])})")]
                       for ix in conn.execute(f"PRAGMA index_list({q})") if ix[2] and ix[3] == "u"]
            t = SampledTable(name, [r[1] for r in info], [(r[2] or "").upper() for r in info],
                             [bool(r[3]) for r in info], pk, list(fks.values()), uniques)
            cols = ", ".join(quote_ident(c) for c in t.columns)
            t.rows = conn.execute(f"SELECT {cols} FROM {q} {order_clause(t.columns, pk, quote_ident)} "
                                  f"LIMIT {int(rows)}").fetchall()
            tables.append(t)
    finally:
        conn.close()
    return Sample(tables, ddl, [])


class NeighbourFiles:
    """Neighbours as read-only SQLite files in the cache folder, each written whole and then moved into place."""

    mirrored = False  # SQLite scans backwards itself (Session's reverse_unordered_selects)
    suffix = ".sqlite"

    def __init__(self, db, folder: Path):
        self.folder, self.conn, self.tmp, self.dest = folder, None, None, None
        self.ddl: list[str] | None = None
        self.db = db

    def locate(self, name: str) -> str:
        return str(self.folder / f"{name}{self.suffix}")

    def exists(self, name: str) -> bool:
        return (self.folder / f"{name}{self.suffix}").is_file()

    def begin(self, name: str) -> bool:
        if self.ddl is None:
            self.ddl = sample(self.db, 0).ddl
        self.dest = self.folder / f"{name}{self.suffix}"
        self.tmp = self.dest.with_name(f".{self.dest.name}.{os.getpid()}.tmp")
        self.tmp.unlink(missing_ok=True)
        self.conn = sqlite3.connect(self.tmp, isolation_level=None)
        self.conn.execute("PRAGMA foreign_keys = OFF")  # validity is drawn, not enforced
        self.conn.execute("BEGIN")
        for statement in self.ddl:
            self.conn.execute(statement)
        return True

    def insert(self, table, rows: list[list]) -> list[list]:
        sql = (f"INSERT OR IGNORE INTO {table.ref} ({', '.join(quote_ident(c) for c in table.columns)})"
               f" VALUES ({', '.join('?' * len(table.columns))})")
        return [r for r in rows if self.conn.execute(sql, r).rowcount == 1]  # a CHECK may refuse one

    def commit(self) -> None:
        self.conn.execute("COMMIT")
        self.conn.close()
        os.chmod(self.tmp, 0o444)
        self.tmp.replace(self.dest)
        self.conn = None

    def abort(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        if self.tmp is not None:
            self.tmp.unlink(missing_ok=True)

    def close(self) -> None:
        self.abort()


def neighbour_writer(db, folder: Path, tag: str, scratch):
    return NeighbourFiles(db, folder)


class Session:
    """One sandboxed read-only connection for many trusted reads (distillation); `reverse`: SQLite's
    reverse_unordered_selects, which scans tables backwards."""

    def __init__(self, db, macros: list[dict] | None = None, timeout_s: float = 5.0, max_rows: int = 10000):
        self.timeout_s, self.max_rows = timeout_s, max_rows
        self.conn = sqlite3.connect(ro_uri(db.location), uri=True, isolation_level=None)
        self.conn.text_factory = lambda b: b.decode("utf-8", errors="replace")
        self.conn.execute("PRAGMA query_only = ON")
        register_macros(self.conn, macros)
        self._reverse = False
        self._deadline = 0.0
        self.timed_out = False
        self.conn.set_progress_handler(lambda: int(time.monotonic() > self._deadline), 1000)
        install_read_only_authorizer(self.conn)

    def run(self, sql: str, reverse: bool = False, timeout_s: float | None = None) -> list[tuple] | None:
        if reverse != self._reverse:  # the authorizer refuses pragmas: lifted for this one of ours
            self.conn.set_authorizer(None)
            self.conn.execute(f"PRAGMA reverse_unordered_selects = {int(reverse)}")
            self.conn.set_authorizer(read_only_authorizer)
            self._reverse = reverse
        self._deadline = time.monotonic() + (self.timeout_s if timeout_s is None else timeout_s)
        self.timed_out = False
        try:
            rows = self.conn.execute(sql).fetchmany(self.max_rows + 1)
        except Exception:  # noqa: BLE001 - a failing query is an outcome here
            self.timed_out = time.monotonic() > self._deadline
            return None
        return rows if len(rows) <= self.max_rows else None

    def close(self) -> None:
        self.conn.close()


def session(db, macros, timeout_s: float, max_rows: int) -> Session:
    return Session(db, macros, timeout_s, max_rows)
