"""PostgreSQL behind ft.sql.engine's interface (psycopg 3).

Untrusted SQL, layer by layer (each is enough on its own for writes):
  1. check_statement (ft/sql/guard.py): one statement, starting like a read; functions that reach outside the
     database or the session (pg_read_file, pg_ls_dir, lo_*, dblink*, set_config, query_to_xml, ...) refused;
  2. the session is read-only from its first byte (`default_transaction_read_only=on` in the startup options) and
     the transaction is opened READ ONLY as well; statement_timeout, lock_timeout and
     idle_in_transaction_session_timeout are the time limit, so a runaway query, a lock wait or a stalled client
     ends on the server's side;
  3. the query runs through a server-side cursor (`DECLARE ... CURSOR FOR`), which accepts a SELECT / VALUES
     only, and FETCH brings back at most max_rows + 1 rows: a huge result never crosses the network;
  4. the transaction is rolled back and the connection closed after every call.
Everything works with a role that may only read (`GRANT SELECT`): give sqlft one (README).
Passwords come from libpq (PGPASSWORD, ~/.pgpass), never from the URL (ft/sql/engine.py refuses one there).
"""
from __future__ import annotations

import math
import time

from .ddl import ColumnInfo, TableInfo, ident, quote_ident, render_schema
from .execute import ExecResult
from .guard import DatabaseError, check_statement, redact
from .values import canonical_row

_SYSTEM_SCHEMAS = "('pg_catalog', 'information_schema')"
_BUILTINS: dict[str, frozenset[str]] = {}


def _connect(db, timeout_s: float):
    """A read-only session with the time limits set at start-up (the user's own `options` kept)."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    ms = max(1, int(timeout_s * 1000))
    ours = (f"-c default_transaction_read_only=on -c statement_timeout={ms} -c lock_timeout={ms} "
            f"-c idle_in_transaction_session_timeout={ms + 5000} -c application_name=sqlft")
    theirs = conninfo_to_dict(db.location).get("options") or ""
    conn = psycopg.connect(db.location, options=f"{theirs} {ours}".strip(), autocommit=False,
                           connect_timeout=max(2, math.ceil(timeout_s)))
    conn.read_only = True  # BEGIN READ ONLY
    return conn


def _message(e: Exception) -> str:
    diag = getattr(e, "diag", None)
    primary = getattr(diag, "message_primary", None) if diag is not None else None
    text = primary or (str(e).splitlines() or [""])[0]
    return redact(f"{type(e).__name__}: {text}")


def _is_timeout(e: Exception) -> bool:
    import psycopg

    return isinstance(e, (psycopg.errors.QueryCanceled, psycopg.errors.LockNotAvailable))


def execute(db, sql: str, macros, timeout_s: float, max_rows: int) -> ExecResult:
    start = time.monotonic()

    def failed(msg: str) -> ExecResult:
        return ExecResult(None, None, msg, time.monotonic() - start, False)

    statement, refusal = check_statement(sql, "postgres")
    if refusal:
        return failed(refusal)
    try:
        conn = _connect(db, timeout_s)
    except Exception as e:  # noqa: BLE001 - unreachable server, bad role: the query's result
        return failed(f"cannot connect to {db.url}: {_message(e)}")
    try:
        with conn.cursor(name="sqlft_query") as cur:  # server-side: DECLARE ... CURSOR FOR <statement>
            cur.execute(statement)
            columns = [d.name for d in cur.description or []]
            rows = cur.fetchmany(max_rows + 1)
        truncated = len(rows) > max_rows
        return ExecResult([canonical_row(r) for r in rows[:max_rows]], columns, None, time.monotonic() - start,
                          truncated)
    except Exception as e:  # noqa: BLE001 - any failure is the query's result, not ours
        if _is_timeout(e):
            return failed(f"timeout: query exceeded {timeout_s:g}s")
        return failed(_message(e))
    finally:
        _close(conn)


def _close(conn) -> None:
    try:
        conn.rollback()
    except Exception:  # noqa: BLE001 - a broken connection is closed all the same
        pass
    conn.close()


def compile_error(db, sql: str, macros, timeout_s: float) -> str | None:
    statement, refusal = check_statement(sql, "postgres")
    if refusal:
        return refusal
    try:
        conn = _connect(db, timeout_s)
    except Exception as e:  # noqa: BLE001 - no verdict: the caller decides without the engine
        raise ConnectionError(f"cannot connect to {db.url}: {_message(e)}") from None
    try:
        with conn.cursor() as cur:
            cur.execute("EXPLAIN " + statement)  # plans the query; runs nothing
        return None
    except Exception as e:  # noqa: BLE001
        return _message(e)
    finally:
        _close(conn)


def _query(db, timeout_s: float, sql: str, params=None) -> list[tuple]:
    """Our own catalog queries (trusted SQL), in the same read-only session."""
    conn = _connect(db, timeout_s)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall()
    finally:
        _close(conn)


_TABLES = f"""
SELECT c.oid, n.nspname, c.relname, c.relkind, obj_description(c.oid, 'pg_class'),
       pg_table_is_visible(c.oid), CASE WHEN c.relkind IN ('v', 'm') THEN pg_get_viewdef(c.oid) END
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') AND NOT c.relispartition
  AND n.nspname NOT IN {_SYSTEM_SCHEMAS} AND n.nspname NOT LIKE 'pg\\_%'
  AND has_table_privilege(c.oid, 'SELECT') AND pg_table_is_visible(c.oid)
