"""Generation for evaluation and inference: batches of our prompts -> greedy answers and sampled candidates.

    gen = Generator(model, tokenizer, template="schema_first", max_new_tokens=128, samples=8)
    for chunk in gen.batches(rows, batch_size=16):          # row indices, short prompts together
        outs = gen.run([rows[i] for i in chunk])            # one Generated per row: greedy + 8 samples

One prompt pass per batch: the prompts are prefilled once (left-padded, KV cache on) and that cache is copied for
the greedy answers and, expanded N times along the batch, for the N samples of every question. transformers'
`num_return_sequences` would instead repeat every prompt N times before the prefill; the sampled tokens are the
same either way for the same seed (tests/test_voting.py), the prompt's compute is paid once instead of N + 1 times.

Schema KV reuse (`eval.reuse_schema_cache`, schema_first template): the prompt is [schema prefix] + [question
part] and the prefix tokens are the same for every question on a schema (ft.data.prompt.prompt_ids), so each
schema's cache is computed once for all its questions; a batch (questions sorted by schema, several schemas to a
batch so batches stay full) stacks its rows' schema caches, left-padded to the longest, and its input ids are
[pad][prefix][pad ... pad][question part] (attention_mask 0 on the pads): generation runs only the question parts,
position ids follow the attention mask, and greedy outputs are those of generating from the whole prompt
(tests/test_prefix.py).

`constrain` (eval.constrain): tables and columns limited to the names of the prompt's schema while decoding
(ft.sql.constrain, PICARD-style checks of the top-k next tokens), for the greedy answer and the samples.

`interrupt` (a function, asked between generation steps): when it says stop, the batch ends at once and `run` raises
GenerationStopped (a stop signal is answered within a step, not after a batch of many samples); `on_step` hears of
each step (progress that moves while a long batch generates).
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from transformers import DynamicCache, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

from ft.data.prompt import STOP, prompt_ids
from ft.data.rows import Row
from ft.sql.constrain import IdentifierGuard, SchemaConstraint


class GenerationStopped(Exception):
    """`interrupt` said stop during a batch: its answers are unfinished and are not returned."""


class _Watch(StoppingCriteria):
    """Asked by generate() after every new token: ends every row when `interrupt` says so, reports the step."""

    def __init__(self, gen: "Generator", prompt_len: int):
        self.gen, self.prompt_len = gen, prompt_len

    def __call__(self, input_ids, scores, **kwargs):
        if self.gen.on_step is not None:
            self.gen.on_step(input_ids.shape[1] - self.prompt_len)
        stop = self.gen.interrupt is not None and self.gen.interrupt()
        self.gen.interrupted |= stop
        return torch.full((input_ids.shape[0],), bool(stop), dtype=torch.bool, device=input_ids.device)


@dataclass
class Generated:
    text: str  # the greedy continuation
    seconds: float  # this question's share of its batch's generation time (batch time / questions in the batch)
    samples: list[str] = field(default_factory=list)  # sampled continuations, from the same prefill
    sample_logprobs: list[float] = field(default_factory=list)  # mean token log-probability of each sample
    stopped: bool = True  # the greedy answer ended (closing fence or EOS), not cut at max_new_tokens


def _device(model):
    return next(p for p in model.parameters()).device


def _left_pad(seqs: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.tensor([[pad_id] * (width - len(s)) + s for s in seqs], device=device)
    mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in seqs], device=device)
    return ids, mask


def expand_cache(cache, n: int):
    """A copy of a cache with each row repeated n times along the batch (the original is left untouched)."""
    out = copy.deepcopy(cache)
    if n > 1:
        out.batch_repeat_interleave(n)
    return out


@torch.no_grad()
def prefill(model, ids: torch.Tensor, mask: torch.Tensor):
    """KV cache of every prompt but its last token (generate runs that one). Position ids follow the attention mask,
    as generate's own would, so left padding changes nothing."""
    pos = (mask.long().cumsum(-1) - 1).clamp(min=0)
    # logits_to_keep=1: the LM head (a vocabulary-wide matmul) only where generate would use it, not at every
    # prompt position (for a 49k vocabulary that would cost more than the rest of the prefill).
    return model(input_ids=ids[:, :-1], attention_mask=mask[:, :-1], position_ids=pos[:, :-1], use_cache=True,
                 logits_to_keep=1).cache


@torch.no_grad()
def schema_cache(model, prefix: list[int]):
    """The KV cache (a transformers DynamicCache, batch 1) of a schema prefix."""
    ids = torch.tensor([prefix], device=_device(model))
    return model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=True, logits_to_keep=1).cache


