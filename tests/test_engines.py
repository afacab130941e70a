"""PostgreSQL and DuckDB wherever SQLite works: one engine interface (ft/sql/engine.py), on real engines.

- naming a database: URLs, bare paths, passwords refused and masked everywhere they could be printed;
- untrusted SQL on PostgreSQL (a real server this session starts: tests/pg_server.py) and DuckDB (real files): every
  kind of case the SQLite sandbox is tested with is refused or stopped, and the database is unchanged afterwards
  (row counts and a checksum of every table); PostgreSQL as a superuser (the worst case) and as a read-only role;
- values: the same answer compares equal whichever engine ran it, a different one never does;
- validation in the dialect (PostgreSQL SQL a SQLite-only validator rejected), the engine as the final word;
- introspection: CREATE TABLE text with keys and comments, the database's own functions;
- the bundled held-out split copied to both engines (`sqlft data convert --to-db`): every gold query returns the
  SQLite rows there (or differs only in the order of tied rows, each checked), 100 % EX scoring gold on each engine,
  the same model answers get the same outcomes on all three (and an answer that differs on one engine is caught);
- the 170-table warehouse in PostgreSQL feeds the linker through introspection and value reads;
- on PostgreSQL: a voting evaluation, a GRPO step, `sqlft generate --db postgresql://...` with rows, `sqlft data
  from-db`, `sqlft data convert --to-db` (with a gold query that can't agree, reported and exit 1).
"""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, SCHEMA, build_shop_db
from pg_server import postgres  # noqa: F401 - the session fixture

from ft.data.copy_db import copy_rows
from ft.data.rows import DataError, Row
from ft.data.sources import check_rows
from ft.eval.scoring import score_one
from ft.sql.engine import DatabaseError, database, engine_of
from ft.sql.execute import results_match
from ft.sql.guard import redact
from ft.sql.validate import validate

SECRET = "s3cr3t-pw"


# ------------------------------------------------------------------------------------------------ naming


def test_database_names(tmp_path):
    assert database(tmp_path / "x.sqlite").engine == "sqlite"
    assert database("x.duckdb", tmp_path).location == str(tmp_path / "x.duckdb")
    assert database("sqlite:///rel/x.sqlite", tmp_path).location == str(tmp_path / "rel" / "x.sqlite")
    assert database(f"sqlite:///{tmp_path}/x.sqlite").location == str(tmp_path / "x.sqlite")  # 4 slashes: absolute
    d = database(f"duckdb:///{tmp_path}/x.duckdb")
    assert d.engine == "duckdb" and database(d.url) == d and d.dialect == "duckdb"
    pg = database("postgresql://me@db.example:5433/sales?sslmode=require")
    assert pg.engine == "postgres" and pg.display == "PostgreSQL" and not pg.is_file
    assert database("postgres://me@h/db").url == "postgresql://me@h/db"
    for bad in ("mysql://me@h/db", "sqlite://host/x.sqlite", ""):
        with pytest.raises(DatabaseError):
            database(bad)
    assert engine_of("postgresql://x@y/z") == "postgres" and engine_of(None) is None


def test_passwords_are_refused_and_never_printed(tmp_path):
    for url in (f"postgresql://me:{SECRET}@h/db", f"postgresql://me@h/db?password={SECRET}"):
        with pytest.raises(DatabaseError) as e:
            database(url)
        assert SECRET not in str(e.value) and "PGPASSWORD" in str(e.value)
    assert SECRET not in redact(f"could not connect to postgresql://me:{SECRET}@h/db (password={SECRET})")
    # a row: a data error naming the row, without the password
    row = Row("q", "SELECT 1", SCHEMA, db=f"postgresql://me:{SECRET}@h/db", origin="mine.jsonl:3")
    with pytest.raises(DataError) as e:
        check_rows([row], skip_bad_rows=False)
    assert "mine.jsonl:3" in str(e.value) and SECRET not in str(e.value)
    # the config: refused before anything is written or logged
    from ft.config import ConfigError, load_config

    with pytest.raises(ConfigError) as e:
        load_config(None, {"data.db": f"postgresql://me:{SECRET}@h/db"})
    assert SECRET not in str(e.value)
    # a command line: one error line, exit 2, no password
    out = subprocess.run([sys.executable, "-m", "ft.data", "from-db", f"postgresql://me:{SECRET}@h/db",
                          str(tmp_path / "q.jsonl"), "--out", str(tmp_path / "o.jsonl")],
                         capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 2 and SECRET not in out.stdout + out.stderr and "Traceback" not in out.stderr


# ------------------------------------------------------------------------------------------------ the shop copies


@pytest.fixture(scope="module")
def shop(tmp_path_factory, postgres):  # noqa: F811 - the fixture
    """conftest's shop database on all three engines (rows re-pointed by `copy_rows`, as `convert --to-db` does),
    with a function in PostgreSQL and comments on both copies."""
    root = tmp_path_factory.mktemp("shop")
    sqlite_db = build_shop_db(root / "shop.sqlite")
    rows = [Row("How many products are there?", "SELECT COUNT(*) FROM products", SCHEMA, "shop", str(sqlite_db),
                macros=[{"name": "net", "params": ["x"], "body": "ROUND(:x / 1.2, 2)", "doc": "x without 20 % tax"}])]
    pg_rows, pg_report = copy_rows(rows, postgres.create_database("shop"), log=lambda *_: None)
    duck_rows, duck_report = copy_rows(rows, f"duckdb:///{root}/shop.duckdb", log=lambda *_: None)
    assert pg_report.mismatches == [] and duck_report.mismatches == []
    with postgres.admin("shop") as conn:
        conn.execute("COMMENT ON COLUMN shop.orders.total IS 'order total in EUR'")
        conn.execute("CREATE ROLE sqlft_reader LOGIN")
        conn.execute("GRANT USAGE ON SCHEMA shop TO sqlft_reader")
        conn.execute("GRANT SELECT ON ALL TABLES IN SCHEMA shop TO sqlft_reader")
    return {"sqlite": rows[0], "postgres": pg_rows[0], "duckdb": duck_rows[0], "root": root, "server": postgres}


def pg_state(server, dbname: str) -> dict:
    """Every table's row count and checksum (md5 of its rows in order), and the catalog's objects."""
    with server.admin(dbname) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables "
            "WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1")]
        state = {t: conn.execute(f"SELECT count(*), md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), '')) "
                                 f"FROM {t} x").fetchone() for t in tables}
        state["objects"] = conn.execute("SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = relnamespace "
                                        "WHERE nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')"
                                        ).fetchone()
        state["roles"] = conn.execute("SELECT string_agg(rolname || rolsuper::text, ',' ORDER BY rolname) "
                                      "FROM pg_roles").fetchone()
    return state


