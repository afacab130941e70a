"""Value hints and prefix sharing together: a question's hints open its own branch, after the shared schema, in
training (the tree-masked rows) and at inference (schema KV reuse) alike."""
import dataclasses

import pytest
import torch
from conftest import SCHEMA, build_shop_db, make_rows
from test_prefix import TOL, _branch_spans, _per_branch_losses, _unshared

from ft.config import load_config
from ft.data.linking import make_fitter, make_linker
from ft.data.prefix import collate_prefix, group_by_prefix
from ft.data.prompt import build_prompt, encode_rows, prompt_parts
from ft.data.rows import Row


@pytest.fixture(scope="module")
def shop_rows(tmp_path_factory) -> list[Row]:
    db = build_shop_db(tmp_path_factory.mktemp("hints") / "shop.sqlite")
    return [Row(**r, db_id="shop", db_path=str(db)) for r in make_rows(12)]


def data_config():
    return load_config(None, {"data.template": "schema_first", "data.prefix_sharing": "true",
                              "data.schema_linking": "true", "data.value_hints": "true"}).data


def test_hints_open_the_branch_and_the_schema_prefix_stays_shared(tok, shop_rows):
    d = data_config()
    linked = [make_linker(d, tok, "schema_first")(r) for r in shop_rows]
    hinted = [r for r in linked if r.value_hints]
    assert len(hinted) >= 6 and len({r.value_hints for r in hinted}) >= 4  # the cities named differ per question
    assert all(r.schema == SCHEMA for r in linked)  # the whole schema: its very text, hints apart
    prefix, rest = prompt_parts(hinted[0], "schema_first")
    assert "-- values of customers.city: 'Paris'" in rest and "-- values" not in prefix
    assert rest.startswith("-- values of ") and prefix + rest == build_prompt(hinted[0], "schema_first")
    ex, _ = encode_rows(shop_rows, tok, "schema_first", 1024, "error", make_linker(d, tok, "schema_first"))
    assert len(group_by_prefix(ex)) == 1  # one shared prefix for hinted and plain questions
    # negative control: hints inside the schema text (where they were) give every city its own prefix
    inline = [dataclasses.replace(r, schema=r.schema + "\n" + r.value_hints, value_hints=None) if r.value_hints
              else r for r in linked]
    ex_inline, _ = encode_rows(inline, tok, "schema_first", 1024, "error")
    assert len(group_by_prefix(ex_inline)) >= 5
    # the default template shows them too, right under the schema
    assert "CREATE TABLE products" in build_prompt(hinted[0], "default").split("-- values of")[0]


def test_hinted_branches_give_the_unshared_losses(tok, model, shop_rows):
    d = data_config()
    ex, _ = encode_rows(shop_rows, tok, "schema_first", 1024, "error", make_linker(d, tok, "schema_first"))
    hint_ids = tok("-- values of", add_special_tokens=False)["input_ids"]

    def has_hint(i):
        branch = ex[i].input_ids[ex[i].prefix_len:]
        return any(branch[k : k + len(hint_ids)] == hint_ids for k in range(len(branch)))

    hinted = [i for i in range(len(ex)) if has_hint(i)]
    plain = [i for i in range(len(ex)) if not has_hint(i)]
    assert len(hinted) >= 4 and plain
    layout = [[hinted[:3] + plain[:1]], [hinted[3:5]]]  # hinted and plain branches under one schema prefix
    used = [i for row in layout for g in row for i in g]
    batch = collate_prefix(layout, ex, tok.pad_token_id, "sdpa")
    with torch.no_grad():
        shared = _per_branch_losses(model, batch, layout, ex)
        alone = {i: _unshared(model, ex, i, tok.pad_token_id) for i in used}
        for i in used:
            assert abs(shared[i] - alone[i]) <= TOL * max(1.0, abs(alone[i])), (i, shared[i], alone[i])
        # negative control: the second branch sees the first one's hints (a mask that leaks across branches)
        b0, s0, e0, _ = _branch_spans(layout, ex)[0]
        _, s1, e1, i1 = _branch_spans(layout, ex)[1]
        leaky = dict(batch)
        leaky["attention_mask"] = batch["attention_mask"].clone()
        leaky["attention_mask"][b0, 0, s1:e1, s0:e0] = True
        assert abs(_per_branch_losses(model, leaky, layout, ex)[i1] - alone[i1]) > 2 * TOL * max(1.0, alone[i1])


def test_schema_cache_reuse_with_hints_prefills_each_schema_once(tok, model, shop_rows, monkeypatch):
    import ft.eval.generation as gen
    from ft.eval.generation import generate_sql

    d = data_config()
    fit = make_fitter(tok, "schema_first", d, context_length=2048, reserve=12)  # inference: hints, gold unseen
    rows = [fit(dataclasses.replace(r, query="")) for r in shop_rows]
    assert sum(bool(r.value_hints) for r in rows) >= 6
    plain = generate_sql(model, tok, rows, "schema_first", 4, 8)
    calls = []
    real = gen.schema_cache
    monkeypatch.setattr(gen, "schema_cache", lambda m, prefix: calls.append(prefix) or real(m, prefix))
    reused = generate_sql(model, tok, rows, "schema_first", 4, 8, reuse_schema_cache=True)
    assert [t for t, _ in reused] == [t for t, _ in plain]
    assert len(calls) == 1  # one schema, prefilled once for hinted and plain questions alike
