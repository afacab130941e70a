import random

import pytest
import torch
from conftest import make_rows

from ft.data.batching import BatchPlan, collate, pack_best_fit_decreasing, padding_stats
from ft.data.prompt import encode_rows
from ft.data.rows import Row


def test_best_fit_decreasing_bins():
    rng = random.Random(0)
    lengths = [rng.randint(5, 100) for _ in range(500)]
    bins = pack_best_fit_decreasing(lengths, 128)
    flat = sorted(i for b in bins for i in b)
    assert flat == list(range(500))
    assert all(sum(lengths[i] for i in b) <= 128 for b in bins)
    assert sum(lengths) / (len(bins) * 128) > 0.95  # tight packing
    assert bins == pack_best_fit_decreasing(lengths, 128)
    with pytest.raises(ValueError):
        pack_best_fit_decreasing([200], 128)


@pytest.mark.parametrize("packing", [False, True])
def test_plan_is_deterministic_disjoint_and_resumable(packing):
    rng = random.Random(1)
    lengths = [rng.randint(10, 60) for _ in range(203)]
    plans = [BatchPlan(lengths, 3, 128, packing, False, seed=7, world_size=2, accumulation=2) for _ in range(2)]
    steps = plans[0].steps_per_epoch()
    assert steps > 0
    seen = []
    for epoch in range(2):
        for step in range(steps):
            per_rank = [plans[0].step_batches(epoch, step, r) for r in range(2)]
            assert per_rank == [plans[1].step_batches(epoch, step, r) for r in range(2)]  # deterministic
            flat = [[i for mb in pr for row in mb for i in row] for pr in per_rank]
            assert not set(flat[0]) & set(flat[1])  # ranks disjoint
            if epoch == 0:
                seen += flat[0] + flat[1]
    assert len(seen) == len(set(seen))  # no example twice within an epoch
    assert plans[0].global_micro_batches(0) != plans[0].global_micro_batches(1)  # reshuffled per epoch


def test_group_by_length_reduces_padding():
    rng = random.Random(2)
    lengths = [rng.randint(10, 400) for _ in range(1000)]
    plain = BatchPlan(lengths, 8, 512, False, False, seed=0)
    grouped = BatchPlan(lengths, 8, 512, False, True, seed=0)
    packed = BatchPlan(lengths, 2, 512, True, False, seed=0)
    p0 = padding_stats(plain.global_micro_batches(0), lengths)["padding_fraction"]
    p1 = padding_stats(grouped.global_micro_batches(0), lengths)["padding_fraction"]
    rows_padded = padding_stats(packed.global_micro_batches(0), lengths)["padding_fraction"]  # if bins stayed apart
    assert p1 < p0 / 2 and rows_padded > 0


def test_padding_reported_is_what_the_collated_rows_hold(tiny_model):
    # The figure `sqlft data stats` and the run log report (plan.padding()) against the tensors the loop gets: pad
    # tokens counted in every collated micro-batch of an epoch. Packed: none (bins end to end in one row); padded
    # rows: some, and the same share as reported (the count can see padding: the test can fail).
    _, tok, examples = _model_and_examples(tiny_model)
    lengths = [len(e.input_ids) for e in examples]
    assert len(set(lengths)) > 1
    for packing in (True, False):
        plan = BatchPlan(lengths, 2, max(lengths) + 20, packing, False, seed=0)  # a few bins, micro-batches of 2
        assert plan.global_micro_batches(0)
        pads = positions = 0
        for micro in plan.global_micro_batches(0):
            batch = plan.collate(micro, examples, tok.pad_token_id)
            pads += int((batch["input_ids"] == tok.pad_token_id).sum())
            positions += batch["input_ids"].numel()
            if packing:
                assert batch["input_ids"].shape[0] == 1
        measured = pads / positions
        assert plan.padding()["padding_fraction"] == pytest.approx(measured)
        assert (measured == 0.0) if packing else (measured > 0.0), (packing, measured)


def _model_and_examples(tiny_model):
    from transformers import AutoModelForCausalLM

    from ft.model import load_tokenizer

    tok = load_tokenizer(str(tiny_model))
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model), dtype=torch.float32,
                                                 attn_implementation="sdpa").eval()
    rows = [Row(**r) for r in make_rows(6)]
    examples, _ = encode_rows(rows, tok, "default", 4096, "error")
    return model, tok, examples