def file_state(path: Path) -> tuple:
    return hashlib.sha256(path.read_bytes()).hexdigest(), sorted(p.name for p in path.parent.iterdir())


# Every kind of untrusted SQL the SQLite sandbox is tested with (tests/test_sql.py), in each engine's own words.
PG_REFUSED = [
    "DROP TABLE customers", "DELETE FROM orders", "UPDATE orders SET total = 0", "TRUNCATE orders",
    "INSERT INTO customers VALUES (999, 'x', 'y')", "CREATE TABLE evil (a int)", "CREATE TEMP TABLE evil (a int)",
    "ALTER TABLE customers ADD COLUMN x int", "GRANT ALL ON customers TO PUBLIC", "CREATE ROLE evil SUPERUSER",
    "SET default_transaction_read_only = off", "BEGIN", "COMMIT", "VACUUM", "ANALYZE customers",
    "SELECT 1; DELETE FROM orders", "DELETE FROM orders; SELECT 1", "SELECT 1; DROP TABLE customers;",
    "WITH x AS (DELETE FROM orders RETURNING *) SELECT count(*) FROM x", "SELECT * FROM customers FOR UPDATE",
    "SELECT * INTO evil FROM customers", "EXPLAIN ANALYZE DELETE FROM orders", "DO $$ BEGIN DELETE FROM orders; END $$",
    "COPY customers TO '/tmp/sqlft-evil.csv'", "COPY (SELECT 1) TO PROGRAM 'touch /tmp/sqlft-evil'",
    "SELECT pg_read_file('/etc/passwd')", "SELECT * FROM pg_catalog.pg_ls_dir('.')", "SELECT lo_import('/etc/passwd')",
    "SELECT pg_read_binary_file('/etc/hostname')", "SELECT \"pg_stat_file\"('/etc/passwd')",
    "SELECT set_config('statement_timeout', '0', false)", "SELECT query_to_xml('DELETE FROM orders', true, true, '')",
    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity", "SELECT pg_reload_conf()",
    "SELECT length(repeat('x', 200000000))", "PREPARE p AS DELETE FROM orders", "LISTEN ch", "CALL nothing()",
    "SELECT rolname, rolpassword FROM pg_authid", "SELECT query FROM pg_catalog.pg_stat_activity",
]
PG_STOPPED = [  # runs, and the time limit ends it
    "SELECT pg_sleep(30)",
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c",
    "SELECT count(*) FROM orders a, orders b, orders c, orders d, orders e",
]
# Huge values over a cross join: harmless either way, stopped by the time limit on a slow (busy) machine, or capped
# by the row limit on a fast one (the server-side cursor fetches max_rows + 1 rows, never the 1,600 MB result)
PG_CAPPED = "SELECT repeat('x', 1000000) FROM orders a, orders b"
DUCK_REFUSED = [
    "DROP TABLE customers", "DELETE FROM orders", "UPDATE orders SET total = 0", "TRUNCATE orders",
    "INSERT INTO customers VALUES (999, 'x', 'y')", "CREATE TABLE evil (a INTEGER)", "CREATE TEMP TABLE evil (a int)",
    "ALTER TABLE customers ADD COLUMN x INTEGER", "CREATE MACRO evil(a) AS a", "SET enable_external_access = true",
    "SET memory_limit = '100GB'", "PRAGMA enable_profiling", "BEGIN", "CHECKPOINT", "VACUUM",
    "SELECT 1; DELETE FROM orders", "DELETE FROM orders; SELECT 1", "SELECT 1; DROP TABLE customers;",
    "WITH x AS (SELECT 1) DELETE FROM orders", "COPY customers TO '/tmp/sqlft-evil.csv'",
    "EXPORT DATABASE '/tmp/sqlft-evil'", "ATTACH '/tmp/sqlft-evil.duckdb' AS evil", "INSTALL httpfs", "LOAD httpfs",
    "SELECT * FROM read_csv('/etc/passwd')", "SELECT * FROM read_text('/etc/passwd')", "SELECT * FROM glob('/*')",
    "FROM read_csv_auto('/etc/passwd')", "SELECT * FROM '/etc/passwd'", "SELECT * FROM 'https://example.com/x.csv'",
    "SELECT * FROM query('DELETE FROM orders')", "SELECT * FROM query('SELECT * FROM read_text(''/etc/passwd'')')",
    "SELECT length(repeat('x', 200000000))", "SELECT * FROM sqlite_scan('/tmp/x.sqlite', 't')",
    "SELECT * FROM duckdb_secrets()",
]
DUCK_STOPPED = [
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c",
    "SELECT count(*) FROM orders a, orders b, orders c, orders d, orders e",
    "SELECT count(*) FROM range(1000000000000)",
]


