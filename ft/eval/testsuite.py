"""Test-suite accuracy (TS, Zhong, Yu & Klein 2020, Spider's official metric): an answer is right only if it matches
the gold result on the question's database and on every kept neighbour of it (`eval.test_suite K`).

    suite = TestSuite(cfg.eval)                       # K, seed, cache, time limit, row cap
    stats = suite.prepare(rows)                       # neighbours built or found, each question's kept ones
    ok, why = suite.check(row, predicted_sql)         # after EX said right: the kept neighbours agree too

Execution on one database has false positives: a missing filter that filters nothing there, a wrong join that
happens to give the same rows. For each database the questions are asked on, K neighbour databases are drawn from
it (ft.sql.neighbours, cached, read-only). For each question, a neighbour is kept when it tells the gold query apart
from at least one of its mutants (ft.sql.mutants) and the gold result on it doesn't depend on an order the query
left open; the answer must then match the gold result on each kept neighbour, by the same comparison as EX.

The same code serves every engine (ft.sql.engine): SQLite and DuckDB neighbours are read-only files in the cache,
PostgreSQL's are schemas of the scratch database `eval.neighbour_db` (without it, TS on a PostgreSQL database is
refused with a line naming that key). Distillation runs the trusted gold and mutant queries
(ft.sql.neighbours.Session); the answer being scored runs through the engine's execute, the one path for
model-written SQL. The kept neighbours of each question are cached beside the neighbours (suite.json), keyed by the
gold query and K.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from sqlglot import exp

from ft.config import ConfigError
from ft.data.rows import Row
from ft.sql.compare import order_matters, results_match
from ft.sql.engine import DatabaseError, database
from ft.sql.mutants import mutants
from ft.sql.neighbours import Neighbour, Session, build_neighbours, literals_of
from ft.sql.parse import DIALECT, SQLGLOT_ERRORS, parse_one

MUTANT_TIMEOUT_S = 0.5
_KEY = "_sqlft_key"


def _int(node) -> int | None:
    return int(node.this) if isinstance(node, exp.Literal) and not node.is_string and node.this.isdigit() else None


def _tie_probes(sql: str, dialect: str = DIALECT) -> list[tuple[str, int, list[int], int, int | None, bool]] | None:
    """For each ORDER BY whose ties could change the result (the outermost one; an inner one with a LIMIT): (a query
    giving its rows in order with its sort keys appended, how many were appended, the key columns (>= 0: an output
    column; < 0: from the end), OFFSET, LIMIT, whether ties inside the window count too). None when some such ORDER BY
    can't be probed (the question can't be judged on a neighbour with ties)."""
    try:
        tree = parse_one(sql, dialect)
    except (*SQLGLOT_ERRORS, ValueError):
        return None
    top = tree
    while isinstance(top, exp.Subquery):
        top = top.this
    probes = []
    for node in [n for n in tree.walk() if isinstance(n, exp.Query) and n.args.get("order")]:
        outer = node is top
        limit = node.args.get("limit")
        if limit is None and not outer:
            continue  # an inner ORDER BY without LIMIT orders nothing anyone sees
        n = _int(limit.expression) if limit is not None else None
        offset = node.args.get("offset") or (limit.args.get("offset") if limit is not None else None)
        off = 0 if offset is None else _int(offset.expression if isinstance(offset, exp.Offset) else offset)
        if (limit is not None and n is None) or off is None:
            return None
        probe = node.copy()
        probe.set("limit", None)
        probe.set("offset", None)
        first = probe if isinstance(probe, exp.Select) else probe.find(exp.Select)
        names = first.named_selects if first is not None else []
        star = first is None or any(isinstance(e, exp.Star) or (isinstance(e, exp.Column) and e.is_star)
                                    for e in first.expressions)
        added: list[exp.Expr] = []
        keys = []
        for o in probe.args["order"].expressions:
            k = o.this
            if _int(k) is not None and _int(k) >= 1:
                keys.append(_int(k) - 1)
            elif isinstance(k, exp.Column) and not k.table and k.name in names and not star:
                keys.append(names.index(k.name))
            elif isinstance(probe, exp.Select) and not probe.args.get("distinct"):
                added.append(k)
                keys.append(-len(added))  # the j-th appended key is -1 - j: its place is known once run
            else:
                return None
        for i, k in enumerate(added):
            probe.select(exp.alias_(k.copy(), f"{_KEY}{i}"), copy=False)
        if tree.args.get("with_") is not None and not outer:
            probe.set("with_", tree.args["with_"].copy())
        probes.append((probe.sql(dialect=dialect), len(added), keys, off, n, outer))
    return probes


def ties_decide(session: Session, probes) -> bool:
    """Whether, on this database, some ORDER BY of the query meets rows with equal keys but other values where the
    order decides the result (across its LIMIT's edges; for the outermost, anywhere in what is returned, as the rows
    are compared as a list). A probe that fails counts as deciding."""
    for sql, added, keys, off, n, outer in probes:
        rows = session.run(sql)
        if rows is None:
            return True
        if not rows:
            continue
        width = len(rows[0]) - added
        at = [k if k >= 0 else width + (-1 - k) for k in keys]
        end = len(rows) - 1 if n is None else min(off + n, len(rows) - 1)
        pairs = range(max(off - 1, 0), end) if outer else [i for i in (off - 1, off + (n or 0) - 1) if 0 <= i < end]
        for i in pairs:
            a, b = rows[i], rows[i + 1]
            if [a[k] for k in at] == [b[k] for k in at] and a[:width] != b[:width]:
                return True
    return False


@dataclass
class Distilled:
    """One question's share of the test suite."""

    kept: list[int]  # indices of the neighbours that judge it
    mutants: int  # mutants of its gold query that run on the original database (or run out of time there)
    survivors: int  # of them, those the original database can't tell from the gold query (EX would accept them)
    killed: int  # of the survivors, those some kept neighbour tells apart
    unstable: int  # neighbours left out: the gold result there depends on an order the query left open