def test_packed_loss_equals_unpacked_loss(tiny_model):
    from ft.objectives.base import token_loss_sum

    model, tok, examples = _model_and_examples(tiny_model)
    assert len({len(e.input_ids) for e in examples}) > 1
    with torch.no_grad():
        separate = [token_loss_sum(model, collate([[i]], examples, tok.pad_token_id, packed=False))
                    for i in range(len(examples))]
        unpacked_sum = sum(l.item() for l, _ in separate)
        unpacked_n = sum(n for _, n in separate)
        padded = token_loss_sum(model, collate([[i] for i in range(len(examples))], examples, tok.pad_token_id,
                                               packed=False))
        packed_batch = collate([[0, 1, 2], [3, 4], [5]], examples, tok.pad_token_id, packed=True)
        packed = token_loss_sum(model, packed_batch)
    assert packed[1] == unpacked_n == padded[1]
    assert abs(packed[0].item() - unpacked_sum) / unpacked_n < 1e-5
    assert abs(padded[0].item() - unpacked_sum) / unpacked_n < 1e-5

    # The same packed rows with positions that don't restart must give a different loss: the test can fail.
    broken = dict(packed_batch)
    broken["position_ids"] = torch.arange(packed_batch["input_ids"].shape[1]).expand_as(packed_batch["input_ids"])
    with torch.no_grad():
        wrong = token_loss_sum(model, broken)
    assert abs(wrong[0].item() - unpacked_sum) / unpacked_n > 1e-3


def test_packed_labels_never_cross_a_boundary(tiny_model):
    _, tok, examples = _model_and_examples(tiny_model)
    batch = collate([[0, 1, 2]], examples, tok.pad_token_id, packed=True)
    starts = [0, len(examples[0].input_ids), len(examples[0].input_ids) + len(examples[1].input_ids)]
    for s in starts:
        assert batch["labels"][0, s] == -100 and batch["position_ids"][0, s] == 0


def test_packed_micro_batch_is_one_row_without_padding(tiny_model):
    """Rows of a packed micro-batch go end to end in one row: no padding, and flash-attn 2 (which only sees packing
    in a batch of one row) runs its varlen kernel instead of attending across examples."""
    from transformers.modeling_flash_attention_utils import _is_packed_sequence

    _, tok, examples = _model_and_examples(tiny_model)
    batch = collate([[0, 1, 2], [3, 4], [5]], examples, tok.pad_token_id, packed=True)
    total = sum(len(e.input_ids) for e in examples)
    assert batch["input_ids"].shape == batch["labels"].shape == batch["position_ids"].shape == (1, total)
    assert "attention_mask" not in batch and (batch["input_ids"] != tok.pad_token_id).all()
    assert int((batch["position_ids"] == 0).sum()) == len(examples)
    assert _is_packed_sequence(batch["position_ids"], batch["input_ids"].shape[0])


def test_padded_width_rounds_up_within_the_limit():
    from ft.data.batching import padded_width

    assert [padded_width(n, 64) for n in (1, 63, 64, 65, 1000)] == [64, 64, 64, 128, 1024]
    assert padded_width(130, 1) == 130
    assert padded_width(1000, 64, limit=1010) == 1010  # never past max_length ...
    assert padded_width(1020, 64, limit=1010) == 1020  # ... unless the row itself is longer
    assert padded_width(900, 64, limit=1024) == 960


