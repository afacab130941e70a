"""Identifier constraints while decoding (PICARD-style, lexical): a partial SQL answer may only name tables and
columns the schema has.

PICARD (Scholak et al., 2021) checks the top-k next tokens of every beam with an incremental SQL parser and drops
those that can no longer lead to a valid query. This is the part of it that addresses our models' most common
error, names that don't exist, with a scan of the partial text instead of a parser:

- a word right after FROM / JOIN (not a subquery) must be a table of the schema or a CTE the query defined;
- a word after `qualifier.` must be a column of that table when the qualifier names one (directly or through an
  alias already defined), else a column of some table or a name given with AS so far (`SELECT T1.x FROM t AS
  T1`: the alias comes later; `WITH s AS (SELECT SUM(x) AS total ...) ... s.total`); a qualifier that is a CTE
  is not checked;
- the word being typed at the end only has to be a prefix of such a name.

Known limit: a FROM-subquery's computed output named before the subquery is written (`SELECT x.n FROM (SELECT
COUNT(*) AS n ...) AS x`) is refused. Of the 10,140 gold queries of the bundled data and Spider's training set the
guard refuses one, which names a table its schema lacks (bench/results/constrained.json). String literals,
comments and quoted identifiers are skipped; nothing else is constrained (bare column names, aliases, functions).
`IdentifierGuard.ok(text)` says whether the partial text is still possible; `SchemaConstraint` is the transformers
logits processor that uses it.
"""
from __future__ import annotations

import functools
import re

import torch

from .parse import schema_catalog

# Strings (possibly unterminated at the end), comments, quoted identifiers, words, and single characters.
_LEX = re.compile(r"'(?:[^']|'')*'?|--[^\n]*|\"[^\"]*\"?|`[^`]*`?|\[[^\]]*\]?|[A-Za-z_][A-Za-z0-9_$]*|\d[\w.]*|\s+|.",
                  re.S)
_TABLE_BEFORE = {"from", "join"}
# Words that end a table reference's alias position ("FROM t WHERE", not "FROM t alias").
_NOT_ALIAS = {"where", "join", "inner", "left", "right", "full", "outer", "cross", "natural", "on", "using", "group",
              "order", "limit", "having", "union", "intersect", "except", "window", "as", "offset", "and", "or"}


class IdentifierGuard:
    """Which partial SQL texts can still become a query that names only the schema's tables and columns."""

    def __init__(self, catalog: dict[str, list[str]]):
        self.columns = {t.lower(): {c.lower() for c in cols} for t, cols in catalog.items()}
        self.all_columns = set().union(*self.columns.values()) if self.columns else set()

    @classmethod
    @functools.lru_cache(maxsize=64)
    def from_ddl(cls, ddl: str) -> IdentifierGuard:
        return cls(schema_catalog(ddl))

    def ok(self, text: str) -> bool:
        lexemes = [m.group() for m in _LEX.finditer(text)]
        words = [(i, x) for i, x in enumerate(lexemes) if x[0].isalpha() or x[0] == "_"]
        ctes = {w.lower() for k, (i, w) in enumerate(words[:-1]) if words[k + 1][1].lower() == "as"
                and _next_solid(lexemes, words[k + 1][0]) == "("}
        # Names given with AS so far (select outputs, CTE columns): an unknown qualifier's column may be one of them.
        named = {words[k + 1][1].lower() for k, (i, w) in enumerate(words[:-1]) if w.lower() == "as"}
        aliases: dict[str, str] = {}
        last = len(lexemes) - 1
        for k, (i, w) in enumerate(words):
            typing = i == last  # the word still being typed: a prefix is enough
            prev = _prev_solid(lexemes, i)
            lw = w.lower()
            if prev is not None and prev.lower() in _TABLE_BEFORE and _is_word_prev(lexemes, i):
                names = self.columns.keys() | ctes
                if not _allowed(lw, names, typing):
                    return False
                alias = _alias_after(lexemes, words, k)
                if alias:
                    aliases[alias] = lw
            elif prev == "." and i >= 2:
                q = _prev_word(lexemes, i)
                if q is None:
                    continue
                ql = q.lower()
                if ql in ctes or (ql in aliases and aliases[ql] in ctes):
                    continue
                table = ql if ql in self.columns else aliases.get(ql)
                names = self.columns[table] if table in self.columns else self.all_columns | named
                if not _allowed(lw, names, typing):
                    return False
        return True


