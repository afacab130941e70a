"""Selection: the tables (whole or compact) and value hints one question gets under a token budget (link_schema)."""
from __future__ import annotations

from dataclasses import dataclass, field

from ft.data.linking.schema import Table, _gold, _render, parse_schema
from ft.data.linking.scoring import score_tables
from ft.data.linking.terms import question_terms
from ft.data.linking.values import _hint_lines, _pick_hints, match_values, value_index
from ft.data.rows import Row

CORE_SHARE, MAX_CORE = 0.25, 12  # tables scoring at least this share of the best come first (at most MAX_CORE)

class TokenCounter:
    """Tokens of a text under a tokenizer (no special tokens), memoized; or any `count(text) -> int`."""

    def __init__(self, tokenizer_or_fn):
        self._fn = tokenizer_or_fn if not hasattr(tokenizer_or_fn, "encode") and callable(tokenizer_or_fn) else None
        self._tok = None if self._fn else tokenizer_or_fn
        self._memo: dict[str, int] = {}

    def __call__(self, text: str) -> int:
        n = self._memo.get(text)
        if n is None:
            n = self._fn(text) if self._fn else len(self._tok(text, add_special_tokens=False)["input_ids"])
            if len(self._memo) > 50_000:
                self._memo.clear()
            self._memo[text] = n
        return n


def as_counter(count) -> TokenCounter:
    return count if isinstance(count, TokenCounter) else TokenCounter(count)


@dataclass
class Linked:
    schema: str  # the pruned schema; the row's own text when all of it is kept
    kept: list[str]  # tables kept, schema order
    dropped: list[str]
    compact: list[str]  # kept tables shown with some of their columns only
    hints: list[tuple[str, str, str]]  # (table, column, value) shown
    tokens: int  # tokens of `schema` and of the hint lines
    full_tokens: int  # tokens of the whole schema
    budget: int
    changed: bool
    shown_columns: dict[str, set[str] | None] = field(default_factory=dict)  # table -> columns (None: all)
    hint_text: str = ""  # the hints as `-- values of t.c: ...` lines, schema order (Row.value_hints)


