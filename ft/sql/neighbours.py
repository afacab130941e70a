"""Neighbour databases of any database: the same schema, other rows drawn from its own, for test-suite accuracy.

    hood = build_neighbours("duckdb:///shop.duckdb", k=8, seed=0, literals=literals_of(gold_queries),
                            cache="~/.cache/sqlft/testsuite", scratch=None)   # scratch: PostgreSQL's (below)
    s = Session(hood[0]); s.run(sql); s.run(sql, reverse=True)

A neighbour keeps the original's schema (its engine's own DDL: tables, keys, checks, views, macros) and holds rows
made from the original's: a random number of its rows (dropped rows), some copied again under a new key (duplicated
rows), and a share of their values replaced: by the literals the dataset's gold queries compare the column with and
their neighbours (so a `price > 100` meets 99, 100 and 101, and `city = 'Lyon'` finds rows), or drawn from the
column's own values (its distribution) or its boundaries (its minimum, maximum, 0; a date's month and year ends, the
day before and after), and NULL where the column allows it. Keys stay valid: primary keys and UNIQUE columns are
unique, NOT NULL holds (a row the engine still refuses, say by a CHECK, is left out), and every foreign-key value
is a key of the parent's rows in this neighbour (drawn skewed, so some parents get many children and others none),
declared or implied by a column named like another table's single-column key.

The drawing is the same for every engine (plain Python over `ft.sql.sample.Sample`); only reading the sample and
writing the rows are the engine's, through its `neighbour_writer` (SQLite and DuckDB: read-only files in the cache;
PostgreSQL: one schema per neighbour in a scratch database, `eval.neighbour_db`, as sqlft's role on the user's
database only reads). Neighbours are deterministic for (the sample's content, seed, literals, index), so the copies
of a database on the three engines get the same neighbours; they are built once and reused by every later
evaluation. Reading backwards (`reverse`, to find gold results that depend on an order the query left open) is
SQLite's reverse_unordered_selects; the other engines have none, so each of their neighbours has a mirror holding the
same rows inserted in reverse order.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from sqlglot import exp

from .engine import Database, database
from .parse import SQLGLOT_ERRORS, parse_one
from .sample import ROWS, SampledTable

VERSION = 2  # of the drawing rules: a change makes new neighbours (old caches are left alone)
SAMPLE_ROWS = ROWS
SIZES = (8, 25, 60)  # a neighbour's largest table size, one of these per neighbour (small tables tell queries apart)
P_CHANGE = 0.3  # share of a copied row's values replaced
P_DUPLICATE = 0.12  # share of rows that are copies of an earlier row under a new key
P_NULL = 0.06  # share of replaced values that become NULL (nullable columns)
P_LITERAL = 0.4  # share of a column's values that are one of the literals queries compare it with (when it has any)

_DATE = re.compile(r"^(\d{4})-(\d{2})(?:-(\d{2}))?(.*)$")


class NeighbourWriter(Protocol):
    """What an engine module's `neighbour_writer(db, folder, tag, scratch)` returns: where neighbours live and how
    one is written. One neighbour at a time: begin, insert each table (parents first), commit."""

    mirrored: bool  # True: each neighbour gets a mirror (rows in reverse order) for Session's reverse reads

    def locate(self, name: str) -> str: ...  # the neighbour's database name (a path or a URL)
    def exists(self, name: str) -> bool: ...
    def begin(self, name: str) -> bool: ...  # False: another process finished it meanwhile (nothing to write)
    def insert(self, table: SampledTable, rows: list[list]) -> list[list]: ...  # the rows the engine kept
    def commit(self) -> None: ...
    def abort(self) -> None: ...
    def close(self) -> None: ...


@dataclass(frozen=True)
class Neighbour:
    name: str  # n00, n01, ...
    db: Database
    mirror: Database | None  # the same rows inserted in reverse order (engines that can't scan backwards)
    folder: Path  # the cache folder of this database's neighbours (suite.json lives there)


def _as_kind(value, like):
    """`value` (a literal or a boundary, often text) in the Python type of the column's own values, or None when it
    can't be one (a number for a text column is left out: it would be stored differently on each engine)."""
    if value is None or like is None:
        return value
    if isinstance(like, bool):
        return value if isinstance(value, bool) else None
    if isinstance(like, (int, float)) or type(like).__name__ == "Decimal":
        return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None
    if isinstance(like, dt.date) and isinstance(value, str):
        try:
            d = dt.datetime.fromisoformat(value.strip())
        except ValueError:
            return None
        return d if isinstance(like, dt.datetime) else d.date()
    return value if isinstance(value, type(like)) else None


