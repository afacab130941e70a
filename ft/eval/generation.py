"""Generation for evaluation and inference: batched greedy or sampled continuations of our prompts.

    texts = generate_batch(model, tokenizer, prompts, max_new_tokens)          # left-padded, KV cache on
    outputs = generate_sql(model, tokenizer, rows, template, batch_size, n)   # (raw output, latency) per row

Schema KV reuse (`eval.reuse_schema_cache`, schema_first template): with that template the prompt is
[schema prefix] + [question part] and the prefix tokens are the same for every question on a schema
(ft.data.prompt.prompt_ids). So for the questions of one schema:

    cache = schema_cache(model, prefix)           # one forward over the schema, use_cache=True
    per batch of questions: a copy of the cache repeated along the batch, and input ids
        [prefix][pad ... pad][question part]      # padded in the middle, attention_mask 0 there

`generate` then runs only the question parts (the cache already holds the prefix), position ids follow the
attention mask (the question continues at len(prefix) whatever the padding), and greedy outputs are those of
generating from the whole prompt (tests/test_prefix.py).
"""
from __future__ import annotations

import copy
import logging
import time

import torch

from ft.data.prompt import STOP, encode_prompt, prompt_ids
from ft.data.rows import Row

log = logging.getLogger("sqlft")


def _left_pad(seqs: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.tensor([[pad_id] * (width - len(s)) + s for s in seqs], device=device)
    mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in seqs], device=device)
    return ids, mask


@torch.no_grad()
def generate_batch(model, tokenizer, prompts: list[list[int]], max_new_tokens: int, *, sample: bool = False,
                   num_return_sequences: int = 1, synced_gpus: bool = False) -> list[str]:
    """Greedy (or sampled) continuations of tokenized prompts, left-padded, with the KV cache on."""
    device = next(p for p in model.parameters()).device
    ids, mask = _left_pad(prompts, tokenizer.pad_token_id, device)
    out = model.generate(
        input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=sample,
        temperature=0.8 if sample else None, top_p=0.95 if sample else None, top_k=None,
        num_return_sequences=num_return_sequences, use_cache=True,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        stop_strings=[STOP], tokenizer=tokenizer, synced_gpus=synced_gpus,
    )
    return tokenizer.batch_decode(out[:, ids.shape[1]:], skip_special_tokens=True)


def generate_sql(model, tokenizer, rows: list[Row], template: str, batch_size: int, max_new_tokens: int,
                 synced_gpus: bool = False, reuse_schema_cache: bool = False) -> list[tuple[str, float]]:
    """(raw output, latency) per row. Rows are batched by prompt length (less padding), results in input order.

    reuse_schema_cache (schema_first template): each schema's KV cache is computed once and reused for all its
    questions (ft/prefix_cache.py); same greedy output. Not with synced_gpus, whose ranks must run equal batches.
    """
    if reuse_schema_cache and not synced_gpus:
        return generate_sql_shared(model, tokenizer, rows, template, batch_size, max_new_tokens)
    prompts = [encode_prompt(r, tokenizer, template) for r in rows]
    order = sorted(range(len(rows)), key=lambda i: len(prompts[i]))
    results: list[tuple[str, float] | None] = [None] * len(rows)
    was_training = model.training
    model.eval()
    for s in range(0, len(order), batch_size):
        chunk = order[s : s + batch_size]
        t0 = time.perf_counter()
        texts = generate_batch(model, tokenizer, [prompts[i] for i in chunk], max_new_tokens, synced_gpus=synced_gpus)
        latency = time.perf_counter() - t0  # each answer of a batch is ready when the batch is
        for i, text in zip(chunk, texts):
            results[i] = (text, latency)
    model.train(was_training)
    return results  # type: ignore[return-value]


# ------------------------------------------------------------------------------------------------
# schema KV reuse


def _device(model):
    return next(p for p in model.parameters()).device


@torch.no_grad()
def schema_cache(model, prefix: list[int]):
    """The KV cache (a transformers DynamicCache, batch 1) of the schema prefix."""
    ids = torch.tensor([prefix], device=_device(model))
    return model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=True).cache


def expand_cache(cache, n: int):
    """A copy of a batch-1 cache repeated n times along the batch (the original is left untouched)."""
    out = copy.deepcopy(cache)
    if n > 1:
        out.batch_repeat_interleave(n)
    return out


@torch.no_grad()
def generate_from_cache(model, tokenizer, prefix: list[int], cache, rests: list[list[int]], max_new_tokens: int) -> list[str]:
    """Greedy continuations of prefix + rest for each rest, the prefix coming from `cache` (not modified)."""
    device = _device(model)
    width = max(len(r) for r in rests)
    pad = tokenizer.pad_token_id
    ids = torch.tensor([prefix + [pad] * (width - len(r)) + r for r in rests], device=device)
    mask = torch.tensor([[1] * len(prefix) + [0] * (width - len(r)) + [1] * len(r) for r in rests], device=device)
    out = model.generate(
        input_ids=ids, attention_mask=mask, cache=expand_cache(cache, len(rests)), max_new_tokens=max_new_tokens,
        do_sample=False, temperature=None, top_p=None, top_k=None, use_cache=True,
        pad_token_id=pad, eos_token_id=tokenizer.eos_token_id, stop_strings=[STOP], tokenizer=tokenizer,
    )
    return tokenizer.batch_decode(out[:, ids.shape[1]:], skip_special_tokens=True)


def generate_sql_shared(model, tokenizer, rows: list[Row], template: str, batch_size: int,
                        max_new_tokens: int) -> list[tuple[str, float]]:
    """Like generate_sql, with one prefix computation per distinct schema prefix.

    (raw output, latency) per row, in input order. Questions are batched within a schema; a batch's latency
    includes its schema's prefix forward, which all of them needed.
    """
    encoded = [prompt_ids(r, tokenizer, template) for r in rows]
    by_prefix: dict[tuple[int, ...], list[int]] = {}
    for i, (ids, p) in enumerate(encoded):
        if p <= 0:
            raise ValueError(f"template {template!r} has no shared prefix; reusing a schema cache needs schema_first")
        by_prefix.setdefault(tuple(ids[:p]), []).append(i)
    results: list[tuple[str, float] | None] = [None] * len(rows)
    was_training = model.training
    model.eval()
    for key, members in by_prefix.items():
        prefix = list(key)
        t0 = time.perf_counter()
        cache = schema_cache(model, prefix)
        prefill = time.perf_counter() - t0
        members = sorted(members, key=lambda i: len(encoded[i][0]))  # less padding within a batch
        for s in range(0, len(members), batch_size):
            chunk = members[s : s + batch_size]
            t0 = time.perf_counter()
            texts = generate_from_cache(model, tokenizer, prefix, cache, [encoded[i][0][len(prefix):] for i in chunk],
                                        max_new_tokens)
            latency = prefill + time.perf_counter() - t0
            for i, text in zip(chunk, texts):
                results[i] = (text, latency)
    model.train(was_training)
    log.debug("schema cache reuse: %d questions, %d schema prefixes", len(rows), len(by_prefix))
    return results  # type: ignore[return-value]