def test_postgres_refuses_or_stops_untrusted_sql_and_nothing_changes(shop):
    server = shop["server"]
    before = pg_state(server, "shop")
    for url in (shop["postgres"].db, shop["postgres"].db.replace(f"{server.user}@", "sqlft_reader@")):
        db = database(url)
        assert db.execute("SELECT count(*) FROM customers").rows == [(40,)]  # works as the read-only role too
        assert db.schema().count("CREATE TABLE") == 3 and db.compile_error("SELECT name FROM customers") is None
        for sql in PG_REFUSED + PG_STOPPED:
            res = db.execute(sql, timeout_s=0.5, max_rows=100)
            assert not res.ok and res.rows is None, (url, sql, res)
            if sql in PG_STOPPED:
                assert "timeout" in res.error and res.elapsed_s < 5, (sql, res)
        res = db.execute(PG_CAPPED, timeout_s=0.5, max_rows=100)
        assert (res.ok and res.truncated and len(res.rows) == 100) or "timeout" in res.error, res.error
        assert res.elapsed_s < 5
        assert pg_state(server, "shop") == before
    assert not Path("/tmp/sqlft-evil.csv").exists() and not Path("/tmp/sqlft-evil").exists()
    # the layers under the statement check hold on their own: a read-only session refuses the write itself
    import psycopg

    from ft.sql import engine_postgres

    conn = engine_postgres._connect(database(shop["postgres"].db), 1.0)
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        conn.execute("DELETE FROM orders")
    conn.close()
    # a row cap: the server-side cursor fetched only what was asked for
    res = database(shop["postgres"].db).execute("SELECT * FROM orders ORDER BY id", max_rows=7)
    assert res.ok and res.truncated and [r[0] for r in res.rows] == list(range(1, 8))
    assert pg_state(server, "shop") == before


def test_duckdb_refuses_or_stops_untrusted_sql_and_nothing_changes(shop):
    db = database(shop["duckdb"].db)
    path = Path(db.location)
    before = file_state(path)
    assert db.execute("SELECT count(*) FROM customers").rows == [(40,)]
    settings = db.execute("SELECT current_setting('memory_limit'), current_setting('enable_external_access'), "
                          "current_setting('temp_directory'), current_setting('lock_configuration'), "
                          "current_setting('threads')").rows
    # 1 GB, no files or network, nothing spilled to disk, locked, one thread (the same rows in the same order)
    assert settings == [("953.6 MiB", 0, "", 1, 1)]
    for sql in DUCK_REFUSED + DUCK_STOPPED:
        res = db.execute(sql, timeout_s=0.5, max_rows=100)
        assert not res.ok and res.rows is None, (sql, res)
        if sql in DUCK_STOPPED:
            assert "timeout" in res.error and res.elapsed_s < 5, (sql, res)
    assert file_state(path) == before
    assert not Path("/tmp/sqlft-evil.csv").exists() and not Path("/tmp/sqlft-evil.duckdb").exists()
    # the connection itself is read-only and locked, under the statement checks
    from ft.sql import engine_duckdb

    conn = engine_duckdb._connect(db)
    for sql in ("DELETE FROM orders", "SET enable_external_access = true"):
        with pytest.raises(Exception, match="read-only|locked"):
            conn.execute(sql)
    conn.close()
    res = db.execute("SELECT * FROM orders ORDER BY id", max_rows=7)
    assert res.ok and res.truncated and [r[0] for r in res.rows] == list(range(1, 8))
    assert file_state(path) == before


