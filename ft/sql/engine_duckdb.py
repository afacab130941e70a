"""DuckDB behind ft.sql.engine's interface.

Untrusted SQL, layer by layer:
  1. check_statement (ft/sql/guard.py): one statement, starting like a read, no file-reading function; DuckDB's
     own parser then must see exactly one SELECT;
  2. the file is opened `read_only=True` with `enable_external_access=false` (no files, no HTTP, no ATTACH, no
     extension loading), no temp directory (nothing spills next to the database), a memory limit, and
     `lock_configuration=true` once the row's macros exist, so no SET can undo any of it;
  3. a timer interrupts the query at the time limit; at most max_rows + 1 rows are fetched;
  4. opening a DuckDB file costs more than most queries (its catalog, its threads), so a process keeps its
     connection per file, thread and macro set while it is in use, and closes it after IDLE_S seconds without a
     query (the file is then free for a writer); nothing a read query can do outlives it (no SET, no CREATE).
In-house macros are DuckDB macros, created on each connection (`CREATE TEMP MACRO name(params) AS body`, the body
a DuckDB expression over the parameter names); macros stored in the database file work as they are.
"""
from __future__ import annotations

import functools
import json
import os
import re
import threading
import time
from pathlib import Path

from .ddl import ColumnInfo, TableInfo, ident, quote_ident, render_schema
from .execute import ExecResult
from .guard import check_statement
from .values import canonical_row

MEMORY_LIMIT = "1GB"
# One thread: the same query gives its rows in the same order every time (ties of an ORDER BY ... LIMIT, GROUP BY
# output), as SQLite does; with several, the gold query and an identical answer could disagree on a tie and a right
# answer score wrong (seen on the bundled split: 1 of 244 gold queries, now and then).
THREADS = 1
IDLE_S = 5.0
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_POOL: dict[tuple, tuple[object, float]] = {}  # key -> (connection, when last used), only while not in use
_POOL_LOCK = threading.Lock()
_REAPER: list[threading.Thread] = []


def _connect(db, macros=None):
    import duckdb

    conn = duckdb.connect(db.location, read_only=True, config={
        "enable_external_access": False, "autoload_known_extensions": False, "autoinstall_known_extensions": False,
        "memory_limit": MEMORY_LIMIT, "temp_directory": "", "threads": THREADS})
    try:
        for m in macros or []:
            if m.get("body") is None:
                continue  # described only: a function the database itself holds
            params = [p for p in m.get("params", []) if _NAME.fullmatch(p)]
            if not _NAME.fullmatch(m["name"]) or len(params) != len(m.get("params", [])):
                raise ValueError(f"macro name or parameter is not a plain identifier: {m['name']}")
            conn.execute(f"CREATE TEMP MACRO {m['name']}({', '.join(params)}) AS {m['body']}")
        # The lock is the database instance's, which DuckDB shares between the connections of a process to a file.
        if not conn.execute("SELECT current_setting('lock_configuration')").fetchone()[0]:
            conn.execute("SET lock_configuration = true")
    except Exception:
        conn.close()
        raise
    return conn


def _reap() -> None:
    """Close connections idle for IDLE_S; stop when none is left (the next one starts another reaper)."""
    while True:
        time.sleep(IDLE_S / 4)
        with _POOL_LOCK:
            now, pid = time.monotonic(), os.getpid()
            for key, (conn, used) in list(_POOL.items()):
                if key[0] != pid:  # inherited across a fork: never ours to use or close
                    del _POOL[key]
                elif now - used > IDLE_S:
                    del _POOL[key]
                    conn.close()
            if not _POOL:
                _REAPER.clear()
                return


def _acquire(db, macros) -> tuple[object, tuple]:
    """(this process's and thread's connection to the file with these macros, its pool key); opened when there is
    none, and out of the pool until _give_back, so the reaper can't close it while it runs."""
    st = os.stat(db.location)
    key = (os.getpid(), threading.get_ident(), db.location, st.st_mtime_ns, st.st_size,
           json.dumps(macros or [], sort_keys=True))
    with _POOL_LOCK:
        conn = _POOL.pop(key, (None, 0))[0]
    return (conn if conn is not None else _connect(db, macros)), key


