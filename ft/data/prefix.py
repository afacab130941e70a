"""Shared-schema prefix packing: train on each schema once per row, not once per question.

With the `schema_first` template every example is [schema prefix] + [branch = question + answer + EOS], and the
prefix tokens are the same for every question on that schema (ft.data.prompt.prompt_ids tokenizes the two parts
separately). A row here holds a schema once, followed by several branches:

    tokens     S S S S | q q a a | q q q a a a | ...      (one or more such groups per row, then padding)
    positions  0 1 2 3 | 4 5 6 7 | 4 5 6 7 8 9 |          branches continue from the end of the schema
    labels     - - - - | - - a a | - - - a a a |          loss on the answer tokens only

and a tree-shaped causal mask: a token sees the earlier tokens of its own schema and of its own branch, never
another branch nor another group; padding sees only itself (no empty softmax rows). Each branch thus gets exactly
the logits of [schema + branch] run alone, so the losses and gradients are those of training the examples
separately (tests/test_prefix.py), while the schema's forward and backward run once for the whole group.

The plan hands its rows to a BatchPlan for the rows -> micro-batches -> ranks layout: a row is a list of example
indices whose groups start at "anchor" examples (the one that carries the prefix). Groups are formed once per seed
(first fit in a seeded order, per schema) and packed into rows (best fit decreasing); each epoch then swaps questions
between the groups of one schema (where the rows stay within max_length) and shuffles the rows. The number of rows per
epoch never changes, so `divmod(step, steps_per_epoch)` and resuming by step keep working.
"""
from __future__ import annotations

import logging
import random
from collections import defaultdict

import torch

from ft.data.batching import BatchPlan, example_columns, pack_best_fit_decreasing, padded_width, padding_stats
from ft.data.prompt import Encoded
from ft.data.rows import DataError
from ft.system import TREE_ATTENTION

log = logging.getLogger("sqlft")

# ------------------------------------------------------------------------------------------------
# tensors for one micro-batch


def tree_mask(seg: torch.Tensor, branch: torch.Tensor) -> torch.Tensor:
    """Boolean [batch, 1, T, T] mask (True = may attend) from per-token group ids and branch ids.

    seg: group of each token within its row (-1 for padding). branch: 0 for prefix tokens, k >= 1 for the k-th
    branch of the group, a unique negative number for each padding token (so it only ever sees itself).
    """
    t = seg.shape[1]
    idx = torch.arange(t, device=seg.device)
    causal = idx[None, :] <= idx[:, None]  # [q, kv]
    same_group = seg[:, :, None] == seg[:, None, :]
    visible = (branch[:, None, :] == 0) | (branch[:, :, None] == branch[:, None, :])
    return (causal[None] & same_group & visible)[:, None]


def _flex_block_mask(seg: torch.Tensor, branch: torch.Tensor, device):
    from torch.nn.attention.flex_attention import create_block_mask

    seg, branch = seg.to(device), branch.to(device)

    def mask_mod(b, h, q, kv):  # the same rule as tree_mask, evaluated block by block
        return (kv <= q) & (seg[b, q] == seg[b, kv]) & ((branch[b, kv] == 0) | (branch[b, kv] == branch[b, q]))

    bsz, t = seg.shape
    return create_block_mask(mask_mod, bsz, None, t, t, device=device)