def _mean_logprobs(logits: tuple, tokens: torch.Tensor, stop_ids: set[int]) -> list[float]:
    """Mean log-probability (under the model, temperature 1) of each row's generated tokens up to its end."""
    logp = torch.stack([torch.log_softmax(step.float(), dim=-1) for step in logits], dim=1)  # [B, T, V]
    chosen = logp.gather(-1, tokens[:, : logp.shape[1], None]).squeeze(-1)
    out = []
    for row, lp in zip(tokens.tolist(), chosen):
        end = next((j + 1 for j, t in enumerate(row) if t in stop_ids), len(row))
        out.append(float(lp[:end].mean()))
    return out


class Generator:
    """Batched generation with our prompt function; greedy answers, optional samples, optional schema KV reuse."""

    def __init__(self, model, tokenizer, template: str = "default", max_new_tokens: int = 192, *, samples: int = 0,
                 temperature: float = 0.8, top_p: float = 0.95, synced_gpus: bool = False,
                 reuse_schema_cache: bool = False, constrain: bool = False,
                 interrupt: Callable[[], bool] | None = None, on_step: Callable[[int], None] | None = None):
        self.model, self.tok, self.template, self.max_new_tokens = model, tokenizer, template, max_new_tokens
        self.interrupt, self.on_step, self.interrupted = interrupt, on_step, False
        self.samples, self.temperature, self.top_p, self.synced = samples, temperature, top_p, synced_gpus
        self.constrain = constrain  # identifiers limited to the prompt schema's names while decoding
        self.masked = self.fallbacks = 0  # tokens the constraint masked; row-steps it had to leave alone
        self.sample_ids: torch.Tensor | None = None  # token ids of the last run's samples (GRPO trains on them)
        # Schema reuse batches by schema: ranks under ZeRO-3 must run equal batches, so not with synced_gpus.
        self.reuse = reuse_schema_cache and not synced_gpus
        self._schema_caches: dict[tuple[int, ...], object] = {}

    # ---- batching ----------------------------------------------------------------------------

    def encode(self, row: Row) -> tuple[list[int], int]:
        ids, prefix = prompt_ids(row, self.tok, self.template)
        if self.reuse and prefix <= 0:
            raise ValueError(f"template {self.template!r} has no shared prefix; reusing a schema cache needs "
                             "schema_first")
        return ids, prefix

    def batches(self, rows: list[Row], batch_size: int) -> list[list[int]]:
        """Row indices in batches: prompts sorted by length (less padding); with schema reuse, by schema first, so
        a batch holds few schemas (each prefilled once for all its questions) and batches stay full."""
        enc = [self.encode(r) for r in rows]
        if not self.reuse:
            order = sorted(range(len(rows)), key=lambda i: len(enc[i][0]))
        else:
            first: dict[tuple[int, ...], int] = {}
            for i, (ids, p) in enumerate(enc):
                first.setdefault(tuple(ids[:p]), i)
            order = sorted(range(len(rows)), key=lambda i: (first[tuple(enc[i][0][: enc[i][1]])], len(enc[i][0])))
        return [order[s : s + batch_size] for s in range(0, len(order), batch_size)]

    # ---- generation --------------------------------------------------------------------------

    def _generate(self, ids, mask, cache, *, sample: bool, guards=None):
        processors = None
        if guards is not None:
            processors = LogitsProcessorList([SchemaConstraint(self.tok, guards, ids.shape[1], STOP)])
        out = self.model.generate(
            input_ids=ids, attention_mask=mask, cache=cache, max_new_tokens=self.max_new_tokens, do_sample=sample,
            temperature=self.temperature if sample else None, top_p=self.top_p if sample else None, top_k=None,
            use_cache=True, pad_token_id=self.tok.pad_token_id, eos_token_id=self.tok.eos_token_id,
            stop_strings=[STOP], tokenizer=self.tok, synced_gpus=self.synced,
            return_dict_in_generate=True, output_logits=sample, logits_processor=processors,
            stopping_criteria=StoppingCriteriaList([_Watch(self, ids.shape[1])]),
        )
        if self.interrupted:
            raise GenerationStopped()
        if processors is not None:
            self.masked += processors[0].masked
            self.fallbacks += processors[0].fallbacks
        return out, out.sequences[:, ids.shape[1]:]

    def _guards(self, rows: list[Row]):
        if not self.constrain:
            return None
        out = []
        for r in rows:
            try:
                out.append(IdentifierGuard.from_ddl(r.schema))
            except ValueError:  # a schema we can't read: that question decodes unconstrained
                out.append(None)
        return out

    @torch.no_grad()
    def run(self, rows: list[Row], greedy: bool = True) -> list[Generated]:
        """Greedy answer (and `samples` sampled candidates) for each row, from one prompt pass for the batch;
        `greedy=False`: the samples only (retry with validation already has the greedy answer)."""
        was_training = self.model.training
        self.model.eval()
        self.interrupted = False
        try:
            t0 = time.perf_counter()
            ids, mask, cache = self._inputs(rows)
            texts = [""] * len(rows)
            stopped = [True] * len(rows)
            guards = self._guards(rows)
            if greedy:
                new = self._generate(ids, mask, expand_cache(cache, 1) if self.samples else cache, sample=False,
                                     guards=guards)[1]
                texts = self.tok.batch_decode(new, skip_special_tokens=True)
                ends = {self.tok.eos_token_id, self.tok.pad_token_id}
                stopped = [STOP in t or any(x in ends for x in r) for t, r in zip(texts, new.tolist())]
            samples: list[list[str]] = [[] for _ in rows]
            logprobs: list[list[float]] = [[] for _ in rows]
            if self.samples:
                n = self.samples
                out, new = self._generate(ids.repeat_interleave(n, 0), mask.repeat_interleave(n, 0),
                                          expand_cache(cache, n), sample=True,
                                          guards=None if guards is None else [g for g in guards for _ in range(n)])
                self.sample_ids = new
                decoded = self.tok.batch_decode(new, skip_special_tokens=True)
                lps = _mean_logprobs(out.logits, new, {self.tok.eos_token_id, self.tok.pad_token_id})
                for k in range(len(rows)):
                    samples[k], logprobs[k] = decoded[k * n:(k + 1) * n], lps[k * n:(k + 1) * n]
            seconds = (time.perf_counter() - t0) / len(rows)
        finally:
            self.model.train(was_training)
        return [Generated(t, seconds, s, lp, st) for t, s, lp, st in zip(texts, samples, logprobs, stopped)]

    def _inputs(self, rows: list[Row]):
        """(input ids, attention mask, KV cache of all but the last prompt token) for one batch."""
        device, pad = _device(self.model), self.tok.pad_token_id
        enc = [self.encode(r) for r in rows]
        if not self.reuse:
            ids, mask = _left_pad([e[0] for e in enc], pad, device)
            return ids, mask, prefill(self.model, ids, mask)
        # Each row: [pad][its schema prefix][pad][its question part]. The prefix comes from its schema's cache
        # (computed once, kept while the schemas' batches last), left-padded to the batch's longest prefix; then one
        # forward over the question parts but their last token extends the batch cache.
        prefixes = [e[0][: e[1]] for e in enc]
        rests = [e[0][e[1]:] for e in enc]
        caches = [self._cache_of(p) for p in prefixes]
        width_p, width_r = max(map(len, prefixes)), max(map(len, rests))
        ids = torch.tensor([[pad] * (width_p - len(p)) + p + [pad] * (width_r - len(r)) + r
                            for p, r in zip(prefixes, rests)], device=device)
        mask = torch.tensor([[0] * (width_p - len(p)) + [1] * len(p) + [0] * (width_r - len(r)) + [1] * len(r)
                             for p, r in zip(prefixes, rests)], device=device)

        def stacked(tensors):  # [1, heads, len, dim] each -> [rows, heads, width_p, dim], zeros where padded
            return torch.cat([torch.nn.functional.pad(t, (0, 0, width_p - t.shape[2], 0)) for t in tensors])

        cache = DynamicCache(ddp_cache_data=[(stacked([c.layers[k].keys for c in caches]),
                                              stacked([c.layers[k].values for c in caches]))
                                             for k in range(len(caches[0].layers))])
        if width_r > 1:
            pos = (mask.cumsum(-1) - 1).clamp(min=0)
            self.model(input_ids=ids[:, width_p:-1], attention_mask=mask[:, :-1], position_ids=pos[:, width_p:-1],
                       cache=cache, use_cache=True, logits_to_keep=1)
        return ids, mask, cache

    def _cache_of(self, prefix: list[int]):
        """A schema's KV cache, computed once; the few most recent are kept (batches come schema by schema)."""
        key = tuple(prefix)
        if key not in self._schema_caches:
            if len(self._schema_caches) >= 8:
                self._schema_caches.pop(next(iter(self._schema_caches)))
            self._schema_caches[key] = schema_cache(self.model, prefix)
        return self._schema_caches[key]


@torch.no_grad()
def generate_batch(model, tokenizer, prompts: list[list[int]], max_new_tokens: int, *, sample: bool = False,
                   num_return_sequences: int = 1, synced_gpus: bool = False) -> list[str]:
    """Greedy (or sampled) continuations of tokenized prompts, left-padded, with the KV cache on; transformers'
    own path (each returned sequence prefilled on its own), the reference the one-prefill Generator is checked
    against."""
    device = _device(model)
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
    """(greedy raw output, seconds) per row, in input order."""
    gen = Generator(model, tokenizer, template, max_new_tokens, synced_gpus=synced_gpus,
                    reuse_schema_cache=reuse_schema_cache)
    results: list[tuple[str, float] | None] = [None] * len(rows)
    for chunk in gen.batches(rows, batch_size):
        for i, g in zip(chunk, gen.run([rows[i] for i in chunk])):
            results[i] = (g.text, g.seconds)
    return results  # type: ignore[return-value]

