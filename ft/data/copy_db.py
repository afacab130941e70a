"""Copy SQLite-backed datasets into PostgreSQL or DuckDB, and fill rows' schemas from a live database.

    report = copy_rows(rows, "postgresql://me@localhost/warehouse")   # `sqlft data convert SRC --to-db URL`
    rows = rows_from_db(rows, "duckdb:///shop.duckdb")                 # `sqlft data from-db URL questions.jsonl`

copy_rows: every SQLite database the rows use is copied (PostgreSQL: one schema per database, named for its db_id,
the rows' URL setting search_path to it; DuckDB: one file per database in the folder the URL names). A column keeps
what SQLite stored in it: all integers -> integer / bigint, numbers -> double precision, text -> text (varchar(n)
when declared so and the values fit; PostgreSQL with COLLATE "C", SQLite's byte order), blobs -> bytea / BLOB;
mixed columns become text and are reported. Primary keys, foreign keys (PostgreSQL: NOT VALID, the data isn't
re-checked; DuckDB: only where the data satisfies them) and the comments of the SQLite DDL come along.
In-house macros become functions of the database on PostgreSQL (typed by trying text, then double precision for each
parameter) and DuckDB macros, transpiled, on DuckDB. Each gold query is transpiled (ft/sql/transpile.py) and run on
both sides: any that doesn't return the same rows as on SQLite is in the report, never silently dropped.
"""
from __future__ import annotations

import itertools
import re
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from ft.data.rows import DataError, Row
from ft.sql.ddl import ident
from ft.sql.engine import Database, database
from ft.sql.execute import execute as sqlite_execute
from ft.sql.execute import query_has_order_by, results_match
from ft.sql.transpile import macro_body, to_dialect

_INT32 = 2**31 - 1
_VARCHAR = re.compile(r"^\s*(?:VAR)?CHAR(?:ACTER)?\s*(?:VARYING\s*)?\(\s*(\d+)\s*\)", re.I)


@dataclass
class Column:
    name: str  # lower-cased: how the copy names it
    source: str  # as SQLite names it
    kind: str  # integer | bigint | double | text | blob
    length: int | None = None  # varchar(n)
    not_null: bool = False
    comment: str = ""
    mixed: bool = False  # values of other storage classes than `kind`: converted on the way


@dataclass
class Table:
    name: str
    source: str
    columns: list[Column]
    primary_key: list[str] = field(default_factory=list)
    foreign_keys: list[tuple[list[str], str, list[str]]] = field(default_factory=list)
    comment: str = ""


@dataclass
class CopyReport:
    databases: dict[str, str] = field(default_factory=dict)  # db_id -> URL of the copy
    notes: list[str] = field(default_factory=list)  # what changed on the way (mixed columns, dropped keys)
    checked: int = 0
    mismatches: list[dict] = field(default_factory=list)  # {"origin", "db_id", "question", "why", "gold", "sql"}
    types: dict = field(default_factory=dict)  # db_id -> the copy's column types (sqlglot schema), for to_dialect

    def to_dict(self) -> dict:
        ties = sum(m["kind"] == "ties" for m in self.mismatches)
        return {"databases": self.databases, "notes": self.notes, "gold_checked": self.checked,
                "gold_agree": self.checked - len(self.mismatches), "gold_differ_in_tie_order_only": ties,
                "gold_differ": len(self.mismatches) - ties, "mismatches": self.mismatches}


# ------------------------------------------------------------------------------------------------ reading SQLite


def _affinity(declared: str) -> str:
    """SQLite's column affinity rules (sqlite.org/datatype3.html, 3.1)."""
    t = declared.upper()
    if "INT" in t:
        return "integer"
    if any(k in t for k in ("CHAR", "CLOB", "TEXT")):
        return "text"
    if "BLOB" in t or not t:
        return "blob"
    if any(k in t for k in ("REAL", "FLOA", "DOUB")):
        return "double"
    return "numeric"