ORDER BY c.oid"""
_COLUMNS = """
SELECT a.attrelid, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, col_description(a.attrelid, a.attnum)
FROM pg_attribute a WHERE a.attrelid = ANY(%s) AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attrelid, a.attnum"""
_CONSTRAINTS = """
SELECT k.conrelid, k.contype, k.confrelid,
       ARRAY(SELECT a.attname FROM unnest(k.conkey) WITH ORDINALITY u(n, i)
             JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = u.n ORDER BY u.i),
       ARRAY(SELECT a.attname FROM unnest(k.confkey) WITH ORDINALITY u(n, i)
             JOIN pg_attribute a ON a.attrelid = k.confrelid AND a.attnum = u.n ORDER BY u.i)
FROM pg_constraint k WHERE k.conrelid = ANY(%s) AND k.contype IN ('p', 'f') ORDER BY k.conrelid, k.oid"""
_REF_NAMES = """
SELECT c.oid, n.nspname, c.relname, pg_table_is_visible(c.oid)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = ANY(%s)"""


def _name(schema: str, table: str, in_default: bool) -> str:
    return ident(table) if in_default else f"{ident(schema)}.{ident(table)}"


def schema(db, timeout_s: float) -> str:
    """Tables and views the session may read and name without a schema (those of its search_path: set it in the
    URL, `?options=-csearch_path%3Dsales,finance`), in creation order."""
    tables = _query(db, timeout_s, _TABLES)
    oids = [t[0] for t in tables]
    if not oids:
        return ""
    columns = _query(db, timeout_s, _COLUMNS, (oids,))
    constraints = _query(db, timeout_s, _CONSTRAINTS, (oids,))
    refs = {oid: _name(s, t, d) for oid, s, t, d in
            _query(db, timeout_s, _REF_NAMES, ([c[2] for c in constraints if c[2]],))} if constraints else {}
    infos: dict[int, TableInfo] = {}
    for oid, nsp, rel, kind, comment, in_default, view_sql in tables:
        infos[oid] = TableInfo(_name(nsp, rel, in_default), comment=comment,
                               view_sql=view_sql if kind in ("v", "m") else None)
    for oid, name, typ, not_null, comment in columns:
        infos[oid].columns.append(ColumnInfo(name, typ, not_null, comment))
    for oid, kind, ref_oid, cols, ref_cols in constraints:
        if kind == "p":
            infos[oid].primary_key = list(cols)
        elif ref_oid in refs:
            infos[oid].foreign_keys.append((list(cols), refs[ref_oid], list(ref_cols)))
    return render_schema(list(infos.values()))


_FUNCTIONS = f"""
SELECT p.proname, pg_get_function_arguments(p.oid), pg_get_function_result(p.oid), obj_description(p.oid, 'pg_proc'),
       COALESCE(p.proargnames, ARRAY[]::text[]), p.pronargs
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE p.prokind = 'f' AND n.nspname NOT IN {_SYSTEM_SCHEMAS} AND n.nspname NOT LIKE 'pg\\_%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid
                  AND d.deptype = 'e')
  AND has_function_privilege(p.oid, 'EXECUTE') AND pg_function_is_visible(p.oid)