def literals_of(queries: list[str], dialect: str = "sqlite") -> dict[str, list]:
    """Column name (lower case) -> the literals queries compare it with, and their neighbours (v - 1, v + 1; a date's
    day before and after; a LIKE pattern's text without its wildcards)."""
    found: dict[str, set] = {}
    for sql in queries:
        try:
            tree = parse_one(sql, dialect)
        except (*SQLGLOT_ERRORS, ValueError):
            continue
        for node in tree.find_all(exp.Column):
            parent = node.parent
            if isinstance(parent, exp.Paren):
                parent = parent.parent
            if not isinstance(parent, (exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.Like, exp.In,
                                       exp.Between)):
                continue
            values = [v for v in parent.find_all(exp.Literal) if v.parent is parent or isinstance(
                v.parent, (exp.Tuple, exp.Paren, exp.In, exp.Between, exp.Neg))]
            bucket = found.setdefault(node.name.lower(), set())
            for v in values:
                for x in _literal_values(v, like=isinstance(parent, exp.Like)):
                    bucket.add(x)
    return {k: sorted(v, key=lambda x: (isinstance(x, str), str(x))) for k, v in sorted(found.items()) if v}


def _literal_values(lit: exp.Literal, like: bool) -> list:
    if not lit.is_string:
        try:
            v = float(lit.this)
        except ValueError:
            return []
        if isinstance(lit.parent, exp.Neg):
            v = -v
        if v.is_integer() and "." not in lit.this:
            v = int(v)
            return [v, v - 1, v + 1]
        step = 10.0 ** -len(lit.this.partition(".")[2].rstrip("0") or "0")  # one unit of its last digit
        return [v, round(v - step, 10), round(v + step, 10)]
    text = lit.this
    if like:
        core = text.replace("%", "").replace("_", "")
        return [core] if core else []
    out = [text]
    m = _DATE.match(text)
    if m and m.group(3):
        try:
            d = dt.date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
            out += [(d + dt.timedelta(days=s)).isoformat() + m.group(4) for s in (-1, 1)]
        except ValueError:
            pass
    return out


def _boundary_date(text: str, rng: random.Random) -> str | None:
    m = _DATE.match(text)
    if not m:
        return None
    year, month, rest = int(m.group(1)), int(m.group(2)), m.group(4)
    if not m.group(3):  # 'YYYY-MM'
        month = rng.choice([1, 12, max(1, month - 1), min(12, month + 1)])
        return f"{year:04d}-{month:02d}{rest}"
    try:
        d = dt.date(year, month, int(m.group(3)))
    except ValueError:
        return None
    first = d.replace(day=1)
    last = (first + dt.timedelta(days=32)).replace(day=1) - dt.timedelta(days=1)
    d = rng.choice([d - dt.timedelta(days=1), d + dt.timedelta(days=1), first, last,
                    dt.date(year, 1, 1), dt.date(year, 12, 31), d.replace(year=year + rng.choice([-1, 1]), day=1)])
    return d.isoformat() + rest