def read_tables(conn: sqlite3.Connection, ddl: str, notes: list[str], db_id: str) -> list[Table]:
    """The tables of a SQLite database with the column kinds their stored values need (see the module docstring)."""
    from ft.data.linking import parse_schema

    comments = {t.key: t for t in parse_schema(ddl).tables} if ddl else {}
    names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                                        "AND name NOT LIKE 'sqlite_%' ORDER BY rowid")]
    lowered = [n.lower() for n in names]
    if len(set(lowered)) != len(lowered):
        raise DataError(f"database '{db_id}' has tables whose names differ only in case; the copy can't keep both")
    tables = []
    for name in names:
        q = ident(name)
        info = conn.execute(f"SELECT name, type, \"notnull\", pk FROM pragma_table_info({_lit(name)})").fetchall()
        parsed = comments.get(name.lower())
        cols, pk = [], []
        for (col, declared, not_null, pk_pos), (kinds, lo, hi, longest) in zip(
                info, _stored_kinds(conn, q, [c[0] for c in info])):
            length = None
            if not kinds:
                kind = {"integer": "bigint", "double": "double", "text": "text"}.get(_affinity(declared or ""), "text")
            elif kinds == {"integer"}:
                kind = "integer" if -_INT32 <= lo and hi <= _INT32 else "bigint"
            elif kinds <= {"integer", "real"}:
                kind = "double"
            elif kinds == {"text"}:
                kind = "text"
                m = _VARCHAR.match(declared or "")
                if m and longest <= int(m.group(1)):
                    length = int(m.group(1))
            elif kinds == {"blob"}:
                kind = "blob"
            else:
                kind = "text"
                notes.append(f"{db_id}.{name}.{col}: values of several types ({', '.join(sorted(kinds))}) stored "
                             "as text")
            pcol = parsed.column(col) if parsed else None
            mixed = kind == "text" and bool(kinds - {"text"})
            cols.append(Column(col.lower(), col, kind, length, bool(not_null), pcol.comment if pcol else "", mixed))
            if pk_pos:
                pk.append((pk_pos, col.lower()))
        fks: dict[int, tuple[list[str], str, list[str]]] = {}
        for fid, _, ref, src, dst, *_ in conn.execute(f"SELECT * FROM pragma_foreign_key_list({_lit(name)})"):
            entry = fks.setdefault(fid, ([], ref.lower(), []))
            entry[0].append(src.lower())
            if dst is not None:
                entry[2].append(dst.lower())
        tables.append(Table(name.lower(), name, cols, [c for _, c in sorted(pk)], list(fks.values()),
                            parsed.comment if parsed else ""))
    return tables


def _stored_kinds(conn: sqlite3.Connection, table: str, columns: list[str]) -> list[tuple[set, int, int, int]]:
    """Per column, in one scan of the table by SQLite: (storage classes seen, smallest and largest integer, longest
    text)."""
    parts = []
    for c in columns:
        q = ident(c)
        parts += [f"group_concat(DISTINCT typeof({q}))", f"min(CASE WHEN typeof({q}) = 'integer' THEN {q} END)",
                  f"max(CASE WHEN typeof({q}) = 'integer' THEN {q} END)",
                  f"max(CASE WHEN typeof({q}) = 'text' THEN length({q}) END)"]
    row = conn.execute(f"SELECT {', '.join(parts)} FROM {table}").fetchone()
    out = []
    for i in range(len(columns)):
        kinds, lo, hi, longest = row[4 * i:4 * i + 4]
        out.append((set((kinds or "").split(",")) - {"null", ""}, lo or 0, hi or 0, longest or 0))
    return out


def _lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _keys_hold(conn: sqlite3.Connection, t: Table) -> bool:
    """The primary key's columns are unique and never NULL in the data (SQLite doesn't enforce it for all keys)."""
    if not t.primary_key:
        return True
    src = {c.name: c.source for c in t.columns}
    cols = ", ".join(ident(src[c]) for c in t.primary_key)
    nulls = " OR ".join(f"{ident(src[c])} IS NULL" for c in t.primary_key)
    total, distinct, null = conn.execute(
        f"SELECT count(*), (SELECT count(*) FROM (SELECT DISTINCT {cols} FROM {ident(t.source)})), "
        f"(SELECT count(*) FROM {ident(t.source)} WHERE {nulls}) FROM {ident(t.source)}").fetchone()
    return total == distinct and not null