def _allowed(word: str, names, typing: bool) -> bool:
    if word.startswith("sqlite_") or (typing and "sqlite_".startswith(word)):  # SQLite's own tables
        return True
    return any(n.startswith(word) for n in names) if typing else word in names


def _prev_solid(lexemes: list[str], i: int) -> str | None:
    for j in range(i - 1, -1, -1):
        if not lexemes[j].isspace() and not lexemes[j].startswith("--"):
            return lexemes[j]
    return None


def _next_solid(lexemes: list[str], i: int) -> str | None:
    for j in range(i + 1, len(lexemes)):
        if not lexemes[j].isspace() and not lexemes[j].startswith("--"):
            return lexemes[j]
    return None


def _is_word_prev(lexemes: list[str], i: int) -> bool:
    """The solid lexeme before position i is a keyword word (not `x.from`)."""
    for j in range(i - 1, -1, -1):
        if not lexemes[j].isspace():
            return j == 0 or lexemes[j - 1] != "."
    return False


def _prev_word(lexemes: list[str], i: int) -> str | None:
    """The qualifier of `q.word` at position i (the lexeme before the dot, when it is a word)."""
    j = i - 1
    while j >= 0 and lexemes[j] != ".":
        j -= 1
    q = lexemes[j - 1] if j >= 1 else ""
    return q if q and (q[0].isalpha() or q[0] == "_") else None


def _alias_after(lexemes: list[str], words: list[tuple[int, str]], k: int) -> str | None:
    """`FROM t AS a` / `FROM t a`: the alias of the table at words[k], when it is already written."""
    if k + 1 >= len(words):
        return None
    i, _ = words[k]
    nxt = _next_solid(lexemes, i)
    if nxt is None or not (nxt[0].isalpha() or nxt[0] == "_"):
        return None
    w = words[k + 1][1].lower()
    if w == "as":
        return words[k + 2][1].lower() if k + 2 < len(words) else None
    return None if w in _NOT_ALIAS else w


class SchemaConstraint:
    """A transformers logits processor: for each row, the highest-scored of the top_k next tokens that keep the
    partial SQL possible under its guard stays, the ones above it are masked (greedy then picks it; sampling
    draws from the top_k that pass). When none of the top_k passes, the row is left alone: the constraint never
    forces a token the model doesn't rank.

    rows: one guard (or None: unconstrained) per sequence of the batch, in batch order; prompt_len: where the
    answers start in input_ids; stop: text that ends an answer (nothing after it is checked)."""

    def __init__(self, tokenizer, guards: list[IdentifierGuard | None], prompt_len: int, stop: str,
                 top_k: int = 8):
        self.guards, self.prompt_len, self.stop, self.top_k = guards, prompt_len, stop, top_k
        self.pieces = _pieces(tokenizer)
        self.texts = [""] * len(guards)
        self.seen = prompt_len
        self.masked = 0  # tokens masked, over the whole generation (what the constraint did)
        self.fallbacks = 0  # row-steps where none of the top_k passed (left alone)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        # Extend each row's text by the tokens generated since the last call (one, in generate's loop).
        for pos in range(self.seen, input_ids.shape[1]):
            col = input_ids[:, pos].tolist()
            self.texts = [t + self.pieces[c] for t, c in zip(self.texts, col)]
        self.seen = input_ids.shape[1]
        top = torch.topk(scores, min(self.top_k, scores.shape[-1]), dim=-1).indices.tolist()
        for b, guard in enumerate(self.guards):
            text = self.texts[b]
            if guard is None or self.stop in text:
                continue
            bad = []
            for tok in top[b]:
                if guard.ok(text + self.pieces[tok]):
                    break
                bad.append(tok)
            else:  # nothing in the top_k passes: leave this row alone
                self.fallbacks += 1
                continue
            if bad:
                scores[b, bad] = float("-inf")
                self.masked += len(bad)
        return scores


@functools.lru_cache(maxsize=4)
def _pieces(tokenizer) -> tuple[str, ...]:
    """Each token id's text (byte-level pieces of a multi-byte character decode to U+FFFD: only inside strings)."""
    return tuple(tokenizer.decode([i]) for i in range(len(tokenizer)))
