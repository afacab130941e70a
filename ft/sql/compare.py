"""Result comparison under the benchmarks' official rules, and nothing looser unless asked.

    results_match(gold, pred, mode="multiset", ordered=order_matters(gold_sql))   # EX as Spider's test suite
    results_match(gold, pred, mode="set")                                          # ex_set as BIRD

EX (mode "multiset") follows `result_eq` of Spider's test-suite evaluator (taoyds/test-suite-sql-eval,
exec_eval.py): both empty is a match; otherwise the same number of rows and columns, every row's values sorted by
`str(v) + str(type(v))` must give the same rows (a list when order matters, else a set: its quick rejection), and
some permutation of the predicted columns must make the rows equal as a multiset, or as a list when the gold query
has ORDER BY. `order_matters` is that evaluator's own test: "order by" anywhere in the gold query's lower-cased text.
ex_set (mode "set") is BIRD's `set(predicted_res) == set(ground_truth_res)` (bird/llm/src/evaluation.py): no
column permutation, duplicates and row order ignored.

Values compare exactly as Python compares them, as in both evaluators: 15234567.25 != 15234587.25 and
0.1 + 0.2 != 0.3; an int equals the float of the same value (3 == 3.0); NULL (None) equals only NULL.
`rel_tol` > 0 is a named option (`eval.float_tolerance`), off by default, for numbers only: two numbers match when
math.isclose(a, b, rel_tol=rel_tol); rows are then paired after sorting both sides.
"""
from __future__ import annotations

import math
from collections import Counter

from sqlglot import exp

from .parse import SQLGLOT_ERRORS, parse_one

# Column permutations tried at most. Candidates are filtered first (a predicted column can only stand for a gold
# column holding the same values, and identical columns are tried once), so real results stay far below it.
_MAX_PERMUTATIONS = 100_000


def order_matters(gold_sql: str) -> bool:
    """Spider's test-suite rule for comparing rows as a list: the gold query's text contains "order by"."""
    return "order by" in (gold_sql or "").lower()


def query_has_order_by(sql: str) -> bool:
    """Whether the query's outermost SELECT (or compound SELECT) has an ORDER BY: whether its rows come in an order
    the query decided. (Votes between candidates use it; EX uses `order_matters`, the official text rule.)

    An ORDER BY only inside a subquery or window doesn't order the result. When sqlglot can't parse the query,
    falls back to looking for "ORDER BY" in the text."""
    try:
        tree = parse_one(sql)
    except (*SQLGLOT_ERRORS, ValueError):
        return "order by" in " ".join((sql or "").lower().split())
    while isinstance(tree, exp.Subquery) and not tree.args.get("order"):
        tree = tree.this
    return bool(tree.args.get("order"))


def _value(v):
    return bytes(v) if isinstance(v, memoryview) else v


def _rows(rows) -> list[tuple]:
    return [tuple(_value(v) for v in row) for row in rows or []]


def _unordered(row: tuple) -> tuple:
    # The test-suite evaluator's row key for its quick rejection (values in a row sorted by text and type).
    return tuple(sorted(row, key=lambda v: str(v) + str(type(v))))


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _close(a, b, rel_tol: float) -> bool:
    if a == b:
        return True
    return rel_tol > 0 and _is_number(a) and _is_number(b) and math.isclose(a, b, rel_tol=rel_tol)


def _sort_key(v):
    # A total order over SQLite's value types (None < numbers < text < bytes), close numbers next to each other.
    if v is None:
        return (0, 0.0, "")
    if _is_number(v):
        return (1, float(v), "")
    return (2, 0.0, str(v)) if isinstance(v, str) else (3, 0.0, repr(v))


def _rows_close(gold: list[tuple], pred: list[tuple], ordered: bool, rel_tol: float) -> bool:
    if not ordered:
        gold = sorted(gold, key=lambda r: [_sort_key(v) for v in r])
        pred = sorted(pred, key=lambda r: [_sort_key(v) for v in r])
    return all(len(g) == len(p) and all(_close(a, b, rel_tol) for a, b in zip(g, p)) for g, p in zip(gold, pred))


