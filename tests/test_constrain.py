"""Identifier constraints while decoding (ft.sql.constrain): what the guard allows and refuses, the logits
processor that applies it, and the constrained path through evaluation."""
from __future__ import annotations

import pytest
import torch
from conftest import SCHEMA, make_rows

from ft.eval.generation import Generator
from ft.sql.constrain import IdentifierGuard, SchemaConstraint


@pytest.fixture(scope="module")
def guard():
    return IdentifierGuard.from_ddl(SCHEMA)


def every_prefix_ok(guard, sql: str) -> bool:
    return all(guard.ok(sql[:k]) for k in range(1, len(sql) + 1))


def test_every_prefix_of_the_gold_queries_passes(guard):
    for r in make_rows(12):
        assert every_prefix_ok(guard, r["query"]), r["query"]
    for sql in ("SELECT T1.name FROM customers AS T1 JOIN orders AS T2 ON T1.id = T2.customer_id",
                "WITH s AS (SELECT customer_id, SUM(total) AS spent FROM orders GROUP BY customer_id) "
                "SELECT c.name, s.spent FROM customers c JOIN s ON s.customer_id = c.id",
                "SELECT name FROM products WHERE name = 'FROM nowhere' -- FROM nothing\n",
                "SELECT * FROM (SELECT COUNT(*) AS n FROM orders) AS x WHERE x.n > 1",
                "SELECT \"name\" FROM customers", "SELECT * FROM sqlite_master"):
        assert every_prefix_ok(guard, sql), sql


@pytest.mark.parametrize("partial", [
    "SELECT * FROM clients ",  # no such table
    "SELECT * FROM customers JOIN order_items ",  # after JOIN too
    "SELECT * FROM x",  # no table starts with x
    "SELECT customers.email ",  # customers has no column email
    "SELECT c.total FROM customers AS c WHERE c.total",  # c is customers: no total there
    "SELECT T1.salary",  # unknown qualifier: no table has salary
    # The known limit (module docstring): a subquery's output named before the subquery is written.
    "SELECT x.n ",  # ... FROM (SELECT COUNT(*) AS n FROM orders) AS x: refused while decoding
])
def test_names_the_schema_lacks_are_refused(guard, partial):
    assert not guard.ok(partial)


@pytest.mark.parametrize("partial", [
    "SELECT * FROM cust",  # still typing: a prefix of customers
    "SELECT customers.na",
    "SELECT T1.ci",  # unknown qualifier: a prefix of a column of some table
    "SELECT c.total",  # c defined later (FROM orders AS c) could have it
])
def test_prefixes_of_real_names_are_allowed(guard, partial):
    assert guard.ok(partial)


def test_all_bundled_gold_queries_pass(tmp_path):
    """A spread of the generated dataset's gold queries (all tiers, the warehouse too): none is blocked."""
    from ft.data.sources import load_source

    rows = load_source("bundled", "bundled", "eval", cache_dir=str(tmp_path / "data"))
    for r in rows[::4]:
        g = IdentifierGuard.from_ddl(r.schema)
        q = r.query.strip().rstrip(";")
        assert every_prefix_ok(g, q), (r.db_id, q)


class Pieces:
    """A tokenizer whose tokens are the given strings (id = position)."""

    def __init__(self, pieces):
        self.p = list(pieces)

    def __len__(self):
        return len(self.p)

    def decode(self, ids):
        return "".join(self.p[i] for i in ids)


PIECES = ["<prompt>", "SELECT", " *", " FROM", " clients", " customers", " cust", "omers", " zz", "\n```"]


def step(proc, ids, scores):
    return proc(torch.tensor(ids), torch.tensor(scores, dtype=torch.float)).argmax(-1).tolist()


