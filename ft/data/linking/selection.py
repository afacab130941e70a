"""Selection: the tables (whole or compact) and value hints one question gets under a token budget (link_schema)."""
from __future__ import annotations

from dataclasses import dataclass, field

from ft.data.linking.schema import SchemaIndex, Table, _gold, _render, parse_schema
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
        return _unchanged(row, index, full_tokens, budget)
    values = value_index(row.db, index) if row.db and index.tables else None
    hits = match_values(text, values) if values else []
    if full_tokens <= budget and not (hinting and hits):
        return _unchanged(row, index, full_tokens, budget)
    tscore, cscore = score_tables(question_terms(text), index, hits)
    required = _required(row, index) if gold else {}
    if required is None:  # what the gold query needs is unknown: drop nothing
        return _unchanged(row, index, full_tokens, budget)
    matched: dict[str, set[str]] = {}
    for (tt, c), sc in cscore.items():
        if sc > 0:
            matched.setdefault(tt, set()).add(c)
    sep = count("\n\n") if index.tables else 0
    # Room the hints will take (the greedy pass counts table blocks only).
    reserve = _hint_reserve(hits[:max_value_hints], count) if hinting else 0
    linker = _Linker(row, index, count, budget, full_tokens, tscore, matched, required, hits,
                     room=budget - min(reserve, budget // 4), sep=sep, keep_paths=keep_paths)
    linker.select(fill)
    return linker.settle(max_value_hints if value_hints else 0)


def _unchanged(row: Row, index: SchemaIndex, full_tokens: int, budget: int,
               shown: dict[str, set[str] | None] | None = None) -> Linked:
    """The row's schema as it is (the very text other questions on this schema share)."""
    return Linked(row.schema, [t.name for t in index.tables], [], [], [], full_tokens, full_tokens, budget, False,
                  {} if shown is None else dict(shown))


def _required(row: Row, index: SchemaIndex) -> dict[str, set[str]] | None:
    """Training: the gold query's tables -> its columns there; None when they are unknown (unparseable query)."""
    try:
        g_tables, g_cols = _gold(row.query, row.schema)
    except ValueError:
        return None
    if g_tables is None or (not g_tables and index.tables):
        return None
    return {t: {c for tt, c in g_cols if tt == t} for t in sorted(g_tables)}


def _hint_reserve(hits, count: TokenCounter) -> int:
    """Tokens the hint lines of these hits will take, about: their values and a line head per column."""
    return sum(count(f"'{v}', ") for _, _, _, v in hits) + 8 * len({(t, c) for _, t, c, _ in hits})


@dataclass
class _Linker:
    """One question's selection under way: the tables shown (all columns, or some), their cost, the order they came
    in; `select` fills it greedily block by block, `settle` trims it to the real token count of the joined text."""

    row: Row
    index: SchemaIndex
    count: TokenCounter
    budget: int
    full_tokens: int
    tscore: dict[str, float]  # table -> score against the question
    matched: dict[str, set[str]]  # table -> its columns that match the question
    required: dict[str, set[str]]  # training: gold table -> gold columns (kept whatever the budget)
    hits: list  # the database values the question names (match_values)
    room: int  # the budget less the room the hints will take
    sep: int  # tokens between two table blocks
    keep_paths: bool
    shown: dict[str, set[str] | None] = field(default_factory=dict)  # table -> columns shown (None: all of them)
    cost: dict[str, int] = field(default_factory=dict)
    added: list[str] = field(default_factory=list)  # in the order they came (the last ones go first if over)
    hint_limit: int = 0
    hint_text: str = ""

    def compact_cols(self, t: Table) -> set[str]:
        """Keys, the first text column (usually the name), matched and gold columns."""
        return self.index.base_columns(t) | self.matched.get(t.key, set()) | self.required.get(t.key, set())

    def form_cost(self, k: str, cols: set[str] | None) -> int:
        return self.count(_render(self.index.by_key[k], cols)) + self.sep

    def add(self, keys: list[str], full: bool, force: bool = False) -> bool:
        """Add these tables (all or none), in full or compact, if they fit the room (or `force`)."""
        plan, total = [], 0
        for k in keys:
            if k in self.shown or any(k == p[0] for p in plan):
                continue
            t = self.index.by_key[k]
            cols = None if (full or t.items is None) else self.compact_cols(t)
            c = self.form_cost(k, cols)
            plan.append((k, cols, c))
            total += c
        if not force and sum(self.cost.values()) + total > self.room:
            return False
        for k, cols, c in plan:
            self.shown[k], self.cost[k] = cols, c
            self.added.append(k)
        return True

    def upgrade(self, k: str) -> None:
        """Show all of a compact table's columns if that fits the room."""
        if self.shown.get(k, None) is not None:
            c = self.form_cost(k, None)
            if sum(self.cost.values()) - self.cost[k] + c <= self.room:
                self.shown[k], self.cost[k] = None, c

    def with_path(self, k: str) -> list[str]:
        path = self.index.path_to(k, set(self.shown)) if self.keep_paths else []
        return (path or []) + [k]  # None: nothing kept is near it, so on its own

    def select(self, fill: bool) -> None:
        """The greedy pass: gold tables, the best-ranked ones, then (fill) their neighbours and the rest."""
        shown, tscore = self.shown, self.tscore
        # 1. Training: the gold query's tables, in full (compact if that is all that fits; kept whatever the budget).
        if self.required:
            gold_keys = sorted(self.required, key=lambda k: (-tscore.get(k, 0.0), k))
            if not self.add(gold_keys, full=True):
                self.add(gold_keys, full=False, force=True)
                for k in gold_keys:
                    self.upgrade(k)
        # 2. The best-ranked tables, compact, each with the foreign-key path to the kept ones: breadth first.
        order = {t.key: i for i, t in enumerate(self.index.tables)}
        ranked = sorted((k for k in tscore if k not in shown), key=lambda k: (-tscore[k], order[k]))
        top = tscore[ranked[0]] if ranked else 0.0
        for k in [k for k in ranked if tscore[k] >= CORE_SHARE * top][:MAX_CORE]:
            self.add(self.with_path(k), full=False)
        # 3. Then in full, best first, while there is room.
        for k in ranked:
            if k in shown:
                self.upgrade(k)
        # 4. The other matched tables, compact; then (fill) the neighbours of kept tables and the rest of the schema.
        for k in ranked:
            if k not in shown:
                self.add(self.with_path(k), full=False)
        if fill:
            self.fill(order)

    def fill(self, order: dict[str, int]) -> None:
        """Tables next to the kept ones, then the rest of the schema, compact while they fit; then in full."""
        shown, neighbors = self.shown, self.index.neighbors
        near = [k for k in order if k not in shown and any(n in shown for n in neighbors.get(k, ()))]
        for k in near + [k for k in order if k not in shown and k not in near]:
            if sum(self.cost.values()) + self.sep >= self.room:
                break
            self.add([k], full=False)
        for k in [k for k in order if k in shown]:
            self.upgrade(k)

    def whole(self) -> bool:
        return len(self.shown) == len(self.index.tables) and all(v is None for v in self.shown.values())

    def build(self) -> tuple[str, list[tuple[str, str, str]]]:
        """The schema text of the tables shown, and the hints shown with it (their lines in `hint_text`)."""
        hints = _pick_hints(self.hits, self.shown, self.hint_limit) if self.hint_limit > 0 else []
        self.hint_text = _hint_lines(hints, self.index)
        if self.whole():
            return self.row.schema, hints  # all of it: the very text other questions on this schema share
        index = self.index
        return "\n\n".join(_render(t, self.shown[t.key]) for t in index.tables if t.key in self.shown), hints

    def tokens_of(self, schema: str) -> int:
        return self.count(schema) + (self.count("\n" + self.hint_text) if self.hint_text else 0)

    def give_up_one(self, hints: list) -> bool:
        """Give up one thing: a filler table (no match with the question), else a hint, else the lowest-ranked table
        added; False when only gold tables are left (training: kept whatever the budget)."""
        filler = [k for k in self.added if k not in self.required and not self.tscore.get(k)]
        ranked_added = [k for k in self.added if k not in self.required]
        if not filler and hints:
            self.hint_limit = len(hints) - 1
            return True
        if not (filler or ranked_added):
            return False
        k = (filler or ranked_added)[-1]
        self.added.remove(k)
        del self.shown[k], self.cost[k]
        return True

    def settle(self, hint_limit: int) -> Linked:
        """The greedy pass counted blocks one by one (and no hints): settle on the real count of the joined text."""
        self.hint_limit = hint_limit
        whole = self.whole()
        schema, hints = self.build()
        if whole and not hints:
            return _unchanged(self.row, self.index, self.full_tokens, self.budget, self.shown)
        tokens = self.tokens_of(schema)
        while tokens > self.budget and self.give_up_one(hints):
            schema, hints = self.build()
            tokens = self.tokens_of(schema)
        if self.whole() and not hints:
            return _unchanged(self.row, self.index, self.full_tokens, self.budget, self.shown)
        index, shown = self.index, self.shown
        return Linked(schema, [t.name for t in index.tables if t.key in shown],
                      [t.name for t in index.tables if t.key not in shown],
                      [index.by_key[k].name for k, v in shown.items() if v is not None], hints, tokens,
                      self.full_tokens, self.budget, True, dict(shown), self.hint_text)
