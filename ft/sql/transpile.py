"""SQLite SQL rewritten for DuckDB or PostgreSQL so that it returns the same rows: sqlglot's transpiler plus the
SQLite semantics it leaves out.

    to_dialect("SELECT strftime('%w', d) FROM t", "postgres", types={"t": {"d": "TEXT"}})

sqlglot translates syntax and most functions; what it can't know without types, or treats as the same when it isn't,
is fixed on the tree first:
  - identifiers lower-cased (SQLite ignores case even in quoted names; the copies made by `sqlft data convert
    --to-db` are lower-case), quoted only where needed;
  - LIKE -> ILIKE (SQLite's LIKE ignores ASCII case);
  - a comparison used as a number (`x - (a < b)`, `SUM(a = b)`) -> CAST(... AS INTEGER) (SQLite's booleans are 1/0);
  - CAST(<number> AS INTEGER) truncates toward zero as SQLite does (the others round): TRUNC first;
  - ROUND(x, n) rounds the decimal value as SQLite does (via NUMERIC / DECIMAL: DuckDB's ROUND on a double gives
    2.67 for 2.675, SQLite and PostgreSQL 2.68);
  - julianday(x), date(x) and strftime('%w', x) spelled in the target's functions (sqlglot passes them through);
  - integer / integer stays integer division (with `types`, the column types, so sqlglot can tell);
  - `:name` parameters (macro bodies) become plain names.
"""
from __future__ import annotations

from sqlglot import exp
from sqlglot.optimizer.annotate_types import annotate_types

from .parse import _lower_identifier, parse_one

TARGETS = ("sqlite", "duckdb", "postgres")
_ARITH = (exp.Add, exp.Sub, exp.Mul, exp.Div, exp.Mod, exp.IntDiv)
_BOOLEAN = (exp.Predicate, exp.Connector, exp.Not, exp.Exists)
_INT_TYPES = {exp.DType.INT, exp.DType.BIGINT, exp.DType.SMALLINT, exp.DType.TINYINT}
_JULIAN_EPOCH = 2440587.5  # the Julian day of 1970-01-01 00:00 UTC


def _unparen(node: exp.Expr) -> exp.Expr:
    while isinstance(node, exp.Paren):
        node = node.this
    return node


def _as_int(node: exp.Expr) -> exp.Expr:
    return exp.Cast(this=exp.paren(node.copy(), copy=False), to=exp.DataType.build("INT"))


def _timestamp(node: exp.Expr) -> exp.Expr:
    return exp.Cast(this=node.copy(), to=exp.DataType.build("TIMESTAMP"))


def _julianday(arg: exp.Expr, target: str) -> exp.Expr:
    epoch = (exp.Extract(this=exp.var("EPOCH"), expression=_timestamp(arg)) if target == "postgres"
             else exp.func("epoch", _timestamp(arg)))
    return exp.paren(exp.Add(this=exp.Div(this=epoch, expression=exp.Literal.number("86400.0")),
                             expression=exp.Literal.number(_JULIAN_EPOCH)), copy=False)


def _day_text(arg: exp.Expr, target: str) -> exp.Expr:
    """SQLite's date(x): the date part as 'YYYY-MM-DD' text."""
    if target == "postgres":
        return exp.func("TO_CHAR", _timestamp(arg), exp.Literal.string("YYYY-MM-DD"))
    return exp.func("STRFTIME", _timestamp(arg), exp.Literal.string("%Y-%m-%d"))


def _param(node: exp.Expr) -> exp.Expr:
    return exp.column(node.name) if isinstance(node, exp.Placeholder) and node.name else node  # :d in a macro body


def _fix(node: exp.Expr, target: str) -> exp.Expr:
    if isinstance(node, exp.Like):
        return exp.ILike(this=node.this, expression=node.expression)
    if isinstance(node, exp.Anonymous) and node.name.lower() == "julianday" and len(node.expressions) == 1:
        return _julianday(node.expressions[0], target)
    if isinstance(node, exp.Date) and not node.args.get("zone") and len(node.expressions) == 0:
        return _day_text(node.this, target)
    if isinstance(node, exp.TimeToStr) and target == "postgres" and node.text("format") == "%w":
        dow = exp.Extract(this=exp.var("DOW"), expression=_timestamp(node.this))
        return exp.Cast(this=exp.Cast(this=dow, to=exp.DataType.build("INT")), to=exp.DataType.build("TEXT"))
    if isinstance(node, _ARITH) or isinstance(node, (exp.Sum, exp.Avg)):
        for key in ("this", "expression"):
            child = node.args.get(key)
            if isinstance(child, exp.Expr) and isinstance(_unparen(child), _BOOLEAN):
                node.set(key, _as_int(_unparen(child)))
    if isinstance(node, exp.Round):
        inner = node.this
        if not (isinstance(inner, exp.Cast) and inner.to.this == exp.DType.DECIMAL):
            to = "NUMERIC" if target == "postgres" else "DECIMAL(38, 10)"
            node.set("this", exp.Cast(this=inner.copy(), to=exp.DataType.build(to)))
    if isinstance(node, exp.Cast) and node.to.this in _INT_TYPES:
        inner = _unparen(node.this)
        if isinstance(inner, _ARITH) or (inner.type is not None and inner.type.is_type(*exp.DataType.REAL_TYPES)):
            node.set("this", exp.func("TRUNC", inner.copy()))
    return node


def to_dialect(sql: str, target: str, types=None, source: str = "sqlite") -> str:
    """`sql` (SQLite) as `target` SQL with the same results (see the module docstring). `types`: table -> column ->
    SQL type (or a sqlglot Schema of them, lower-case), for integer division. Raises ValueError when sqlglot can't
    parse it."""
    if target == source:
        return sql
    try:
        tree = parse_one(sql, source)
    except Exception as e:  # noqa: BLE001 - parse errors, and sqlglot's own bugs on odd input
        raise ValueError(f"cannot parse: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    tree = tree.transform(_param).transform(_lower_identifier)
    if isinstance(types, dict):
        types = {t.lower(): {c.lower(): ty for c, ty in cols.items()} for t, cols in types.items()}
    try:
        tree = annotate_types(tree, schema=types or None, dialect=source)
    except Exception:  # noqa: BLE001 - types are a help for integer division, not a requirement
        pass
    tree = tree.transform(lambda n: _fix(n, target))
    return tree.sql(dialect=target)


def macro_body(body: str, target: str) -> str:
    """A SQLite macro body (an expression over :params) as a `target` expression over the bare parameter names."""
    sql = to_dialect(f"SELECT {body}", target)
    return sql[len("SELECT "):]