def _give_back(conn, key: tuple) -> None:
    try:
        conn.execute("SELECT 1").fetchall()  # drops what is left of the last result (and any late interrupt)
    except Exception:  # noqa: BLE001 - a connection that can't run SELECT 1 is not kept
        conn.close()
        return
    with _POOL_LOCK:
        _POOL[key] = (conn, time.monotonic())
        if not _REAPER:
            _REAPER.append(threading.Thread(target=_reap, name="sqlft-duckdb-idle", daemon=True))
            _REAPER[0].start()


def _message(e: Exception) -> str:
    return f"{type(e).__name__}: {(str(e).splitlines() or [''])[0]}"


def _one_select(conn, statement: str) -> str | None:
    import duckdb

    parsed = conn.extract_statements(statement)
    if len(parsed) != 1:
        return "only one SQL statement is allowed"
    if parsed[0].type != duckdb.StatementType.SELECT:
        return f"only read queries (SELECT) are allowed, got {parsed[0].type.name}"
    return None


def execute(db, sql: str, macros, timeout_s: float, max_rows: int) -> ExecResult:
    import duckdb

    start = time.monotonic()

    def failed(msg: str) -> ExecResult:
        return ExecResult(None, None, msg, time.monotonic() - start, False)

    statement, refusal = check_statement(sql, "duckdb")
    if refusal:
        return failed(refusal)
    if not Path(db.location).is_file():
        return failed(f"database file not found: {db.location}")
    try:
        conn, key = _acquire(db, macros)
    except Exception as e:  # noqa: BLE001 - a locked or damaged file, a bad macro: the query's result
        return failed(f"cannot open {db.url}: {_message(e)}")
    timer = threading.Timer(timeout_s, conn.interrupt)
    try:
        refusal = _one_select(conn, statement)
        if refusal:
            return failed(refusal)
        timer.start()
        cur = conn.execute(statement)
        columns = [d[0] for d in cur.description or []]
        rows = cur.fetchmany(max_rows + 1)
        truncated = len(rows) > max_rows
        return ExecResult([canonical_row(r) for r in rows[:max_rows]], columns, None, time.monotonic() - start,
                          truncated)
    except duckdb.InterruptException:
        return failed(f"timeout: query exceeded {timeout_s:g}s")
    except Exception as e:  # noqa: BLE001 - any failure is the query's result, not ours
        return failed(_message(e))
    finally:
        timer.cancel()
        _give_back(conn, key)


def compile_error(db, sql: str, macros, timeout_s: float) -> str | None:
    statement, refusal = check_statement(sql, "duckdb")
    if refusal:
        return refusal
    try:
        conn, key = _acquire(db, macros)
    except Exception as e:  # noqa: BLE001 - no verdict: the caller decides without the engine
        raise ConnectionError(f"cannot open {db.url}: {_message(e)}") from None
    timer = threading.Timer(timeout_s, conn.interrupt)
    try:
        refusal = _one_select(conn, statement)
        if refusal:
            return refusal
        timer.start()
        conn.execute("EXPLAIN " + statement).fetchall()  # binds and plans; runs nothing
        return None
    except Exception as e:  # noqa: BLE001
        return _message(e)
    finally:
        timer.cancel()
        _give_back(conn, key)


def _rows(db, sql: str) -> list[tuple]:
    conn = _connect(db)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def _name(schema: str, table: str) -> str:
    return ident(table) if schema == "main" else f"{ident(schema)}.{ident(table)}"


def schema(db, timeout_s: float) -> str:
    """Tables and views of the file's own catalog, in creation order; tables outside `main` qualified."""
    where = "database_name = current_database() AND NOT internal AND NOT temporary"
    tables = _rows(db, f"SELECT table_oid, schema_name, table_name, comment, NULL FROM duckdb_tables() WHERE {where} "
                       f"UNION ALL SELECT view_oid, schema_name, view_name, comment, sql FROM duckdb_views() "
                       f"WHERE {where} ORDER BY 1")
    infos: dict[tuple[str, str], TableInfo] = {}
    for _, nsp, name, comment, view_sql in tables:
        if view_sql is not None:
            view_sql = re.sub(r"(?is)^\s*CREATE\s+VIEW\s+.*?\bAS\b", "", view_sql, count=1)
        infos[(nsp, name)] = TableInfo(_name(nsp, name), comment=comment, view_sql=view_sql)
    for nsp, table, col, typ, nullable, comment in _rows(
            db, "SELECT schema_name, table_name, column_name, data_type, is_nullable, comment FROM duckdb_columns() "
                "WHERE database_name = current_database() AND NOT internal ORDER BY table_oid, column_index"):
        if (nsp, table) in infos:
            infos[(nsp, table)].columns.append(ColumnInfo(col, typ, not nullable, comment))
    for nsp, table, kind, cols, ref, ref_cols in _rows(
            db, "SELECT schema_name, table_name, constraint_type, constraint_column_names, referenced_table, "
                "referenced_column_names FROM duckdb_constraints() WHERE database_name = current_database() "
                "AND constraint_type IN ('PRIMARY KEY', 'FOREIGN KEY') ORDER BY table_oid, constraint_index"):
        t = infos.get((nsp, table))
        if t is None:
            continue
        if kind == "PRIMARY KEY":
            t.primary_key = list(cols)
        else:
            t.foreign_keys.append((list(cols), _name(nsp, ref), list(ref_cols or [])))
    return render_schema(list(infos.values()))


