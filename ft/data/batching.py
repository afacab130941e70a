"""From encoded examples to micro-batches: packing, padding, and a deterministic, resumable order.

The order of micro-batches is a pure function of (seed, epoch), so every process can compute it, take its own
disjoint share, and a resumed run can skip to where it stopped without replaying a data loader.
"""
from __future__ import annotations

import bisect
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Callable, Protocol

import torch

from ft.data.prompt import Encoded


def pack_best_fit_decreasing(lengths: list[int], max_length: int) -> list[list[int]]:
    """Bins of example indices, each bin's total length <= max_length (best-fit decreasing, O(n log n))."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    bins: list[list[int]] = []
    free: list[tuple[int, int]] = []  # sorted (space left, bin index)
    for i in order:
        n = lengths[i]
        if n > max_length:
            raise ValueError(f"example {i} has {n} tokens, more than max_length={max_length}")
        k = bisect.bisect_left(free, (n, -1))  # tightest bin that still fits
        if k < len(free):
            space, b = free.pop(k)
            bins[b].append(i)
            bisect.insort(free, (space - n, b))
        else:
            bins.append([i])
            bisect.insort(free, (max_length - n, len(bins) - 1))
    return bins


def padded_width(longest: int, multiple: int = 1, limit: int | None = None) -> int:
    """The width a micro-batch is padded to: its longest row rounded up to a multiple of `multiple`
    (data.pad_to_multiple_of), never past `limit` unless the row itself is longer. Padded rows take it as
    data.max_length (their positions run 0..width-1: never past what the model was given); packed and prefix-shared
    rows, whose positions restart per example, need none.

    Few distinct shapes keep a long run's memory flat: with a new width every step, the allocator's free lists and
    oneDNN's per-shape primitive cache grow step after step (the demo's RSS grew 13 MB a step; 0.2 MB with widths and
    the LM head's rows rounded to 64: bench/results/padding_multiple.json)."""
    if multiple <= 1:
        return longest
    width = -(-longest // multiple) * multiple
    return max(longest, min(width, limit)) if limit is not None else width


def example_columns(examples) -> tuple[list[int], list[int], list[int]]:
    """(tokens, prefix tokens, prefix id) of every example, what the plans need: an EncodedSet (ft/data/encoded.py)
    has them stored, so planning reads no example; a list of Encoded is read once. Prefix ids number the distinct
    prefix token sequences in order of first appearance (-1: no prefix)."""
    stored = getattr(examples, "prefix_ids", None)
    if stored is not None:
        return examples.lengths.tolist(), examples.prefix_lens.tolist(), stored.tolist()
    ids: dict[tuple[int, ...], int] = {}
    lengths, prefix_lens, prefix_ids = [], [], []
    for ex in examples:
        lengths.append(len(ex.input_ids))
        prefix_lens.append(ex.prefix_len)
        prefix_ids.append(ids.setdefault(tuple(ex.input_ids[: ex.prefix_len]), len(ids)) if ex.prefix_len > 0 else -1)
    return lengths, prefix_lens, prefix_ids


@dataclass
class StepCounts:
    """What one optimizer step processes on all processes together (it follows from the plan: no collective)."""

    examples: list[list[int]]  # example indices per (rank, micro-batch), in [rank][micro] order
    n_examples: int
    tokens: int  # tokens actually processed, padding excluded (a shared schema counts once per group)


class Plan(Protocol):
    """What the training loop asks of a batch plan: ft.data.batching.BatchPlan, ft.data.prefix.PrefixPlan."""

    lengths: list[int]

    def steps_per_epoch(self) -> int: ...

    def step_batches(self, epoch: int, step_in_epoch: int, rank: int) -> list[list[list[int]]]: ...

    def step_counts(self, epoch: int, step_in_epoch: int) -> StepCounts: ...

    def collate(self, rows: list[list[int]], examples: list[Encoded], pad_id: int) -> dict[str, torch.Tensor]: ...

    def padding(self) -> dict: ...


@dataclass
class BatchPlan:
    """Which examples form each micro-batch, for every epoch, for every process.

    Rows are single examples (padded batches) or best-fit-decreasing bins (packing); `rows_for_epoch`, when given,
    supplies them instead (the prefix-sharing plan's groups), and this plan lays them out all the same.
    """

    lengths: list[int]  # tokens each example adds to a row
    batch_size: int  # rows per micro-batch per process
    max_length: int
    packing: bool
    group_by_length: bool
    seed: int
    world_size: int = 1
    accumulation: int = 1
    rows_for_epoch: Callable[[int], list[list[int]]] | None = None
    pad_multiple: int = 1  # data.pad_to_multiple_of: micro-batch widths rounded up to a multiple of it

    def __post_init__(self):
        # Packing is computed once; epochs shuffle the bins (BFD itself is deterministic).
        self.bins = (pack_best_fit_decreasing(self.lengths, self.max_length)
                     if self.packing and self.rows_for_epoch is None else None)
        self._cached: tuple[int, list] | None = None

    @property
    def n_rows(self) -> int:
        """Rows an epoch holds (before trimming to whole optimizer steps)."""
        return len(self.bins) if self.bins is not None else len(self._rows(0))

    def _rows(self, epoch: int) -> list[list[int]]:
        """Rows (lists of example indices) in this epoch's order."""
        if self.rows_for_epoch is not None:
            return self.rows_for_epoch(epoch)
        rng = random.Random(self.seed * 1_000_003 + epoch)
        if self.packing:
            rows = [list(b) for b in self.bins]
            rng.shuffle(rows)
            return rows
        idx = list(range(len(self.lengths)))
        rng.shuffle(idx)
        if self.group_by_length:  # sort within mega-batches: less padding, still random across them
            mega = self.batch_size * 32
            idx = [i for s in range(0, len(idx), mega)
                   for i in sorted(idx[s : s + mega], key=lambda j: -self.lengths[j])]
        return [[i] for i in idx]

    def global_micro_batches(self, epoch: int) -> list[list[list[int]]]:
        """All micro-batches of the epoch (each a list of rows), trimmed to whole optimizer steps."""
        if self._cached is not None and self._cached[0] == epoch:
            return self._cached[1]
        rows = self._rows(epoch)
        batches = [rows[s : s + self.batch_size] for s in range(0, len(rows) - self.batch_size + 1, self.batch_size)]
        if self.group_by_length and not self.packing:
            random.Random(self.seed * 7919 + epoch).shuffle(batches)
        per_step = self.world_size * self.accumulation
        self._cached = (epoch, batches[: len(batches) // per_step * per_step])
        return self._cached[1]

    def steps_per_epoch(self) -> int:
        return len(self.global_micro_batches(0)) // (self.world_size * self.accumulation)

    def step_batches(self, epoch: int, step_in_epoch: int, rank: int) -> list[list[list[int]]]:
        """The `accumulation` micro-batches this rank processes for one optimizer step.

        Micro-batches of a step are laid out [step][micro][rank], so rank r's share is disjoint from the others.
        """
        batches = self.global_micro_batches(epoch)
        start = step_in_epoch * self.world_size * self.accumulation
        window = batches[start : start + self.world_size * self.accumulation]
        return [window[m * self.world_size + rank] for m in range(self.accumulation)]

    def step_counts(self, epoch: int, step_in_epoch: int) -> StepCounts:
        examples = [[j for row in m for j in row] for rank in range(self.world_size)
                    for m in self.step_batches(epoch, step_in_epoch, rank)]
        return StepCounts(examples, sum(len(m) for m in examples), sum(self.lengths[j] for m in examples for j in m))

    def collate(self, rows: list[list[int]], examples: list[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
        return collate(rows, examples, pad_id, self.packing, multiple=self.pad_multiple, limit=self.max_length)

    def padding(self) -> dict:
        """Padding in the first epoch's micro-batches (packed micro-batches run as one row: only the rounding)."""
        return padding_stats(self.global_micro_batches(0), self.lengths, packed=self.packing,
                             multiple=self.pad_multiple, limit=self.max_length)


class LazyBatches(Sequence):
    """Micro-batches collated when read, not all at once: a held-out split of tens of thousands of examples would
    otherwise sit in memory as tensors (with prefix sharing, a [rows, 1, T, T] mask per batch)."""

    def __init__(self, batches: Sequence, collate_fn: Callable[[list], dict]):
        self.batches, self.collate_fn = batches, collate_fn  # each a list of rows, as collate takes them

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return LazyBatches(self.batches[i], self.collate_fn)
        return self.collate_fn(self.batches[i])


def collate(rows: list[list[int]], examples: list[Encoded], pad_id: int, packed: bool, *, multiple: int = 1,
            limit: int | None = None) -> dict[str, torch.Tensor]:
    """Tensors for one micro-batch.

    Packed: the micro-batch's rows are laid end to end in one row (padding-free, as TRL's padding_free), with
    `position_ids` that restart at 0 for every example and no attention mask. From that, transformers builds a
    block-diagonal causal mask for sdpa / eager / flex, and flash-attn 2 runs its varlen kernel; flash-attn only
    recognises packing in a batch of one row, so two packed rows would attend across examples there. Unpacked rows
    are right-padded to the longest row (never to max_length) with an attention mask. Labels of padding and of every
    example's first token are -100, so no loss crosses a boundary. The width is rounded up by padded_width; a packed
    row's padding is one more sequence (positions from 0), so it attends only to itself.
    """
    if packed:
        rows = [[i for row in rows for i in row]]
    ids, labels, pos = [], [], []
    for row in rows:
        r_ids, r_lab, r_pos = [], [], []
        for i in row:
            ex = examples[i]
            r_ids += ex.input_ids
            r_lab += [-100] + ex.labels[1:]
            r_pos += list(range(len(ex.input_ids)))
        ids.append(r_ids)
        labels.append(r_lab)
        pos.append(r_pos)
    width = padded_width(max(len(r) for r in ids), multiple, None if packed else limit)
    if packed:
        pos = [r + list(range(width - len(r))) for r in pos]
    batch = {
        "input_ids": torch.tensor([r + [pad_id] * (width - len(r)) for r in ids]),
        "labels": torch.tensor([r + [-100] * (width - len(r)) for r in labels]),
    }
    if packed:
        batch["position_ids"] = torch.tensor(pos)
    else:
        batch["attention_mask"] = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in ids])
    return batch


def padding_stats(batches: list[list[list[int]]], lengths: list[int], packed: bool = False, multiple: int = 1,
                  limit: int | None = None) -> dict:
    """Fraction of padded positions when each micro-batch is padded to its longest row, rounded as padded_width
    rounds it (packed: one row, only the rounding)."""
    real = total = 0
    for batch in batches:
        if packed:
            batch = [[i for row in batch for i in row]]
        row_lens = [sum(lengths[i] for i in row) for row in batch]
        real += sum(row_lens)
        total += padded_width(max(row_lens), multiple, None if packed else limit) * len(row_lens)
    return {"tokens": real, "padded_tokens": total, "padding_fraction": 1 - real / total if total else 0.0}