def test_values_compare_across_engines(shop):
    pg, duck = database(shop["postgres"].db), database(shop["duckdb"].db)
    sqlite_rows = database(shop["sqlite"].db).execute(
        "SELECT 1.5, 2, '2024-01-02', '2024-01-02 03:04:05', 1, '1 days 02:00:00', NULL").rows
    pg_rows = pg.execute("SELECT 1.50::numeric, 2.00::numeric, DATE '2024-01-02', TIMESTAMP '2024-01-02 03:04:05', "
                         "TRUE, INTERVAL '1 day 2 hours', NULL").rows
    duck_rows = duck.execute("SELECT 1.50::DECIMAL(5,2), 2.00::DECIMAL(5,2), DATE '2024-01-02', "
                             "TIMESTAMP '2024-01-02 03:04:05', TRUE, INTERVAL '1 day 2 hours', NULL").rows
    assert sqlite_rows == pg_rows == duck_rows
    assert json.dumps(pg_rows) == json.dumps(sqlite_rows)  # plain JSON in predictions files
    assert pg.execute("SELECT TIMESTAMPTZ '2024-01-02 05:04:05+02'").rows == [("2024-01-02 03:04:05",)]
    # a different answer never compares equal (negative controls)
    for other in ("SELECT 1.51::numeric", "SELECT DATE '2024-01-03'", "SELECT FALSE", "SELECT INTERVAL '1 day'"):
        assert not results_match(pg.execute(other).rows, [sqlite_rows[0][:1]])
    # the same query over the same data: identical rows
    q = "SELECT city, COUNT(*), ROUND(AVG(id), 2) FROM customers GROUP BY city ORDER BY city"
    from ft.sql.transpile import to_dialect

    assert database(shop["sqlite"].db).execute(q).rows == pg.execute(to_dialect(q, "postgres")).rows \
        == duck.execute(to_dialect(q, "duckdb")).rows


# ------------------------------------------------------------------------------------------------ validation


PG_GOOD = [
    "SELECT count(*) FROM orders WHERE day::date >= current_date - interval '30 days'",
    "SELECT day::text, total FROM orders",
    "SELECT EXTRACT(YEAR FROM day::date) AS y, count(*) FROM orders GROUP BY 1",
    "SELECT date_trunc('month', day::date) AS m, sum(total) FROM orders GROUP BY m ORDER BY m",
    "SELECT name FROM customers WHERE city ILIKE 'par%'",
    "SELECT name, total FROM customers c JOIN orders o ON o.customer_id = c.id ORDER BY total DESC NULLS LAST LIMIT 3",
    "SELECT net(total) FROM orders",  # the database's own function
]


def test_validation_follows_the_dialect_and_the_engine_decides(shop):
    pg_row, duck_row = shop["postgres"], shop["duckdb"]
    pg = database(pg_row.db)
    for k, sql in enumerate(PG_GOOD):
        assert validate(sql, pg_row.schema, pg_row.macros, dialect="postgres", db=pg).ok, sql
        assert database(pg_row.db).execute(sql).ok, sql
        if k < 5:  # the examples: what a SQLite-only validator rejected
            assert not validate(sql, SCHEMA, dialect="sqlite").ok, sql
    bad = validate("SELECT totl FROM orders", pg_row.schema, dialect="postgres", db=pg)
    assert not bad.ok and bad.errors[0].kind == "unknown_column" and bad.errors[0].suggestion == "total"
    bad = validate("SELECT strftime('%Y', day) FROM orders", pg_row.schema, dialect="postgres", db=pg)
    assert not bad.ok and bad.errors[0].kind == "unknown_function" and bad.errors[0].suggestion == "to_char"
    bad = validate("SELECT * FROM ordr", pg_row.schema, dialect="postgres", db=pg)
    assert bad.errors[0].kind == "unknown_table" and bad.errors[0].suggestion == "orders"
    assert not validate("DELETE FROM orders", pg_row.schema, dialect="postgres", db=pg).ok
    duck = database(duck_row.db)
    for sql in ("SELECT strftime(CAST(day AS DATE), '%Y') AS y, count(*) FROM orders GROUP BY ALL",
                "FROM orders SELECT max(total)", "SELECT net(total) FROM orders"):
        assert validate(sql, duck_row.schema, duck_row.macros, dialect="duckdb", db=duck).ok, sql
    bad = validate("SELECT nme FROM customers", duck_row.schema, dialect="duckdb", db=duck)
    assert bad.errors[0].kind == "unknown_column" and bad.errors[0].suggestion == "name"
    # the row carries it: its database's dialect unless data.dialect says otherwise
    assert pg_row.sql_dialect == "postgres" and duck_row.sql_dialect == "duckdb" and shop["sqlite"].sql_dialect == \
        "sqlite"


def test_introspection_keys_comments_functions_and_the_prompt(shop):
    from ft.data.prompt import build_prompt

    pg_row, duck_row = shop["postgres"], shop["duckdb"]
    ddl = database(pg_row.db).schema()
    assert "CREATE TABLE customers (id integer PRIMARY KEY" in ddl
    assert "customer_id integer REFERENCES customers(id)" in ddl and "-- order total in EUR" in ddl
    fn = database(pg_row.db).functions()
    assert [f["name"] for f in fn] == ["net"] and fn[0]["doc"] == "x without 20 % tax" and "body" not in fn[0]
    assert "returns numeric" in fn[0]["signature"]
    assert "REFERENCES customers(id)" in database(duck_row.db).schema()
    prompt = build_prompt(pg_row)
    assert "Generate a PostgreSQL query" in prompt and "-- function net(x double precision) returns numeric" in prompt
    assert "Generate a DuckDB query" in build_prompt(duck_row) and "-- macro net(x)" in build_prompt(duck_row)
    assert "Generate a SQL query" in build_prompt(shop["sqlite"])  # SQLite keeps the wording adapters know


