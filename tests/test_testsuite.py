"""Test-suite accuracy: neighbour databases (same schema, keys valid, deterministic, read-only, cached), mutants of
the gold query, and the check itself: a wrong answer that the question's database can't tell apart is caught, and
answers equivalent to the gold query (ties left open included) are not."""
import sqlite3
import stat
from pathlib import Path

import pytest
from conftest import SCHEMA, build_shop_db

from ft.config import EvalConfig
from ft.data.rows import Row
from ft.eval.scoring import score_one, summarize
from ft.eval.testsuite import TestSuite, _tie_probes, ties_decide
from ft.sql.execute import execute
from ft.sql.mutants import mutants
from ft.sql.neighbours import Session, build_neighbours, literals_of

GOLD = {
    "positive": "SELECT COUNT(*) FROM orders WHERE total > 0",  # every total is positive in the shop database
    "paris": "SELECT SUM(o.total) FROM orders o JOIN customers c ON o.customer_id = c.id WHERE c.city = 'Paris'",
    "top3": "SELECT name FROM products ORDER BY price DESC LIMIT 3",
    "late": "SELECT name FROM customers WHERE id IN (SELECT customer_id FROM orders WHERE day >= '2024-06-15')",
}


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ts")
    db = build_shop_db(folder / "shop.sqlite")
    rows = [Row(question=k, query=q, schema=SCHEMA, db_id="shop", db_path=str(db)) for k, q in GOLD.items()]
    suite = TestSuite(EvalConfig(test_suite=6, test_suite_cache=str(folder / "cache")))
    stats = suite.prepare(rows)
    return {"db": db, "rows": {r.question: r for r in rows}, "suite": suite, "stats": stats, "folder": folder}


def _tables(path):
    conn = sqlite3.connect(path)
    try:
        ddl = conn.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name").fetchall()
        counts = {t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in ("customers", "orders",
                                                                                      "products")}
        return ddl, counts, conn.execute("PRAGMA foreign_key_check").fetchall()
    finally:
        conn.close()


def test_neighbours_keep_the_schema_and_the_keys_and_are_deterministic(shop, tmp_path):
    paths = [Path(nb.db.location) for nb in shop["suite"].neighbours[str(shop["db"])]]
    ddl, counts, _ = _tables(shop["db"])
    sizes = []
    for p in paths:
        assert not (p.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))  # written read-only
        n_ddl, n_counts, violations = _tables(p)
        assert n_ddl == ddl and violations == []  # the same schema; every foreign key points at a row
        sizes.append(n_counts)
        conn = sqlite3.connect(p)
        # primary keys unique, order customers among this neighbour's customers
        assert conn.execute("SELECT COUNT(*) - COUNT(DISTINCT id) FROM orders").fetchone()[0] == 0
        assert conn.execute("SELECT COUNT(*) FROM orders WHERE customer_id NOT IN (SELECT id FROM customers)"
                            ).fetchone()[0] == 0
        conn.close()
    assert all(s["orders"] < counts["orders"] for s in sizes)  # rows dropped
    joined = [sqlite3.connect(p) for p in paths]
    try:
        # somewhere: a duplicated row (same values, new key), a NULL, a literal's neighbour value (total 0 or -1)
        assert any(c.execute("SELECT COUNT(*) FROM (SELECT customer_id, total, day FROM orders GROUP BY 1, 2, 3 "
                             "HAVING COUNT(*) > 1)").fetchone()[0] for c in joined)
        assert any(c.execute("SELECT COUNT(*) FROM orders WHERE total IS NULL OR day IS NULL").fetchone()[0]
                   for c in joined)
        assert any(c.execute("SELECT COUNT(*) FROM orders WHERE total <= 0").fetchone()[0] for c in joined)
    finally:
        for c in joined:
            c.close()
    # the same seed gives the same bytes, another seed other rows; a cached neighbour is not rebuilt
    lits = literals_of(list(GOLD.values()))
    again = [Path(nb.db.location) for nb in build_neighbours(shop["db"], 2, 0, lits, tmp_path / "a")]
    assert [p.read_bytes() for p in again] == [p.read_bytes() for p in paths[:2]]
    other = [Path(nb.db.location) for nb in build_neighbours(shop["db"], 2, 1, lits, tmp_path / "b")]
    assert [p.read_bytes() for p in other] != [p.read_bytes() for p in paths[:2]]
    stamp = again[0].stat().st_mtime_ns
    assert Path(build_neighbours(shop["db"], 2, 0, lits, tmp_path / "a")[0].db.location).stat().st_mtime_ns == stamp


def test_mutants_are_the_near_misses():
    m = mutants("SELECT c.name, MAX(o.total) FROM customers c LEFT JOIN orders o ON o.customer_id = c.id "
                "WHERE o.total > 10 AND c.city = 'Paris' GROUP BY c.name ORDER BY 2 DESC LIMIT 3")
    text = "\n".join(m)
    for expected in ("o.total >= 10", "o.total < 10", "OR", "MIN(o.total)", "LIMIT 4", "ORDER BY 2 ASC",
                     "SELECT DISTINCT", "c.city <> 'Paris'", "o.total > 11"):
        assert expected in text, expected
    assert any("LEFT JOIN" not in x and "JOIN orders" in x for x in m)  # the join's kind
    assert any("WHERE" not in x for x in m) and any("LIMIT" not in x for x in m) and any("GROUP BY" not in x
                                                                                          for x in m)
    assert len(set(m)) == len(m) and mutants("SELECT FROM WHERE") == []