def _orphans(conn: sqlite3.Connection, t: Table, fk, tables: dict[str, Table]) -> int:
    cols, ref, ref_cols = fk
    parent = tables[ref]
    src = {c.name: c.source for c in t.columns}
    psrc = {c.name: c.source for c in parent.columns}
    on = " AND ".join(f"p.{ident(psrc[r])} = c.{ident(src[s])}" for s, r in zip(cols, ref_cols))
    notnull = " AND ".join(f"c.{ident(src[s])} IS NOT NULL" for s in cols)
    return conn.execute(f"SELECT count(*) FROM {ident(t.source)} c WHERE {notnull} AND NOT EXISTS "
                        f"(SELECT 1 FROM {ident(parent.source)} p WHERE {on})").fetchone()[0]


# ------------------------------------------------------------------------------------------------ writers

_PG_TYPES = {"integer": "integer", "bigint": "bigint", "double": "double precision", "text": "text",
             "blob": "bytea"}
_DUCK_TYPES = {"integer": "INTEGER", "bigint": "BIGINT", "double": "DOUBLE", "text": "VARCHAR", "blob": "BLOB"}


def _as_text(v):
    return v if v is None or isinstance(v, str) else v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)


def _rows_for(t: Table, src: sqlite3.Connection):
    """The table's rows as the copy stores them (in rowid order where there is one): only a mixed column's values
    are converted (to text)."""
    select = ", ".join(ident(c.source) for c in t.columns)
    order = " ORDER BY rowid" if _has_rowid(src, t) else ""
    mixed = [i for i, c in enumerate(t.columns) if c.mixed]
    for row in src.execute(f"SELECT {select} FROM {ident(t.source)}{order}"):
        if mixed:
            row = list(row)
            for i in mixed:
                row[i] = _as_text(row[i])
        yield row


def _column_sql(c: Column, types: dict, collate: str = "") -> str:
    t = f"varchar({c.length})" if c.length and types is _PG_TYPES else types[c.kind]
    return f"{ident(c.name)} {t}" + (collate if c.kind == "text" else "") + (" NOT NULL" if c.not_null else "")