def collate_prefix(rows: list[list[list[int]]], examples: list[Encoded], pad_id: int, attn: str = "sdpa",
                   device=None, *, multiple: int = 1) -> dict:
    """Tensors for one micro-batch of prefix-shared rows; each row is a list of groups of example indices.

    All examples of a group must share their prefix tokens; the prefix is taken once from the group's first
    example. The result has input_ids, labels, position_ids and a tree-shaped attention_mask in the form `attn`
    takes: a 4-D bool tensor (sdpa), a 4-D additive float tensor (eager), or a BlockMask built on `device`
    (flex_attention). Call the model with use_cache=False. The width is rounded up by padded_width (each padding
    position attends only to itself).
    """
    ids, labels, pos, segs, branches = [], [], [], [], []
    for row in rows:
        r_ids, r_lab, r_pos, r_seg, r_br = [], [], [], [], []
        for g, group in enumerate(row):
            head = examples[group[0]]
            p = head.prefix_len
            if p <= 0:
                raise DataError("prefix sharing needs examples encoded with the schema_first template (prefix_len > 0)")
            prefix = head.input_ids[:p]
            r_ids += prefix
            r_lab += [-100] * p
            r_pos += list(range(p))
            r_seg += [g] * p
            r_br += [0] * p
            for k, i in enumerate(group, start=1):
                ex = examples[i]
                if ex.prefix_len != p or ex.input_ids[:p] != prefix:
                    raise DataError(f"example {i} does not share the prefix of example {group[0]} (same group)")
                n = len(ex.input_ids) - p
                r_ids += ex.input_ids[p:]
                # The first branch token is predicted from the previous branch's last token: never a target.
                r_lab += [-100] + ex.labels[p + 1 :]
                r_pos += list(range(p, p + n))
                r_seg += [g] * n
                r_br += [k] * n
        ids.append(r_ids)
        labels.append(r_lab)
        pos.append(r_pos)
        segs.append(r_seg)
        branches.append(r_br)
    width = padded_width(max(len(r) for r in ids), multiple)
    pad = [width - len(r) for r in ids]
    seg = torch.tensor([s + [-1] * n for s, n in zip(segs, pad)])
    branch = torch.tensor([b + list(range(-1, -n - 1, -1)) for b, n in zip(branches, pad)])
    batch = {
        "input_ids": torch.tensor([r + [pad_id] * n for r, n in zip(ids, pad)]),
        "labels": torch.tensor([r + [-100] * n for r, n in zip(labels, pad)]),
        "position_ids": torch.tensor([r + [0] * n for r, n in zip(pos, pad)]),
    }
    if attn == "flex_attention":
        batch["attention_mask"] = _flex_block_mask(seg, branch, device or "cpu")
    elif attn == "eager":
        mask = tree_mask(seg, branch)
        batch["attention_mask"] = torch.zeros(mask.shape).masked_fill_(~mask, torch.finfo(torch.float32).min)
    elif attn == "sdpa":
        batch["attention_mask"] = tree_mask(seg, branch)
    else:
        raise ValueError(f"attention {attn!r} can't take a tree-shaped mask; use one of {', '.join(TREE_ATTENTION)}")
    return batch


# ------------------------------------------------------------------------------------------------
# which branches go together


def group_by_prefix(examples) -> dict[int, list[int]]:
    """Example indices per distinct prefix, keyed by prefix id (in order of first appearance)."""
    _, prefix_lens, prefix_ids = example_columns(examples)
    return _prefix_groups(prefix_lens, prefix_ids)


def _prefix_groups(prefix_lens: list[int], prefix_ids: list[int]) -> dict[int, list[int]]:
    groups: dict[int, list[int]] = defaultdict(list)
    for i, (p, key) in enumerate(zip(prefix_lens, prefix_ids)):
        if p <= 0:
            raise DataError(
                f"example {i} has no schema prefix: data.prefix_sharing needs data.template: schema_first."
            )
        groups[key].append(i)
    return dict(groups)


