"""Shared-schema prefix packing (training) and schema KV-cache reuse (inference), on the tiny random Llama."""
import random

import pytest
import torch
import torch.nn.functional as F
from conftest import SCHEMA, make_rows

from ft.data.batching import collate
from ft.data.prefix import PrefixPlan, collate_prefix, group_branches
from ft.data.prompt import build_prompt, encode_example, encode_prompt, encode_rows, prompt_parts
from ft.data.rows import DataError, Row

TOL = 1e-5  # fp32, relative to max(1, |value|)
SMALL_SCHEMA = SCHEMA.split(";")[0] + ";"  # customers only
MID_SCHEMA = SCHEMA.rsplit(";", 2)[0] + ";"  # customers + orders


def schema_rows(n_big=7, n_small=5, n_mid=3) -> list[Row]:
    """Questions on three schemas of different sizes, interleaved (order of a real data set)."""
    rows = [Row(**r) for r in make_rows(n_big)]
    rows += [Row(**(r | {"schema": SMALL_SCHEMA})) for r in make_rows(n_small)]
    rows += [Row(**(r | {"schema": MID_SCHEMA})) for r in make_rows(n_mid)]
    random.Random(0).shuffle(rows)
    return rows


@pytest.fixture(scope="module")
def examples(tok):
    rows = schema_rows()
    ex, _ = encode_rows(rows, tok, "schema_first", 4096, "error")
    return rows, ex


# ------------------------------------------------------------------------------------------------
# tokenization: prefix + branch == the example alone


def test_schema_first_splits_into_prefix_and_branch(tok, examples):
    rows, ex = examples
    for r, e in zip(rows, ex):
        prefix_text, rest_text = prompt_parts(r, "schema_first")
        assert prefix_text + rest_text == build_prompt(r, "schema_first")
        assert e.prefix_len > 0 and e.input_ids[: e.prefix_len] == tok(prefix_text)["input_ids"]
        prompt = encode_prompt(r, tok, "schema_first")  # inference sees exactly the training prompt ids
        assert e.input_ids[: len(prompt)] == prompt and e.labels[: len(prompt)] == [-100] * len(prompt)
        assert e.labels[len(prompt):] == e.input_ids[len(prompt):] and e.input_ids[-1] == tok.eos_token_id
    by_schema = {}
    for r, e in zip(rows, ex):
        by_schema.setdefault(r.schema, set()).add(tuple(e.input_ids[: e.prefix_len]))
    assert len(by_schema) == 3 and all(len(v) == 1 for v in by_schema.values())  # one prefix per schema
    # other templates have no shareable prefix
    assert encode_example(rows[0], tok, "default", 4096, "error").prefix_len == 0


def test_bos_is_in_the_prefix_only(tiny_model):
    """A tokenizer that adds BOS: once, at the start of the prefix; the branch is tokenized without specials."""
    from tokenizers.processors import TemplateProcessing
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast.from_pretrained(str(tiny_model))
    tok.backend_tokenizer.post_processor = TemplateProcessing(single="<s> $A",
                                                              special_tokens=[("<s>", tok.bos_token_id)])
    assert tok("SELECT")["input_ids"][0] == tok.bos_token_id
    r = schema_rows()[0]
    e = encode_example(r, tok, "schema_first", 4096, "error")
    assert e.input_ids[0] == tok.bos_token_id and e.input_ids.count(tok.bos_token_id) == 1
    assert encode_prompt(r, tok, "schema_first") == e.input_ids[: len(encode_prompt(r, tok, "schema_first"))]


# ------------------------------------------------------------------------------------------------
# training: shared rows give the unshared losses and gradients


def _branch_spans(rows, ex):
    """(row, start, end, example index) of every branch, following collate_prefix's layout."""
    spans = []
    for b, row in enumerate(rows):
        t = 0
        for group in row:
            t += ex[group[0]].prefix_len
            for i in group:
                n = len(ex[i].input_ids) - ex[i].prefix_len
                spans.append((b, t, t + n, i))
                t += n
    return spans