class PostgresWriter:
    """A schema per database in one PostgreSQL database (the URL's), written in one transaction per database."""

    def __init__(self, url: Database, replace: bool):
        import psycopg

        self.db, self.replace = url, replace
        self.conn = psycopg.connect(url.location, autocommit=False)

    def target(self, db_id: str) -> str:
        sep = "&" if "?" in self.db.location else "?"
        return f"{self.db.location}{sep}options={quote('-csearch_path=' + ident(db_id.lower()), safe='')}"

    def write(self, db_id: str, tables: list[Table], src: sqlite3.Connection, macros: list[dict],
              notes: list[str]) -> None:
        schema = ident(db_id.lower())
        cur = self.conn.cursor()
        exists = cur.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (db_id.lower(),)).fetchone()
        if exists and not self.replace:
            self.conn.rollback()
            raise DataError(f"schema {schema} already exists in {self.db.url}; pass --replace to overwrite it")
        cur.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        cur.execute(f"CREATE SCHEMA {schema}")
        cur.execute(f"SET LOCAL search_path = {schema}")
        by_name = {t.name: t for t in tables}
        for t in tables:
            cols = [_column_sql(c, _PG_TYPES, ' COLLATE "C"') for c in t.columns]
            if t.primary_key and _keys_hold(src, t):
                cols.append(f"PRIMARY KEY ({', '.join(ident(c) for c in t.primary_key)})")
            elif t.primary_key:
                notes.append(f"{db_id}.{t.name}: primary key not kept (duplicate or NULL values in the data)")
                t.primary_key = []
            # One round trip for the table and its comments (no parameters: psycopg sends the statements as one).
            ddl = [f"CREATE TABLE {ident(t.name)} ({', '.join(cols)})"]
            if t.comment:
                ddl.append(f"COMMENT ON TABLE {ident(t.name)} IS {_lit(t.comment)}")
            ddl += [f"COMMENT ON COLUMN {ident(t.name)}.{ident(c.name)} IS {_lit(c.comment)}"
                    for c in t.columns if c.comment]
            cur.execute("; ".join(ddl))
            with cur.copy(f"COPY {ident(t.name)} ({', '.join(ident(c.name) for c in t.columns)}) FROM STDIN") as cp:
                for row in _rows_for(t, src):
                    cp.write_row(row)
        keys = []
        for t in tables:
            for cols, ref, ref_cols in t.foreign_keys:
                parent = by_name.get(ref)
                if parent is None or not ref_cols or sorted(ref_cols) != sorted(parent.primary_key):
                    notes.append(f"{db_id}.{t.name}: foreign key ({', '.join(cols)}) -> {ref} not kept (it doesn't "
                                 "reference a primary key)")
                    continue
                keys.append(f"ALTER TABLE {ident(t.name)} ADD FOREIGN KEY ({', '.join(ident(c) for c in cols)}) "
                            f"REFERENCES {ident(ref)} ({', '.join(ident(c) for c in ref_cols)}) NOT VALID")
        if keys:
            cur.execute("; ".join(keys))
        for m in macros:
            self._function(cur, m, notes, db_id)
        cur.execute("ANALYZE")
        self.conn.commit()

    def _function(self, cur, m: dict, notes: list[str], db_id: str) -> None:
        """CREATE FUNCTION for a SQLite macro: parameter types tried (text, then double precision for each), the
        return type asked of PostgreSQL (pg_typeof of the body)."""
        params = list(m.get("params", []))
        try:
            body = macro_body(m["body"], "postgres")
        except ValueError as e:
            notes.append(f"{db_id}: macro {m['name']} not created ({e})")
            return
        for types in itertools.product(("text", "double precision"), repeat=len(params)):
            probe = body
            for p, t in zip(params, types):
                probe = re.sub(rf"\b{re.escape(p)}\b", f"CAST(NULL AS {t})", probe)
            cur.execute("SAVEPOINT probe")
            try:
                returns = cur.execute(f"SELECT pg_typeof({probe})::text").fetchone()[0]
            except Exception:  # noqa: BLE001 - these types don't fit the body: try the next ones
                cur.execute("ROLLBACK TO SAVEPOINT probe")
                continue
            cur.execute("RELEASE SAVEPOINT probe")
            args = ", ".join(f"{ident(p)} {t}" for p, t in zip(params, types))
            cur.execute(f"CREATE FUNCTION {ident(m['name'])}({args}) RETURNS {returns} LANGUAGE sql IMMUTABLE "
                        f"AS $sqlft$ SELECT {body} $sqlft$")
            if m.get("doc"):
                cur.execute(f"COMMENT ON FUNCTION {ident(m['name'])}({', '.join(types)}) IS {_lit(m['doc'])}")
            return
        notes.append(f"{db_id}: macro {m['name']} not created (no parameter types fit its body)")

    def close(self) -> None:
        self.conn.close()


def _has_rowid(conn: sqlite3.Connection, t: Table) -> bool:
    try:
        conn.execute(f"SELECT rowid FROM {ident(t.source)} LIMIT 0")
        return True
    except sqlite3.Error:  # WITHOUT ROWID tables
        return False