@pytest.mark.parametrize("packed", [False, True])
def test_rounded_widths_give_the_same_loss(tiny_model, packed):
    """Rounding a micro-batch's width up (data.pad_to_multiple_of) only adds positions that carry no loss and that no
    real token attends to: the loss and its token count are those of the unrounded batch. The same batch with the
    added positions given labels differs (the comparison can fail)."""
    from ft.objectives.base import token_loss_sum

    model, tok, examples = _model_and_examples(tiny_model)
    rows = [[0, 1, 2], [3, 4], [5]]
    with torch.no_grad():
        base = collate(rows, examples, tok.pad_token_id, packed=packed)
        ref = token_loss_sum(model, base)
        added = []
        for multiple in (64, 11, 7):  # no width is a multiple of all three: one case at least adds padding
            batch = collate(rows, examples, tok.pad_token_id, packed=packed, multiple=multiple)
            width = batch["input_ids"].shape[1]
            added.append(width - base["input_ids"].shape[1])
            assert width % multiple == 0 and 0 <= added[-1] < multiple
            assert {k: v.shape for k, v in batch.items()} == {k: (v.shape[0], width) for k, v in base.items()}
            got = token_loss_sum(model, batch)
            assert got[1] == ref[1] and abs(got[0].item() - ref[0].item()) / ref[1] < 1e-5
        assert max(added) > 0
        batch = collate(rows, examples, tok.pad_token_id, packed=packed, multiple=(64, 11, 7)[added.index(max(added))])
        width = batch["input_ids"].shape[1]
        if packed:  # the padding is one more sequence, positions from 0: flash-attn's varlen split sees it apart
            n = base["input_ids"].shape[1]
            assert batch["position_ids"][0, n:].tolist() == list(range(width - n))
        leaky = dict(batch)
        leaky["labels"] = batch["labels"].clone()
        leaky["labels"][:, base["input_ids"].shape[1]:] = 7
        wrong = token_loss_sum(model, leaky)
    assert wrong[1] > ref[1] and abs(wrong[0].item() - ref[0].item()) / ref[1] > 1e-3


@pytest.mark.parametrize("packing", [False, True])
def test_a_plan_rounds_every_width_and_reports_that_padding(tiny_model, packing):
    """The config's rounding reaches the plan (ft.data.prefix.plan_for): every micro-batch of an epoch is a multiple
    of data.pad_to_multiple_of wide, and the padding the plan reports is what the tensors hold."""
    from ft.config import Config
    from ft.data.prefix import plan_for

    _, tok, examples = _model_and_examples(tiny_model)
    cfg = Config()
    assert cfg.data.pad_to_multiple_of == 64  # the default
    cfg.data.packing, cfg.data.pad_to_multiple_of, cfg.train.per_device_batch_size = packing, 16, 2
    cfg.data.max_length = max(len(e.input_ids) for e in examples) + 20  # a few bins, micro-batches of 2
    plan = plan_for(examples, cfg.data, cfg.train)
    assert plan.global_micro_batches(0)
    pads = positions = 0
    for micro in plan.global_micro_batches(0):
        batch = plan.collate(micro, examples, tok.pad_token_id)
        width = batch["input_ids"].shape[1]
        assert width % 16 == 0 or (not packing and width == cfg.data.max_length), width  # padded rows: the limit
        real = sum(len(examples[i].input_ids) for row in micro for i in row)
        pads += batch["input_ids"].numel() - real
        positions += batch["input_ids"].numel()
    assert pads > 0 and plan.padding()["padding_fraction"] == pytest.approx(pads / positions)


def test_rounded_logits_give_the_same_loss_and_gradients(tiny_model):
    """token_loss_sum rounds the LM head's rows up to data.pad_to_multiple_of with positions that carry no target:
    the loss, its count and every gradient are those of the unrounded head. Control: giving those extra positions a
    target changes the loss (the comparison sees them)."""
    from ft.objectives.base import token_loss_sum

    model, tok, examples = _model_and_examples(tiny_model)
    model.train()
    batch = collate([[0, 1, 2], [3, 4], [5]], examples, tok.pad_token_id, packed=True, multiple=64)
    rows = []
    hook = model.get_output_embeddings().register_forward_hook(lambda m, i, o: rows.append(i[0].shape[-2]))
    results = {}
    for multiple in (1, 64):
        model.zero_grad()
        loss, n = token_loss_sum(model, batch, multiple=multiple)
        loss.backward()
        results[multiple] = loss.item(), n, {k: p.grad.clone() for k, p in model.named_parameters()}
    hook.remove()
    (l1, n1, g1), (l64, n64, g64) = results[1], results[64]
    assert rows[0] == n1 and rows[1] % 64 == 0 and rows[1] > n1  # the head ran on more rows, none of them counted
    assert n64 == n1 and abs(l64 - l1) / n1 < 1e-6
    for k in g1:
        assert torch.allclose(g1[k], g64[k], rtol=1e-4, atol=1e-6), k
    # control: the positions just before the rounded ones given a target (the packed row's last tokens)
    labels = batch["labels"].clone()
    free = (labels[0] == -100).nonzero().squeeze(1)[-3:]
    labels[0, free] = 7
    with torch.no_grad():
        wrong = token_loss_sum(model, dict(batch, labels=labels), multiple=64)
    assert wrong[1] > n1 and abs(wrong[0].item() - l1) / n1 > 1e-3