def functions(db, timeout_s: float) -> list[dict]:
    """Macros stored in the file, as body-less macro entries (they run where they are)."""
    rows = _rows(db, "SELECT function_name, parameters, comment, macro_definition FROM duckdb_functions() "
                     "WHERE function_type = 'macro' AND NOT internal AND database_name = current_database() "
                     "ORDER BY function_name")
    return [{"name": name, "params": list(params or []), "doc": " ".join((comment or "").split()),
             "signature": f"{name}({', '.join(params or [])}) AS {definition}"}
            for name, params, comment, definition in rows]


@functools.lru_cache(maxsize=1)
def _builtins() -> frozenset[str]:
    import duckdb

    conn = duckdb.connect(":memory:")
    try:
        rows = conn.execute("SELECT DISTINCT function_name FROM duckdb_functions()").fetchall()
        return frozenset(r[0].lower() for r in rows)
    finally:
        conn.close()


def builtin_functions(db) -> frozenset[str]:
    return _builtins()


def problem(db) -> str | None:
    p = Path(db.location)
    if not p.is_file():
        return f"'{p}' does not exist" if not p.exists() else f"'{p}' is not a file"
    try:
        _rows(db, "SELECT 1")
    except Exception as e:  # noqa: BLE001 - not a DuckDB file, a newer storage version, locked by a writer
        return f"'{p}' cannot be opened as a DuckDB file ({_message(e)})"
    return None


# ------------------------------------------------------------------------------------------------ neighbours


def label(db) -> str:
    return Path(db.location).stem


def fingerprint(db) -> str:
    from .engine_sqlite import fingerprint as file_digest

    return file_digest(db)


def sample(db, rows: int):
    """Tables (keys, UNIQUE sets, a sample of rows in key order) and the file's own DDL as DuckDB keeps it in its
    catalog (`sql` of duckdb_tables / _views / _indexes / _sequences; macros rebuilt from their definitions)."""
    from .sample import Sample, SampledTable, order_clause

    here = "database_name = current_database() AND NOT internal AND NOT temporary"
    tables = _rows(db, f"SELECT table_oid, schema_name, table_name, sql FROM duckdb_tables() WHERE {here} "
                       "ORDER BY table_oid")
    ddl = [f"CREATE SCHEMA IF NOT EXISTS {ident(s)}" for s in sorted({t[1] for t in tables} - {"main"})]
    ddl += [r[0] for r in _rows(db, "SELECT sql FROM duckdb_sequences() WHERE database_name = current_database() "
                                    "AND NOT temporary ORDER BY sequence_oid")]
    ddl += [t[3] for t in tables]
    by_oid = {oid: SampledTable(name, [], [], [], [], schema=None if nsp == "main" else nsp)
              for oid, nsp, name, _ in tables}
    for oid, col, typ, nullable in _rows(db, "SELECT table_oid, column_name, data_type, is_nullable FROM "
                                             "duckdb_columns() WHERE database_name = current_database() AND NOT "
                                             "internal ORDER BY table_oid, column_index"):
        if oid in by_oid:
            by_oid[oid].columns.append(col)
            by_oid[oid].types.append(typ.upper())
            by_oid[oid].notnull.append(not nullable)
    for oid, kind, cols, ref, ref_cols in _rows(
            db, "SELECT table_oid, constraint_type, constraint_column_names, referenced_table, "
                "referenced_column_names FROM duckdb_constraints() WHERE database_name = current_database() AND "
                "constraint_type IN ('PRIMARY KEY', 'FOREIGN KEY', 'UNIQUE') ORDER BY table_oid, constraint_index"):
        t = by_oid.get(oid)
        if t is None:
            continue
        if kind == "PRIMARY KEY":
            t.pk = list(cols)
        elif kind == "UNIQUE":
            t.uniques.append(list(cols))
        else:
            t.fks.append((list(cols), ref, list(ref_cols or [])))
    for t in by_oid.values():
        cols = ", ".join(quote_ident(c) for c in t.columns)
        t.rows = _rows(db, f"SELECT {cols} FROM {t.ref} {order_clause(t.columns, t.pk, quote_ident)} "
                           f"LIMIT {int(rows)}")
    after = [r[0] for r in _rows(db, f"SELECT sql FROM duckdb_views() WHERE {here} ORDER BY view_oid")]
    for nsp, name, kind, params, body in _rows(
            db, "SELECT schema_name, function_name, function_type, parameters, macro_definition FROM "
                "duckdb_functions() WHERE function_type IN ('macro', 'table_macro') AND NOT internal AND "
                "database_name = current_database() ORDER BY function_oid"):
        table = "TABLE " if kind == "table_macro" else ""
        after.append(f"CREATE MACRO {_name(nsp, name)}({', '.join(params or [])}) AS {table}{body}")
    after += [r[0] for r in _rows(db, "SELECT sql FROM duckdb_indexes() WHERE database_name = current_database() "
                                      "AND sql IS NOT NULL")]
    return Sample(list(by_oid.values()), ddl, after)


