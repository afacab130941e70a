"""Scoring: how strongly each table and column matches a question's terms and the database values it names."""
from __future__ import annotations

import math

from ft.data.linking.schema import SchemaIndex
from ft.data.linking.terms import _stem

NEIGHBOR_SHARE = 0.3  # of its best-matched foreign-key neighbour's score added to a matched table's own

def score_tables(terms: tuple[str, ...], index: SchemaIndex,
                 value_hits: list[tuple[int, str, str, str]] = ()) -> tuple[dict[str, float], dict[tuple, float]]:
    """(table -> score, (table, column) -> score) for the question's terms and value matches."""
    tscore: dict[str, float] = {}
    cscore: dict[tuple[str, str], float] = {}
    qset = set(terms)
    for q in terms:
        near = index.partials(q)  # other words of the schema that q is a prefix of, or that are a prefix of q
        touched = set(index.term_tables.get(q, ()))
        for v in near:
            touched.update(index.term_tables[v])
        if not touched:
            continue
        w = index.idf.get(q) or 1.0
        for ti in sorted(touched):
            t = index.tables[ti]
            if q in t.area:  # only the subject-area prefix: a weak hint
                best = 1.0
            elif q in t.terms:
                best = 3.0
            else:
                best = 1.5 if any(v in near and v not in t.area for v in t.terms) else 0.0
            for c in t.columns:
                cs = 2.0 if q in c.terms else (1.0 if any(v in near for v in c.terms) else 0.0)
                if not cs and q in c.comment_terms:
                    cs = 0.7
                if cs:
                    key = (t.key, c.name.lower())
                    cscore[key] = cscore.get(key, 0.0) + cs * w
                    best = max(best, cs)
            if best < 1.0 and q in t.comment_terms:
                best = 1.0
            if best:
                tscore[t.key] = tscore.get(t.key, 0.0) + best * w
    for t in index.tables:
        core = [x for x in t.terms if len(x) > 2 and x not in t.area]
        if core and all(x in qset for x in core):
            tscore[t.key] = tscore.get(t.key, 0.0) + 2.0  # every word of the table's name is in the question
    spread: dict[str, int] = {}  # in how many columns a matched value occurs: the fewer, the more it says
    for _, table, column, value in value_hits:
        spread[value.lower()] = spread.get(value.lower(), 0) + 1
    for size, table, column, value in value_hits:
        w = (6.0 + 4.0 * size) / math.sqrt(spread[value.lower()])
        if size == 1 and _stem(value.lower()) in index.idf:
            w /= 2  # a one-word value that is also a word of the schema ('paid', 'employee'): weaker evidence
        tscore[table] = tscore.get(table, 0.0) + w
        key = (table, column.lower())
        cscore[key] = cscore.get(key, 0.0) + w
    # Tables join: a matched table next to a strongly matched one is likelier to be needed (the department of the
    # employees asked about), so each gets a share of its best neighbour's own score.
    own = dict(tscore)
    for k, s in own.items():
        best = max((own.get(n, 0.0) for n in index.neighbors.get(k, ())), default=0.0)
        tscore[k] = s + NEIGHBOR_SHARE * best
    return tscore, cscore