def _per_branch_losses(model, batch, rows, ex) -> dict[int, float]:
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    logits = model(**inputs, use_cache=False).logits.float()
    labels = batch["labels"]
    per_pos = F.cross_entropy(logits[:, :-1].transpose(1, 2), labels[:, 1:], reduction="none", ignore_index=-100)
    return {i: per_pos[b, s - 1 : e - 1].sum().item() for b, s, e, i in _branch_spans(rows, ex)}


def _unshared(model, ex, i, pad_id) -> float:
    from ft.objectives.base import token_loss_sum

    return token_loss_sum(model, collate([[i]], ex, pad_id, packed=False))[0].item()


# two rows: one schema's group alone, and two groups (different schemas) sharing a row; padding in the first
def _layout(rows_, ex):
    by_schema = {}
    for i, r in enumerate(rows_):
        by_schema.setdefault(r.schema, []).append(i)
    big, small, mid = by_schema[SCHEMA], by_schema[SMALL_SCHEMA], by_schema[MID_SCHEMA]
    return [[big[:4]], [small, mid[:2]], [big[4:], mid[2:]]]


@pytest.mark.parametrize(("attn", "multiple"), [("sdpa", 1), ("eager", 1), ("sdpa", 64)])
def test_shared_rows_give_the_unshared_losses_and_gradients(tiny_model, tok, examples, attn, multiple):
    # multiple: widths rounded up (data.pad_to_multiple_of); the added positions change no loss and no gradient
    from transformers import AutoModelForCausalLM

    from ft.objectives.base import target_tokens, token_loss_sum

    rows_, ex = examples
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model), dtype=torch.float32, attn_implementation=attn).eval()
    layout = _layout(rows_, ex)
    used = [i for row in layout for g in row for i in g]
    batch = collate_prefix(layout, ex, tok.pad_token_id, attn, multiple=multiple)
    assert (batch["input_ids"] == tok.pad_token_id).any()  # a padded row is covered too
    assert batch["input_ids"].shape[1] % multiple == 0

    # per-branch losses
    with torch.no_grad():
        shared = _per_branch_losses(model, batch, layout, ex)
        alone = {i: _unshared(model, ex, i, tok.pad_token_id) for i in used}
    assert set(shared) == set(used)
    for i in used:
        assert abs(shared[i] - alone[i]) <= TOL * max(1.0, abs(alone[i])), (i, shared[i], alone[i])
    assert target_tokens(batch) == sum(target_tokens(collate([[i]], ex, tok.pad_token_id, False)) for i in used)

    # gradients of every parameter: one shared backward == the sum of the separate backwards
    model.zero_grad()
    token_loss_sum(model, batch)[0].backward()
    g_shared = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    for i in used:
        token_loss_sum(model, collate([[i]], ex, tok.pad_token_id, packed=False))[0].backward()
    for n, p in model.named_parameters():
        scale = max(1.0, p.grad.abs().max().item())
        assert (g_shared[n] - p.grad).abs().max().item() <= TOL * scale, n


def test_the_equality_check_catches_a_leaky_mask_and_wrong_positions(model, tok, examples):
    rows_, ex = examples
    layout = _layout(rows_, ex)
    batch = collate_prefix(layout, ex, tok.pad_token_id, "sdpa")
    used = [i for row in layout for g in row for i in g]
    with torch.no_grad():
        alone = {i: _unshared(model, ex, i, tok.pad_token_id) for i in used}

        def worst(b):
            shared = _per_branch_losses(model, b, layout, ex)
            return max(abs(shared[i] - alone[i]) / max(1.0, abs(alone[i])) for i in used)

        assert worst(batch) < TOL  # the tolerance of the equality test above
        # leak: the second branch of the first row also sees the first branch (plain causal inside the group)
        b0, s0, e0, _ = _branch_spans(layout, ex)[0]
        _, s1, e1, _ = _branch_spans(layout, ex)[1]
        leaky = dict(batch)
        leaky["attention_mask"] = batch["attention_mask"].clone()
        leaky["attention_mask"][b0, 0, s1:e1, s0:e0] = True
        assert worst(leaky) > 10 * TOL  # a single leaked branch is caught
        # positions that run on through the row instead of restarting after the schema
        wrong = dict(batch)
        wrong["position_ids"] = torch.arange(batch["input_ids"].shape[1]).expand_as(batch["input_ids"])
        assert worst(wrong) > 2 * TOL