ORDER BY p.proname, p.oid"""


def functions(db, timeout_s: float) -> list[dict]:
    """User-defined functions the session may call (not those of extensions), as body-less macro entries."""
    out = []
    for name, args, result, comment, argnames, nargs in _query(db, timeout_s, _FUNCTIONS):
        params = [a or f"arg{i + 1}" for i, a in enumerate(list(argnames)[:nargs])] or \
            [f"arg{i + 1}" for i in range(nargs)]
        out.append({"name": name, "params": params, "doc": " ".join((comment or "").split()),
                    "signature": f"{name}({args}) returns {result}"})
    return out


def builtin_functions(db) -> frozenset[str] | None:
    if db.location not in _BUILTINS:
        try:
            rows = _query(db, 10.0, "SELECT DISTINCT lower(proname) FROM pg_proc WHERE pg_function_is_visible(oid)")
        except Exception:  # noqa: BLE001 - unknown, not fatal: validation then leaves functions to EXPLAIN
            return None
        _BUILTINS[db.location] = frozenset(r[0] for r in rows)
    return _BUILTINS[db.location]


def problem(db) -> str | None:
    try:
        _query(db, 10.0, "SELECT 1")
    except Exception as e:  # noqa: BLE001
        return f"'{db.url}' cannot be reached ({_message(e)})"
    return None


# ------------------------------------------------------------------------------------------------ neighbours
# sqlft's role on the user's database only reads, so neighbours are created in a scratch database the user names
# (eval.neighbour_db): one schema per neighbour (and one per mirror), built in one transaction each, reused by
# every later evaluation, and read through execute() above with search_path set to the neighbour's schema.

_SAMPLED = f"""
SELECT c.oid, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition AND n.nspname NOT IN {_SYSTEM_SCHEMAS}
  AND n.nspname NOT LIKE 'pg\\_%' AND has_table_privilege(c.oid, 'SELECT') AND pg_table_is_visible(c.oid)
ORDER BY c.oid"""
_SAMPLED_COLUMNS = """
SELECT a.attrelid, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
       CASE WHEN a.attcollation <> 0 AND a.attcollation <> t.typcollation
            THEN (SELECT quote_ident(collname) FROM pg_collation WHERE oid = a.attcollation) END
FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
WHERE a.attrelid = ANY(%s) AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attrelid, a.attnum"""
_SAMPLED_CONSTRAINTS = """
SELECT k.conrelid, k.contype, k.conname, pg_get_constraintdef(k.oid),
       (SELECT relname FROM pg_class WHERE oid = k.confrelid),
       ARRAY(SELECT a.attname FROM unnest(k.conkey) WITH ORDINALITY u(n, i)
             JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = u.n ORDER BY u.i),
       ARRAY(SELECT a.attname FROM unnest(k.confkey) WITH ORDINALITY u(n, i)
             JOIN pg_attribute a ON a.attrelid = k.confrelid AND a.attnum = u.n ORDER BY u.i)
FROM pg_constraint k WHERE k.conrelid = ANY(%s) AND k.contype IN ('p', 'u', 'f', 'c') ORDER BY k.conrelid, k.oid"""
_SAMPLED_VIEWS = f"""
SELECT c.relname, c.relkind, pg_get_viewdef(c.oid) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('v', 'm') AND n.nspname NOT IN {_SYSTEM_SCHEMAS} AND n.nspname NOT LIKE 'pg\\_%'
  AND pg_table_is_visible(c.oid) ORDER BY c.oid"""
_SAMPLED_FUNCTIONS = f"""
SELECT p.proname, pg_get_function_arguments(p.oid), pg_get_function_result(p.oid), l.lanname, p.provolatile,
       p.prosrc
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace JOIN pg_language l ON l.oid = p.prolang
WHERE p.prokind = 'f' AND l.lanname IN ('sql', 'plpgsql') AND n.nspname NOT IN {_SYSTEM_SCHEMAS}
  AND n.nspname NOT LIKE 'pg\\_%' AND pg_function_is_visible(p.oid)
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid
                  AND d.deptype = 'e')