def group_branches(examples, max_length: int, seed: int, max_branches: int | None = None,
                   columns: tuple[list[int], list[int], list[int]] | None = None) -> list[list[int]]:
    """Groups of example indices that share one prefix and fit max_length together (prefix once + branches).

    Per schema, questions go in a seeded random order into the first group with room (first fit), so a group is
    as full as max_length (or max_branches) allows and which questions share it depends on the seed.
    `columns`: example_columns(examples), when the caller has them already.
    """
    lengths, prefix_lens, prefix_ids = columns or example_columns(examples)
    out = []
    for s, members in enumerate(_prefix_groups(prefix_lens, prefix_ids).values()):
        p = prefix_lens[members[0]]
        order = list(members)
        random.Random(seed * 1_000_033 + s).shuffle(order)
        groups: list[list[int]] = []
        room: list[int] = []
        for i in order:
            n = lengths[i] - p
            if p + n > max_length:
                raise DataError(f"example {i} has {p + n} tokens, more than max_length={max_length}")
            for g, free in enumerate(room):
                if n <= free and (max_branches is None or len(groups[g]) < max_branches):
                    groups[g].append(i)
                    room[g] -= n
                    break
            else:
                groups.append([i])
                room.append(max_length - p - n)
        out += groups
    return out


def plan_for(examples: list[Encoded], data, train, world_size: int = 1, attn: str = "sdpa", device=None):
    """The batch plan a config asks for (DataConfig, TrainConfig): prefix-shared groups, packed bins or padded rows.
    Training and `sqlft data stats` both build it here."""
    if data.prefix_sharing:
        return PrefixPlan(examples, train.per_device_batch_size, data.max_length, train.seed, world_size,
                          train.gradient_accumulation_steps, attn=attn, device=device,
                          pad_multiple=data.pad_to_multiple_of)
    return BatchPlan(example_columns(examples)[0], train.per_device_batch_size, data.max_length, data.packing,
                     data.group_by_length, train.seed, world_size, train.gradient_accumulation_steps,
                     pad_multiple=data.pad_to_multiple_of)


def no_step_message(plan, n_examples: int, data, train, world_size: int = 1) -> str:
    """Why a plan makes no optimizer step, in the words of what the user set."""
    rows = plan.n_rows
    how = ("shared-schema prefix packing puts each schema's questions into one row (data.prefix_sharing)"
           if data.prefix_sharing else "packing puts several examples into one row (data.packing)" if data.packing
           else "one example a row")
    need = world_size * train.gradient_accumulation_steps * train.per_device_batch_size
    return (f"{n_examples} training examples make {rows} rows ({how}), fewer than one optimizer step takes: "
            f"{world_size} processes x {train.gradient_accumulation_steps} accumulation steps x "
            f"{train.per_device_batch_size} rows (train.per_device_batch_size) = {need} rows. Lower "
            f"train.per_device_batch_size or train.gradient_accumulation_steps, add data"
            + (", or turn off " + ("data.prefix_sharing" if data.prefix_sharing else "data.packing")
               if data.prefix_sharing or data.packing else "") + ".")