class DuckDBWriter:
    """One DuckDB file per database, in the folder the URL names (or the file itself for a single database)."""

    def __init__(self, url: Database, replace: bool, single: bool):
        self.db, self.replace = url, replace
        p = Path(url.location)
        self.file = p if single and p.suffix in (".duckdb", ".ddb") else None
        self.folder = p.parent if self.file else p

    def target(self, db_id: str) -> str:
        path = self.file or self.folder / f"{db_id}.duckdb"
        return "duckdb:///" + quote(str(path), safe="/:")

    def write(self, db_id: str, tables: list[Table], src: sqlite3.Connection, macros: list[dict],
              notes: list[str]) -> None:
        import duckdb
        import pyarrow as pa

        path = self.file or self.folder / f"{db_id}.duckdb"
        if path.exists():
            if not self.replace:
                raise DataError(f"{path} already exists; pass --replace to overwrite it")
            path.unlink()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".partial")
        tmp.unlink(missing_ok=True)
        conn = duckdb.connect(str(tmp))
        arrow = {"integer": pa.int32(), "bigint": pa.int64(), "double": pa.float64(), "text": pa.string(),
                 "blob": pa.binary()}
        try:
            by_name = {t.name: t for t in tables}
            created: set[str] = set()
            for t in _parents_first(tables):
                cols = [_column_sql(c, _DUCK_TYPES) for c in t.columns]
                if t.primary_key and _keys_hold(src, t):
                    cols.append(f"PRIMARY KEY ({', '.join(ident(c) for c in t.primary_key)})")
                elif t.primary_key:
                    notes.append(f"{db_id}.{t.name}: primary key not kept (duplicate or NULL values in the data)")
                    t.primary_key = []
                for fk in t.foreign_keys:
                    cols_, ref, ref_cols = fk
                    parent = by_name.get(ref)
                    ok = (parent is not None and ref in created and ref_cols and parent.primary_key
                          and sorted(ref_cols) == sorted(parent.primary_key) and not _orphans(src, t, fk, by_name))
                    if ok:
                        cols.append(f"FOREIGN KEY ({', '.join(ident(c) for c in cols_)}) REFERENCES {ident(ref)} "
                                    f"({', '.join(ident(c) for c in ref_cols)})")
                    else:
                        notes.append(f"{db_id}.{t.name}: foreign key ({', '.join(cols_)}) -> {ref} not kept (no "
                                     "primary key to reference, a self reference, or rows without a parent)")
                conn.execute(f"CREATE TABLE {ident(t.name)} ({', '.join(cols)})")
                created.add(t.name)
                columns = list(zip(*_rows_for(t, src))) or [()] * len(t.columns)
                batch = pa.table({c.name: pa.array(list(values), type=arrow[c.kind])
                                  for c, values in zip(t.columns, columns)})
                conn.register("sqlft_batch", batch)
                conn.execute(f"INSERT INTO {ident(t.name)} SELECT * FROM sqlft_batch")
                conn.unregister("sqlft_batch")
                if t.comment:
                    conn.execute(f"COMMENT ON TABLE {ident(t.name)} IS {_lit(t.comment)}")
                for c in t.columns:
                    if c.comment:
                        conn.execute(f"COMMENT ON COLUMN {ident(t.name)}.{ident(c.name)} IS {_lit(c.comment)}")
            conn.execute("CHECKPOINT")
        finally:
            conn.close()
        tmp.replace(path)

    def close(self) -> None:
        pass


def _parents_first(tables: list[Table]) -> list[Table]:
    """Tables ordered so a referenced table comes before the tables referencing it (schema order otherwise)."""
    by_name = {t.name: t for t in tables}
    done: set[str] = set()
    out: list[Table] = []

    def visit(t: Table, path: set[str]):
        if t.name in done or t.name in path:
            return
        path.add(t.name)
        for _, ref, _ in t.foreign_keys:
            if ref in by_name:
                visit(by_name[ref], path)
        done.add(t.name)
        out.append(t)

    for t in tables:
        visit(t, set())
    return out


# ------------------------------------------------------------------------------------------------ rows


_CHECK_TIMEOUT_S = 30.0
_CHECK_MAX_ROWS = 100_000


def _sql_types(tables: list[Table]):
    """The copy's column types as a sqlglot schema (built once: the transpiler reads it for every query)."""
    from sqlglot.schema import ensure_schema

    sql = {"integer": "INT", "bigint": "BIGINT", "double": "DOUBLE", "text": "TEXT", "blob": "BLOB"}
    return ensure_schema({t.name: {c.name: sql[c.kind] for c in t.columns} for t in tables}, dialect="sqlite")