def test_a_filter_that_filters_nothing_here_is_caught(shop):
    row = shop["rows"]["positive"]
    share = shop["suite"].share(row)
    assert share.kept and share.survivors >= 1 and share.killed >= 1
    wrong = score_one(row, "SELECT COUNT(*) FROM orders\n```", 0.0, 5, 1000, suite=shop["suite"])
    assert wrong.correct and wrong.correct_set  # the question's database can't tell ...
    assert wrong.correct_ts is False and "neighbour" in wrong.ts_error  # ... its neighbours can
    right = score_one(row, "SELECT COUNT(1) FROM orders WHERE NOT total <= 0\n```", 0.0, 5, 1000, suite=shop["suite"])
    assert right.correct and right.correct_ts
    # a join where the gold query has IN: the same rows here (names are unique), not where names repeat
    late = score_one(shop["rows"]["late"], "SELECT DISTINCT c.name FROM customers c JOIN orders o ON "
                     "o.customer_id = c.id WHERE o.day >= '2024-06-15'\n```", 0.0, 5, 1000, suite=shop["suite"])
    assert late.correct and late.correct_ts is False
    m = summarize([wrong, right])
    assert m["ex"] == 1.0 and m["ts"] == 0.5 and m["ts_rejected"] == 1
    # without a suite nothing is claimed
    assert score_one(row, "SELECT COUNT(*) FROM orders\n```", 0.0, 5, 1000).correct_ts is None
    assert "ts" not in summarize([score_one(row, "SELECT 1\n```", 0.0, 5, 1000)])


@pytest.mark.parametrize("name, sql", [
    ("paris", "SELECT SUM(o.total) FROM customers AS c JOIN orders AS o ON c.id = o.customer_id "
              "WHERE c.city = 'Paris'"),
    ("late", "SELECT c.name FROM customers AS c WHERE c.id IN (SELECT o.customer_id FROM orders AS o "
             "WHERE NOT o.day < '2024-06-15')"),
    ("late", "SELECT c.name FROM customers c WHERE EXISTS (SELECT 1 FROM orders o WHERE o.customer_id = c.id "
             "AND NOT o.day < '2024-06-15')"),
    # ties the gold query leaves open may be broken any way: neighbours where its result depends on them are out
    ("top3", "SELECT name FROM products ORDER BY price DESC, id DESC LIMIT 3"),
    ("top3", "SELECT name FROM (SELECT name, price FROM products ORDER BY price DESC, id ASC LIMIT 3) "
             "ORDER BY price DESC"),
])
def test_equivalent_answers_stay_right(shop, name, sql):
    row = shop["rows"][name]
    p = score_one(row, sql + "\n```", 0.0, 5, 1000, suite=shop["suite"])
    assert p.correct and p.correct_ts, p.ts_error


def test_ties_are_judged_only_where_the_gold_result_does_not_depend_on_them(shop):
    # Duplicated rows make ties: on some neighbour the top 3 by price is not decided by the price alone. That
    # neighbour is left out for this question, and it has to be: there, the two ways of breaking the tie (both
    # equivalent to the gold query) give different rows (negative control).
    row = shop["rows"]["top3"]
    paths = shop["suite"].neighbours[row.db]
    probes = _tie_probes(row.query)
    deciding = []
    for i, p in enumerate(paths):
        s = Session(p)
        try:
            if ties_decide(s, probes):
                deciding.append(i)
        finally:
            s.close()
    share = shop["suite"].share(row)
    assert deciding and share.unstable >= len(deciding) and not set(deciding) & set(share.kept) and share.kept
    def ways(p):
        return {tuple(execute(p, f"SELECT name FROM products ORDER BY price DESC, {d} LIMIT 3").rows)
                for d in ("id ASC", "id DESC", "name ASC", "name DESC")}

    p = next(paths[i].db.location for i in deciding if len(ways(paths[i].db.location)) > 1)
    # and an unordered LIMIT is caught by scanning backwards
    s = Session(p)
    try:
        assert s.run("SELECT name FROM products LIMIT 2") != s.run("SELECT name FROM products LIMIT 2", reverse=True)
    finally:
        s.close()


def test_distillation_is_cached_beside_the_neighbours(shop):
    folder = shop["suite"].neighbours[str(shop["db"])][0].folder
    assert (folder / "suite.json").is_file()
    again = TestSuite(EvalConfig(test_suite=6, test_suite_cache=str(shop["folder"] / "cache")))
    rows = list(shop["rows"].values())
    again._distil = None  # a second suite must read every share from the cache, not distil again
    assert again.prepare(rows) == shop["stats"]
    assert shop["stats"]["ts_kept_mean"] > 0 and shop["stats"]["ts_neighbours"] == 6


def test_grpo_reward_can_ask_for_the_test_suite(shop):
    from ft.config import GrpoConfig, load_config
    from ft.grpo import Completion, Group, score_groups

    row = shop["rows"]["positive"]
    texts = ["SELECT COUNT(*) FROM orders WHERE total > 0\n```", "SELECT COUNT(*) FROM orders\n```"]

    def rewards(suite):
        grp = Group(row, [], [Completion([], t) for t in texts])
        score_groups([grp], GrpoConfig(), 5, 1000, suite=suite)
        return [c.reward for c in grp.completions]

    assert rewards(None) == [1.0, 1.0]  # EX alone rewards the missing filter as a match
    assert rewards(shop["suite"]) == [1.0, pytest.approx(0.2)]  # with the suite: it runs and validates, no more
    with pytest.raises(Exception, match="eval.test_suite"):
        load_config(None, ["--grpo.reward_test_suite", "true"])