def test_mask_shape_and_padding_rows(tok, examples):
    _, ex = examples
    batch = collate_prefix([[[0]], [[1, 2]]], ex, tok.pad_token_id, "sdpa")
    mask = batch["attention_mask"]
    t = batch["input_ids"].shape[1]
    assert mask.shape == (2, 1, t, t) and mask.dtype == torch.bool
    assert mask.any(-1).all()  # no empty softmax row, padding included
    n0 = len(ex[0].input_ids)
    assert t > n0 and mask[0, 0, n0:, :].sum(-1).eq(1).all()  # padding sees itself only
    assert not mask[0, 0, :n0, n0:].any()  # and nothing real sees padding
    p = ex[1].prefix_len
    n1 = len(ex[1].input_ids) - p
    assert batch["position_ids"][1, p].item() == p and batch["position_ids"][1, p + n1].item() == p  # both branches
    assert batch["labels"][1, p].item() == -100 and batch["labels"][1, p + n1].item() == -100
    with pytest.raises(DataError):  # a group must share one prefix
        collate_prefix([[[0, next(i for i, e in enumerate(ex)
                                  if e.input_ids[: e.prefix_len] != ex[0].input_ids[: ex[0].prefix_len])]]],
                       ex, tok.pad_token_id)


@pytest.mark.slow
def test_flex_attention_block_mask_gives_the_same_loss(tiny_model, tok, examples):
    pytest.importorskip("torch.nn.attention.flex_attention")
    from transformers import AutoModelForCausalLM

    from ft.objectives.base import token_loss_sum

    rows_, ex = examples
    layout = _layout(rows_, ex)
    losses = {}
    for attn in ("sdpa", "flex_attention"):
        m = AutoModelForCausalLM.from_pretrained(str(tiny_model), dtype=torch.float32, attn_implementation=attn).eval()
        with torch.no_grad():
            losses[attn] = token_loss_sum(m, collate_prefix(layout, ex, tok.pad_token_id, attn))[0].item()
    assert abs(losses["sdpa"] - losses["flex_attention"]) <= 1e-5 * losses["sdpa"]


def test_attention_choice():
    from ft.config import ConfigError, load_config, resolve

    def tree(attn):
        return resolve(load_config(None, {"data.prefix_sharing": True, "data.template": "schema_first",
                                          "model.attn_implementation": attn})).model.attn_implementation

    assert tree("auto") == ("flex_attention" if torch.cuda.is_available() else "sdpa")
    assert tree("sdpa") == "sdpa"
    with pytest.raises(ConfigError, match="tree-shaped"):
        tree("flash_attention_2")


# ------------------------------------------------------------------------------------------------
# the plan: groups fit, deterministic, disjoint across ranks, resumable, regrouped per epoch


def _synthetic_examples(n_schemas=6, seed=0):
    from ft.data.prompt import Encoded

    rng = random.Random(seed)
    out = []
    for s in range(n_schemas):
        prefix = [1000 + s] * rng.randint(30, 80)
        for _ in range(rng.randint(3, 40)):
            branch = [rng.randint(3, 900) for _ in range(rng.randint(8, 40))]
            out.append(Encoded(prefix + branch, [-100] * len(prefix) + branch, "kept", len(prefix)))
    rng.shuffle(out)
    return out