# ------------------------------------------------------------------------------------------------ the bundled split


@pytest.fixture(scope="module")
def bundled(tmp_path_factory, postgres):  # noqa: F811 - the fixture
    """The bundled held-out split (244 questions, 8 databases with the 170-table warehouse) on SQLite, and copied
    to PostgreSQL and DuckDB by `copy_rows` (what `sqlft data convert bundled --split eval --to-db` runs)."""
    from ft.data.sources import load_source

    rows, _ = check_rows(load_source("bundled", "bundled", "eval"), skip_bad_rows=False)
    root = tmp_path_factory.mktemp("bundled")
    pg_rows, pg_report = copy_rows(rows, postgres.create_database("bundled"), log=lambda *_: None)
    duck_rows, duck_report = copy_rows(rows, f"duckdb:///{root}/duck", log=lambda *_: None)
    return {"sqlite": rows, "postgres": pg_rows, "duckdb": duck_rows,
            "reports": {"postgres": pg_report, "duckdb": duck_report}}


@pytest.mark.slow
def test_every_gold_query_returns_the_sqlite_rows_on_each_engine(bundled):
    for engine, report in bundled["reports"].items():
        summary = report.to_dict()
        assert summary["gold_checked"] == 244
        # Nothing differs but the order of rows whose ORDER BY values tie (an engine's free choice, which a LIMIT
        # then cuts differently); each such case was re-run with every output column breaking the ties, and agreed.
        assert summary["gold_differ"] == 0, (engine, [m for m in report.mismatches if m["kind"] == "differ"])
        assert summary["gold_differ_in_tie_order_only"] <= 2, (engine, report.mismatches)
        assert summary["gold_agree"] >= 242
    assert {r.db_id for r in bundled["postgres"]} == {r.db_id for r in bundled["sqlite"]}
    assert all(r.db.startswith("postgresql://") and r.db_path is None for r in bundled["postgres"])
    assert all(r.sql_dialect == "duckdb" for r in bundled["duckdb"])


@pytest.mark.slow
def test_gold_scores_100_percent_on_each_engine(bundled):
    """Each engine's gold SQL as the model's answer, through the evaluation's own path (validation in the engine's
    dialect with the engine as the final word, safe execution, comparison): all correct, none invalid."""
    from ft.eval.scoring import check_answer, gold_result, judge

    for engine in ("postgres", "duckdb"):  # (SQLite's own: tests/test_synthetic.py)
        golds: dict = {}
        outcomes = [judge(r, check_answer(r, r.query + "\n```", 10, 10000), gold_result(r, 10, 10000, golds)).outcome
                    for r in bundled[engine]]
        assert outcomes.count("correct") == 244, (engine, [(r.query, o) for r, o in zip(bundled[engine], outcomes)
                                                          if o != "correct"][:3])


def _mutated(sql: str) -> str:
    """A wrong answer near the gold one: its first string literal or number changed."""
    from sqlglot import exp

    from ft.sql.parse import parse_one

    tree = parse_one(sql)
    lit = next((n for n in tree.find_all(exp.Literal) if n.is_string), None) or \
        next((n for n in tree.find_all(exp.Literal) if n.is_int), None)
    if lit is None:
        return sql + " LIMIT 0"
    lit.replace(exp.Literal.string(lit.this + "x") if lit.is_string else exp.Literal.number(int(lit.this) + 1))
    return tree.sql("sqlite")


def outcomes_by_engine(bundled, every: int = 3, override: dict | None = None) -> dict[str, dict]:
    """The outcome of the same answers (a wrong one and an invalid one per question, written for SQLite and
    transpiled as `convert --to-db` transpiles gold) on each engine's copy."""
    from ft.eval.scoring import check_answer, gold_result, judge
    from ft.sql.parse import tables_in_query
    from ft.sql.transpile import to_dialect

    out: dict[str, dict] = {}
    for engine in ("sqlite", "postgres", "duckdb"):
        types = bundled["reports"].get(engine).types if engine != "sqlite" else {}
        golds: dict = {}
        out[engine] = {}
        for i in range(0, 244, every):
            src, row = bundled["sqlite"][i], bundled[engine][i]
            first_table = sorted(tables_in_query(src.query))[0]
            for kind, sql in (("wrong", _mutated(src.query)), ("invalid", f"SELECT no_such_col FROM {first_table}")):
                text = (override or {}).get((engine, i, kind)) or to_dialect(sql, engine, types.get(src.db_id.lower()))
                p = judge(row, check_answer(row, text + "\n```", 10, 10000), gold_result(row, 10, 10000, golds))
                out[engine][(i, kind)] = p.outcome
    return out


