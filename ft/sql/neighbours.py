"""Neighbour databases of a SQLite database: the same schema, other rows drawn from its own, for test-suite accuracy.

    paths = build_neighbours("shop.sqlite", k=8, seed=0, literals=literals_of(gold_queries), cache="~/.cache/...")

A neighbour keeps every CREATE TABLE / INDEX / VIEW of the original (no triggers) and holds rows made from the
original's: a random number of its rows (dropped rows), some copied again under a new key (duplicated rows), and a
share of their values replaced: by the literals the dataset's gold queries compare the column with and their
neighbours (so a `price > 100` meets 99, 100 and 101, and `city = 'Lyon'` finds rows), or drawn from the column's
own values (its distribution) or its boundaries (its minimum, maximum, 0; a date's month and year ends, the day
before and after), and NULL where the column allows it. Keys stay valid: primary keys are unique (INSERT OR IGNORE
drops a row that would break a PRIMARY KEY, UNIQUE, NOT NULL or CHECK constraint), and every foreign-key value is a
key of the parent's rows in this neighbour (drawn skewed, so some parents get many children and others none),
declared or implied by a column named like another table's single-column key.

Neighbours are deterministic for (database content, seed, literals, index), built once into the cache, written
read-only, and reused by every later evaluation. This module is SQLite's builder; another engine needs its own
(the rows can come from the same drawing code, written with its own DDL and loader).
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import random
import re
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from sqlglot import exp

from .execute import install_read_only_authorizer, read_only_authorizer
from .macros import register_macros
from .parse import SQLGLOT_ERRORS, parse_one

VERSION = 1  # of the drawing rules: a change makes new neighbours (old caches are left alone)
SAMPLE_ROWS = 5000  # rows of each original table the values are drawn from
SIZES = (8, 25, 60)  # a neighbour's largest table size, one of these per neighbour (small tables tell queries apart)
P_CHANGE = 0.3  # share of a copied row's values replaced
P_DUPLICATE = 0.12  # share of rows that are copies of an earlier row under a new key
P_NULL = 0.06  # share of replaced values that become NULL (nullable columns)
P_LITERAL = 0.4  # share of a column's values that are one of the literals queries compare it with (when it has any)

_DATE = re.compile(r"^(\d{4})-(\d{2})(?:-(\d{2}))?(.*)$")


@dataclass
class _Table:
    name: str
    columns: list[str]
    types: list[str]
    notnull: list[bool]
    pk: list[str]  # primary-key columns, in key order
    rowid_pk: str | None  # the INTEGER PRIMARY KEY column (an alias of the rowid), if any
    fks: list[tuple[list[str], str, list[str]]] = field(default_factory=list)  # (columns, parent, parent columns)
    rows: list[tuple] = field(default_factory=list)
    without_rowid: bool = False


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _ro(path) -> str:
    return "file:" + quote(str(Path(path).resolve())) + "?mode=ro"


def db_digest(path: str | Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _read_tables(conn: sqlite3.Connection) -> tuple[list[_Table], list[str]]:
    """(tables with a sample of their rows, the CREATE statements to copy: tables, then indexes and views)."""
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
        info = conn.execute(f"PRAGMA table_info({_q(name)})").fetchall()  # cid, name, type, notnull, dflt, pk
        pk = [r[1] for r in sorted((r for r in info if r[5]), key=lambda r: r[5])]
        without_rowid = bool(re.search(r"\)\s*WITHOUT\s+ROWID\s*;?\s*$", sql, re.I))
        rowid_pk = pk[0] if len(pk) == 1 and not without_rowid and "INT" in (
            next(r[2] for r in info if r[1] == pk[0]) or "").upper() else None
        fks: dict[int, tuple[list[str], str, list[str]]] = {}
        for fid, _seq, parent, col, to, *_ in conn.execute(f"PRAGMA foreign_key_list({_q(name)})").fetchall():
            cols, _, tos = fks.setdefault(fid, ([], parent, []))
            cols.append(col)
            tos.append(to)
        t = _Table(name, [r[1] for r in info], [(r[2] or "").upper() for r in info], [bool(r[3]) for r in info],
                   pk, rowid_pk, list(fks.values()), without_rowid=without_rowid)
        cols = ", ".join(_q(c) for c in t.columns)
        t.rows = conn.execute(f"SELECT {cols} FROM {_q(name)} LIMIT {SAMPLE_ROWS}").fetchall()
        tables.append(t)
    by_name = {t.name.lower(): t for t in tables}
    for t in tables:  # a parent named without columns means its primary key
        for i, (cols, parent, tos) in enumerate(t.fks):
            if any(x is None for x in tos) and parent.lower() in by_name:
                t.fks[i] = (cols, parent, by_name[parent.lower()].pk[: len(cols)])
    _imply_foreign_keys(tables)
    return tables, ddl


def _imply_foreign_keys(tables: list[_Table]) -> None:
    """Undeclared keys (many Spider databases): a column named like exactly one other table's single-column primary
    key refers to it, so joins on it still meet rows in a neighbour."""
    owners: dict[str, list[_Table]] = {}
    for t in tables:
        if len(t.pk) == 1:
            owners.setdefault(t.pk[0].lower(), []).append(t)
    for t in tables:
        declared = {c.lower() for cols, _, _ in t.fks for c in cols}
        for c in t.columns:
            parents = [p for p in owners.get(c.lower(), []) if p is not t]
            if c.lower() not in declared and len(parents) == 1 and [c] != t.pk:
                t.fks.append(([c], parents[0].name, [parents[0].pk[0]]))


def literals_of(queries: list[str]) -> dict[str, list]:
    """Column name (lower case) -> the literals queries compare it with, and their neighbours (v - 1, v + 1; a date's
    day before and after; a LIKE pattern's text without its wildcards)."""
    found: dict[str, set] = {}
    for sql in queries:
        try:
            tree = parse_one(sql)
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
    if isinstance(value, str):
        return _boundary_date(value, rng) or rng.choice(pool)
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


def _order(tables: list[_Table]) -> list[_Table]:
    """Parents before children where the foreign keys allow (a cycle's tables in schema order)."""
    by_name = {t.name.lower(): t for t in tables}
    done: list[_Table] = []
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


def _fill(conn: sqlite3.Connection, tables: list[_Table], rng: random.Random, literals: dict[str, list]) -> None:
    size = rng.choice(SIZES)
    keys: dict[str, list[tuple]] = {}  # table (lower) -> its key tuples in this neighbour, for each FK target
    late: list[tuple[_Table, list[str], str, list[str]]] = []
    for t in _order(tables):
        if not t.rows:
            continue
        n = rng.randint(1, max(1, min(len(t.rows), size)))
        templates = [t.rows[i] for i in sorted(rng.sample(range(len(t.rows)), min(n, len(t.rows))))]
        pools = [[r[i] for r in t.rows] for i in range(len(t.columns))]
        fk_cols = {c for cols, _, _ in t.fks for c in cols}
        key_cols = set(t.pk) | fk_cols
        rows: list[list] = []
        used_ids: set = set()
        next_id = max((r[t.columns.index(t.rowid_pk)] for r in t.rows if isinstance(
            r[t.columns.index(t.rowid_pk)], int)), default=0) + 1 if t.rowid_pk else 0
        for tmpl in templates:
            dup = rows and rng.random() < P_DUPLICATE
            new = list(rng.choice(rows)) if dup else list(tmpl)
            if not dup:
                for i, c in enumerate(t.columns):
                    if c in key_cols:
                        continue
                    lits = literals.get(c.lower())
                    if lits and rng.random() < P_LITERAL:
                        new[i] = rng.choice(lits)
                    elif rng.random() < P_CHANGE:
                        new[i] = _draw(new[i], pools[i], not t.notnull[i], rng)
            if t.rowid_pk:
                i = t.columns.index(t.rowid_pk)
                if dup or new[i] in used_ids or new[i] is None:
                    new[i], next_id = next_id, next_id + 1
                used_ids.add(new[i])
            rows.append(new)
        for cols, parent, tos in t.fks:
            targets = keys.get(parent.lower())
            if targets is None:
                late.append((t, cols, parent, tos))
                continue
            idx = [t.columns.index(c) for c in cols]
            for new in rows:
                current = tuple(new[i] for i in idx)
                nullable = all(not t.notnull[i] for i in idx)
                if nullable and rng.random() < P_NULL / 2:
                    pick = (None,) * len(idx)
                elif current in targets and rng.random() < 0.5:
                    pick = current
                elif targets:
                    pick = _skewed(targets, rng)
                else:
                    pick = (None,) * len(idx)
                for i, v in zip(idx, pick):
                    new[i] = v
        marks = ", ".join("?" * len(t.columns))
        conn.executemany(f"INSERT OR IGNORE INTO {_q(t.name)} ({', '.join(_q(c) for c in t.columns)}) "
                         f"VALUES ({marks})", rows)
        for other in tables:  # the key tuples children of this table will draw from
            for _, parent, tos in other.fks:
                if parent.lower() == t.name.lower():
                    cols = ", ".join(_q(c) for c in tos)
                    keys.setdefault(parent.lower(), [])
                    found = conn.execute(f"SELECT DISTINCT {cols} FROM {_q(t.name)} WHERE "
                                         + " AND ".join(f"{_q(c)} IS NOT NULL" for c in tos)).fetchall()
                    keys[parent.lower()] = [tuple(r) for r in found]
    for t, cols, parent, tos in late:  # cycles and self-references: point at rows that exist now
        if t.without_rowid:
            continue
        try:
            have = {tuple(r) for r in conn.execute(f"SELECT {', '.join(_q(c) for c in tos)} FROM {_q(parent)}")}
        except sqlite3.Error:  # a parent the schema doesn't have: nothing to keep valid
            continue
        targets = sorted(have, key=str)
        nullable = all(not t.notnull[t.columns.index(c)] for c in cols)
        for rowid, *vals in conn.execute(f"SELECT rowid, {', '.join(_q(c) for c in cols)} FROM {_q(t.name)}"
                                         ).fetchall():
            if all(v is None for v in vals) or tuple(vals) in have:
                continue
            sets = ", ".join(f"{_q(c)} = ?" for c in cols)
            if targets and not (nullable and rng.random() < 0.3):
                conn.execute(f"UPDATE OR IGNORE {_q(t.name)} SET {sets} WHERE rowid = ?", (*_skewed(targets, rng),
                                                                                          rowid))
            elif nullable:
                conn.execute(f"UPDATE {_q(t.name)} SET {sets} WHERE rowid = ?", (*[None] * len(cols), rowid))
            else:
                conn.execute(f"DELETE FROM {_q(t.name)} WHERE rowid = ?", (rowid,))


def _write(dest: Path, tables: list[_Table], ddl: list[str], rng: random.Random, literals: dict[str, list]) -> None:
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    conn = sqlite3.connect(tmp, isolation_level=None)
    try:
        conn.execute("PRAGMA foreign_keys = OFF")  # validity is drawn, not enforced: a late parent is fixed after
        conn.execute("BEGIN")
        for statement in ddl:
            conn.execute(statement)
        _fill(conn, tables, rng, literals)
        conn.execute("COMMIT")
    finally:
        conn.close()
    os.chmod(tmp, 0o444)
    tmp.replace(dest)


def neighbour_dir(db_path: str | Path, seed: int, literals: dict[str, list], cache: str | Path) -> Path:
    """Where the neighbours of this database content, seed and literals live."""
    lit = hashlib.sha1(json.dumps(literals, sort_keys=True, default=str).encode()).hexdigest()[:10]
    return (Path(cache).expanduser() / f"{Path(db_path).stem}-{db_digest(db_path)[:12]}"
            / f"v{VERSION}-seed{seed}-lit{lit}")


def build_neighbours(db_path: str | Path, k: int, seed: int, literals: dict[str, list],
                     cache: str | Path) -> list[Path]:
    """Paths of neighbours 0..k-1 of `db_path`, building those not in the cache yet (each read-only)."""
    folder = neighbour_dir(db_path, seed, literals, cache)
    paths = [folder / f"n{i:02d}.sqlite" for i in range(k)]
    missing = [p for p in paths if not p.is_file()]
    if not missing:
        return paths
    folder.mkdir(parents=True, exist_ok=True)
    digest = folder.parent.name.rsplit("-", 1)[-1]
    src = sqlite3.connect(_ro(db_path), uri=True)
    src.text_factory = lambda b: b.decode("utf-8", errors="replace")
    try:
        tables, ddl = _read_tables(src)
    finally:
        src.close()
    for p in missing:
        i = int(p.stem[1:])
        _write(p, tables, ddl, random.Random(f"{seed}:{digest}:{VERSION}:{i}"), literals)
    return paths



class Session:
    """One read-only connection to a neighbour for the many gold and mutant queries of distillation (the answers
    being scored go through ft.sql.execute like every other). `reverse`: SQLite's reverse_unordered_selects, which
    scans tables backwards: a gold result that changes under it depends on an order the query left open (ties
    before a LIMIT, a bare column of a group), and that neighbour can't judge its question."""

    def __init__(self, path: str | Path, macros: list[dict] | None = None, timeout_s: float = 5.0,
                 max_rows: int = 10000):
        self.timeout_s, self.max_rows = timeout_s, max_rows
        self.conn = sqlite3.connect(_ro(path), uri=True, isolation_level=None)
        self.conn.text_factory = lambda b: b.decode("utf-8", errors="replace")
        self.conn.execute("PRAGMA query_only = ON")
        register_macros(self.conn, macros)
        self._reverse = False
        self._deadline = 0.0
        self.timed_out = False
        self.conn.set_progress_handler(lambda: int(time.monotonic() > self._deadline), 1000)
        install_read_only_authorizer(self.conn)

    def run(self, sql: str, reverse: bool = False, timeout_s: float | None = None) -> list[tuple] | None:
        """The rows, or None when the query fails, times out (`timed_out` says so) or returns more than max_rows
        rows."""
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