def test_plan_groups_fit_and_count_processed_tokens():
    ex = _synthetic_examples()
    plan = PrefixPlan(ex, 2, 200, seed=3)
    assert sorted(i for g in plan.groups for i in g) == list(range(len(ex)))
    for epoch in range(3):
        for row in plan._rows(epoch):
            groups = plan.split_groups(row)
            real = sum(ex[g[0]].prefix_len + sum(len(ex[i].input_ids) - ex[i].prefix_len for i in g) for g in groups)
            assert real == sum(plan.lengths[i] for i in row) <= 200  # lengths count what is processed
            for g in groups:
                assert len({tuple(ex[i].input_ids[: ex[i].prefix_len]) for i in g}) == 1
    s = plan.stats()
    assert s["tokens"] == sum(plan.lengths) < s["unshared_tokens"] and s["branches_per_group"] > 1
    assert group_branches(ex, 200, 3, max_branches=2) and max(len(g) for g in group_branches(ex, 200, 3, 2)) == 2
    with pytest.raises(DataError, match="schema_first"):
        PrefixPlan([e.__class__(e.input_ids, e.labels, e.outcome, 0) for e in ex], 2, 200, seed=0)


def test_plan_is_deterministic_disjoint_resumable_and_regrouped_per_epoch():
    ex = _synthetic_examples(seed=1)
    plans = [PrefixPlan(ex, 2, 240, seed=7, world_size=2, accumulation=2) for _ in range(2)]
    steps = plans[0].steps_per_epoch()
    assert steps > 0
    for epoch in range(2):
        seen = []
        for step in range(steps):
            per_rank = [plans[0].step_batches(epoch, step, r) for r in range(2)]
            assert per_rank == [plans[1].step_batches(epoch, step, r) for r in range(2)]  # deterministic
            flat = [[i for mb in pr for row in mb for i in row] for pr in per_rank]
            assert not set(flat[0]) & set(flat[1])  # ranks disjoint
            seen += flat[0] + flat[1]
        assert len(seen) == len(set(seen))  # no example twice within an epoch
        assert len(plans[0].global_micro_batches(epoch)) == steps * 4  # same length every epoch: resume by step
    # resuming: a fresh plan gives the same batches for a later step without replaying earlier ones
    fresh = PrefixPlan(ex, 2, 240, seed=7, world_size=2, accumulation=2)
    assert fresh.step_batches(1, steps - 1, 1) == plans[0].step_batches(1, steps - 1, 1)

    def pairs(epoch):  # which questions share a group
        return {frozenset(g) for row in plans[0]._regroup(epoch) for g in row}

    assert pairs(0) != pairs(1)  # questions regrouped per epoch
    assert plans[0].global_micro_batches(0) != plans[0].global_micro_batches(1)
    assert (PrefixPlan(ex, 2, 240, seed=8).global_micro_batches(0)
            != PrefixPlan(ex, 2, 240, seed=7).global_micro_batches(0))


def test_plan_collate_matches_its_rows(tok, examples):
    _, ex = examples
    plan = PrefixPlan(ex, 2, 300, seed=0)
    for micro in plan.global_micro_batches(0)[:3]:
        batch = plan.collate(micro, ex, tok.pad_token_id)
        assert batch["input_ids"].shape[1] == max(sum(plan.lengths[i] for i in row) for row in micro) <= 300
        targets = int((batch["labels"][:, 1:] != -100).sum())
        assert targets == sum(sum(l != -100 for l in ex[i].labels[1:]) for row in micro for i in row)


def test_train_py_with_prefix_sharing(tmp_path, tiny_model, rows_file):
    """The recipe end to end: the plan and the tree-masked collate are picked, the loss falls, the log says so."""
    import re

    from helpers import metrics, write_config
    from helpers import run_train as run

    cfg = write_config(tmp_path, tiny_model, rows_file,
                       data={"template": "schema_first", "prefix_sharing": True, "max_length": 1024},
                       train={"max_steps": 10, "per_device_batch_size": 1, "gradient_accumulation_steps": 2})
    proc = run(cfg)
    out = proc.stdout + proc.stderr
    assert "prefix sharing: {" in out and "attention sdpa" in out
    assert float(re.search(r"'branches_per_group': ([0-9.]+)", out).group(1)) > 3  # rows really are shared
    m = [r for r in metrics(tmp_path / "run") if "train/loss" in r]
    assert m[-1]["train/loss"] < 0.8 * m[0]["train/loss"], m
    assert (tmp_path / "run" / "adapter" / "adapter_model.safetensors").is_file()