def _key(row: Row) -> str:
    return hashlib.sha1(json.dumps([row.query, row.macros], sort_keys=True, default=str).encode()).hexdigest()[:16]


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    tmp.replace(path)


class TestSuite:
    __test__ = False  # not a pytest class

    def __init__(self, e):
        """`e`: an EvalConfig (test_suite K, test_suite_seed, test_suite_cache, timeout_s, max_rows, float_tolerance
        is not used: TS follows the official exact rule)."""
        self.k, self.seed, self.cache = e.test_suite, e.test_suite_seed, e.test_suite_cache
        self.scratch = e.neighbour_db or None  # where PostgreSQL databases get their neighbours
        self.timeout_s, self.max_rows = e.timeout_s, e.max_rows
        self.neighbours: dict[str, list[Neighbour]] = {}  # the row's db -> its neighbours
        self.entries: dict[tuple[str, str], Distilled] = {}  # (the row's db, gold key) -> its share

    def prepare(self, rows: list[Row], dataset: list[Row] | None = None, log=None) -> dict:
        """Build (or find) the neighbours of every database in `rows` and distil each question not distilled yet.
        `dataset`: all the rows `rows` were taken from (default `rows`): the neighbours take the literals of their
        gold queries, so a subset (--limit) is judged by the same neighbours as the whole. `log`: a function of one
        line (progress of a long first build). Returns counts for the summary."""
        log = log or (lambda msg: None)
        by_db: dict[str, list[Row]] = {}
        for r in rows:
            if r.db:
                by_db.setdefault(r.db, []).append(r)
        for db, its in by_db.items():
            if db not in self.neighbours:
                if database(db).problem() is not None:
                    continue  # no database to draw from: its gold queries fail (and say why) anyway
                t0 = time.perf_counter()
                queries = [r.query for r in (dataset if dataset is not None else rows) if r.db == db]
                try:
                    self.neighbours[db] = build_neighbours(db, self.k, self.seed, literals_of(
                        queries, its[0].sql_dialect), self.cache, self.scratch)
                except DatabaseError as e:  # PostgreSQL without eval.neighbour_db, a scratch database that fails
                    raise ConfigError(str(e)) from None
                if time.perf_counter() - t0 > 2:
                    log(f"test suite: {self.k} neighbours of {database(db).label()} in "
                        f"{time.perf_counter() - t0:.0f}s")
            folder = self.neighbours[db][0].folder if self.neighbours[db] else None
            stored = self._load(folder)
            todo = [r for r in its if (db, _key(r)) not in self.entries]
            fresh = 0
            t0 = time.perf_counter()
            for r in todo:
                name = f"{self.k}:{_key(r)}"
                if name not in stored:
                    stored[name] = self._distil(r, self.neighbours[db]).__dict__
                    fresh += 1
                self.entries[(db, _key(r))] = Distilled(**stored[name])
            if fresh and folder is not None:
                merged = self._load(folder) | stored  # another process may have added its own meanwhile
                _write_json(folder / "suite.json", merged)
                log(f"test suite: {fresh} questions of {database(db).label()} distilled in "
                    f"{time.perf_counter() - t0:.0f}s")
        return self.stats(rows)

    def stats(self, rows: list[Row]) -> dict:
        """Over the questions of `rows` that have a share: neighbours kept a question, mutants the original database
        could not tell apart and the share of them the kept neighbours do."""
        shares = [self.entries[(r.db, _key(r))] for r in rows if (r.db, _key(r)) in self.entries]
        if not shares:
            return {}
        survivors = sum(s.survivors for s in shares)
        return {"ts_neighbours": self.k,
                "ts_kept_mean": sum(len(s.kept) for s in shares) / len(shares),
                "ts_questions_without_neighbours": sum(not s.kept for s in shares),
                "ts_mutants_surviving_ex": survivors,
                "ts_mutants_killed": (sum(s.killed for s in shares) / survivors) if survivors else None}

    @staticmethod
    def _load(folder: Path | None) -> dict:
        try:
            return json.loads((folder / "suite.json").read_text()) if folder is not None else {}
        except (OSError, ValueError):
            return {}

    def _distil(self, row: Row, neighbours: list[Neighbour]) -> Distilled:
        ordered = order_matters(row.query)
        same = lambda a, b: a is not None and b is not None and results_match(a, b, ordered=ordered)  # noqa: E731
        orig = Session(row.db, row.macros, self.timeout_s, self.max_rows)
        try:
            gold = orig.run(row.query)
            if gold is None:
                return Distilled([], 0, 0, 0, 0)
            runs = []
            for m in mutants(row.query, dialect=row.sql_dialect):
                # a short limit: some mutants (a join condition dropped) are cross products of the whole database;
                # one that runs out of time here may still tell a small neighbour apart
                res = orig.run(m, timeout_s=MUTANT_TIMEOUT_S)
                if res is not None or orig.timed_out:
                    runs.append((m, res))
        finally:
            orig.close()
        survivors = {m for m, res in runs if same(gold, res)}
        probes = _tie_probes(row.query, row.sql_dialect)
        kept, killed, unstable = [], set(), 0
        for i, nb in enumerate(neighbours):
            s = Session(nb, row.macros, self.timeout_s, self.max_rows)
            try:
                g = s.run(row.query)
                # the gold result must not depend on an order the query leaves open: unordered rows (scanned
                # backwards, the same result) and ties of its ORDER BY where they matter (none)
                if g is None or not same(g, s.run(row.query, reverse=True)) or probes is None \
                        or ties_decide(s, probes):
                    unstable += 1
                    continue
                kills = {m for m, _ in runs if not same(g, s.run(m))}
            finally:
                s.close()
            if kills:
                kept.append(i)
                killed |= kills & survivors
        return Distilled(kept, len(runs), len(survivors), len(killed), unstable)

    def share(self, row: Row) -> Distilled | None:
        return self.entries.get((row.db, _key(row)))

    def check(self, row: Row, sql: str) -> tuple[bool, str | None]:
        """(matches the gold result on every kept neighbour, the first neighbour where it doesn't and why)."""
        share = self.share(row)
        if share is None:
            return False, "question not prepared for the test suite"
        ordered = order_matters(row.query)
        for i in share.kept:  # each through its engine's read-only, time-limited execute, like every answer
            nb = self.neighbours[row.db][i]
            gold = nb.db.execute(row.query, row.macros, timeout_s=self.timeout_s * 4, max_rows=self.max_rows)
            got = nb.db.execute(sql, row.macros, timeout_s=self.timeout_s, max_rows=self.max_rows)
            if not gold.ok or gold.truncated:  # it ran at distillation; a slower machine now: not the answer's fault
                continue
            if not got.ok:
                return False, f"neighbour {nb.name}: {got.error}"
            if got.truncated or not results_match(gold.rows, got.rows, ordered=ordered):
                return False, f"neighbour {nb.name}: a different result"
        return True, None