def link_schema(row: Row, budget: int, count, *, gold: bool = False, value_hints: bool = True,
                max_value_hints: int = 8, keep_paths: bool = True, fill: bool = True) -> Linked:
    """The schema of `row` pruned to at most `budget` tokens (see the module docstring).

    gold: training; the gold query's tables and columns are always kept (even over the budget), and when the gold
    query cannot be parsed nothing is dropped. keep_paths / fill exist to measure what they bring (tests, bench).
    """
    count = as_counter(count)
    index = parse_schema(row.schema)
    full_tokens = count(row.schema)
    text = row.question + (" " + row.evidence if row.evidence else "")
    hinting = value_hints and max_value_hints > 0
    if full_tokens <= budget and not hinting:
        return Linked(row.schema, [t.name for t in index.tables], [], [], [], full_tokens, full_tokens, budget, False)
    values = value_index(row.db, index) if row.db and index.tables else None
    hits = match_values(text, values) if values else []
    if full_tokens <= budget and not (hinting and hits):
        return Linked(row.schema, [t.name for t in index.tables], [], [], [], full_tokens, full_tokens, budget, False)
    tscore, cscore = score_tables(question_terms(text), index, hits)

    required: dict[str, set[str]] = {}
    if gold:
        try:
            g_tables, g_cols = _gold(row.query, row.schema)
        except ValueError:
            g_tables = None
        if g_tables is None or (not g_tables and index.tables):  # what it needs is unknown: drop nothing
            return Linked(row.schema, [t.name for t in index.tables], [], [], [], full_tokens, full_tokens, budget,
                          False)
        for t in sorted(g_tables):
            required[t] = {c for tt, c in g_cols if tt == t}

    matched: dict[str, set[str]] = {}
    for (tt, c), sc in cscore.items():
        if sc > 0:
            matched.setdefault(tt, set()).add(c)

    def compact_cols(t: Table) -> set[str]:
        """Keys, the first text column (usually the name), matched and gold columns."""
        return index.base_columns(t) | matched.get(t.key, set()) | required.get(t.key, set())

    sep = count("\n\n") if index.tables else 0
    # Room the hints will take (the greedy pass below counts table blocks only).
    reserve = 0
    if value_hints and max_value_hints > 0:
        reserve = sum(count(f"'{v}', ") for _, _, _, v in hits[:max_value_hints])
        reserve += 8 * len({(t, c) for _, t, c, _ in hits[:max_value_hints]})
    room = budget - min(reserve, budget // 4)
    shown: dict[str, set[str] | None] = {}  # table -> columns shown (None: all of them)
    cost: dict[str, int] = {}
    added: list[str] = []  # in the order they were added (the last ones go first if the real count is over)

    def form_cost(k: str, cols: set[str] | None) -> int:
        return count(_render(index.by_key[k], cols)) + sep

    def add(keys: list[str], full: bool, force: bool = False) -> bool:
        """Add these tables (all or none), in full or compact, if they fit the room (or `force`)."""
        plan, total = [], 0
        for k in keys:
            if k in shown or any(k == p[0] for p in plan):
                continue
            t = index.by_key[k]
            cols = None if (full or t.items is None) else compact_cols(t)
            c = form_cost(k, cols)
            plan.append((k, cols, c))
            total += c
        if not force and sum(cost.values()) + total > room:
            return False
        for k, cols, c in plan:
            shown[k], cost[k] = cols, c
            added.append(k)
        return True

    def upgrade(k: str) -> None:
        if shown.get(k, None) is not None:
            c = form_cost(k, None)
            if sum(cost.values()) - cost[k] + c <= room:
                shown[k], cost[k] = None, c

    def with_path(k: str) -> list[str]:
        path = index.path_to(k, set(shown)) if keep_paths else []
        return (path or []) + [k]  # None: nothing kept is near it, so on its own

    # 1. Training: the gold query's tables, in full (compact if that is all that fits; kept whatever the budget).
    if required:
        gold_keys = sorted(required, key=lambda k: (-tscore.get(k, 0.0), k))
        if not add(gold_keys, full=True):
            add(gold_keys, full=False, force=True)
            for k in gold_keys:
                upgrade(k)
    # 2. The best-ranked tables, compact, each with the foreign-key path to the kept ones: breadth first.
    order = {t.key: i for i, t in enumerate(index.tables)}
    ranked = sorted((k for k in tscore if k not in shown), key=lambda k: (-tscore[k], order[k]))
    top = tscore[ranked[0]] if ranked else 0.0
    for k in [k for k in ranked if tscore[k] >= CORE_SHARE * top][:MAX_CORE]:
        add(with_path(k), full=False)
    # 3. Then in full, best first, while there is room.
    for k in ranked:
        if k in shown:
            upgrade(k)
    # 4. The other matched tables, compact; then (fill) the neighbours of kept tables and the rest of the schema.
    for k in ranked:
        if k not in shown:
            add(with_path(k), full=False)
    if fill:
        near = [k for k in order if k not in shown and any(n in shown for n in index.neighbors.get(k, ()))]
        for k in near + [k for k in order if k not in shown and k not in near]:
            if sum(cost.values()) + sep >= room:
                break
            add([k], full=False)
        for k in [k for k in order if k in shown]:
            upgrade(k)

    hint_limit = max_value_hints if value_hints else 0

    def build() -> tuple[str, list[tuple[str, str, str]]]:
        hints = _pick_hints(hits, shown, hint_limit) if hint_limit > 0 else []
        nonlocal hint_text
        hint_text = _hint_lines(hints, index)
        if len(shown) == len(index.tables) and all(v is None for v in shown.values()):
            return row.schema, hints  # all of it: the very text other questions on this schema share
        return "\n\n".join(_render(t, shown[t.key]) for t in index.tables if t.key in shown), hints

    def tokens_of(schema: str) -> int:
        return count(schema) + (count("\n" + hint_text) if hint_text else 0)

    hint_text = ""

    def unchanged() -> Linked:
        return Linked(row.schema, [t.name for t in index.tables], [], [], [], full_tokens, full_tokens, budget,
                      False, dict(shown))

    whole = len(shown) == len(index.tables) and all(v is None for v in shown.values())
    schema, hints = build()
    if whole and not hints:
        return unchanged()
    tokens = tokens_of(schema)
    # The greedy pass counted blocks one by one (and no hints): settle on the real count of the joined text.
    # Given up first: filler tables (no match with the question), then hints, then the lowest-ranked tables.
    while tokens > budget:
        filler = [k for k in added if k not in required and not tscore.get(k)]
        ranked_added = [k for k in added if k not in required]
        if filler:
            k = filler[-1]
        elif hints:
            hint_limit = len(hints) - 1
            schema, hints = build()
            tokens = tokens_of(schema)
            continue
        elif ranked_added:
            k = ranked_added[-1]
        else:
            break  # only gold tables left (training): kept whatever the budget
        added.remove(k)
        del shown[k], cost[k]
        schema, hints = build()
        tokens = tokens_of(schema)
    if len(shown) == len(index.tables) and all(v is None for v in shown.values()) and not hints:
        return unchanged()
    return Linked(schema, [t.name for t in index.tables if t.key in shown],
                  [t.name for t in index.tables if t.key not in shown],
                  [index.by_key[k].name for k, v in shown.items() if v is not None], hints, tokens, full_tokens,
                  budget, True, dict(shown), hint_text)