def disagreements(outcomes: dict[str, dict]) -> list:
    base = outcomes["sqlite"]
    return [(engine, key, base[key], got[key]) for engine, got in outcomes.items() for key in base
            if got[key] != base[key]]


@pytest.mark.slow
def test_the_same_answers_get_the_same_outcomes_on_every_engine(bundled):
    outcomes = outcomes_by_engine(bundled)
    assert disagreements(outcomes) == []
    kinds = set(outcomes["sqlite"].values())
    assert "wrong" in kinds and "invalid" in kinds
    # negative control: an answer that differs on one engine (there the gold query, not the wrong answer) is caught
    i = next(k for (k, kind), o in outcomes["sqlite"].items() if kind == "wrong" and o == "wrong")
    changed = outcomes_by_engine(bundled, every=244 if i == 0 else i,
                                 override={("duckdb", i, "wrong"): bundled["duckdb"][i].query})
    assert disagreements({e: {(i, "wrong"): o[(i, "wrong")]} for e, o in changed.items()}) == \
        [("duckdb", (i, "wrong"), "wrong", "correct")]


@pytest.mark.slow
def test_the_warehouse_in_postgres_feeds_the_linker(bundled):
    """170 tables introspected from PostgreSQL (comments included) link as well as the SQLite DDL does, and the
    value hints are read from PostgreSQL."""
    from ft.data import linking

    def words(text: str) -> int:
        return len(text.split())

    sqlite_rows = [r for r in bundled["sqlite"] if r.db_id == "warehouse"]
    pg_rows = [r for r in bundled["postgres"] if r.db_id == "warehouse"]
    assert len(pg_rows) == 12 and pg_rows[0].schema.count("CREATE TABLE") == 170
    assert "-- ISO 4217 code" in pg_rows[0].schema  # column comments, from the live database
    recalls = {}
    for name, rows in (("sqlite", sqlite_rows), ("postgres", pg_rows)):
        linking.values._VALUE_CACHE.clear()
        hits = [linking.recall(r, linking.link_schema(r, 1024, words))[0] for r in rows]
        recalls[name] = sum(hits) / len(hits)
    assert recalls["postgres"] >= recalls["sqlite"] - 0.05 and recalls["postgres"] >= 0.9, recalls
    index = linking.value_index(pg_rows[0].db, linking.parse_schema(pg_rows[0].schema))
    assert index is not None and index.queries > 100 and index.phrases


# ------------------------------------------------------------------------------------------------ a model on PostgreSQL

QUESTION = "How many products are there?"
ANSWERS = ["SELECT COUNT(*) FROM products",  # the right one (20)
           "SELECT COUNT(*) FROM customers", "SELECT COUNT(*) FROM orders", "SELECT MAX(price) FROM products"]


@pytest.fixture(scope="module")
def warm(tiny_model, shop, tmp_path_factory):
    """The tiny random Llama fine-tuned (all weights, in-process, a few seconds) on the PostgreSQL prompt of QUESTION
    (the schema as introspected, the dialect named; the demo config's schema_first template) to answer with each of
    ANSWERS, the right one twice: its greedy answer is right, and its samples differ (what voting and GRPO need)."""
    import torch
    from transformers import AutoModelForCausalLM

    from ft.data.batching import collate
    from ft.data.prompt import encode_example
    from ft.model import load_tokenizer
    from ft.train import token_loss_sum

    row = shop["postgres"]
    tok = load_tokenizer(str(tiny_model))
    ex = [encode_example(Row(QUESTION, a, row.schema, "shop", db=row.db, macros=row.macros), tok, "schema_first",
                         2048, "error") for a in ANSWERS + ANSWERS[:1]]  # the right one twice: the greedy answer
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_pretrained(str(tiny_model), dtype=torch.float32)
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
        batch = collate([[i] for i in range(len(ex))], ex, tok.pad_token_id, packed=False)
        for _ in range(120):
            loss, n = token_loss_sum(model, batch)
            (loss / n).backward()
            opt.step()
            opt.zero_grad()
    finally:
        torch.set_num_threads(threads)
    out = tmp_path_factory.mktemp("warm-pg")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.mark.slow
