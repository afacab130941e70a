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

from .ddl import ColumnInfo, TableInfo, ident, render_schema
from .execute import ExecResult
from .guard import check_statement, redact
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