def _why_differ(gold, got) -> str | None:
    """None when the copy's result is the SQLite result (the comparison EX uses), else why not."""
    if not gold.ok:
        return f"fails on SQLite: {gold.error}"
    if not got.ok:
        return f"fails on the copy: {got.error}"
    if gold.truncated or got.truncated:
        return f"more than {_CHECK_MAX_ROWS} rows: not compared"
    return None


def _with_tiebreak(sql: str) -> str | None:
    """A SQLite query whose outermost ORDER BY is made total by every output column (ORDER BY ..., 1, 2, ...);
    None when it has no ORDER BY to extend."""
    from sqlglot import exp

    from ft.sql.parse import parse_one

    try:
        tree = parse_one(sql)
    except Exception:  # noqa: BLE001
        return None
    order = tree.args.get("order")
    if not isinstance(tree, exp.Select) or order is None:
        return None
    for i in range(1, len(tree.expressions) + 1):
        order.append("expressions", exp.Ordered(this=exp.Literal.number(i)))
    return tree.sql("sqlite")


def _ties_only(path: str, gold_row: Row, target: Database, target_macros, types) -> bool:
    """Whether the results differ only in the order of rows whose ORDER BY values tie (engines choose that order
    freely, and a LIMIT then keeps different ones): with every output column added to the ORDER BY, both agree."""
    broken = _with_tiebreak(gold_row.query)
    if broken is None:
        return False
    try:
        theirs = to_dialect(broken, target.dialect, types)
    except ValueError:
        return False
    a = sqlite_execute(path, broken, gold_row.macros, timeout_s=_CHECK_TIMEOUT_S, max_rows=_CHECK_MAX_ROWS)
    b = target.execute(theirs, target_macros, timeout_s=_CHECK_TIMEOUT_S, max_rows=_CHECK_MAX_ROWS)
    return a.ok and b.ok and results_match(a.rows, b.rows, mode="multiset", ordered=True)


