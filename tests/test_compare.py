"""Result comparison under the official rules: one test per rule, each with the case that must fail.

Spider's test-suite evaluator (taoyds/test-suite-sql-eval exec_eval.py result_eq) for EX, BIRD's
set(pred) == set(gold) for ex_set; the float tolerance is an option that is off unless asked."""
import pytest

from ft.sql.compare import order_matters, query_has_order_by, results_match


def test_values_compare_exactly_no_rounding():
    # The wrong revenue total that 6-significant-digit rounding used to accept ...
    assert not results_match([(15234567.25,)], [(15234587.25,)])
    assert not results_match([(15234567.25,)], [(15234587.25,)], mode="set")
    # ... and the right one it rejected (rounding put them in different buckets).
    assert results_match([(1234.565,)], [(1234.565,)])
    assert not results_match([(1234.565,)], [(1234.5649999999998,)])  # exact: not equal, as the evaluator says
    # 7 and more significant digits count
    assert not results_match([(1234567.1,)], [(1234567.2,)])
    assert not results_match([(0.123456789,)], [(0.123456788,)])
    assert results_match([(0.123456789,)], [(0.123456789,)])
    assert not results_match([(0.1 + 0.2,)], [(0.3,)])  # Python's ==, as both evaluators


def test_integers_equal_integral_floats():
    assert results_match([(3,)], [(3.0,)])
    assert results_match([(1234567,)], [(1234567.0,)], mode="set")
    assert results_match([(2, "a"), (3, "b")], [(2.0, "a"), (3.0, "b")])
    assert not results_match([(1234567,)], [(1234568.0,)])
    # the evaluator's quick rejection sorts a row's values by their text and type: an int and a float of the same
    # value can then land in other places, and the rows are rejected; kept so that our EX is its EX
    assert not results_match([(1, 1.5)], [(1.0, 1.5)])
    assert results_match([(1, 1.5)], [(1, 1.5)])


def test_nulls_equal_only_nulls():
    assert results_match([(None, 1)], [(None, 1)])
    assert not results_match([(None,)], [(0,)])
    assert not results_match([(None,)], [("",)])
    assert results_match([(None, 1), (2, None)], [(None, 2), (1, None)])  # columns swapped
    assert results_match([(None,), (None,)], [(None,)], mode="set")


def test_duplicate_rows_multiset_vs_set():
    gold = [(1, "a"), (1, "a"), (2, "b")]
    assert not results_match(gold, [(2, "b"), (1, "a")])  # Spider: a bag of rows
    assert not results_match(gold, [(1, "a"), (2, "b"), (2, "b")])  # same length, other counts
    assert results_match(gold, [(2, "b"), (1, "a"), (1, "a")])
    assert results_match(gold, [(2, "b"), (1, "a")], mode="set")  # BIRD: duplicates don't count
    assert results_match([], [], mode="multiset") and results_match([], [], mode="set")
    assert not results_match([(1,)], [])
    assert not results_match([(1,)], [], mode="set")


def test_row_order_only_when_gold_orders():
    gold = [(1,), (2,), (3,)]
    assert results_match(gold, [(3,), (2,), (1,)])
    assert not results_match(gold, [(3,), (2,), (1,)], ordered=True)
    assert results_match(gold, [(1,), (2,), (3,)], ordered=True)
    assert results_match(gold, [(3,), (2,), (1,)], mode="set", ordered=True)  # BIRD never looks at order


def test_order_matters_is_the_evaluators_text_rule():
    assert order_matters("SELECT a FROM t ORDER BY a")
    assert order_matters("select a from (select a from t order by a limit 3)")  # anywhere in the text
    assert not order_matters("SELECT a FROM t")
    assert not order_matters("SELECT a FROM t ORDER  BY a")  # the evaluator matches "order by" literally
    # the structural test (votes use it) looks at the outermost query only
    assert not query_has_order_by("SELECT a FROM (SELECT a FROM t ORDER BY a)")
    assert query_has_order_by("SELECT a FROM t UNION SELECT b FROM u ORDER BY 1")
    assert query_has_order_by("WITH x AS (SELECT 1 AS a) SELECT a FROM x ORDER BY a DESC LIMIT 1")
    assert not query_has_order_by("SELECT a, row_number() OVER (ORDER BY a) FROM t")
    assert query_has_order_by("SELEC a FROM t ORDER  BY a")  # unparseable: text fallback


def test_column_permutations():
    gold = [(1, "a", 2.5), (2, "b", 3.5)]
    pred = [("b", 3.5, 2), ("a", 2.5, 1)]
    assert results_match(gold, pred)
    assert results_match(gold, [("a", 2.5, 1), ("b", 3.5, 2)], ordered=True)
    assert not results_match(gold, [("b", 3.5, 2), ("a", 2.5, 1)], ordered=True)
    assert not results_match(gold, pred, mode="set")  # BIRD compares tuples as they are
    # same column value-multisets, but rows pair them differently
    assert not results_match([(1, "a"), (2, "b")], [(1, "b"), (2, "a")])
    assert not results_match([(1, 2)], [(1, 2, 3)])
    # columns that are copies of each other, and many of them (tried once, not 9! times)
    assert results_match([(1, 1, "x"), (2, 2, "y")], [("x", 1, 1), ("y", 2, 2)])
    wide = [tuple([i] * 9 + [str(i)]) for i in range(5)]
    assert results_match(wide, [(r[-1],) + r[:-1] for r in wide])
    assert not results_match(wide, [(r[-1],) + r[:-2] + (0,) for r in wide])
    # more than 3 columns: every permutation is still considered (the evaluator samples rows to prune, never to
    # decide)
    g4 = [(1, 2, 3, 4, 5), (6, 7, 8, 9, 10)]
    assert results_match(g4, [(5, 4, 3, 2, 1), (10, 9, 8, 7, 6)])


def test_float_tolerance_is_an_option_and_relative():
    assert not results_match([(0.1 + 0.2,)], [(0.3,)])  # off by default
    assert results_match([(0.1 + 0.2,)], [(0.3,)], rel_tol=1e-9)
    # relative, not buckets: the same relative distance matches at every magnitude and across bucket edges
    assert results_match([(1234.565,)], [(1234.5649999999998,)], rel_tol=1e-9)
    assert results_match([(99999.95,)], [(99999.95000001,)], rel_tol=1e-9)
    assert not results_match([(15234567.25,)], [(15234587.25,)], rel_tol=1e-9)  # still wrong
    assert results_match([(15234567.25,)], [(15234587.25,)], rel_tol=1e-5)  # what a loose tolerance buys
    # numbers only; rows paired after sorting, column permutations and order still apply
    assert not results_match([("1.0",)], [("1.00",)], rel_tol=0.5)
    assert results_match([(1.0, "a"), (2.0, "b")], [("b", 2.0000000001), ("a", 1.0000000001)], rel_tol=1e-9)
    assert not results_match([(1.0,), (2.0,)], [(2.0000000001,), (1.0000000001,)], ordered=True, rel_tol=1e-9)
    assert results_match([(1.0,), (1.0,)], [(1.0000000001,)], mode="set", rel_tol=1e-9)
    assert not results_match([(1.0,), (2.0,)], [(1.0000000001,)], mode="set", rel_tol=1e-9)


def test_unknown_mode_is_an_error():
    with pytest.raises(ValueError):
        results_match([(1,)], [(1,)], mode="bag")
