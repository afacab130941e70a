"""Mutants of a query: the near misses a model writes, made with sqlglot, to find databases that tell them apart.

    mutants("SELECT name FROM t WHERE a > 3 ORDER BY b DESC LIMIT 2")
    # ['SELECT name FROM t ORDER BY b DESC LIMIT 2', 'SELECT name FROM t WHERE a >= 3 ...', ...]

Test-suite accuracy (Zhong, Yu & Klein 2020) keeps the neighbour databases on which the gold query and some mutant
of it give different results: a database where they agree cannot catch that mistake. Each mutant changes one thing:
a predicate dropped, flipped (> / >= / < / <=, = / !=, AND / OR, NOT removed, IN / NOT IN), a number moved by one,
an aggregate swapped (MIN / MAX, SUM / AVG, COUNT / COUNT DISTINCT), a join's kind (INNER / LEFT) or its condition
dropped, DISTINCT added or removed, GROUP BY or HAVING dropped, LIMIT changed or removed, an ORDER BY direction
flipped, UNION / UNION ALL and INTERSECT / EXCEPT swapped.
"""
from __future__ import annotations

from typing import Callable

from sqlglot import exp

from .parse import DIALECT, SQLGLOT_ERRORS, parse_one

_FLIPS: dict[type, tuple[type, ...]] = {
    exp.GT: (exp.GTE, exp.LT), exp.GTE: (exp.GT, exp.LTE), exp.LT: (exp.LTE, exp.GT), exp.LTE: (exp.LT, exp.GTE),
    exp.EQ: (exp.NEQ,), exp.NEQ: (exp.EQ,),
}
_AGG_SWAPS: dict[type, tuple[type, ...]] = {
    exp.Max: (exp.Min,), exp.Min: (exp.Max,), exp.Sum: (exp.Avg, exp.Count), exp.Avg: (exp.Sum,),
}


def _edits(node: exp.Expr) -> list[Callable[[exp.Expr], exp.Expr | None]]:
    """Edits of one node: each takes the node (in a copy of the tree) and returns its replacement (None: remove)."""
    out: list[Callable[[exp.Expr], exp.Expr | None]] = []
    kind = type(node)
    if kind in _FLIPS:
        for other in _FLIPS[kind]:
            out.append(lambda n, o=other: o(this=n.this, expression=n.expression))
    if isinstance(node, (exp.And, exp.Or)):
        out.append(lambda n: n.this)  # the right side dropped
        out.append(lambda n: n.expression)  # the left side dropped
        other = exp.Or if isinstance(node, exp.And) else exp.And
        out.append(lambda n, o=other: o(this=n.this, expression=n.expression))
    if isinstance(node, exp.Not):
        out.append(lambda n: n.this)
    if isinstance(node, (exp.In, exp.Like, exp.Between, exp.Exists)) and not isinstance(node.parent, exp.Not):
        out.append(lambda n: exp.Not(this=n))
    if isinstance(node, (exp.Where, exp.Having, exp.Group, exp.Limit)):
        out.append(lambda n: None)
    if isinstance(node, exp.Limit) and isinstance(node.expression, exp.Literal) and not node.expression.is_string:
        out.append(lambda n: exp.Limit(expression=exp.Literal.number(int(float(n.expression.this)) + 1)))
    if isinstance(node, exp.Literal) and not node.is_string and not isinstance(node.parent, (exp.Limit, exp.Ordered)):
        # a threshold moved by one (the boundary rows of neighbour databases catch > vs >= this way too)
        out.append(lambda n: exp.Literal.number(_plus_one(n.this)))
    if kind in _AGG_SWAPS:
        for other in _AGG_SWAPS[kind]:
            out.append(lambda n, o=other: o(this=n.this))
    if isinstance(node, exp.Count):
        if isinstance(node.this, exp.Distinct):
            out.append(lambda n: exp.Count(this=n.this.expressions[0]) if len(n.this.expressions) == 1 else n)
        elif node.this is not None and not isinstance(node.this, exp.Star):
            out.append(lambda n: exp.Count(this=exp.Distinct(expressions=[n.this])))
    if isinstance(node, exp.Select) and not _one_row(node):
        if node.args.get("distinct"):
            out.append(lambda n: n.set("distinct", None) or n)
        else:
            out.append(lambda n: n.set("distinct", exp.Distinct()) or n)
    if isinstance(node, exp.Join):
        side = (node.args.get("side") or "").upper()
        if side == "LEFT":
            out.append(lambda n: n.set("side", None) or n)
        elif not side and node.args.get("on") is not None:
            out.append(lambda n: n.set("side", "LEFT") or n)
        if node.args.get("on") is not None:
            out.append(lambda n: n.set("on", None) or n)  # the join condition dropped: a cross join
    if isinstance(node, exp.Ordered):
        out.append(lambda n: n.set("desc", not n.args.get("desc")) or n)
    if isinstance(node, exp.Union):
        out.append(lambda n: n.set("distinct", not n.args.get("distinct")) or n)
    if isinstance(node, (exp.Intersect, exp.Except)):
        other = exp.Except if isinstance(node, exp.Intersect) else exp.Intersect
        out.append(lambda n, o=other: o(this=n.this, expression=n.expression, distinct=n.args.get("distinct")))
    return out


def _one_row(select: exp.Select) -> bool:
    """An aggregate without GROUP BY: one row, which DISTINCT can't change (a mutant that can never be caught)."""
    return not select.args.get("group") and all(e.find(exp.AggFunc) for e in select.expressions)


def _plus_one(text: str) -> str:
    try:
        return str(int(text) + 1)
    except ValueError:
        return repr(float(text) + 1)


def mutants(sql: str, limit: int = 60, dialect: str = DIALECT) -> list[str]:
    """Up to `limit` distinct one-edit variants of `sql` (in `dialect`, sqlglot's name), in a fixed order; [] when
    it doesn't parse."""
    try:
        tree = parse_one(sql, dialect)
    except (*SQLGLOT_ERRORS, ValueError):
        return []
    original = tree.sql(dialect=dialect)
    seen, out = {original}, []
    nodes = list(tree.walk())
    for index, node in enumerate(nodes):
        for k in range(len(_edits(node))):
            copy = tree.copy()
            target = list(copy.walk())[index]
            edit = _edits(target)[k]
            try:
                new = edit(target)
                if new is None:
                    target.pop()
                elif new is not target:
                    if target is copy:
                        copy = new
                    else:
                        target.replace(new)
                text = copy.sql(dialect=dialect)
            except Exception:  # noqa: BLE001 - an edit that doesn't fit this tree is no mutant
                continue
            if text not in seen:
                seen.add(text)
                out.append(text)
                if len(out) >= limit:
                    return out
    return out