def _boundary(value, pool: list, rng: random.Random):
    """A value at or next to an edge: the column's minimum or maximum, 0, one step past them, a date's month or year
    end or the day next to it."""
    if isinstance(value, (str, dt.date)):  # text dates (SQLite) and date / timestamp values (DuckDB, PostgreSQL)
        text = _boundary_date(value.isoformat() if isinstance(value, dt.date) else value, rng)
        return _as_kind(text, value) if text else rng.choice(pool)
    numbers = [v for v in pool if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if not isinstance(value, (int, float)) or not numbers:
        return rng.choice(pool)
    lo, hi = min(numbers), max(numbers)
    step = 1 if isinstance(value, int) else 0.01
    out = rng.choice([lo, hi, 0, lo - step, hi + step, value - step, value + step])
    return round(out, 2) if isinstance(out, float) else out


def _draw(value, pool: list, nullable: bool, rng: random.Random):
    if nullable and rng.random() < P_NULL:
        return None
    if rng.random() < 0.6 or not pool:
        return rng.choice(pool) if pool else value
    return _boundary(value, pool, rng)


def _skewed(keys: list, rng: random.Random):
    # Early keys are drawn far more often than late ones: some parents get many children, many get none.
    return keys[min(len(keys) - 1, int(len(keys) * rng.random() ** 2))]


def _order(tables: list[SampledTable]) -> list[SampledTable]:
    """Parents before children where the foreign keys allow (a cycle's tables in schema order)."""
    by_name = {t.name.lower(): t for t in tables}
    done: list[SampledTable] = []
    placed: set[str] = set()
    while len(done) < len(tables):
        ready = [t for t in tables if t.name.lower() not in placed and all(
            p.lower() in placed or p.lower() == t.name.lower() or p.lower() not in by_name for _, p, _ in t.fks)]
        if not ready:  # a cycle: the first unplaced table goes next, its late parents are fixed afterwards
            ready = [next(t for t in tables if t.name.lower() not in placed)]
        for t in ready:
            placed.add(t.name.lower())
            done.append(t)
    return done




def _fitting(lits: list | None, pool: list) -> list:
    like = next((v for v in pool if v is not None), None)
    if not lits or like is None:
        return []
    return [x for x in (_as_kind(v, like) for v in lits) if x is not None]


def _draw_rows(t: SampledTable, size: int, rng: random.Random, literals: dict[str, list]) -> list[list]:
    """A random subset of the table's sampled rows, some duplicated (a new integer key), values replaced."""
    n = rng.randint(1, max(1, min(len(t.rows), size)))
    templates = [t.rows[i] for i in sorted(rng.sample(range(len(t.rows)), min(n, len(t.rows))))]
    pools = [[r[i] for r in t.rows] for i in range(len(t.columns))]
    lits = [_fitting(literals.get(c.lower()), pools[i]) for i, c in enumerate(t.columns)]
    key_cols = set(t.pk) | {c for cols, _, _ in t.fks for c in cols}
    pk_at = t.columns.index(t.int_pk) if t.int_pk else None
    next_id = max((r[pk_at] for r in t.rows if isinstance(r[pk_at], int)), default=0) + 1 if t.int_pk else 0
    rows: list[list] = []
    used_ids: set = set()
    for tmpl in templates:
        dup = rows and rng.random() < P_DUPLICATE
        new = list(rng.choice(rows)) if dup else list(tmpl)
        if not dup:
            for i, c in enumerate(t.columns):
                if c in key_cols:
                    continue
                if lits[i] and rng.random() < P_LITERAL:
                    new[i] = rng.choice(lits[i])
                elif rng.random() < P_CHANGE:
                    drawn = _draw(new[i], pools[i], not t.notnull[i], rng)
                    like = next((v for v in pools[i] if v is not None), None)
                    new[i] = drawn if drawn is None or _as_kind(drawn, like) is not None else new[i]
        if pk_at is not None:
            if dup or new[pk_at] in used_ids or new[pk_at] is None:
                new[pk_at], next_id = next_id, next_id + 1
            used_ids.add(new[pk_at])
        rows.append(new)
    return rows


def _keys(rows: list[list], t: SampledTable, cols: list[str]) -> list[tuple]:
    """The distinct non-NULL tuples of `cols` in `rows`, in first-seen order."""
    idx = [t.columns.index(c) for c in cols]
    return list(dict.fromkeys(k for k in (tuple(r[i] for i in idx) for r in rows) if None not in k))


def _point(t: SampledTable, rows: list[list], cols: list[str], targets: list[tuple], rng: random.Random) -> None:
    """Each row's foreign key `cols` re-drawn among `targets` (the parent's keys in this neighbour)."""
    idx = [t.columns.index(c) for c in cols]
    nullable = all(not t.notnull[i] for i in idx)
    wanted = set(targets)
    for new in rows:
        current = tuple(new[i] for i in idx)
        if nullable and rng.random() < P_NULL / 2:
            pick = (None,) * len(idx)
        elif current in wanted and rng.random() < 0.5:
            pick = current
        elif targets:
            pick = _skewed(targets, rng)
        else:
            pick = (None,) * len(idx)
        for i, v in zip(idx, pick):
            new[i] = v


def _valid(t: SampledTable, rows: list[list]) -> list[list]:
    """Rows without a NULL in a NOT NULL or key column, and none repeating a primary key or UNIQUE value."""
    out, seen = [], [set() for _ in range(1 + len(t.uniques))]
    sets = [[t.columns.index(c) for c in cols] for cols in ([t.pk] if t.pk else [[]]) + t.uniques]
    pk_idx = set(sets[0])
    for r in rows:
        if any(v is None and (t.notnull[i] or i in pk_idx) for i, v in enumerate(r)):
            continue
        keys = [tuple(r[i] for i in idx) for idx in sets]
        if any(idx and None not in k and k in s for idx, k, s in zip(sets, keys, seen)):
            continue
        for idx, k, s in zip(sets, keys, seen):
            if idx and None not in k:
                s.add(k)
        out.append(r)
    return out


def draw(tables: list[SampledTable], rng: random.Random, literals: dict[str, list]) -> dict[str, list[list]]:
    """One neighbour's rows per table (the same for every engine: plain Python over the sample), keys valid."""
    size = rng.choice(SIZES)
    order = _order(tables)
    raw = {t.name: _draw_rows(t, size, rng, literals) for t in order if t.rows}
    by_name = {t.name.lower(): t for t in tables}
    final: dict[str, list[list]] = {}
    for t in order:
        if t.name not in raw:
            continue
        rows = raw[t.name]
        for cols, parent, tos in t.fks:
            p = by_name.get(parent.lower())
            if p is None:
                continue  # a parent the schema doesn't have: nothing to keep valid
            # a parent placed before: its final rows; a cycle or a self-reference: its rows as drawn
            _point(t, rows, cols, _keys(final.get(p.name, raw.get(p.name, [])), p, tos), rng)
        final[t.name] = _valid(t, rows)
    return {t.name: final[t.name] for t in order if t.name in final}


def _imply_foreign_keys(tables: list[SampledTable]) -> None:
    """Undeclared keys (many Spider databases): a column named like exactly one other table's single-column primary
    key refers to it, so joins on it still meet rows in a neighbour."""
    owners: dict[str, list[SampledTable]] = {}
    for t in tables:
        if len(t.pk) == 1:
            owners.setdefault(t.pk[0].lower(), []).append(t)
    for t in tables:
        declared = {c.lower() for cols, _, _ in t.fks for c in cols}
        for c in t.columns:
            parents = [p for p in owners.get(c.lower(), []) if p is not t]
            if c.lower() not in declared and len(parents) == 1 and [c] != t.pk:
                t.fks.append(([c], parents[0].name, [parents[0].pk[0]]))


def _complete_keys(tables: list[SampledTable]) -> None:
    """A parent named without columns means its primary key; undeclared keys are implied."""
    by_name = {t.name.lower(): t for t in tables}
    for t in tables:
        for i, (cols, parent, tos) in enumerate(t.fks):
            if (not tos or any(x is None for x in tos)) and parent.lower() in by_name:
                t.fks[i] = (cols, parent, by_name[parent.lower()].pk[: len(cols)])
    _imply_foreign_keys(tables)


def neighbour_dir(db, seed: int, literals: dict[str, list], cache: str | Path) -> Path:
    """Where the neighbours of this database content, seed and literals are recorded (files, suite.json)."""
    db = database(db)
    lit = hashlib.sha1(json.dumps(literals, sort_keys=True, default=str).encode()).hexdigest()[:10]
    return Path(cache).expanduser() / f"{db.label()}-{db.fingerprint()[:12]}" / f"v{VERSION}-seed{seed}-lit{lit}"


def _write(w: NeighbourWriter, name: str, tables: dict[str, SampledTable], rows: dict[str, list[list]]) -> None:
    """One neighbour (and its mirror, where the engine needs one), parents' rows first."""
    if not w.begin(name):
        return
    lower = {n.lower(): t for n, t in tables.items()}
    written: dict[str, list[list]] = {}
    try:
        for tname, its in rows.items():
            t = tables[tname]
            for cols, parent, tos in t.fks:  # a parent row the engine left out: its children are left out too
                p = lower.get(parent.lower())
                if p is not None and p.name in written and p.name != t.name:
                    idx, have = [t.columns.index(c) for c in cols], set(_keys(written[p.name], p, tos))
                    its = [r for r in its if None in (key := tuple(r[i] for i in idx)) or key in have]
            written[tname] = w.insert(t, its)
        w.commit()
    except BaseException:
        w.abort()
        raise
    if w.mirrored and w.begin(name + "r"):
        try:
            for tname, its in written.items():
                w.insert(tables[tname], its[::-1])
            w.commit()
        except BaseException:
            w.abort()
            raise


def build_neighbours(db, k: int, seed: int, literals: dict[str, list], cache: str | Path,
                     scratch: str | None = None) -> list[Neighbour]:
    """Neighbours 0..k-1 of `db` (a Database or its name), building those not there yet. `scratch`: the writable
    PostgreSQL database neighbours of a PostgreSQL database are created in (eval.neighbour_db); refused without."""
    db = database(db)
    folder = neighbour_dir(db, seed, literals, cache)
    folder.mkdir(parents=True, exist_ok=True)
    tag = hashlib.sha1(str(folder.relative_to(folder.parents[1])).encode()).hexdigest()
    w = db.neighbour_writer(folder, tag, database(scratch) if scratch else None)
    try:
        names = [f"n{i:02d}" for i in range(k)]
        missing = [n for n in names if not w.exists(n) or (w.mirrored and not w.exists(n + "r"))]
        if missing:
            sample = db.sample(SAMPLE_ROWS)
            sample.tables.sort(key=lambda t: t.name.lower())  # the same order (and draws) on every engine
            _complete_keys(sample.tables)
            digest = sample.digest()
            by_name = {t.name: t for t in sample.tables}
            for n in missing:
                rng = random.Random(f"{seed}:{digest}:{VERSION}:{int(n[1:])}")
                _write(w, n, by_name, draw(sample.tables, rng, literals))
        return [Neighbour(n, database(w.locate(n)), database(w.locate(n + "r")) if w.mirrored else None, folder)
                for n in names]
    finally:
        w.close()


class Session:
    """Distillation's reads of one database (a Neighbour, or any database by name): the many trusted gold and mutant
    queries, through the engine (SQLite: one sandboxed connection; DuckDB, PostgreSQL: the engine's read-only,
    time-limited execute). `reverse`: the rows read backwards (SQLite's reverse_unordered_selects, else the mirror):
    a gold result that changes under it depends on an order the query left open (ties before a LIMIT, a bare column
    of a group), and that neighbour can't judge its question."""

    def __init__(self, where, macros: list[dict] | None = None, timeout_s: float = 5.0, max_rows: int = 10000):
        nb = where if isinstance(where, Neighbour) else None
        self.main = (nb.db if nb else database(where)).session(macros, timeout_s, max_rows)
        self.back = nb.mirror.session(macros, timeout_s, max_rows) if nb and nb.mirror else None

    @property
    def timed_out(self) -> bool:
        return self.main.timed_out

    def run(self, sql: str, reverse: bool = False, timeout_s: float | None = None) -> list[tuple] | None:
        """The rows, or None when the query fails, times out (`timed_out` says so) or returns more than max_rows
        rows."""
        if reverse and self.back is not None:
            return self.back.run(sql, timeout_s=timeout_s)
        return self.main.run(sql, reverse=reverse, timeout_s=timeout_s)

    def close(self) -> None:
        self.main.close()
        if self.back is not None:
            self.back.close()