def test_the_processor_masks_a_missing_table_and_keeps_the_best_real_one(guard):
    tok = Pieces(PIECES)
    ids = [[0, 1, 2, 3], [0, 1, 2, 3]]  # "SELECT * FROM" for two rows; row 1 is unconstrained
    scores = [[0.0] * len(PIECES) for _ in ids]
    for s in scores:
        s[4], s[6], s[5] = 9.0, 8.0, 7.0  # clients > cust > customers
    # Negative control: without the constraint, greedy takes the missing table.
    assert torch.tensor(scores).argmax(-1).tolist() == [4, 4]
    proc = SchemaConstraint(tok, [guard, None], prompt_len=1, stop="\n```")
    assert step(proc, ids, scores) == [6, 4]  # " cust" (a prefix of customers), the other row untouched
    assert proc.masked == 1
    # Next step: "omers" completes customers; " zz" would leave the partial name "custzz"... (no: a new word
    # " zz" right after "cust" completes "cust", which is no table): refused.
    ids = [r + [6] for r in ids]
    scores = [[0.0] * len(PIECES) for _ in ids]
    for s in scores:
        s[8], s[7] = 9.0, 8.0
    assert step(proc, ids, scores) == [7, 8]


def test_the_processor_leaves_a_row_alone_when_nothing_in_top_k_passes(guard):
    tok = Pieces(PIECES)
    proc = SchemaConstraint(tok, [guard], prompt_len=1, stop="\n```", top_k=2)
    scores = [[0.0] * len(PIECES)]
    scores[0][4], scores[0][8], scores[0][5] = 9.0, 8.0, 1.0  # top 2: clients, zz; customers is third
    assert step(proc, [[0, 1, 2, 3]], scores) == [4]
    assert proc.fallbacks == 1 and proc.masked == 0


def test_constrained_generation_through_the_generator(tiny_model, shop_rows_file):
    """A real (tiny) model through Generator / model.generate, its logits biased into a bigram script: after the
    prompt " FROM", after " FROM" the non-table " name" (ranked first) or the table " customers" (second), then
    " WHERE". Unconstrained greedy names the missing table; constrained takes the real one; a question whose
    schema has a `name` table is left alone."""
    import dataclasses

    from transformers import AutoModelForCausalLM

    from ft.data.sources import load_source
    from ft.model import load_tokenizer

    tok = load_tokenizer(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    t = {w: tok.encode(w, add_special_tokens=False) for w in (" FROM", " customers", " name", " WHERE")}
    assert all(len(v) == 1 for v in t.values()), t  # single tokens in the test tokenizer
    t = {w: v[0] for w, v in t.items()}
    script = {t[" FROM"]: {t[" name"]: 60.0, t[" customers"]: 50.0}, t[" name"]: {t[" WHERE"]: 60.0},
              t[" customers"]: {t[" WHERE"]: 60.0}}

    def bias(module, args, kwargs, out):
        last = kwargs["input_ids"][:, -1].tolist()
        for b, tok_id in enumerate(last):
            for nxt, v in script.get(tok_id, {t[" FROM"]: 60.0}).items():
                out.logits[b, -1, nxt] += v
        return out

    model.register_forward_hook(bias, with_kwargs=True)
    rows = load_source(str(shop_rows_file), "jsonl")[:2]
    rows[1] = dataclasses.replace(rows[1], schema="CREATE TABLE name (id INTEGER);")  # `name` is a table here
    free = Generator(model, tok, "default", 3).run(rows)
    assert [o.text for o in free] == [" FROM name WHERE"] * 2  # negative control: the script names `name`
    gen = Generator(model, tok, "default", 3, constrain=True)
    assert [o.text for o in gen.run(rows)] == [" FROM customers WHERE", " FROM name WHERE"]
    assert gen.masked == 1 and gen.fallbacks == 0
    # The same through evaluate(), which reports what the constraint did.
    from ft.config import EvalConfig
    from ft.eval.scoring import evaluate

    _, summary = evaluate(model, tok, rows[:1], EvalConfig(batch_size=2, max_new_tokens=3, constrain=True),
                          template="default")
    assert summary["constrain_masked_tokens"] == 1