def _distinct_close(rows: list[tuple], rel_tol: float) -> list[tuple]:
    """Rows sorted, a row close to the one before it (value by value) dropped: a set under the tolerance."""
    out: list[tuple] = []
    for r in sorted(rows, key=lambda r: [_sort_key(v) for v in r]):
        if not out or len(out[-1]) != len(r) or not all(_close(a, b, rel_tol) for a, b in zip(out[-1], r)):
            out.append(r)
    return out


def _column_permutations(gold: list[tuple], pred: list[tuple], ncols: int, rel_tol: float):
    """Mappings perm (pred column perm[i] plays gold column i) worth trying, at most _MAX_PERMUTATIONS.

    Exact: a pred column can stand for a gold column only if it holds the same multiset of values (the evaluator's
    filter is weaker, by sampled rows; both only drop permutations that cannot match). With a tolerance: the same
    test on the sorted values, value by value. Pred columns equal in every row are interchangeable: one is tried."""
    gold_cols = [[row[i] for row in gold] for i in range(ncols)]
    pred_cols = [[row[j] for row in pred] for j in range(ncols)]
    if rel_tol > 0:
        def fits(i, j):
            return all(_close(a, b, rel_tol) for a, b in zip(sorted(gold_cols[i], key=_sort_key),
                                                              sorted(pred_cols[j], key=_sort_key)))
    else:
        counts_g, counts_p = [Counter(c) for c in gold_cols], [Counter(c) for c in pred_cols]

        def fits(i, j):
            return counts_g[i] == counts_p[j]
    first_of: dict[tuple, int] = {}
    twin = [first_of.setdefault(tuple(col), j) for j, col in enumerate(pred_cols)]  # first identical column
    candidates = [[j for j in range(ncols) if fits(i, j)] for i in range(ncols)]
    if any(not c for c in candidates):
        return
    tried = 0
    perm: list[int] = []
    used: set[int] = set()

    def search(i):
        nonlocal tried
        if tried >= _MAX_PERMUTATIONS:
            return
        if i == ncols:
            tried += 1
            yield tuple(perm)
            return
        for j in candidates[i]:
            # of identical pred columns, only the first one not yet used
            if j in used or any(twin[k] == twin[j] and k not in used for k in range(twin[j], j)):
                continue
            perm.append(j)
            used.add(j)
            yield from search(i + 1)
            perm.pop()
            used.discard(j)

    yield from search(0)


def results_match(gold_rows, pred_rows, *, mode: str = "multiset", ordered: bool = False,
                  rel_tol: float = 0.0) -> bool:
    """Does the predicted result equal the gold result? See the module docstring for the rules.

    mode="multiset": Spider's test-suite `result_eq` (`ordered`: the gold query has ORDER BY, `order_matters`).
    mode="set": BIRD's `set(pred) == set(gold)` (`ordered` is ignored).
    rel_tol: numbers equal within this relative tolerance (0: exact, the official rule)."""
    gold, pred = _rows(gold_rows), _rows(pred_rows)
    if mode == "set":
        if rel_tol <= 0:
            return set(gold) == set(pred)
        g, p = _distinct_close(gold, rel_tol), _distinct_close(pred, rel_tol)
        return len(g) == len(p) and _rows_close(g, p, True, rel_tol)
    if mode != "multiset":
        raise ValueError(f"unknown mode {mode!r}; expected 'set' or 'multiset'")
    if not gold and not pred:
        return True
    if len(gold) != len(pred):
        return False
    ncols = len(gold[0])
    if len(pred[0]) != ncols or any(len(r) != ncols for r in gold) or any(len(r) != ncols for r in pred):
        return False
    if rel_tol <= 0:
        # the evaluator's quick rejection: a necessary condition for its own rule, kept for identical outcomes
        # (an int and a float of the same value can sort differently within a row: then it rejects)
        g_un, p_un = [_unordered(r) for r in gold], [_unordered(r) for r in pred]
        if (g_un != p_un) if ordered else (set(g_un) != set(p_un)):
            return False
        gold_key = gold if ordered else Counter(gold)
        for perm in _column_permutations(gold, pred, ncols, 0.0):
            permuted = [tuple(row[j] for j in perm) for row in pred]
            if (permuted if ordered else Counter(permuted)) == gold_key:
                return True
        return False
    for perm in _column_permutations(gold, pred, ncols, rel_tol):
        if _rows_close(gold, [tuple(row[j] for j in perm) for row in pred], ordered, rel_tol):
            return True
    return False