def test_voting_evaluation_and_a_grpo_step_against_postgres(warm, shop, monkeypatch, tmp_path):
    import torch

    from ft import runlock
    from ft.config import EvalConfig, load_config, resolve
    from ft.eval.scoring import evaluate
    from ft.sql import engine_postgres
    from ft.train import setup

    ran = []
    real = engine_postgres.execute
    monkeypatch.setattr(engine_postgres, "execute", lambda db, sql, *a: ran.append(sql) or real(db, sql, *a))
    row = Row(QUESTION, ANSWERS[0], shop["postgres"].schema, "shop", db=shop["postgres"].db,
              macros=shop["postgres"].macros)
    from transformers import AutoModelForCausalLM

    from ft.model import load_tokenizer

    tok = load_tokenizer(str(warm))
    model = AutoModelForCausalLM.from_pretrained(str(warm), dtype=torch.float32).eval()
    torch.manual_seed(0)
    preds, summary = evaluate(model, tok, [row, row], EvalConfig(samples=4, max_new_tokens=16, batch_size=2),
                              template="schema_first")
    assert all(p.voted and p.candidates == 5 and p.valid_candidates >= 1 for p in preds)
    assert summary["ex"] == 1.0 and summary["valid_candidates"] >= 1
    assert len(ran) >= 2 * 5  # every candidate ran on PostgreSQL (and the gold query, once)
    # a GRPO step of the recipe (ft.train.setup, the GRPO objective): completions sampled from the policy, rewarded
    # by running them on PostgreSQL, one update
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps(row.to_dict()) + "\n" for _ in range(2)))
    cfg = load_config(None, {"model.name_or_path": str(warm), "quantization.mode": "none",
                             "quantization.dtype": "float32", "quantization.compute_dtype": "float32",
                             "model.gradient_checkpointing": "false", "lora.r": "8", "lora.alpha": "16",
                             "lora.dropout": "0", "lora.target_modules": "q_proj,v_proj", "train.objective": "grpo",
                             "train.per_device_batch_size": "2", "train.warmup_steps": "0",
                             "grpo.group_size": "4", "grpo.max_new_tokens": "16", "data.max_length": "2048",
                             "data.template": "schema_first", "data.source": str(rows), "data.eval_fraction": "0",
                             "train.output_dir": str(tmp_path / "run"), "tracking.wandb": "false",
                             "eval.at_end": "false"})
    torch.manual_seed(0)
    run = setup(resolve(cfg, training=True))
    before = [p.detach().clone() for p in run.model.parameters() if p.requires_grad]
    ran.clear()
    sampled = run.objective.sample(run, [[row, row]], 0)
    result = run.objective.learn(run, sampled)
    rewards = [c.reward for grp in sampled.flat for c in grp.completions]
    assert len(ran) >= 8 and len(rewards) == 8 and max(rewards) == 1.0  # a right answer, found by executing it
    assert result.stats["correct"] >= 1
    after = [p.detach() for p in run.model.parameters() if p.requires_grad]
    assert any(not torch.equal(a, b) for a, b in zip(before, after)) or not any(grp.active for grp in sampled.flat)
    runlock.release(run.lock)


@pytest.mark.slow
def test_generate_with_only_a_postgres_url_returns_rows(warm, shop):
    out = subprocess.run([sys.executable, "-m", "ft.generate", "--model", str(warm), "--db", shop["postgres"].db,
                          "--question", QUESTION, "--max-new-tokens", "16", "--quantization", "none",
                          "--samples", "2", "--data.template", "schema_first"],  # as `warm` was trained: a model
                         capture_output=True, text=True, cwd=REPO)        # of one's own starts from the defaults
    assert out.returncode == 0, out.stderr[-3000:]
    assert "SELECT COUNT(*) FROM products" in out.stdout and "\n20\n" in out.stdout  # the SQL, then its rows
    assert "all 3 tables shown to the model" in out.stderr and "PostgreSQL database" in out.stderr


# ------------------------------------------------------------------------------------------------ the data commands