class PrefixPlan:
    """Rows of prefix-shared groups, laid out by a BatchPlan (same [step][micro][rank] layout, same resume-by-step).

    `lengths[i]` is the tokens example i adds to a row: its branch, plus the prefix for a group's anchor, so
    sums over rows, micro-batches and steps count the tokens actually processed (padding excluded).
    """

    def __init__(self, examples: list[Encoded], batch_size: int, max_length: int, seed: int, world_size: int = 1,
                 accumulation: int = 1, *, attn: str = "sdpa", device=None, max_branches: int | None = None,
                 pad_multiple: int = 1):
        self.attn, self.device, self.max_branches, self.pad_multiple = attn, device, max_branches, pad_multiple
        self.max_length, self.seed = max_length, seed
        # Per example: tokens, prefix tokens, prefix id (plain lists: no example's tokens are read to plan).
        full, self.prefix_lens, self.prefix_ids = columns = example_columns(examples)
        self.full_tokens = sum(full)
        self.groups = group_branches(examples, max_length, seed, max_branches, columns)
        self.anchors = {g[0] for g in self.groups}
        self.lengths = [n - p for n, p in zip(full, self.prefix_lens)]
        for g in self.groups:
            self.lengths[g[0]] += self.prefix_lens[g[0]]
        # Rows: groups packed by best fit decreasing (a short group, e.g. a schema's last, shares a row).
        group_len = [sum(self.lengths[i] for i in g) for g in self.groups]
        self.row_groups = [[list(self.groups[g]) for g in b] for b in pack_best_fit_decreasing(group_len, max_length)]
        self.bins = [[i for g in row for i in g] for row in self.row_groups]
        self.layout = BatchPlan(self.lengths, batch_size, max_length, True, False, seed, world_size, accumulation,
                                rows_for_epoch=self._rows)
        self.n_rows = len(self.bins)
        self.global_micro_batches = self.layout.global_micro_batches
        self.steps_per_epoch = self.layout.steps_per_epoch
        self.step_batches = self.layout.step_batches
        self.step_counts = self.layout.step_counts

    def _regroup(self, epoch: int) -> list[list[list[int]]]:
        """This epoch's groups per row: questions swapped between groups of one schema where the rows still fit.

        Anchors stay put (each keeps carrying its group's prefix), group sizes and the number of rows don't change.
        """
        rng = random.Random(self.seed * 9_999_991 + epoch)
        rows = [[list(g) for g in row] for row in self.row_groups]
        row_len = [sum(self.lengths[i] for g in row for i in g) for row in rows]
        slots = defaultdict(list)  # prefix -> [(row, group, position)] of the non-anchor members
        for r, row in enumerate(rows):
            for g, group in enumerate(row):
                slots[self.prefix_ids[group[0]]] += [(r, g, k) for k in range(1, len(group))]
        for places in slots.values():  # insertion order: deterministic
            if len({(r, g) for r, g, _ in places}) < 2:
                continue
            for _ in range(len(places)):
                (ra, ga, ka), (rb, gb, kb) = rng.sample(places, 2)
                if (ra, ga) == (rb, gb):
                    continue
                a, b = rows[ra][ga][ka], rows[rb][gb][kb]
                delta = self.lengths[b] - self.lengths[a]
                if ra != rb and (row_len[ra] + delta > self.max_length or row_len[rb] - delta > self.max_length):
                    continue
                rows[ra][ga][ka], rows[rb][gb][kb] = b, a
                if ra != rb:
                    row_len[ra] += delta
                    row_len[rb] -= delta
        return rows

    def _rows(self, epoch: int) -> list[list[int]]:
        rows = [[i for g in row for i in g] for row in self._regroup(epoch)]
        random.Random(self.seed * 1_000_003 + epoch).shuffle(rows)
        return rows

    def split_groups(self, row: list[int]) -> list[list[int]]:
        """A flat row back into its groups: each group starts at an anchor."""
        groups: list[list[int]] = []
        for i in row:
            if i in self.anchors or not groups:
                groups.append([i])
            else:
                groups[-1].append(i)
        return groups

    def collate(self, rows: list[list[int]], examples: list[Encoded], pad_id: int) -> dict:
        return collate_prefix([self.split_groups(r) for r in rows], examples, pad_id, self.attn, self.device,
                              multiple=self.pad_multiple)

    def padding(self) -> dict:
        """Padding in the first epoch's micro-batches: rows are packed end to end, only the rounding."""
        return padding_stats(self.global_micro_batches(0), self.lengths, packed=True, multiple=self.pad_multiple)

    def stats(self) -> dict:
        """Token arithmetic of the plan: processed vs unshared tokens, branches per group, rows."""
        full, n = self.full_tokens, len(self.lengths)
        shared = sum(self.lengths)
        return {
            "examples": n, "schemas": len(set(self.prefix_ids)), "groups": len(self.groups),
            "rows": len(self.bins), "branches_per_group": n / max(len(self.groups), 1),
            "tokens": shared, "unshared_tokens": full, "tokens_per_example": shared / max(n, 1),
            "token_ratio": full / max(shared, 1), "attention": self.attn,
        }
