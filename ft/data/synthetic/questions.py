"""Question/SQL templates and the loop that fills them with values drawn from a database.

A template is a tier, a few phrasings of one question, one SQL pattern, and slots. A slot is one of:
  - a SQL string (``"SELECT DISTINCT city FROM customers"``): a value is drawn from its result, so questions
    name real rows; a query with several columns binds each column by its name (``SELECT a, b``),
  - a list / tuple / range: a value is drawn from it,
  - a callable ``f(rng)``: returns a value, or a dict binding several names (a month and its 'YYYY-MM').
A value is a plain str / int / float, shown the same way in question and SQL (strings get their quotes
escaped in SQL; the template writes the quotes), or a `P(text, sql)` shown one way in the question and
another in the SQL (``P("10%", "0.1")``).

Every drawn query is executed; empty, all-NULL, zero-count, huge or tie-at-the-cut results are rejected and
another candidate is drawn, up to a cap of attempts.
"""
from __future__ import annotations

import calendar
import random
import re
import sqlite3
from dataclasses import dataclass
from typing import Any, NamedTuple

from ft.metrics import TIERS  # the one list of tier names

MAX_RESULT_ROWS = 100  # a longer answer is a listing, not a question worth asking
ATTEMPTS_PER_EXAMPLE = 12


class P(NamedTuple):
    """A slot value shown as `text` in the question and as `sql` in the query."""

    text: str
    sql: str


@dataclass(frozen=True)
class Template:
    tier: str
    questions: tuple[str, ...]
    sql: str
    slots: tuple[tuple[str, Any], ...]
    target: int | None = None  # examples wanted; None = the generator's default

    def label(self) -> str:
        return f"[{self.tier}] {self.questions[0]}"


def T(tier: str, questions: list[str], sql: str, /, target: int | None = None, **slots: Any) -> Template:
    if tier not in TIERS:
        raise ValueError(f"unknown tier {tier!r}")
    return Template(tier, tuple(questions), " ".join(sql.split()), tuple(slots.items()), target)


# ----------------------------------------------------------------------------------- common slots

YEARS = ("2022", "2023", "2024")
K = (3, 5, 10)


def month(rng: random.Random) -> dict:
    y, m = rng.choice(YEARS), rng.randint(1, 12)
    return {"month": f"{calendar.month_name[m]} {y}", "ym": f"{y}-{m:02d}"}


def quarter(rng: random.Random) -> dict:
    y, q = rng.choice(YEARS), rng.randint(1, 4)
    last = calendar.monthrange(int(y), 3 * q)[1]
    return {"quarter": f"Q{q} {y}", "q_start": f"{y}-{3 * q - 2:02d}-01", "q_end": f"{y}-{3 * q:02d}-{last}"}


def date_range(rng: random.Random) -> dict:
    """A whole-month range of 1 to 6 months inside 2022-2024."""
    first = rng.randint(0, 35)
    last = min(35, first + rng.randint(0, 5))
    y1, m1 = 2022 + first // 12, first % 12 + 1
    y2, m2 = 2022 + last // 12, last % 12 + 1
    return {"start": f"{y1}-{m1:02d}-01", "end": f"{y2}-{m2:02d}-{calendar.monthrange(y2, m2)[1]}"}


def day(rng: random.Random) -> str:
    return f"{rng.choice(YEARS)}-{rng.randint(1, 12):02d}-{rng.choice((1, 15)):02d}"


# ---------------------------------------------------------------------------------------- drawing


def _show(v: Any) -> tuple[str, str]:
    """(question text, SQL text) of one slot value."""
    if isinstance(v, P):
        return v.text, v.sql
    if isinstance(v, str):
        return v, v.replace("'", "''")
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    return str(v), str(v)


class Drawer:
    """Draws filled templates for one database, caching slot queries' results."""

    def __init__(self, conn: sqlite3.Connection, rng: random.Random):
        self.conn, self.rng = conn, rng
        self._cache: dict[str, list[dict]] = {}

    def _sql_values(self, sql: str) -> list:
        if sql not in self._cache:
            cur = self.conn.execute(sql)
            cols = [d[0] for d in cur.description]
            rows = [r for r in cur.fetchall() if None not in r]
            # Sorted so the draw doesn't depend on SQLite's row order for unordered queries.
            rows.sort(key=repr)
            self._cache[sql] = [r[0] if len(cols) == 1 else dict(zip(cols, r)) for r in rows]
        values = self._cache[sql]
        if not values:
            raise ValueError(f"slot query returned nothing: {sql}")
        return values

    def _slot(self, spec: Any) -> Any:
        if isinstance(spec, str):
            return self.rng.choice(self._sql_values(spec))
        if callable(spec):
            return spec(self.rng)
        return self.rng.choice(list(spec))

    def fill(self, tpl: Template) -> tuple[str, str]:
        text, sql = {}, {}
        for name, spec in tpl.slots:
            value = self._slot(spec)
            for k, v in (value.items() if isinstance(value, dict) else [(name, value)]):
                text[k], sql[k] = _show(v)
        try:
            question = self.rng.choice(tpl.questions).format(**text)
            query = tpl.sql.format(**sql)
        except KeyError as e:
            raise ValueError(f"template {tpl.label()} uses {e} but no slot provides it") from None
        return question[0].upper() + question[1:], query

    def acceptable(self, sql: str) -> bool:
        """Does the query give a meaningful, unambiguous answer?"""
        rows = self.conn.execute(sql).fetchall()
        if not rows or len(rows) > MAX_RESULT_ROWS:
            return False
        if all(v is None for r in rows for v in r):
            return False
        if len(rows) == 1 and len(rows[0]) == 1 and rows[0][0] == 0:
            return False  # "how many ... ?" -> 0 teaches nothing
        limit = re.search(r"LIMIT (\d+)$", sql)
        if limit:
            # Top-k templates put the ranking value last; a tie at the cut makes the gold answer arbitrary.
            k = int(limit.group(1))
            more = self.conn.execute(sql[: limit.start()] + f"LIMIT {k + 1}").fetchall()
            if len(more) < k or (len(more) > k and more[k - 1][-1] == more[k][-1]):
                return False
        return True


def draw_examples(
    conn: sqlite3.Connection,
    templates: list[Template],
    rng: random.Random,
    default_n: int,
    seen_questions: set[str],
) -> list[tuple[Template, str, str]]:
    """Fill each template until it has its target count of new (question, sql) pairs or runs out of tries.

    `seen_questions` is shared across databases so question texts are unique in the whole dataset.
    """
    drawer = Drawer(conn, rng)
    out: list[tuple[Template, str, str]] = []
    seen_sql: set[str] = set()
    for tpl in templates:
        target = tpl.target or default_n
        made = 0
        for _ in range(target * ATTEMPTS_PER_EXAMPLE):
            if made >= target:
                break
            question, sql = drawer.fill(tpl)
            if sql in seen_sql or question in seen_questions:
                continue
            seen_sql.add(sql)  # also remembers rejected queries, so they aren't executed twice
            try:
                ok = drawer.acceptable(sql)
            except sqlite3.Error as e:
                raise ValueError(f"template {tpl.label()} gave invalid SQL: {e}\n{sql}") from e
            if ok:
                seen_questions.add(question)
                out.append((tpl, question, sql))
                made += 1
    return out