def test_from_db_fills_schema_and_convert_to_db_reports_what_differs(shop, tmp_path):
    server = shop["server"]
    # from-db: rows of question + SQL get the live schema and the database (and its functions)
    questions = tmp_path / "questions.jsonl"
    questions.write_text(json.dumps({"question": QUESTION, "query": ANSWERS[0]}) + "\n"
                         + json.dumps({"question": "Broken?", "query": "SELECT nope FROM products"}) + "\n")
    out = subprocess.run([sys.executable, "-m", "ft.data", "from-db", shop["postgres"].db, str(questions), "--out",
                          str(tmp_path / "rows.jsonl")], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [json.loads(line) for line in (tmp_path / "rows.jsonl").read_text().splitlines()]
    assert rows[0]["db"] == shop["postgres"].db and "CREATE TABLE products" in rows[0]["schema"]
    assert rows[0]["macros"][0]["name"] == "net" and "1 of 2 gold queries fail" in out.stderr
    # and the rows train / evaluate as they are: loaded, checked, scored on PostgreSQL
    from ft.data.sources import load_source

    loaded, _ = check_rows(load_source(str(tmp_path / "rows.jsonl")), skip_bad_rows=False)
    assert score_one(loaded[0], ANSWERS[0] + "\n```", 0, 5, 100).outcome == "correct"
    # convert --to-db: a gold query that can't return the same rows is reported (and the exit code says so)
    src = tmp_path / "src.jsonl"
    src.write_text("".join(json.dumps({"question": q, "query": sql, "schema": SCHEMA, "db_path": shop["sqlite"].db})
                           + "\n" for q, sql in ((QUESTION, ANSWERS[0]), ("Types?", "SELECT typeof(price) FROM "
                                                                                   "products LIMIT 1"))))
    url = server.create_database("converted")
    res = subprocess.run([sys.executable, "-m", "ft.data", "convert", str(src), "--to-db", url, "--out",
                          str(tmp_path / "pg.jsonl")], capture_output=True, text=True, cwd=REPO)
    assert res.returncode == 1, res.stderr[-2000:]
    assert "gold queries returning the same rows as on SQLite: 1 of 2" in res.stdout
    report = json.loads((tmp_path / "pg.jsonl.report.json").read_text())
    assert [m["origin"].rsplit(":", 1)[1] for m in report["mismatches"]] == ["2"] and report["gold_differ"] == 1
    written = [json.loads(line) for line in (tmp_path / "pg.jsonl").read_text().splitlines()]
    assert len(written) == 2 and all(r["db"].startswith("postgresql://") for r in written)  # nothing dropped
    again = subprocess.run([sys.executable, "-m", "ft.data", "convert", str(src), "--to-db", url, "--out",
                            str(tmp_path / "pg2.jsonl")], capture_output=True, text=True, cwd=REPO)
    assert again.returncode == 2 and "--replace" in again.stderr  # a copy is never overwritten unasked


def test_tie_order_is_told_apart_from_a_real_difference(shop):
    """The convert check's classifier: rows that differ only in the order of tied ORDER BY values are 'ties'; a
    copy whose data differs is not (negative control)."""
    from ft.data.copy_db import _ties_only

    server = shop["server"]
    sqlite_row = shop["sqlite"]
    url = server.create_database("ties")
    rows, report = copy_rows([sqlite_row], url, log=lambda *_: None)
    target = database(rows[0].db)
    types = report.types["shop"]
    tied = Row("q", "SELECT name FROM customers ORDER BY city LIMIT 3", SCHEMA, db=sqlite_row.db)
    assert _ties_only(sqlite_row.db, tied, target, None, types)
    with server.admin("ties") as conn:
        conn.execute("UPDATE shop.customers SET city = 'Aaa' WHERE id = 40")
    assert not _ties_only(sqlite_row.db, tied, target, None, types)


def test_data_stats_names_the_dialect_and_flags_gold_written_for_another(tmp_path, capsys):
    """PostgreSQL gold SQL in rows read as SQLite no longer passes silently; with data.dialect it validates."""
    from types import SimpleNamespace

    from ft.data.__main__ import _dialect_stats
    from ft.data.sources import load_source, with_database

    schema = "CREATE TABLE orders (order_id integer PRIMARY KEY, customer text, order_date date, amount numeric);"
    gold = ["SELECT count(*) FROM orders WHERE order_date >= current_date - interval '30 days'",
            "SELECT order_date::text, amount FROM orders",
            "SELECT EXTRACT(YEAR FROM order_date) AS y, count(*) FROM orders GROUP BY 1",
            "SELECT date_trunc('month', order_date) AS m, sum(amount) FROM orders GROUP BY m",
            "SELECT customer FROM orders WHERE customer ILIKE 'an%'"]
    path = tmp_path / "pg.jsonl"
    path.write_text("".join(json.dumps({"question": f"q{i}", "query": q, "schema": schema}) + "\n"
                            for i, q in enumerate(gold)))
    rows, _ = check_rows(load_source(str(path)), skip_bad_rows=False)
    _dialect_stats(rows)
    assert "warning: 5 of 5 gold queries checked do not validate as SQLite" in capsys.readouterr().out
    _dialect_stats(with_database(rows, SimpleNamespace(db=None, dialect="postgresql")))
    out = capsys.readouterr().out
    assert "PostgreSQL 5" in out and "the 5 gold queries checked validate as PostgreSQL" in out


@pytest.mark.slow
def test_a_postgres_user_end_to_end(shop, tiny_model, tmp_path):
    """The README's path for a PostgreSQL user: rows of question + SQL -> `sqlft data from-db` -> train -> the
    end-of-training evaluation executes on the live database (no gold query fails there)."""
    import yaml
    from conftest import make_rows

    questions = tmp_path / "questions.jsonl"
    questions.write_text("".join(json.dumps({"question": r["question"], "query": r["query"]}) + "\n"
                                 for r in make_rows(16)))
    rows = tmp_path / "rows.jsonl"
    out = subprocess.run([sys.executable, "-m", "ft.data", "from-db", shop["postgres"].db, str(questions), "--out",
                          str(rows)], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0 and "gold queries fail" not in out.stderr, out.stderr[-2000:]
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "model": {"name_or_path": str(tiny_model), "gradient_checkpointing": False},
        "quantization": {"mode": "none", "dtype": "float32", "compute_dtype": "float32"},
        "lora": {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]},
        "data": {"source": str(rows), "eval_fraction": 0.25, "max_length": 512},
        "train": {"output_dir": str(tmp_path / "run"), "max_steps": 2, "per_device_batch_size": 4, "seed": 0},
        "tracking": {"wandb": False}, "eval": {"at_end": True, "max_new_tokens": 8, "batch_size": 4}}))
    run = subprocess.run([sys.executable, str(REPO / "ft" / "train.py"), "--config", str(config)],
                         capture_output=True, text=True, cwd=REPO, timeout=600)
    assert run.returncode == 0, run.stderr[-4000:]
    preds = [json.loads(line) for line in (tmp_path / "run" / "eval" / "finetuned_predictions.jsonl")
             .read_text().splitlines()]
    assert len(preds) == 4 and all(p["outcome"] in ("correct", "wrong", "invalid") for p in preds)