def test_config_requires_schema_first():
    from ft.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="schema_first"):
        load_config(None, {"data.prefix_sharing": True})
    with pytest.raises(ConfigError, match="schema_first"):
        load_config(None, {"eval.reuse_schema_cache": True})
    with pytest.raises(ConfigError, match="tree-shaped"):
        load_config(None, {"data.prefix_sharing": True, "data.template": "schema_first",
                           "model.attn_implementation": "flash_attention_2"})
    cfg = load_config(None, {"data.prefix_sharing": True, "data.template": "schema_first",
                             "eval.reuse_schema_cache": True})
    assert cfg.data.prefix_sharing and cfg.eval.reuse_schema_cache


# ------------------------------------------------------------------------------------------------
# inference: one KV cache per schema, the same greedy SQL


def test_schema_cache_reuse_gives_the_same_greedy_output(model, tok, monkeypatch):
    import ft.eval.generation as pc
    from ft.eval.generation import generate_sql

    rows = schema_rows(5, 4, 3)
    plain = generate_sql(model, tok, rows, "schema_first", 3, 12)

    calls, inputs = [], []
    real_cache = pc.schema_cache
    monkeypatch.setattr(pc, "schema_cache", lambda m, prefix: calls.append(list(prefix)) or real_cache(m, prefix))
    hook = model.model.embed_tokens.register_forward_pre_hook(lambda mod, args: inputs.append(args[0].tolist()))
    try:
        reused = generate_sql(model, tok, rows, "schema_first", 3, 12, reuse_schema_cache=True)
    finally:
        hook.remove()
    assert [t for t, _ in reused] == [t for t, _ in plain]
    assert len(calls) == 3  # one prefix forward per schema ...
    with_schema = [ids for batch in inputs for ids in batch if any(ids[: len(p)] == p for p in calls)]
    assert len(with_schema) == 3  # ... and no other forward runs a schema again

    # through evaluate(), and with a LoRA adapter on (the training-time execution eval)
    from peft import LoraConfig, get_peft_model

    from ft.config import EvalConfig
    from ft.eval.scoring import evaluate

    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    try:
        a, _ = evaluate(peft_model, tok, rows, EvalConfig(batch_size=4, max_new_tokens=10), template="schema_first")
        b, _ = evaluate(peft_model, tok, rows, EvalConfig(batch_size=4, max_new_tokens=10, reuse_schema_cache=True),
                        template="schema_first")
        assert [p.raw_output for p in a] == [p.raw_output for p in b]
    finally:
        peft_model.unload()


def test_held_out_loss_on_shared_rows_equals_the_unshared_loss(model, tok, examples):
    """The recipe's eval loss on prefix-shared rows (half the tokens) is the one-example-a-row loss; a mask that lets
    branches see each other (negative control) changes it."""
    from accelerate import Accelerator

    from ft.config import Config
    from ft.train import eval_loss, eval_loss_batches

    _, ex = examples
    cfg = Config()
    cfg.model.attn_implementation, cfg.data.max_length, cfg.train.per_device_batch_size = "sdpa", 300, 2
    acc = Accelerator(cpu=True)
    cfg.data.prefix_sharing = False
    unshared = eval_loss_batches(ex, tok.pad_token_id, cfg)
    cfg.data.prefix_sharing = True
    shared = eval_loss_batches(ex, tok.pad_token_id, cfg)
    assert len(shared) < len(unshared) and sum(b["input_ids"].numel() for b in shared) < sum(
        b["input_ids"].numel() for b in unshared)
    want = eval_loss(model, acc, unshared, None)
    got = eval_loss(model, acc, shared, None)
    assert abs(got - want) <= TOL * max(1.0, abs(want)), (got, want)
    leaky = [b | {"attention_mask": torch.tril(torch.ones_like(b["attention_mask"]))} for b in shared]
    assert abs(eval_loss(model, acc, leaky, None) - want) > 2 * TOL * max(1.0, abs(want))  # a random model: ~5x TOL
    assert eval_loss(model, acc, shared, 1) != got  # a capped curve reads only its first batches
