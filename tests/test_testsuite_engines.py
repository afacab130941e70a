"""Test-suite accuracy on DuckDB and PostgreSQL through the same code path as SQLite: neighbours drawn by the same
code (the copies of a database on the three engines get the same neighbours), DuckDB's as read-only files,
PostgreSQL's as schemas of the scratch database `eval.neighbour_db` (refused without it, never reported as EX), the
user's PostgreSQL database left as it was; a filter that filters nothing on the original is caught on each engine
(EX accepts it: the negative control), the right answer passes, and the same answers get the same TS outcomes on
all three copies of a bundled database."""
from __future__ import annotations

import stat
from pathlib import Path

import pytest
from conftest import SCHEMA, build_shop_db
from pg_server import postgres  # noqa: F401 - the session fixture
from test_engines import pg_state

from ft.config import ConfigError, EvalConfig
from ft.data.copy_db import copy_rows
from ft.data.rows import Row
from ft.eval.scoring import score_one
from ft.eval.testsuite import TestSuite
from ft.sql.engine import database

POSITIVE = "SELECT COUNT(*) FROM orders WHERE total > 0"  # every total is positive in the shop database


@pytest.fixture(scope="module")
def copies(tmp_path_factory, postgres):  # noqa: F811 - the fixture
    root = tmp_path_factory.mktemp("ts-engines")
    rows = [Row("positive", POSITIVE, SCHEMA, "shop", str(build_shop_db(root / "shop.sqlite")))]
    pg_rows, _ = copy_rows(rows, postgres.create_database("ts_shop"), log=lambda *_: None)
    duck_rows, _ = copy_rows(rows, f"duckdb:///{root}/shop.duckdb", log=lambda *_: None)
    return {"sqlite": rows[0], "duckdb": duck_rows[0], "postgres": pg_rows[0], "root": root, "server": postgres,
            "scratch": postgres.create_database("ts_scratch")}


def _suite(copies, k=4, scratch=True):
    return TestSuite(EvalConfig(test_suite=k, test_suite_cache=str(copies["root"] / "cache"),
                                neighbour_db=copies["scratch"] if scratch else None))


@pytest.mark.parametrize("engine", ["duckdb", "postgres"])
def test_a_filter_that_filters_nothing_is_caught_on_each_engine(copies, engine):
    row = copies[engine]
    before = pg_state(copies["server"], "ts_shop")
    suite = _suite(copies)
    suite.prepare([row])
    hood = suite.neighbours[row.db]
    assert suite.share(row).kept and all(nb.db.engine == engine and nb.mirror.engine == engine for nb in hood)
    wrong = score_one(row, "SELECT COUNT(*) FROM orders\n```", 0.0, 5, 1000, suite=suite)
    assert wrong.correct and wrong.correct_set  # EX can't tell on the question's database (negative control) ...
    assert wrong.correct_ts is False and "neighbour" in wrong.ts_error  # ... its neighbours can
    right = score_one(row, "SELECT COUNT(1) FROM orders WHERE NOT total <= 0\n```", 0.0, 5, 1000, suite=suite)
    assert right.correct and right.correct_ts
    if engine == "duckdb":  # read-only files, opened by the engine's read-only execute
        for nb in hood:
            for p in (Path(nb.db.location), Path(nb.mirror.location)):
                assert p.is_file() and not p.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)
    else:  # schemas of the scratch database, read with search_path set; the user's database unchanged
        assert all("sqlft_ts_" in nb.db.location and "ts_scratch" in nb.db.location for nb in hood)
        assert pg_state(copies["server"], "ts_shop") == before
        with copies["server"].admin("ts_scratch") as conn:
            schemas = [r[0] for r in conn.execute("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'sqlft_ts_%'")]
        assert len(schemas) == 2 * len(hood)  # each neighbour and its mirror
        # a neighbour is reused, not rebuilt: a second suite finds every schema
        again = _suite(copies)
        again.prepare([row])
        assert [nb.db for nb in again.neighbours[row.db]] == [nb.db for nb in hood]
    # writes through the neighbour's own execute are refused (the engine's read-only layers)
    assert not hood[0].db.execute("DELETE FROM orders").ok
    assert hood[0].db.execute("SELECT COUNT(*) FROM orders").rows[0][0] > 0


def test_postgres_without_a_scratch_database_is_refused_with_the_key_to_set(copies):
    with pytest.raises(ConfigError, match=r"eval\.neighbour_db"):
        _suite(copies, scratch=False).prepare([copies["postgres"]])
    from ft.config import load_config

    with pytest.raises(ConfigError, match=r"eval\.neighbour_db"):
        load_config(None, ["--eval.neighbour_db", "duckdb:///x.duckdb"])


@pytest.mark.slow
def test_the_same_answers_get_the_same_ts_outcomes_on_three_copies_of_a_bundled_database(copies, tmp_path):
    from ft.data.sources import check_rows, load_source
    from ft.sql.mutants import mutants
    from ft.sql.transpile import to_dialect

    rows, _ = check_rows(load_source("bundled", "bundled", "eval"), skip_bad_rows=False)
    rows = [r for r in rows if r.db_id == "finance"][:8]
    pg_rows, pg_rep = copy_rows(rows, copies["server"].create_database("ts_finance"), log=lambda *_: None)
    duck_rows, duck_rep = copy_rows(rows, f"duckdb:///{tmp_path}/duck", log=lambda *_: None)
    by_engine = {"sqlite": (rows, {}), "duckdb": (duck_rows, duck_rep.types), "postgres": (pg_rows, pg_rep.types)}
    # the same sample on every engine: the same random draws, the same neighbours
    assert len({database(rs[0].db).sample(5000).digest() for rs, _ in by_engine.values()}) == 1
    outcomes = {}
    for engine, (its, types) in by_engine.items():
        suite = TestSuite(EvalConfig(test_suite=4, test_suite_cache=str(tmp_path / "cache"),
                                     neighbour_db=copies["scratch"]))
        suite.prepare(its)
        outcomes[engine] = []
        for src, row in zip(rows, its):
            for sql in mutants(src.query)[:4]:  # near misses written for SQLite, transpiled as gold is
                text = sql if engine == "sqlite" else to_dialect(sql, engine, types.get("finance"))
                p = score_one(row, text + "\n```", 0.0, 5, 1000, suite=suite)
                outcomes[engine].append((p.correct, p.correct_ts))
    assert outcomes["duckdb"] == outcomes["sqlite"] and outcomes["postgres"] == outcomes["sqlite"]
    assert any(ex and not ts for ex, ts in outcomes["sqlite"])  # TS rejects some that EX accepts
    assert any(ex and ts for ex, ts in outcomes["sqlite"])