ORDER BY p.oid"""


def label(db) -> str:
    from psycopg.conninfo import conninfo_to_dict

    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in conninfo_to_dict(db.location).get(
        "dbname") or "postgres")[:40]


def fingerprint(db) -> str:
    """The schema text and every visible table's row count (a change that keeps both keeps the neighbours: they
    are drawn from a sample, and stay neighbours of the schema)."""
    import hashlib

    tables = _query(db, 60.0, _SAMPLED)
    counts = _query(db, 60.0, " UNION ALL ".join(f"SELECT {oid}::oid, count(*) FROM {ident(name)}"
                                                 for oid, name in tables)) if tables else []
    return hashlib.sha1((schema(db, 60.0) + repr(sorted(counts))).encode()).hexdigest()


def sample(db, rows: int):
    """Tables visible on the session's search_path (keys, UNIQUE sets, a sample of rows in key order) and DDL
    rebuilt from the catalog: columns with their types, collations and NOT NULL, every PRIMARY KEY / UNIQUE / CHECK
    constraint as pg_get_constraintdef writes it; after the rows, foreign keys (checked against them), SQL and
    PL/pgSQL functions, views."""
    from .sample import Sample, SampledTable, order_clause

    tables = _query(db, 60.0, _SAMPLED)
    oids = [t[0] for t in tables]
    by_oid = {oid: SampledTable(name, [], [], [], []) for oid, name in tables}
    col_sql: dict[int, list[str]] = {oid: [] for oid in oids}
    for oid, name, typ, not_null, collation in _query(db, 60.0, _SAMPLED_COLUMNS, (oids,)) if oids else []:
        t = by_oid[oid]
        t.columns.append(name)
        t.types.append(typ.upper())
        t.notnull.append(bool(not_null))
        col_sql[oid].append(f"{quote_ident(name)} {typ}" + (f" COLLATE {collation}" if collation else "")
                            + (" NOT NULL" if not_null else ""))
    after = []
    for oid, kind, name, definition, parent, cols, ref_cols in (
            _query(db, 60.0, _SAMPLED_CONSTRAINTS, (oids,)) if oids else []):
        t = by_oid[oid]
        if kind == "f":
            if parent is not None and any(p.name == parent for p in by_oid.values()):
                t.fks.append((list(cols), parent, list(ref_cols)))
                after.append(f"ALTER TABLE {quote_ident(t.name)} ADD CONSTRAINT {quote_ident(name)} {definition}")
            continue
        col_sql[oid].append(f"CONSTRAINT {quote_ident(name)} {definition}")
        if kind == "p":
            t.pk = list(cols)
        elif kind == "u":
            t.uniques.append(list(cols))
    ddl = [f"CREATE TABLE {quote_ident(t.name)} ({', '.join(col_sql[oid])})" for oid, t in by_oid.items()]
    for name, args, result, language, volatile, body in _query(db, 60.0, _SAMPLED_FUNCTIONS):
        kind = {"i": "IMMUTABLE", "s": "STABLE"}.get(volatile, "VOLATILE")
        after.append(f"CREATE FUNCTION {quote_ident(name)}({args}) RETURNS {result} LANGUAGE {language} {kind} "
                     f"AS $sqlft_body${body}$sqlft_body$")
    for name, kind, definition in _query(db, 60.0, _SAMPLED_VIEWS):
        what = "MATERIALIZED VIEW" if kind == "m" else "VIEW"
        after.append(f"CREATE {what} {quote_ident(name)} AS {definition.strip().rstrip(';')}")
    for t in by_oid.values():
        cols = ", ".join(quote_ident(c) for c in t.columns)
        t.rows = _query(db, 60.0, f"SELECT {cols} FROM {quote_ident(t.name)} "
                                  f"{order_clause(t.columns, t.pk, quote_ident)} LIMIT {int(rows)}")
    return Sample(list(by_oid.values()), ddl, after)


class NeighbourSchemas:
    """Neighbours as schemas `sqlft_ts_<tag>_<name>` of the scratch database, each created with its rows in one
    transaction (so a schema that exists is complete), under an advisory lock (two processes don't build the same
    one twice). Read back through execute(): a read-only session whose search_path is the neighbour's schema."""

    mirrored = True  # PostgreSQL can't scan backwards: a mirror holds the rows in reverse order

    def __init__(self, db, scratch, tag: str):
        import psycopg

        self.db, self.scratch, self.tag = db, scratch, tag[:16]
        self.ddl, self.tables = None, []
        try:
            self.conn = psycopg.connect(scratch.location, autocommit=False, connect_timeout=10)
        except Exception as e:  # noqa: BLE001 - the user's scratch database: one clear line
            raise DatabaseError(f"eval.neighbour_db: cannot connect to {scratch.url}: {_message(e)}") from None
        self.name = None

    def _schema(self, name: str) -> str:
        return f"sqlft_ts_{self.tag}_{name}"

    def locate(self, name: str) -> str:
        from urllib.parse import quote

        sep = "&" if "?" in self.scratch.location else "?"
        return f"{self.scratch.location}{sep}options={quote('-csearch_path=' + self._schema(name), safe='')}"

    def exists(self, name: str) -> bool:
        found = self.conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (self._schema(name),)).fetchone()
        self.conn.rollback()
        return found is not None

    def begin(self, name: str) -> bool:
        if self.ddl is None:
            s = sample(self.db, 0)
            self.ddl, self.tables = (s.ddl, s.ddl_after), [quote_ident(t.name) for t in s.tables]
        schema = self._schema(name)
        self.conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (schema,))
        if self.conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone():
            self.conn.rollback()  # another process built it while we waited
            return False
        self.conn.execute(f"CREATE SCHEMA {quote_ident(schema)}")
        self.conn.execute(f"SET LOCAL search_path = {quote_ident(schema)}")
        self._run(self.ddl[0])
        self.name = name
        return True

    def _run(self, statements: list[str]) -> None:
        for statement in statements:
            try:
                self.conn.execute(statement)
            except Exception as e:  # noqa: BLE001 - a type or function the scratch database lacks: said plainly
                raise DatabaseError(f"cannot build a neighbour of {self.db.url} in {self.scratch.url}: "
                                    f"{_message(e)} (in: {statement[:200]})") from None

    def insert(self, table, rows: list[list]) -> list[list]:
        sql = (f"INSERT INTO {quote_ident(table.name)} ({', '.join(quote_ident(c) for c in table.columns)}) "
               f"VALUES ({', '.join(['%s'] * len(table.columns))})")
        if not rows:
            return rows
        with self.conn.cursor() as cur:
            cur.execute("SAVEPOINT sqlft_rows")
            try:  # all at once; row by row only when the engine refuses one (a CHECK)
                cur.executemany(sql, rows)
                cur.execute("RELEASE SAVEPOINT sqlft_rows")
                return rows
            except Exception:  # noqa: BLE001 - which row: below
                cur.execute("ROLLBACK TO SAVEPOINT sqlft_rows")
            kept = []
            for r in rows:
                cur.execute("SAVEPOINT sqlft_row")
                try:
                    cur.execute(sql, r)
                    cur.execute("RELEASE SAVEPOINT sqlft_row")
                    kept.append(r)
                except Exception:  # noqa: BLE001 - the engine refuses this row: it is left out
                    cur.execute("ROLLBACK TO SAVEPOINT sqlft_row")
            return kept

    def commit(self) -> None:
        self._run(self.ddl[1])
        if self.tables:  # statistics of these tiny tables: the planner scans them as stored (what the mirror needs)
            self.conn.execute("ANALYZE " + ", ".join(self.tables))
        self.conn.commit()
        self.name = None

    def abort(self) -> None:
        try:
            self.conn.rollback()
        except Exception:  # noqa: BLE001 - a broken connection: nothing was committed
            pass
        self.name = None

    def close(self) -> None:
        self.abort()
        self.conn.close()


def neighbour_writer(db, folder, tag: str, scratch):
    if scratch is None:
        raise DatabaseError(f"test-suite accuracy on the PostgreSQL database {db.url} needs eval.neighbour_db: a "
                            "writable scratch PostgreSQL database (postgresql://user@host/scratch) where sqlft creates "
                            "the neighbour databases as schemas (your database's role only reads)")
    return NeighbourSchemas(db, scratch, tag)


def session(db, macros, timeout_s: float, max_rows: int):
    from .execute import ExecSession

    return ExecSession(db, macros, timeout_s, max_rows)