class NeighbourFiles:
    """Neighbours as read-only DuckDB files in the cache folder, each written whole, checkpointed and then moved into
    place; a mirror beside each (DuckDB can't scan backwards)."""

    mirrored = True

    def __init__(self, db, folder: Path):
        self.db, self.folder, self.conn, self.tmp, self.dest, self.ddl = db, folder, None, None, None, None

    def locate(self, name: str) -> str:
        return "duckdb:///" + str(self.folder / f"{name}.duckdb")

    def exists(self, name: str) -> bool:
        return (self.folder / f"{name}.duckdb").is_file()

    def begin(self, name: str) -> bool:
        import duckdb

        if self.ddl is None:
            s = sample(self.db, 0)
            self.ddl = (s.ddl, s.ddl_after)
        self.dest = self.folder / f"{name}.duckdb"
        self.tmp = self.dest.with_name(f".{name}.{os.getpid()}.tmp.duckdb")
        self.tmp.unlink(missing_ok=True)
        self.conn = duckdb.connect(str(self.tmp), config={"enable_external_access": False})
        for statement in self.ddl[0]:
            self.conn.execute(statement)
        return True

    def insert(self, table, rows: list[list]) -> list[list]:
        sql = (f"INSERT INTO {table.ref} ({', '.join(quote_ident(c) for c in table.columns)}) "
               f"VALUES ({', '.join('?' * len(table.columns))})")
        if not rows:
            return rows
        try:  # all at once; row by row only when the engine refuses one (a CHECK, a value of another type)
            self.conn.execute("BEGIN")
            self.conn.executemany(sql, rows)
            self.conn.execute("COMMIT")
            return rows
        except Exception:  # noqa: BLE001 - which row: below
            self.conn.execute("ROLLBACK")
        kept = []
        for r in rows:
            try:
                self.conn.execute(sql, r)
                kept.append(r)
            except Exception:  # noqa: BLE001 - the engine refuses this row: it is left out
                pass
        return kept

    def commit(self) -> None:
        for statement in self.ddl[1]:
            self.conn.execute(statement)
        self.conn.execute("CHECKPOINT")
        self.conn.close()
        self.conn = None
        os.chmod(self.tmp, 0o444)
        self.tmp.replace(self.dest)

    def abort(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        if self.tmp is not None:
            self.tmp.unlink(missing_ok=True)
            self.tmp.with_name(self.tmp.name + ".wal").unlink(missing_ok=True)

    def close(self) -> None:
        self.abort()


def neighbour_writer(db, folder: Path, tag: str, scratch):
    return NeighbourFiles(db, folder)


def session(db, macros, timeout_s: float, max_rows: int):
    from .execute import ExecSession

    return ExecSession(db, macros, timeout_s, max_rows)