def copy_rows(rows: list[Row], url: str, *, replace: bool = False, log=print) -> tuple[list[Row], CopyReport]:
    """The rows' SQLite databases copied to `url`, and the rows re-pointed at the copies (gold SQL transpiled,
    schema read back from the copy, macros as the engine holds them), with a report of every gold query whose
    result differs (see the module docstring). Every row is kept."""
    target_root = database(url)
    if target_root.engine == "sqlite":
        raise DataError(f"--to-db {url}: the copies go to PostgreSQL or DuckDB (the source is SQLite already)")
    missing = [r for r in rows if not r.db]
    if missing:
        raise DataError(f"{len(missing)} rows have no database to copy (first: {missing[0].origin or '?'}); "
                        "every row needs db / db_path")
    by_db: dict[str, list[Row]] = {}
    for r in rows:
        by_db.setdefault(r.db, []).append(r)
    for path in by_db:
        if database(path).engine != "sqlite":
            raise DataError(f"--to-db copies SQLite databases; '{path}' is {database(path).display}")
    if target_root.engine == "postgres":
        writer = PostgresWriter(target_root, replace)
    else:
        writer = DuckDBWriter(target_root, replace, single=len(by_db) == 1)
    report, out, used_ids = CopyReport(), {}, set()
    try:
        for path, group in by_db.items():
            db_id = (group[0].db_id or Path(path).stem).lower()
            base, k = db_id, 2
            while db_id in used_ids:
                db_id, k = f"{base}_{k}", k + 1
            used_ids.add(db_id)
            src_db = database(path)
            src = sqlite3.connect(f"file:{quote(path)}?mode=ro", uri=True)
            src.text_factory = lambda b: b.decode("utf-8", errors="replace")  # as ft.sql.execute reads text
            try:
                tables = read_tables(src, src_db.schema(), report.notes, db_id)
                macros = list({m["name"]: m for r in group for m in (r.macros or [])}.values())
                log(f"copying {db_id} ({len(tables)} tables) to {target_root.display} ...")
                try:
                    writer.write(db_id, tables, src, macros, report.notes)
                except DataError:
                    raise
                except Exception as e:  # noqa: BLE001 - the engine's refusal, as one line naming the database
                    raise DataError(f"copying '{db_id}' ({path}) to {target_root.url} failed: "
                                    f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
            finally:
                src.close()
            target = database(writer.target(db_id))
            report.databases[db_id] = target.url
            schema = target.schema()
            if target.engine == "postgres":
                target_macros = target.functions() or None
            else:
                target_macros = []
                for m in macros:
                    try:
                        target_macros.append({**m, "body": macro_body(m["body"], "duckdb")})
                    except ValueError as e:
                        report.notes.append(f"{db_id}: macro {m['name']} not transpiled ({e})")
                target_macros = target_macros or None
            types = report.types[db_id] = _sql_types(tables)
            golds: dict[tuple, object] = {}
            for r in group:
                try:
                    query = to_dialect(r.query, target.dialect, types)
                    why = None
                except ValueError as e:
                    query, why = r.query, f"gold SQL not transpiled ({e})"
                key = (r.query, str(r.macros))
                if key not in golds:
                    golds[key] = sqlite_execute(path, r.query, r.macros, timeout_s=_CHECK_TIMEOUT_S,
                                                max_rows=_CHECK_MAX_ROWS)
                gold = golds[key]
                if why is None:
                    got = target.execute(query, target_macros, timeout_s=_CHECK_TIMEOUT_S, max_rows=_CHECK_MAX_ROWS)
                    why = _why_differ(gold, got)
                    if why is None and not results_match(gold.rows, got.rows, mode="multiset",
                                                         ordered=query_has_order_by(r.query)):
                        why = (f"different rows: {len(gold.rows)} on SQLite ({gold.rows[:3]}...), "
                               f"{len(got.rows)} on the copy ({got.rows[:3]}...)")
                        if _ties_only(path, r, target, target_macros, types):
                            why = "ties: " + why + "; the same once every output column breaks ORDER BY ties"
                report.checked += 1
                if why is not None:
                    report.mismatches.append({"origin": r.origin, "db_id": db_id, "question": r.question,
                                              "kind": "ties" if why.startswith("ties: ") else "differ",
                                              "why": why, "gold": r.query, "sql": query})
                out[id(r)] = Row(question=r.question, query=query, schema=schema, db_id=r.db_id, db=target.url,
                                 evidence=r.evidence, difficulty=r.difficulty, macros=target_macros, origin=r.origin)
    finally:
        writer.close()
    return [out[id(r)] for r in rows], report


def rows_from_db(rows: list[Row], url: str | None = None, *, check_gold: bool = True) -> tuple[list[Row], dict]:
    """Rows with `schema` (and `db`, `macros`) filled from their live database: `url` for rows that name none.
    A row that already has a schema keeps it. Each gold query is run once to report those that fail."""
    schemas: dict[str, tuple[str, list[dict]]] = {}
    failed: list[dict] = []
    out = []
    for r in rows:
        name = r.db or url
        if not name:
            raise DataError(f"{r.origin or '?'}: no database for this row; give the URL (sqlft data from-db URL FILE)")
        db = database(name)
        if db.url not in schemas:
            problem = db.problem()
            if problem:
                raise DataError(problem)
            schemas[db.url] = (db.schema(), db.functions())
        schema, functions = schemas[db.url]
        if not schema.strip():
            raise DataError(f"{db.url} has no table this role can read")
        new = Row(question=r.question, query=r.query, schema=r.schema or schema, db_id=r.db_id, db=db.url,
                  evidence=r.evidence, difficulty=r.difficulty, macros=r.macros or functions or None,
                  dialect=r.dialect, origin=r.origin)
        if check_gold and r.query:
            res = db.execute(r.query, new.macros, timeout_s=_CHECK_TIMEOUT_S, max_rows=1)
            if not res.ok:
                failed.append({"origin": r.origin, "question": r.question, "error": res.error})
        out.append(new)
    return out, {"rows": len(out), "databases": sorted(schemas), "gold_failed": failed}
