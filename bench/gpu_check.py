"""The GPU check: one prepared script that proves the CUDA paths on a single GPU in under ten minutes (issue 19).

    bench/gpu_check.sh                     # on the GPU machine (wheels from .whl/, see bench/gpu_wheels.sh), ~8 min
    bench/gpu_check.sh --no-speed          # parts 1-5 only (no 7B-shape model): ~3 min
    bench/gpu_check.sh --dry-run           # CI, no GPU: builds what it would use; every check SKIPs with its reason
    python bench/gpu_check.py --device cpu --only packing_sdpa,prefix_sharing_flex,generation_kv_reuse
                                           # developer: the equivalence checks' code on CPU, in float32 vs float64
    python bench/gpu_check.py --device cpu --big-shape tiny --only memory_at_load_7b,speed_7b_gc_on
                                           # developer: parts 6-7's code on a 2-layer Qwen2 shape, on CPU

No network is needed or used: models are built from configs with random weights (a 2-layer Llama for the
equivalences and the real loop, the Qwen2.5-7B shape for speed and memory), tokenizers are trained locally, data is
the bundled set (generated locally) or Spider when `../shared/data/spider` (or --spider) exists.

Parts (each check one line PASS / FAIL / SKIP-with-reason; figures in bench/results/gpu_check.json, the table in
bench/results/gpu_check.md; exit status 1 on any FAIL):
1. the real loop (`python -m ft.train` on a tiny config): 4-bit NF4 + double quantization + bf16 compute, 8-bit,
   unquantized bf16 LoRA: a few optimizer steps each, the loss falls.
2. paged_adamw_8bit steps; checkpoint + resume gives the uninterrupted run's adapter (negative control: a resume
   whose optimizer state is lost is caught).
3. packing: packed loss == unpacked loss with sdpa and flash-attn 2's varlen path (when importable); negative
   control: positions that don't restart per example.
4. prefix sharing with FlexAttention: per-branch losses and all gradients == the unshared computation; negative
   control: a branch that sees another.
5. batched generation + execution evaluation, with and without schema KV reuse (the same SQL); KV reuse's speed.
6. speed, 7B shape, 4-bit QLoRA, sequence length 2048, packed micro-batches: gradient checkpointing on / off
   (tokens/s, target tokens/s, peak memory, MFU); ours vs TRL's SFTTrainer (when trl imports); prefix sharing vs
   packing on Spider-like data.
7. memory at load of the 7B shape in 4-bit vs bench/memory_estimate.py.

Tolerances of the equivalence checks (3, 4) are measured, not guessed: the same unshared / unpacked computation in
the compute dtype (bf16 on GPU) against a wider reference dtype (fp32, TF32 off) gives the rounding noise of that
dtype on these very examples; the checked computation must be within K=4 times that noise (floor: 1/16 of the
dtype's epsilon), and the negative control must be outside it (else the check could not tell, and FAILs).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
for _p in (REPO, REPO / "bench"):  # the package, and bench/memory_estimate.py
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))
RESULTS = REPO / "bench" / "results"
SPIDER = REPO.parent / "shared" / "data" / "spider"
H100_PEAK_FLOPS = 989e12  # H100 / H200 SXM dense bf16 (ft/tracking.py's table); the MFU denominator when unknown

# ------------------------------------------------------------------------------------------------
# pure helpers (tests/test_gpu_check.py tests them, negative controls included)

K_NOISE = 4.0  # checked error may be this many times the measured rounding noise


def noise_floor(eps: float) -> float:
    """Smallest tolerance: 1/16 of the compute dtype's epsilon (bf16: 4.9e-4, fp32: 7.5e-9) per token / relative."""
    return eps / 16


def tolerance(noise: float, eps: float, k: float = K_NOISE) -> float:
    return max(k * noise, noise_floor(eps))


def equivalence_verdict(err: float, noise: float, control: float | None, eps: float, k: float = K_NOISE) -> dict:
    """PASS when the checked error is within k x the measured noise and the negative control is outside it.

    err: the checked computation against the wide-dtype reference; noise: the plain computation in the compute dtype
    against the same reference; control: a deliberately broken computation against it (None: no control)."""
    tol = tolerance(noise, eps, k)
    out = {"error": err, "noise": noise, "tolerance": tol, "control_error": control,
           "tolerance_rule": f"max({k:g} x noise, eps/16 = {noise_floor(eps):.3g})"}
    if not math.isfinite(err) or err > tol:
        return out | {"ok": False, "why": f"error {err:.3g} > tolerance {tol:.3g}"}
    if control is not None and not control > tol:
        return out | {"ok": False, "why": f"negative control {control:.3g} is within the tolerance {tol:.3g}: the "
                                          "check can't tell a broken computation from a correct one"}
    return out | {"ok": True}


def loss_fell(losses: list[float], factor: float = 0.85, k: int = 3) -> bool:
    """The mean of the last k losses is below factor x the mean of the first k (finite, enough steps)."""
    if len(losses) < 2 * k or not all(math.isfinite(x) for x in losses):
        return False
    return sum(losses[-k:]) / k < factor * sum(losses[:k]) / k


def resume_tolerance(lr: float, resumed_steps: int) -> float:
    """Max |adapter difference| allowed between a resumed and an uninterrupted run: 1% of one Adam step (~lr) per
    resumed step. Both runs use deterministic kernels (eager attention, cuBLAS on one stream, bitsandbytes'
    dequantization and blockwise 8-bit Adam), so a correct resume agrees to the bit; a bf16 reordering that slipped
    in perturbs a gradient by ~2^-8 relative, i.e. each Adam step by well under 1% of lr. A resume that loses the
    optimizer state, scheduler, RNG or data position moves weights by O(lr) at its first step."""
    return 0.01 * lr * resumed_steps


def mfu_figures(n_params: int, tokens: int, seconds: float, peak_flops: float | None) -> dict:
    """tokens/s and MFU = 6 N tokens/s / peak (ft.tracking.mfu: forward 2N + backward 4N per token)."""
    from ft.tracking import mfu

    if seconds <= 0:
        raise ValueError(f"seconds must be > 0, got {seconds}")
    tps = tokens / seconds
    return {"tokens_per_s": tps, "mfu": mfu(n_params, tps, 1, peak_flops), "n_params": n_params,
            "peak_flops": peak_flops}


def memory_verdict(measured: float, predicted: float, rel_tol: float = 0.10) -> dict:
    ratio = measured / predicted if predicted else float("inf")
    return {"measured_gb": measured / 1e9, "predicted_gb": predicted / 1e9, "ratio": ratio, "rel_tol": rel_tol,
            "ok": abs(ratio - 1) <= rel_tol}


# ------------------------------------------------------------------------------------------------
# the check registry


class Skip(Exception):
    """Raised by a check that can't run here; the message is the reason."""


class Failed(AssertionError):
    """A FAIL that keeps the figures measured so far (they go into the JSON as on a PASS)."""

    def __init__(self, message: str, figures: dict):
        super().__init__(message)
        self.figures = figures


@dataclass
class Check:
    name: str
    part: int
    title: str
    fn: Callable
    cpu: bool = False  # runs with --device cpu too (float32 vs float64)
    speed: bool = False  # part of the speed part (or needs the 7B-shape model): --no-speed skips it
    prereq: Callable | None = None  # ctx -> reason it can't run even on a GPU (e.g. a missing package), or None


@dataclass
class Result:
    name: str
    part: int
    title: str
    status: str  # PASS | FAIL | SKIP
    reason: str = ""
    seconds: float = 0.0
    figures: dict = field(default_factory=dict)


CHECKS: list[Check] = []  # in order of execution = the order they are written below (the table is sorted by part)
PARTS = {1: "real loop: 4-bit / 8-bit / bf16 LoRA", 2: "paged AdamW 8-bit, checkpoint + resume",
         3: "packing equivalence", 4: "prefix sharing (FlexAttention)", 5: "generation + execution eval, KV reuse",
         6: "speed, 7B shape", 7: "memory at load, 7B shape"}


def check(name: str, part: int, title: str, **kw):
    def deco(fn):
        CHECKS.append(Check(name, part, title, fn, **kw))
        return fn
    return deco


def flash_prereq(ctx) -> str | None:
    import importlib.util

    return None if importlib.util.find_spec("flash_attn") else "flash-attn is not installed (reported as absent)"


def trl_prereq(ctx) -> str | None:
    if ctx.trl_error is None:
        try:
            import trl  # noqa: F401

            ctx.trl_error = ""
        except Exception as e:  # noqa: BLE001 - any import failure means: not available here
            ctx.trl_error = f"trl is not importable ({type(e).__name__}: {str(e)[:160]}); bench/gpu_wheels.sh " \
                            "brings its wheel"
    return ctx.trl_error or None


# ------------------------------------------------------------------------------------------------
# what the checks use: small models, tokenizers, data, configs (all built in the dry run too)

SCHEMA = """CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT, city TEXT);

CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER REFERENCES customers(id), total REAL, day TEXT);

CREATE TABLE products (id INTEGER PRIMARY KEY, name TEXT, price REAL);"""
SMALL_SCHEMA = SCHEMA.split(";")[0] + ";"
MID_SCHEMA = SCHEMA.rsplit(";", 2)[0] + ";"
CITIES = ["Paris", "Berlin", "Madrid", "Rome", "Oslo", "Lisbon", "Vienna", "Prague"]


def small_rows(n: int, schema: str = SCHEMA) -> list[dict]:
    """Short text-to-SQL rows with answers of different lengths (as tests/conftest.py's make_rows)."""
    rows = []
    for i in range(n):
        city = CITIES[i % len(CITIES)]
        if i % 3 == 0:
            q, sql = f"How many customers live in {city}?", f"SELECT COUNT(*) FROM customers WHERE city = '{city}'"
        elif i % 3 == 1:
            q = f"What is the total of orders by customers from {city}?"
            sql = f"SELECT SUM(o.total) FROM orders o JOIN customers c ON o.customer_id = c.id WHERE c.city = '{city}'"
        else:
            q = f"List the names of the {i % 5 + 1} most expensive products."
            sql = f"SELECT name FROM products ORDER BY price DESC LIMIT {i % 5 + 1}"
        rows.append({"question": q, "query": sql, "schema": schema})
    return rows


def build_small_model(out_dir: Path, tok, init_std: float, seed: int = 0, layers: int = 2, hidden: int = 256) -> Path:
    """A random Llama (head dim 64: fits sdpa, flash-attn and FlexAttention) saved with weights that bf16 represents
    exactly, so loading it in bf16 and in fp32 gives the same weights and a dtype comparison measures compute only."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=2048, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id, tie_word_embeddings=False, initializer_range=init_std)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.to(torch.bfloat16).float())
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    return out_dir


def train_tokenizer(texts: list[str], vocab_size: int, out_dir: Path):
    """A byte-level BPE tokenizer trained on the data itself (as tests/tiny.py, bigger), so token counts of schemas,
    questions and SQL are those of a real subword tokenizer rather than of bytes."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<s>", "</s>", "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    out_dir.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(out_dir)
    return fast


def qwen7b_config(tok):
    """The Qwen2.5-7B (= Qwen2.5-Coder-7B) shape, as bench/memory_estimate.py's "7B" row."""
    from memory_estimate import MODELS
    from transformers import Qwen2Config

    a = MODELS["7B"]
    return Qwen2Config(vocab_size=a.vocab, hidden_size=a.hidden, intermediate_size=a.intermediate,
                       num_hidden_layers=a.layers, num_attention_heads=a.heads, num_key_value_heads=a.kv_heads,
                       max_position_embeddings=32768, rms_norm_eps=1e-6, tie_word_embeddings=a.tied,
                       bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)


def tiny_qwen_config(tok):
    """--big-shape tiny: a 2-layer Qwen2 shape, so that parts 6 and 7's code runs on a CPU in seconds."""
    from transformers import Qwen2Config

    return Qwen2Config(vocab_size=len(tok), hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                       tie_word_embeddings=False, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                       pad_token_id=tok.pad_token_id)


def arch_of(config, name: str):
    """bench/memory_estimate.py's Arch of a transformers config."""
    from memory_estimate import Arch

    return Arch(name, config.hidden_size, config.num_hidden_layers, config.intermediate_size,
                config.num_attention_heads, config.num_key_value_heads, config.vocab_size,
                bool(config.tie_word_embeddings))


def mid_config(tok):
    """The Qwen2.5-0.5B shape with the local tokenizer's vocabulary (its outputs must decode): KV reuse's speed."""
    from transformers import Qwen2Config

    return Qwen2Config(vocab_size=len(tok), hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                       num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32768,
                       tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                       pad_token_id=tok.pad_token_id)


def meta_params(config) -> int:
    """Parameters of a model built on the meta device (no memory, no weights)."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())


def expected_params(a) -> int:
    """memory_estimate's parameter count of an Arch, plus Qwen2's q/k/v biases (which it leaves out: 0.2 MB at 7B)."""
    return a.quantized_params() + a.unquantized_params() + a.layers * (a.hidden + 2 * a.kv_dim)


# ------------------------------------------------------------------------------------------------
# context


@dataclass(slots=True)  # slots: every attribute is declared here; one set anywhere else is an error
class Ctx:
    """Everything the checks share: the run's settings, what setup() builds, the background runs, the results."""

    args: argparse.Namespace
    mode: str  # dry-run | cpu | cuda
    work: Path
    t0: float
    device: object = None
    dtype: object = None  # compute dtype of the equivalence checks
    ref_dtype: object = None  # their reference dtype
    eps: float = 0.0
    env: dict = field(default_factory=dict)
    built: dict = field(default_factory=dict)  # setup()'s figures, by part (the report's "setup")
    # ---- what setup() builds
    tok: object = None  # the small models' tokenizer, trained locally
    loop_dir: Path | None = None  # the real loop's model (parts 1, 2)
    eq_dir: Path | None = None  # the equivalence checks' model (parts 3-5)
    rows_file: Path | None = None  # the real loop's training rows
    pack_ex: list = field(default_factory=list)  # part 3's encoded examples
    prefix_rows: list = field(default_factory=list)  # part 4's rows (three schemas) and their examples, layout
    prefix_ex: list = field(default_factory=list)
    prefix_layout: list = field(default_factory=list)
    gen_rows: list = field(default_factory=list)  # part 5: bundled eval questions with databases
    kv_rows: list = field(default_factory=list)
    speed_tok_dir: Path | None = None  # part 6: Spider-like data, its tokenizer, encodings, packed micro-batches
    speed_tok: object = None
    speed_ex: list = field(default_factory=list)
    speed_ex_sf: list = field(default_factory=list)
    speed_batches: list = field(default_factory=list)
    big_dir: Path | None = None  # parts 6-7: the 7B (or tiny) shape's folder, config, memory_estimate Arch
    big_config: object = None
    big_arch: object = None
    mid_config: object = None  # the 0.5B shape of KV reuse's timing
    loop_cfgs: dict = field(default_factory=dict)  # ft.train configs of parts 1-2, by run name
    recipe: object = None  # the resolved 7B recipe config (configs/qwen2.5-coder-7b.yaml on the big shape)
    # ---- while checks run
    runs: dict = field(default_factory=dict)  # background ft.train runs: name -> Future
    pool: ThreadPoolExecutor | None = None
    trl_error: str | None = None
    big: dict | None = None  # the 7B-shape model once loaded (or the error of loading it)
    big_checkpoint: dict | None = None  # its checkpoint's figures once written
    results: list = field(default_factory=list)

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0


def setup(ctx: Ctx) -> None:
    """Build every model folder, tokenizer, data set, config and plan the checks use; the 7B shape as a config only
    (its weights are made on the GPU, in the speed part)."""
    import yaml

    from ft.config import ConfigError, load_config, resolve
    from ft.data.batching import BatchPlan, collate
    from ft.data.prefix import PrefixPlan, collate_prefix
    from ft.data.prompt import build_answer, build_prompt, encode_rows
    from ft.data.rows import Row
    from ft.data.sources import load_source, write_jsonl

    b, t = ctx.built, time.perf_counter()
    # the small models' tokenizer: byte-level BPE trained on the checks' own prompts and answers (as tests/tiny.py's)
    corpus = [build_prompt(Row(**r), template) + build_answer(Row(**r)) for r in small_rows(48)
              for template in ("default", "schema_first")]
    tok = train_tokenizer(corpus * 4, 384, ctx.work / "tiny-tokenizer")
    ctx.tok = tok
    # the real loop's model (default init) and the equivalence model (a larger init: peaked, context-sensitive
    # outputs, so that a leak or a wrong position moves the loss far beyond rounding)
    ctx.loop_dir = build_small_model(ctx.work / "loop-llama", tok, init_std=0.02)
    ctx.eq_dir = build_small_model(ctx.work / "eq-llama", tok, init_std=0.1, seed=1)
    b["small_models"] = {"loop": str(ctx.loop_dir), "equivalence": str(ctx.eq_dir), "vocab": len(tok),
                         "seconds": round(time.perf_counter() - t, 2)}

    # data: short rows for the loop and the equivalences; bundled eval questions (with databases) for generation
    t = time.perf_counter()
    ctx.rows_file = write_jsonl([Row(**r) for r in small_rows(48)], ctx.work / "rows.jsonl")
    ctx.pack_ex, _ = encode_rows([Row(**r) for r in small_rows(9)], tok, "default", 4096, "error")
    prefix_rows = ([Row(**r) for r in small_rows(7)] + [Row(**r) for r in small_rows(5, SMALL_SCHEMA)]
                   + [Row(**r) for r in small_rows(3, MID_SCHEMA)])
    ctx.prefix_rows = prefix_rows
    ctx.prefix_ex, _ = encode_rows(prefix_rows, tok, "schema_first", 4096, "error")
    by_schema: dict[str, list[int]] = {}
    for i, r in enumerate(prefix_rows):
        by_schema.setdefault(r.schema, []).append(i)
    big, small, mid = by_schema[SCHEMA], by_schema[SMALL_SCHEMA], by_schema[MID_SCHEMA]
    ctx.prefix_layout = [[big[:4]], [small, mid[:2]], [big[4:], mid[2:]]]  # a padded row, rows of two groups
    assert collate_prefix(ctx.prefix_layout, ctx.prefix_ex, tok.pad_token_id, "sdpa")["input_ids"].shape[0] == 3
    assert collate([[0, 1, 2], [3, 4]], ctx.pack_ex, tok.pad_token_id, packed=True)["input_ids"].shape[0] == 1
    eval_rows = load_source("bundled", split="eval")
    per_db: dict[str, list] = {}
    for r in eval_rows:
        per_db.setdefault(r.db_id, []).append(r)
    dbs = sorted(per_db, key=lambda d: -len(per_db[d]))
    ctx.gen_rows = [r for d in dbs[:3] for r in per_db[d][:4]]  # 12 questions on 3 schemas
    ctx.kv_rows = [r for d in dbs[:2] for r in per_db[d][:16]]  # 32 questions on 2 schemas
    assert all(r.db_path and Path(r.db_path).is_file() for r in ctx.gen_rows + ctx.kv_rows)
    b["data"] = {"loop_rows": str(ctx.rows_file), "packing_examples": len(ctx.pack_ex),
                 "prefix_examples": len(ctx.prefix_ex), "generation_questions": len(ctx.gen_rows),
                 "kv_reuse_questions": len(ctx.kv_rows), "seconds": round(time.perf_counter() - t, 2)}

    # Spider-like data for the speed part, and a tokenizer trained on it
    t = time.perf_counter()
    spider = Path(ctx.args.spider) if ctx.args.spider else SPIDER
    if (spider / "tables.json").is_file():
        speed_rows, source = load_source(str(spider), "spider"), f"spider ({spider})"
    else:
        speed_rows, source = load_source("bundled", split="train"), "bundled (no Spider at " + str(spider) + ")"
    random.Random(0).shuffle(speed_rows)
    speed_rows = speed_rows[:1500]
    texts = list(dict.fromkeys(r.schema for r in speed_rows)) + [r.question + "\n" + r.query for r in speed_rows]
    ctx.speed_tok_dir = ctx.work / "speed-tokenizer"
    stok = train_tokenizer(texts, 8192, ctx.speed_tok_dir)
    ctx.speed_tok = stok
    ctx.speed_ex, enc = encode_rows(speed_rows, stok, "default", 2048, "truncate_schema")
    ctx.speed_ex_sf, _ = encode_rows(speed_rows, stok, "schema_first", 2048, "truncate_schema")
    pack_plan = BatchPlan([len(e.input_ids) for e in ctx.speed_ex], 2, 2048, True, False, 0)
    ctx.speed_batches = pack_plan.global_micro_batches(0)
    prefix_plan = PrefixPlan(ctx.speed_ex_sf, 2, 2048, 0, attn="sdpa")
    b["speed_data"] = {"source": source, "rows": len(speed_rows), "encoding": enc, "tokenizer_vocab": len(stok),
                       "mean_tokens": sum(len(e.input_ids) for e in ctx.speed_ex) / len(ctx.speed_ex),
                       "packed_micro_batches": len(ctx.speed_batches), "prefix_sharing": prefix_plan.stats(),
                       "seconds": round(time.perf_counter() - t, 2)}
    if len(ctx.speed_batches) < 12:
        raise RuntimeError(f"only {len(ctx.speed_batches)} packed micro-batches of speed data; need 12")

    # the 7B shape: config + tokenizer in its folder, parameters counted on the meta device (no weights)
    from memory_estimate import MODELS

    t = time.perf_counter()
    if ctx.args.big_shape == "7b":
        ctx.big_dir, ctx.big_config = ctx.work / "qwen2.5-7b-shape", qwen7b_config(stok)
        ctx.big_arch = arch_of(ctx.big_config, MODELS["7B"].name)
        if ctx.big_arch != MODELS["7B"]:
            raise RuntimeError(f"the 7B config {ctx.big_arch} is not memory_estimate's 7B row {MODELS['7B']}")
    else:
        ctx.big_dir, ctx.big_config = ctx.work / "qwen2-tiny-shape", tiny_qwen_config(stok)
        ctx.big_arch = arch_of(ctx.big_config, "tiny Qwen2 shape")
    ctx.big_config.save_pretrained(ctx.big_dir)
    stok.save_pretrained(ctx.big_dir)
    n = meta_params(ctx.big_config)
    ctx.mid_config = mid_config(stok)
    b["big_shape"] = {"shape": ctx.big_arch.name, "folder": str(ctx.big_dir), "params_meta": n,
                      "params_memory_estimate": expected_params(ctx.big_arch),
                      "params_match_estimate": n == expected_params(ctx.big_arch),
                      "mid_params_meta": meta_params(ctx.mid_config), "seconds": round(time.perf_counter() - t, 2)}

    # configs: the real loop's runs (validated and resolved here, as ft.train will) and the 7B recipe
    t = time.perf_counter()
    ctx.loop_cfgs = loop_configs(ctx)
    cuda_only = {}
    for name, cfg in ctx.loop_cfgs.items():
        path = ctx.work / f"{name}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        loaded = load_config(path)  # validation: a renamed key or a bad value fails here, in CI
        try:
            resolve(loaded)
        except ConfigError as e:  # what only a CUDA machine may run (8-bit layers) is refused here, as it should be
            if ctx.mode == "cuda" or "CUDA" not in str(e):
                raise
            cuda_only[name] = str(e)
    recipe = {"model.name_or_path": str(ctx.big_dir), "tracking.wandb": False,
              "train.output_dir": str(ctx.work / "big-run")}
    if ctx.mode != "cuda":  # paged_adamw_8bit pages through CUDA; bf16 matmuls crawl on most CPUs
        recipe |= {"train.optimizer": "adamw", "quantization.compute_dtype": "float32", "quantization.dtype": "float32"}
    ctx.recipe = resolve(load_config(REPO / "configs" / "qwen2.5-coder-7b.yaml", recipe))
    b["configs"] = {"loop": sorted(ctx.loop_cfgs), "resolve_only_on_cuda": cuda_only,
                    "recipe": "configs/qwen2.5-coder-7b.yaml",
                    "recipe_attention": ctx.recipe.model.attn_implementation,
                    "seconds": round(time.perf_counter() - t, 2)}


def loop_configs(ctx: Ctx) -> dict[str, dict]:
    """ft.train configs of parts 1 and 2 (on CPU: float32 and plain AdamW, the CUDA-only pieces swapped out)."""
    cuda = ctx.mode != "cpu"
    dt = "bfloat16" if cuda else "float32"

    def cfg(out: str, mode: str, **sections) -> dict:
        c = {
            "model": {"name_or_path": str(ctx.loop_dir), "gradient_checkpointing": True, "attn_implementation": "sdpa"},
            "quantization": {"mode": mode, "quant_type": "nf4", "double_quant": True, "compute_dtype": dt,
                             "dtype": dt},
            "lora": {"r": 16, "alpha": 16, "dropout": 0.05,
                     "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "lm_head"]},
            "data": {"source": str(ctx.rows_file), "max_length": 256, "packing": True},
            "train": {"output_dir": str(ctx.work / out), "max_steps": 24, "per_device_batch_size": 2,
                      "learning_rate": 2e-3, "warmup_steps": 2, "lr_scheduler": "constant", "log_every": 1,
                      "seed": 0, "optimizer": "adamw"},
            "checkpoint": {"every": 0}, "tracking": {"wandb": False}, "eval": {"at_end": False},
        }
        for s, v in sections.items():
            c[s] |= v
        return c

    # resume: eager attention (deterministic backward), constant LR (the schedule doesn't depend on max_steps)
    resume = dict(model={"attn_implementation": "eager"},
                  train={"optimizer": "paged_adamw_8bit" if cuda else "adamw", "learning_rate": 2e-3,
                         "warmup_steps": 0, "max_steps": 12},
                  checkpoint={"every": 6, "keep_last": 3})
    return {
        "loop_4bit": cfg("loop-4bit", "4bit"),
        "loop_8bit": cfg("loop-8bit", "8bit"),
        "loop_bf16": cfg("loop-bf16", "none"),
        "resume_ref": cfg("resume-ref", "4bit", **resume),
        "resume_part1": cfg("resume-chain", "4bit", **{**resume, "train": resume["train"] | {"max_steps": 6}}),
        "resume_part2": cfg("resume-chain", "4bit", **resume),
        "resume_lost_optimizer": cfg("resume-lost", "4bit", **resume),
    }


# ------------------------------------------------------------------------------------------------
# the real loop, as a subprocess (parts 1, 2): started in the background, checked later


def run_train(ctx: Ctx, name: str) -> dict:
    path = ctx.work / f"{name}.yaml"
    log = ctx.work / f"{name}.log"
    t = time.perf_counter()
    with open(log, "a") as f:
        proc = subprocess.run([sys.executable, "-m", "ft.train", "--config", str(path)], cwd=REPO, env=ctx.env,
                              stdout=f, stderr=subprocess.STDOUT, timeout=400)
    out = Path(ctx.loop_cfgs[name]["train"]["output_dir"])
    metrics = []
    if (out / "metrics.jsonl").is_file():
        metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {"rc": proc.returncode, "seconds": time.perf_counter() - t, "log": str(log), "out": str(out),
            "losses": [m["train/loss"] for m in metrics if "train/loss" in m and m["step"] > 0],
            "last": next((m for m in reversed(metrics) if "train/loss" in m), {})}


def resume_chain(ctx: Ctx) -> dict:
    """Stop at step 6 (a finished run of 6 steps), copy it, lose the copy's optimizer state, resume both to 12."""
    import torch

    part1 = run_train(ctx, "resume_part1")
    out = {"part1": part1}
    if part1["rc"] != 0:
        return out
    chain, lost = Path(part1["out"]), ctx.work / "resume-lost"
    shutil.rmtree(lost, ignore_errors=True)
    shutil.copytree(chain, lost)
    opt = next(lost.glob("checkpoints/step-*/optimizer.pt"))
    state = torch.load(opt, weights_only=False, map_location="cpu")
    torch.save({"state": {}, "param_groups": state["param_groups"]}, opt)
    out["part2"] = run_train(ctx, "resume_part2")
    out["lost_optimizer"] = run_train(ctx, "resume_lost_optimizer")
    return out


def start_background(ctx: Ctx, selected: set[str]) -> None:
    jobs = {"loop_4bit_nf4": [("loop_4bit", run_train)], "loop_8bit": [("loop_8bit", run_train)],
            "loop_bf16_lora": [("loop_bf16", run_train)],
            "paged_adamw_8bit_resume": [("resume_ref", run_train), ("resume_chain", None)]}
    ctx.pool = ThreadPoolExecutor(max_workers=6 if ctx.mode == "cuda" else 1)
    for check_name, runs in jobs.items():
        if check_name not in selected:
            continue
        for name, fn in runs:
            ctx.runs[name] = (ctx.pool.submit(resume_chain, ctx) if fn is None else ctx.pool.submit(fn, ctx, name))


def wait_run(ctx: Ctx, name: str) -> dict:
    fut: Future = ctx.runs[name]
    return fut.result(timeout=600)


def log_tail(run: dict, n: int = 1500) -> str:
    try:
        return Path(run["log"]).read_text()[-n:]
    except OSError:
        return ""


# ------------------------------------------------------------------------------------------------
# equivalences (parts 3, 4): compute dtype vs a wider reference, per example / per branch


def load_small(ctx: Ctx, folder: Path, dtype, attn: str):
    from transformers import AutoModelForCausalLM

    kw = {"device_map": {"": ctx.device}} if ctx.device.type == "cuda" else {}
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype, attn_implementation=attn, **kw)
    model = model.to(ctx.device).eval()
    if next(model.parameters()).dtype != dtype:
        raise AssertionError(f"{folder} loaded in {next(model.parameters()).dtype}, not {dtype}")
    return model


def to_device(batch: dict, device) -> dict:
    import torch

    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def span_losses(model, batch: dict, spans: list[tuple[int, int, int]]) -> list[float]:
    """Summed target losses of each span (row, start, end) of a batch, from one forward."""
    import torch.nn.functional as F

    inputs = {k: v for k, v in batch.items() if k != "labels"}
    logits = model(**inputs, use_cache=False).logits.float()
    labels = batch["labels"].to(logits.device)
    per_pos = F.cross_entropy(logits[:, :-1].transpose(1, 2), labels[:, 1:], reduction="none", ignore_index=-100)
    return [per_pos[b, max(s - 1, 0) : e - 1].sum().item() for b, s, e in spans]


def n_targets(ex) -> int:
    return sum(lab != -100 for lab in ex.labels[1:])


def alone_losses(ctx, model, examples, ids) -> list[float]:
    from ft.data.batching import collate

    out = []
    for i in ids:
        b = to_device(collate([[i]], examples, ctx.tok.pad_token_id, packed=False), ctx.device)
        out.append(span_losses(model, b, [(0, 0, len(examples[i].input_ids))])[0])
    return out


def per_token(losses, counts) -> list[float]:
    return [x / n for x, n in zip(losses, counts, strict=True)]


def max_abs(a, b) -> float:
    return max(abs(x - y) for x, y in zip(a, b, strict=True))


def packing_equivalence(ctx: Ctx, attn: str) -> dict:
    import torch

    from ft.data.batching import collate
    from ft.objectives.base import token_loss_sum

    ex, pad = ctx.pack_ex, ctx.tok.pad_token_id
    bins = [[0, 1, 2], [3, 4], [5, 6, 7, 8]]
    order = [i for b in bins for i in b]
    counts = [n_targets(ex[i]) for i in order]
    spans, t = [], 0
    for i in order:
        spans.append((0, t, t + len(ex[i].input_ids)))
        t += len(ex[i].input_ids)
    model = load_small(ctx, ctx.eq_dir, ctx.dtype, attn)
    ref = load_small(ctx, ctx.eq_dir, ctx.ref_dtype, "sdpa")
    packed = to_device(collate(bins, ex, pad, packed=True), ctx.device)
    broken = dict(packed, position_ids=torch.arange(packed["input_ids"].shape[1], device=ctx.device)[None])
    with torch.no_grad():
        r = per_token(alone_losses(ctx, ref, ex, order), counts)
        plain = per_token(alone_losses(ctx, model, ex, order), counts)
        shared = per_token(span_losses(model, packed, spans), counts)
        wrong = per_token(span_losses(model, broken, spans), counts)
        total, n = token_loss_sum(model, packed)
    ref_total = sum(x * c for x, c in zip(r, counts))
    err = max(max_abs(shared, r), abs(total.item() - ref_total) / n)
    v = equivalence_verdict(err, max_abs(plain, r), max_abs(wrong, r), ctx.eps)
    figs = {"attention": attn, "dtype": str(ctx.dtype), "reference": f"{ctx.ref_dtype}, sdpa, each example alone",
            "examples": len(order), "rows_packed_into_one": len(bins), "target_tokens": n,
            "unit": "nats per target token, max over examples",
            "mean_loss_per_token": ref_total / n, "negative_control": "positions that don't restart per example"}
    if n != sum(counts):
        raise AssertionError(f"token_loss_sum counted {n} targets, the examples have {sum(counts)}")
    del model, ref
    empty_cache()
    return figs | verdict_figures(v, figs)


def verdict_figures(v: dict, figs: dict | None = None) -> dict:
    out = {k: v[k] for k in ("error", "noise", "tolerance", "tolerance_rule", "control_error")}
    if not v["ok"]:
        raise Failed(v["why"] + f" (error {v['error']:.3g}, noise {v['noise']:.3g}, tolerance {v['tolerance']:.3g})",
                     (figs or {}) | out)
    return out


def empty_cache() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def on_cuda(ctx) -> bool:
    return ctx.device is not None and ctx.device.type == "cuda"


def sync(ctx) -> None:
    import torch

    if on_cuda(ctx):
        torch.cuda.synchronize()


def allocated(ctx) -> int | None:
    import torch

    return torch.cuda.memory_allocated() if on_cuda(ctx) else None


def reset_peak(ctx) -> None:
    import torch

    if on_cuda(ctx):
        torch.cuda.reset_peak_memory_stats()


def peak_gb(ctx) -> float | None:
    import torch

    return torch.cuda.max_memory_allocated() / 1e9 if on_cuda(ctx) else None


def model_bytes(model) -> int:
    """Bytes of a model's tensors: parameters, buffers and bitsandbytes' quantization states (each storage once)."""
    import torch

    seen, total = set(), 0

    def add(t):
        nonlocal total
        if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in seen:
            seen.add(t.untyped_storage().data_ptr())
            total += t.untyped_storage().nbytes()

    for t in [*model.parameters(), *model.buffers()]:
        add(t)
        qs = getattr(t, "quant_state", None)
        for q in (qs, getattr(qs, "state2", None)):
            for name in ("absmax", "code", "offset"):
                add(getattr(q, name, None))
    return total


@check("packing_sdpa", 3, "packed loss == unpacked loss, sdpa (positions-restart negative control)", cpu=True)
def c_packing_sdpa(ctx):
    return packing_equivalence(ctx, "sdpa")


@check("packing_flash_attention_2", 3, "packed loss == unpacked loss, flash-attn 2 varlen", prereq=flash_prereq)
def c_packing_flash(ctx):
    return packing_equivalence(ctx, "flash_attention_2")


def branch_spans(rows, ex) -> list[tuple[int, int, int]]:
    """(row, start, end) of every branch, in collate_prefix's layout."""
    spans = []
    for b, row in enumerate(rows):
        t = 0
        for group in row:
            t += ex[group[0]].prefix_len
            for i in group:
                n = len(ex[i].input_ids) - ex[i].prefix_len
                spans.append((b, t, t + n))
                t += n
    return spans


def grads_alone(ctx, model, ex, ids) -> dict:
    from ft.data.batching import collate
    from ft.objectives.base import token_loss_sum

    model.zero_grad(set_to_none=True)
    for i in ids:
        batch = to_device(collate([[i]], ex, ctx.tok.pad_token_id, packed=False), ctx.device)
        token_loss_sum(model, batch)[0].backward()
    return {n: p.grad.detach().double().cpu() for n, p in model.named_parameters()}


def grad_error(a: dict, ref: dict) -> float:
    """max over parameters of max|a - ref| / max|ref| (relative to each tensor's scale)."""
    return max((a[k] - ref[k]).abs().max().item() / max(ref[k].abs().max().item(), 1e-30) for k in ref)


@check("prefix_sharing_flex", 4, "prefix sharing, FlexAttention: per-branch losses + gradients == unshared; "
       "a leaking branch is caught", cpu=True)
def c_prefix(ctx):
    import torch

    from ft.data.prefix import collate_prefix
    from ft.objectives.base import token_loss_sum

    ex, pad, layout = ctx.prefix_ex, ctx.tok.pad_token_id, ctx.prefix_layout
    attn = "flex_attention" if ctx.device.type == "cuda" else "sdpa"  # FlexAttention's backward is CUDA-only
    used = [i for row in layout for g in row for i in g]
    counts = [n_targets(ex[i]) for i in used]
    spans = branch_spans(layout, ex)
    owner = [(b, g) for b, row in enumerate(layout) for g, group in enumerate(row) for _ in group]
    shared_model = load_small(ctx, ctx.eq_dir, ctx.dtype, attn)
    plain_model = load_small(ctx, ctx.eq_dir, ctx.dtype, "sdpa")
    ref = load_small(ctx, ctx.eq_dir, ctx.ref_dtype, "sdpa")
    batch = to_device(collate_prefix(layout, ex, pad, attn, ctx.device), ctx.device)
    dense = collate_prefix(layout, ex, pad, "sdpa")["attention_mask"].to(ctx.device)
    groups = [[k for k, _ in enumerate(spans) if owner[k] == g] for g in sorted(set(owner))]

    def leaky(i: int, j: int) -> dict:
        """The batch with branch j also seeing the earlier branch i of its group (everything else unchanged)."""
        (b, si, ei), (_, sj, ej) = spans[i], spans[j]
        seen = dense.clone()
        seen[b, 0, sj:ej, si:ei] = True
        if attn != "flex_attention":
            return dict(batch, attention_mask=seen)
        from torch.nn.attention.flex_attention import create_block_mask

        bsz, _, t, _ = seen.shape
        block = create_block_mask(lambda b, h, q, kv: seen[b, 0, q, kv], bsz, None, t, t, device=ctx.device)
        return dict(batch, attention_mask=block)

    # The gating control, fixed beforehand: the 3rd branch of the short-schema group (row 1) sees its 1st. A leak's
    # effect depends on the pair (a random model's attention spreads over what it sees); this one moved the loss by
    # 22x the bf16 noise on CPU. Every sibling leak (branch k+1 or k+2 sees branch k) is measured too, as the check's
    # sensitivity.
    primary = (groups[1][0], groups[1][2])
    sweep = [(g[a], g[a + d]) for g in groups for d in (1, 2) for a in range(len(g) - d)]
    with torch.no_grad():
        r = per_token(alone_losses(ctx, ref, ex, used), counts)
        plain = per_token(alone_losses(ctx, plain_model, ex, used), counts)
        t0 = time.perf_counter()
        shared = per_token(span_losses(shared_model, batch, spans), counts)
        first_forward_s = time.perf_counter() - t0
        leaks = {(i, j): max_abs(per_token(span_losses(shared_model, leaky(i, j), spans), counts), r)
                 for i, j in [primary] + sweep}
    loss_v = equivalence_verdict(max_abs(shared, r), max_abs(plain, r), leaks[primary], ctx.eps)
    # gradients of every parameter: one shared backward vs the sum of the separate ones
    g_ref = grads_alone(ctx, ref, ex, used)
    g_plain = grads_alone(ctx, plain_model, ex, used)
    shared_model.zero_grad(set_to_none=True)
    t0 = time.perf_counter()
    token_loss_sum(shared_model, batch)[0].backward()
    first_backward_s = time.perf_counter() - t0
    g_shared = {n: p.grad.detach().double().cpu() for n, p in shared_model.named_parameters()}
    grad_v = equivalence_verdict(grad_error(g_shared, g_ref), grad_error(g_plain, g_ref), None, ctx.eps)
    figs = {"attention": attn, "dtype": str(ctx.dtype), "reference": f"{ctx.ref_dtype}, sdpa, each example alone",
            "rows": len(layout), "groups": sum(len(r) for r in layout), "branches": len(used),
            "first_forward_s (FlexAttention compiles)": first_forward_s, "first_backward_s": first_backward_s,
            "negative_control": f"branch {primary[1]} sees branch {primary[0]} (3rd and 1st of the short-schema "
                                "group)",
            "leak_sweep": {"pairs": len(sweep), "caught": sum(leaks[p] > loss_v["tolerance"] for p in sweep),
                           "min_effect": min(leaks[p] for p in sweep), "max_effect": max(leaks[p] for p in sweep),
                           "effects": {f"{i}->{j}": leaks[(i, j)] for i, j in sweep}}}
    if attn != "flex_attention":
        figs["note"] = "on CPU the tree mask runs through sdpa (FlexAttention has no CPU backward)"
    figs["losses"] = {"unit": "nats per target token, max over branches"} | verdict_figures(loss_v, figs)
    figs["gradients"] = {"unit": "max |diff| / max |reference| per parameter tensor, max over tensors"} | \
        verdict_figures(grad_v, figs)
    del shared_model, plain_model, ref
    empty_cache()
    return figs


# ------------------------------------------------------------------------------------------------
# generation (part 5)


@check("generation_kv_reuse", 5, "batched generation + execution eval; schema KV reuse gives the same SQL", cpu=True)
def c_generation(ctx):
    import torch

    from ft.config import EvalConfig
    from ft.eval.scoring import evaluate

    # fp32 (TF32 off): greedy decoding is a chain of argmaxes, and the two paths round differently; in bf16 a
    # random model's near-ties would flip under that rounding, which says nothing about the cache handling.
    model = load_small(ctx, ctx.eq_dir, torch.float32, "sdpa")
    out = {}
    for reuse in (False, True):
        t = time.perf_counter()
        preds, summary = evaluate(model, ctx.tok, ctx.gen_rows,
                                  EvalConfig(batch_size=4, max_new_tokens=24, reuse_schema_cache=reuse),
                                  template="schema_first")
        out[reuse] = (preds, summary, time.perf_counter() - t)
    (a, sa, ta), (b, _, tb) = out[False], out[True]
    same = sum(p.raw_output == q.raw_output for p, q in zip(a, b))
    figs = {"questions": len(ctx.gen_rows), "schemas": len({r.schema for r in ctx.gen_rows}), "dtype": "float32",
            "identical_outputs": same, "seconds_plain": ta, "seconds_kv_reuse": tb,
            "gold_failed": sa["gold_failed"], "scored": sa["n"], "ex": sa.get("ex"), "valid": sa.get("valid"),
            "outcomes": sorted({p.outcome for p in a})}
    del model
    empty_cache()
    if same != len(a):
        raise AssertionError(f"schema KV reuse changed {len(a) - same} of {len(a)} greedy answers")
    if sa["gold_failed"] or sa["n"] != len(ctx.gen_rows) or len(b) != len(a):
        raise AssertionError(f"execution evaluation incomplete: {sa}")
    return figs


# ------------------------------------------------------------------------------------------------
# the real loop's verdicts (parts 1, 2): its runs started first, in the background (start_background), and ran while
# the in-process checks above did


def loop_check(ctx: Ctx, name: str, mode: str) -> dict:
    run = wait_run(ctx, name)
    if run["rc"] != 0:
        raise AssertionError(f"ft.train exited {run['rc']}: {log_tail(run)}")
    import yaml

    cfg = ctx.loop_cfgs[name]["quantization"]
    # the config the run saved with its checkpoint (resolved: what ran), and what its log says it loaded
    saved = yaml.safe_load(next(Path(run["out"]).glob("checkpoints/step-*/config.yaml")).read_text())["quantization"]
    if {k: saved[k] for k in ("mode", "compute_dtype", "quant_type", "double_quant")} != \
            {k: cfg[k] for k in ("mode", "compute_dtype", "quant_type", "double_quant")}:
        raise AssertionError(f"the run's saved config has quantization {saved}, not {cfg}")
    figs = {"losses": [round(x, 4) for x in run["losses"]], "seconds": round(run["seconds"], 1),
            "quantization": saved, "loss_falls_rule": "mean of last 3 < 0.85 x mean of first 3",
            "log_says": f"quantization {mode}, compute {cfg['compute_dtype']}" in Path(run["log"]).read_text(),
            "peak_memory_mb": run["last"].get("perf/peak_memory_mb"),
            "target_tokens_per_s": run["last"].get("perf/target_tokens_per_s")}
    if not loss_fell(run["losses"]):
        raise Failed(f"loss did not fall: {figs['losses']}", figs)
    return figs


@check("loop_4bit_nf4", 1, "ft.train: 4-bit NF4, double quant, bf16 compute; loss falls", cpu=True)
def c_loop_4bit(ctx):
    return loop_check(ctx, "loop_4bit", "4bit")


@check("loop_8bit", 1, "ft.train: quantization.mode 8bit; loss falls")
def c_loop_8bit(ctx):
    return loop_check(ctx, "loop_8bit", "8bit")


@check("loop_bf16_lora", 1, "ft.train: unquantized bf16 LoRA; loss falls", cpu=True)
def c_loop_bf16(ctx):
    return loop_check(ctx, "loop_bf16", "none")


def adapter(out: str | Path) -> dict:
    from safetensors.torch import load_file

    return load_file(Path(out) / "adapter" / "adapter_model.safetensors")


def adapter_diff(a: dict, b: dict) -> float:
    if a.keys() != b.keys():
        raise AssertionError(f"adapters hold different tensors: {sorted(a.keys() ^ b.keys())[:4]}")
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def resumed(run: dict) -> bool:
    """The run's last attempt resumed from a checkpoint (run.json, ft.tracking), or its log says so."""
    try:
        if json.loads((Path(run["out"]) / "run.json").read_text())["attempts"][-1]["resumed"]:
            return True
    except (OSError, ValueError, KeyError, IndexError):
        pass
    return "resumed from" in Path(run["log"]).read_text()


def trace(out: str | Path) -> dict:
    recs = {}
    for line in (Path(out) / "examples.jsonl").read_text().splitlines():
        r = json.loads(line)
        recs[r["step"]] = r["examples"]  # a replayed step overwrites
    return recs


@check("paged_adamw_8bit_resume", 2, "paged_adamw_8bit steps; checkpoint + resume == uninterrupted", cpu=True)
def c_resume(ctx):
    ref, chain = wait_run(ctx, "resume_ref"), wait_run(ctx, "resume_chain")
    for label, r in [("uninterrupted", ref)] + [(k, v) for k, v in chain.items()]:
        if r["rc"] != 0:
            raise AssertionError(f"{label} run exited {r['rc']}: {log_tail(r)}")
    opt = ctx.loop_cfgs["resume_ref"]["train"]["optimizer"]
    for r in (chain["part2"], chain["lost_optimizer"]):
        if not resumed(r):
            raise AssertionError("the second half did not resume from the checkpoint: " + log_tail(r))
    lr = ctx.loop_cfgs["resume_ref"]["train"]["learning_rate"]
    tol = resume_tolerance(lr, 6)
    a_ref = adapter(ref["out"])
    diff = adapter_diff(a_ref, adapter(chain["part2"]["out"]))
    lost = adapter_diff(a_ref, adapter(chain["lost_optimizer"]["out"]))
    moved = adapter_diff(a_ref, adapter(Path(chain["part1"]["out"]) / "checkpoints" / "step-000006"))
    figs = {"optimizer": opt, "lr": lr, "steps": 12, "resumed_at": 6, "max_abs_diff_resumed": diff,
            "bitwise_equal": diff == 0.0, "tolerance": tol,
            "tolerance_rule": "0.01 x lr x resumed steps (see resume_tolerance): deterministic kernels agree to the "
                              "bit; a lost optimizer state / scheduler / RNG / data position moves weights by O(lr)",
            "negative_control_lost_optimizer_state": lost, "adapter_moved_steps_6_to_12": moved,
            "losses_uninterrupted": [round(x, 4) for x in ref["losses"]],
            "same_examples_same_order": trace(ref["out"]) == trace(chain["part2"]["out"]),
            "run_seconds": {"uninterrupted": ref["seconds"]} | {k: v["seconds"] for k, v in chain.items()}}
    problems = []
    if not loss_fell(ref["losses"], factor=1.0):
        problems.append(f"{opt}: loss did not fall: {figs['losses_uninterrupted']}")
    if not figs["same_examples_same_order"]:
        problems.append("the resumed run saw other examples than the uninterrupted one")
    if diff > tol:
        problems.append(f"resumed adapter differs by {diff:.3g} > {tol:.3g}")
    if not lost > tol:
        problems.append(f"negative control: losing the optimizer state moved the adapter by only {lost:.3g} "
                        f"(tolerance {tol:.3g}): the check can't tell")
    if problems:
        raise Failed("; ".join(problems), figs)
    return figs


# ------------------------------------------------------------------------------------------------
# KV reuse's timing (part 5), once the background runs that share the GPU are done


@check("kv_reuse_speed", 5, "schema KV reuse vs plain prefill: questions/s (0.5B shape, bf16)")
def c_kv_speed(ctx):
    import torch
    from transformers import AutoModelForCausalLM

    from ft.config import EvalConfig
    from ft.eval.scoring import evaluate

    for name in list(ctx.runs):  # the background training runs share the GPU: wait for them before timing
        ctx.runs[name].exception()
    torch.manual_seed(0)
    with torch.device(ctx.device):
        model = AutoModelForCausalLM.from_config(ctx.mid_config, dtype=torch.bfloat16,
                                                 attn_implementation="sdpa").eval()
    rows = ctx.kv_rows
    evaluate(model, ctx.speed_tok, rows[:4], EvalConfig(batch_size=4, max_new_tokens=8),
             template="schema_first")  # warm-up
    out = {}
    for reuse in (False, True, False, True):  # twice each, interleaved; the better of each is kept
        sync(ctx)
        t = time.perf_counter()
        preds, _ = evaluate(model, ctx.speed_tok, rows,
                            EvalConfig(batch_size=8, max_new_tokens=32, reuse_schema_cache=reuse),
                            template="schema_first")
        sync(ctx)
        dt = time.perf_counter() - t
        if reuse not in out or dt < out[reuse][1]:
            out[reuse] = (preds, dt)
    (a, ta), (b, tb) = out[False], out[True]
    prompt = [len(ctx.speed_tok(r.schema)["input_ids"]) for r in rows]
    figs = {"model": "Qwen2.5-0.5B shape, random bf16, vocab of the local tokenizer", "questions": len(rows),
            "schemas": len({r.schema for r in rows}), "batch_size": 8, "max_new_tokens": 32,
            "mean_schema_tokens": sum(prompt) / len(prompt),
            "questions_per_s_plain": len(rows) / ta, "questions_per_s_kv_reuse": len(rows) / tb,
            "speedup": ta / tb, "identical_outputs_bf16": sum(p.raw_output == q.raw_output for p, q in zip(a, b)),
            "note": "bf16 outputs may differ at a random model's near-ties; equality is checked in fp32 "
                    "(generation_kv_reuse)"}
    del model
    empty_cache()
    return figs


# ------------------------------------------------------------------------------------------------
# the 7B shape (parts 6, 7)


def ensure_big(ctx: Ctx) -> dict:
    """Random bf16 weights made on the GPU, saved once, loaded through ft.model in 4-bit: memory measured."""
    if ctx.big is not None:
        if "error" in ctx.big:
            raise AssertionError(f"the 7B-shape model could not be built or loaded: {ctx.big['error']}")
        return ctx.big
    try:
        ctx.big = _build_and_load_big(ctx)
    except Exception as e:  # noqa: BLE001 - recorded, and every check that needs it fails with it
        ctx.big = {"error": f"{type(e).__name__}: {e}"}
        raise
    return ctx.big


def ensure_checkpoint(ctx: Ctx) -> dict:
    """The 7B-shape checkpoint on disk: random bf16 weights initialised on the GPU (seconds), saved once."""
    import torch
    from transformers import AutoModelForCausalLM

    if ctx.big_checkpoint is not None:
        return ctx.big_checkpoint
    for name in list(ctx.runs):  # the background runs are done before the big model takes the GPU
        ctx.runs[name].exception()
    empty_cache()
    figs = {}
    t = time.perf_counter()
    torch.manual_seed(0)
    with torch.device(ctx.device):
        model = AutoModelForCausalLM.from_config(ctx.big_config, dtype=torch.bfloat16)
    sync(ctx)
    figs["init_s"] = time.perf_counter() - t
    t = time.perf_counter()
    model.save_pretrained(ctx.big_dir, max_shard_size="5GB")
    figs["save_s"] = time.perf_counter() - t
    figs["checkpoint_gb"] = sum(p.stat().st_size for p in ctx.big_dir.glob("*.safetensors")) / 1e9
    del model
    empty_cache()
    ctx.big_checkpoint = figs
    return figs


def _build_and_load_big(ctx: Ctx) -> dict:
    import bitsandbytes as bnb
    from accelerate import Accelerator

    from ft.model import add_lora, load_base_model
    from ft.train import make_optimizer

    figs = dict(ensure_checkpoint(ctx))
    cfg = ctx.recipe
    reset_peak(ctx)
    before = allocated(ctx)
    t = time.perf_counter()
    model, attn = load_base_model(cfg, str(ctx.big_dir), device_map={"": ctx.device} if on_cuda(ctx) else None)
    sync(ctx)
    figs["load_4bit_s"] = time.perf_counter() - t
    # on CUDA what the allocator holds; on CPU (--big-shape tiny) the model's tensor bytes stand in for it
    figs["memory_source"] = "torch.cuda.memory_allocated" if on_cuda(ctx) else "tensor bytes (CPU)"
    figs["tensor_bytes_after_load"] = model_bytes(model)
    figs["allocated_after_load"] = (allocated(ctx) - before) if on_cuda(ctx) else figs["tensor_bytes_after_load"]
    if on_cuda(ctx):
        figs["peak_during_load"] = peak_gb(ctx) * 1e9 - before
    q = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    figs["linear4bit_modules"] = len(q)
    if q:
        qs = getattr(q[0].weight, "quant_state", None)
        figs["quant_type"] = getattr(qs, "quant_type", None)
        figs["double_quant"] = bool(getattr(qs, "nested", False))
        figs["compute_dtype"] = str(getattr(q[0], "compute_dtype", None))
    t = time.perf_counter()
    model = add_lora(model, cfg)
    figs["add_lora_s"] = time.perf_counter() - t
    figs["tensor_bytes_after_lora"] = model_bytes(model)
    figs["allocated_after_lora"] = (allocated(ctx) - before) if on_cuda(ctx) else figs["tensor_bytes_after_lora"]
    figs["attention"] = attn
    accelerator = Accelerator()
    optimizer = make_optimizer(model, cfg.train)
    model, optimizer = accelerator.prepare(model, optimizer)
    return {"model": model, "optimizer": optimizer, "accelerator": accelerator, "cfg": cfg, "attn": attn,
            "figures": figs}


def free_big(ctx: Ctx) -> None:
    if ctx.big and "model" in ctx.big:
        ctx.big["accelerator"].free_memory()  # it holds the prepared model and optimizer too
        ctx.big = {"error": "freed after the in-process speed checks"}
        empty_cache()


@check("memory_at_load_7b", 7, "7B shape in 4-bit: memory at load vs bench/memory_estimate.py", speed=True)
def c_memory(ctx):
    from memory_estimate import Run, base_bytes

    big = ensure_big(ctx)
    f = dict(big["figures"])
    a, cfg = ctx.big_arch, big["cfg"]
    run = Run(seq_len=2048, micro_batch=cfg.train.per_device_batch_size, lora_r=cfg.lora.r,
              targets=tuple(cfg.lora.target_modules), dropout=cfg.lora.dropout > 0)
    # the estimate's base counts embeddings / lm_head / norms in fp32 (after prepare_model_for_kbit_training); at
    # load they are still in quantization.dtype (bf16 in the recipe)
    import torch

    elem = torch.empty(0, dtype=getattr(torch, cfg.quantization.dtype)).element_size()
    at_load = base_bytes(a, run) - (4 - elem) * a.unquantized_params()
    after_lora = base_bytes(a, run) + 4 * a.lora_params(run.lora_r, run.targets)
    load_v = memory_verdict(f["allocated_after_load"], at_load)
    lora_v = memory_verdict(f["allocated_after_lora"], after_lora)
    figs = f | {"estimate_row": f"{a.name}, single_gpu", "at_load": load_v,
                "after_add_lora": lora_v,
                "prediction": "at load: memory_estimate.base_bytes - (4 - bytes of quantization.dtype) x unquantized "
                              "params (not yet upcast to fp32); after add_lora: base_bytes + 4 bytes x LoRA params "
                              "(fp32 weights)",
                "params_match_estimate": ctx.built["big_shape"]["params_match_estimate"]}
    if figs["linear4bit_modules"] != 7 * a.layers or figs.get("quant_type") != "nf4" or not figs.get("double_quant"):
        raise AssertionError(f"not the 4-bit NF4 double-quant path: {figs}")
    if not (load_v["ok"] and lora_v["ok"]):
        raise AssertionError(f"memory off the estimate by more than 10%: at load {load_v}, after add_lora {lora_v}")
    return figs


def peak_flops_here(ctx) -> tuple[float | None, str]:
    import torch

    from ft.tracking import peak_flops

    if not on_cuda(ctx):
        return None, "no MFU on CPU (no peak comparable with a GPU's)"
    name = torch.cuda.get_device_name()
    p = peak_flops(name)
    return (p, f"ft.tracking.peak_flops({name!r})") if p else (H100_PEAK_FLOPS, "H100/H200 dense bf16 (unknown GPU)")


def speed_steps(ctx: Ctx, big: dict, batches: list, collate_fn, warmup: int, steps: int, *,
                optimizer_step: bool = True, count=None) -> dict:
    """Forward + backward (the recipe's backward_window) [+ clip + optimizer step] per micro-batch, timed after
    warmup."""
    from ft.objectives.base import backward_window

    model, opt, acc = big["model"], big["optimizer"], big["accelerator"]
    model.train()
    reset_peak(ctx)
    tokens = targets = 0
    loss_sum = 0.0
    t = 0.0
    for k, mb in enumerate(batches[: warmup + steps]):
        if k == warmup:
            sync(ctx)
            t = time.perf_counter()
        batch = collate_fn(mb)
        ls, n, _ = backward_window(model, acc, [batch])
        if optimizer_step:
            acc.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
        opt.zero_grad(set_to_none=True)
        if k >= warmup:  # tokens processed, padding excluded (packed rows have none)
            tokens += count(mb) if count else int(batch["input_ids"].numel())
            targets += n
            loss_sum += ls
    sync(ctx)
    dt = time.perf_counter() - t
    return {"seconds": dt, "tokens": tokens, "target_tokens": targets, "loss_per_target_token": loss_sum / targets,
            "peak_allocated_gb": peak_gb(ctx), "micro_batches_timed": steps}


def speed_gc(ctx: Ctx, gc: bool) -> dict:
    import torch
    from memory_estimate import FIT, Run, estimate, total

    from ft.data.batching import collate
    from ft.tracking import model_params

    big = ensure_big(ctx)
    base = big["model"].get_base_model() if hasattr(big["model"], "get_base_model") else big["model"]
    if gc:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        base.gradient_checkpointing_disable()
    cfg = big["cfg"]
    run = Run(seq_len=2048, micro_batch=2, lora_r=cfg.lora.r, targets=tuple(cfg.lora.target_modules),
              dropout=cfg.lora.dropout > 0, gradient_checkpointing=gc)
    est = total(estimate(ctx.big_arch, run, "single_gpu", 1))
    gpu_bytes = torch.cuda.get_device_properties(ctx.device).total_memory if on_cuda(ctx) else None
    pad = ctx.speed_tok.pad_token_id
    try:
        warmup, steps = (2, 6) if on_cuda(ctx) else (1, 1)
        r = speed_steps(ctx, big, ctx.speed_batches, lambda mb: collate(mb, ctx.speed_ex, pad, packed=True), warmup,
                        steps)
    except torch.OutOfMemoryError as e:
        big["optimizer"].zero_grad(set_to_none=True)
        empty_cache()
        if est <= FIT * gpu_bytes:
            raise AssertionError(f"out of memory although the estimate ({est / 1e9:.1f} GB) fits this GPU "
                                 f"({gpu_bytes / 1e9:.0f} GB): {str(e)[:200]}") from None
        raise Skip(f"out of memory; the estimate ({est / 1e9:.1f} GB) says it doesn't fit {gpu_bytes / 1e9:.0f} GB "
                   "either") from None
    finally:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    peak, peak_src = peak_flops_here(ctx)
    n = model_params(big["model"])
    m = mfu_figures(n, r["tokens"], r["seconds"], peak)
    figs = r | m | {"target_tokens_per_s": r["target_tokens"] / r["seconds"], "gradient_checkpointing": gc,
                    "seq_len": 2048, "micro_batch": "2 packed rows run as one row (<= 4096 tokens)",
                    "attention": big["attn"], "optimizer": cfg.train.optimizer, "lora_r": cfg.lora.r,
                    "lora_targets": cfg.lora.target_modules, "peak_source": peak_src,
                    "estimate_total_gb": est / 1e9,
                    "peak_vs_estimate": r["peak_allocated_gb"] * 1e9 / est if r["peak_allocated_gb"] else None}
    if not math.isfinite(r["loss_per_target_token"]):
        raise AssertionError(f"loss is not finite: {r['loss_per_target_token']}")
    return figs


@check("speed_7b_gc_on", 6, "7B 4-bit QLoRA, seq 2048, packed, gradient checkpointing on", speed=True)
def c_speed_gc_on(ctx):
    return speed_gc(ctx, True)


@check("speed_7b_gc_off", 6, "7B 4-bit QLoRA, seq 2048, packed, gradient checkpointing off", speed=True)
def c_speed_gc_off(ctx):
    return speed_gc(ctx, False)


def set_attention(model, attn: str) -> None:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if hasattr(base, "set_attn_implementation"):
        base.set_attn_implementation(attn)
    else:
        base.config._attn_implementation = attn


@check("speed_prefix_vs_packing", 6, "7B: prefix sharing (FlexAttention) vs packing, same examples", speed=True)
def c_prefix_speed(ctx):
    from ft.data.batching import collate, pack_best_fit_decreasing
    from ft.data.prefix import PrefixPlan

    big = ensure_big(ctx)
    ex, pad = ctx.speed_ex_sf, ctx.speed_tok.pad_token_id
    attn = "flex_attention" if on_cuda(ctx) else "sdpa"  # FlexAttention's backward is CUDA-only
    plan = PrefixPlan(ex, 2, 2048, 0, attn=attn, device=ctx.device)
    shared_batches = plan.global_micro_batches(0)[: 6 if on_cuda(ctx) else 2]  # 1 warm-up + 5 timed (CPU: 1)
    chosen = [i for mb in shared_batches[1:] for row in mb for i in row]
    warm = [i for row in shared_batches[0] for i in row]

    def packed_rows(ids):
        bins = pack_best_fit_decreasing([len(ex[i].input_ids) for i in ids], 2048)
        rows = [[ids[j] for j in b] for b in bins]
        return [rows[s : s + 2] for s in range(0, len(rows), 2)]

    packed_batches = packed_rows(warm)[:1] + packed_rows(chosen)
    out = {}
    try:
        set_attention(big["model"], attn)
        out["prefix_sharing"] = speed_steps(ctx, big, shared_batches, lambda mb: plan.collate(mb, ex, pad), 1,
                                            len(shared_batches) - 1, optimizer_step=False,
                                            count=lambda mb: sum(plan.lengths[i] for row in mb for i in row))
    finally:
        set_attention(big["model"], big["attn"])
    out["packing"] = speed_steps(ctx, big, packed_batches, lambda mb: collate(mb, ex, pad, packed=True), 1,
                                 len(packed_batches) - 1, optimizer_step=False)
    for r in out.values():
        r["examples"] = len(chosen)
        r["examples_per_s"] = len(chosen) / r["seconds"]
        r["target_tokens_per_s"] = r["target_tokens"] / r["seconds"]
        r["tokens_per_s"] = r["tokens"] / r["seconds"]
    a, b = out["packing"], out["prefix_sharing"]
    figs = out | {"data": ctx.built["speed_data"]["source"], "speedup_examples_per_s": b["examples_per_s"] /
                  a["examples_per_s"], "token_ratio": a["tokens"] / b["tokens"],
                  "loss_relative_difference": abs(a["loss_per_target_token"] - b["loss_per_target_token"])
                  / a["loss_per_target_token"], "packing_attention": big["attn"], "prefix_attention": attn,
                  "note": "forward + backward only (no optimizer step): both modes see the same weights, so their "
                          "loss per target token must agree up to bf16 rounding"}
    if a["target_tokens"] != b["target_tokens"]:
        raise AssertionError(f"the modes trained on different targets: {a['target_tokens']} vs {b['target_tokens']}")
    if figs["loss_relative_difference"] > 0.02:
        raise AssertionError(f"loss per target token differs by {figs['loss_relative_difference']:.3%} (> 2%)")
    return figs


@check("speed_ours_vs_trl", 6, "7B: our loop vs TRL SFTTrainer, same settings (bench/train_throughput.py)",
       speed=True, prereq=trl_prereq)
def c_trl(ctx):
    ensure_checkpoint(ctx)  # the folder both workers load
    free_big(ctx)
    if ctx.args.budget_s - ctx.elapsed() < 200:
        raise Skip(f"{ctx.args.budget_s - ctx.elapsed():.0f} s of the time budget left, the pair needs ~200 s")
    s = {"model": str(ctx.big_dir), "dtype": "bfloat16" if on_cuda(ctx) else "float32", "packing": True,
         "quantization": "4bit", "gradient_checkpointing": True, "steps": 6, "max_length": 2048, "batch_size": 2,
         "accumulation": 1, "learning_rate": 2e-5, "lora_r": 16, "examples": 400, "seed": 0}
    out = {}
    for trainer in ("ours", "trl"):
        t = time.perf_counter()
        proc = subprocess.run([sys.executable, str(REPO / "bench" / "train_throughput.py"), "--worker", trainer,
                               "--settings", json.dumps(s)], capture_output=True, text=True, env=ctx.env, cwd=REPO,
                              timeout=300)
        line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
        if line is None:
            raise AssertionError(f"{trainer} worker exited {proc.returncode}: {proc.stderr[-1500:]}")
        out[trainer] = json.loads(line[7:]) | {"wall_s": time.perf_counter() - t}
    return {"settings": s, **out,
            "target_tokens_per_s_ratio": out["ours"]["target_tokens_per_s"] / out["trl"]["target_tokens_per_s"],
            "tokens_per_s_ratio": out["ours"]["tokens_per_s"] / out["trl"]["tokens_per_s"],
            "data": "bundled train rows (train_throughput.rows_for)"}


# ------------------------------------------------------------------------------------------------
# running, reporting


def skip_reason(c: Check, ctx: Ctx, selected: set[str]) -> str | None:
    import torch

    if c.name not in selected:
        return "not selected (--only)"
    if ctx.mode == "dry-run":
        why = ["no CUDA device" if not torch.cuda.is_available() else "--dry-run"]
        if c.speed and ctx.args.no_speed:
            why.append("--no-speed")
        extra = c.prereq(ctx) if c.prereq else None
        return "; ".join(why + ([f"on a GPU: {extra}"] if extra else []))
    if ctx.mode == "cpu" and not c.cpu and not (c.speed and ctx.args.big_shape == "tiny"):
        return ("needs CUDA (--device cpu runs the equivalence checks, float32 vs float64, and with --big-shape tiny "
                "parts 6-7's code on a tiny shape)")
    if c.speed and ctx.args.no_speed:
        return "--no-speed (the 7B-shape model is only built for parts 6 and 7)"
    extra = c.prereq(ctx) if c.prereq else None
    if extra:
        return extra
    if ctx.elapsed() > ctx.args.budget_s:
        return f"time budget of {ctx.args.budget_s:.0f} s used up"
    return None


def run_check(c: Check, ctx: Ctx, selected: set[str]) -> Result:
    res = Result(c.name, c.part, c.title, "SKIP")
    reason = skip_reason(c, ctx, selected)
    t = time.perf_counter()
    if reason is not None:
        res.reason = reason
    else:
        try:
            res.figures = c.fn(ctx) or {}
            res.status = "PASS"
        except Skip as e:
            res.reason = str(e)
        except Exception as e:  # noqa: BLE001 - a FAIL records the exception text, the other checks go on
            res.status = "FAIL"
            res.reason = f"{type(e).__name__}: {e}"[:2000]
            res.figures = dict(getattr(e, "figures", {})) | {"traceback": traceback.format_exc()[-3000:]}
    res.seconds = time.perf_counter() - t
    line = f"[{res.status}] part {c.part} {c.name} ({res.seconds:.1f} s)"
    print(line + (f": {res.reason}" if res.reason else ""), flush=True)
    return res


def headline(r: Result) -> str:
    """One short figure for the table."""
    f = r.figures
    if r.status != "PASS":
        return r.reason.replace("|", "/").replace("\n", " ")[:160]
    if "tokens_per_s" in f and "mfu" in f:
        mfu = f"{100 * f['mfu']:.1f}%" if f.get("mfu") is not None else "n/a"
        peak = f"{f['peak_allocated_gb']:.1f} GB" if f.get("peak_allocated_gb") is not None else "n/a"
        return f"{f['tokens_per_s']:.0f} tok/s, {f['target_tokens_per_s']:.0f} target tok/s, peak {peak}, MFU {mfu}"
    if "losses" in f and isinstance(f["losses"], list):
        return f"loss {f['losses'][0]:.3f} -> {f['losses'][-1]:.3f}"
    if "max_abs_diff_resumed" in f:
        return (f"resumed diff {f['max_abs_diff_resumed']:.2g} <= {f['tolerance']:.2g}; lost-optimizer control "
                f"{f['negative_control_lost_optimizer_state']:.2g}")
    if "gradients" in f:
        return (f"loss err {f['losses']['error']:.2g} / tol {f['losses']['tolerance']:.2g} (leak "
                f"{f['losses']['control_error']:.2g}); grad err {f['gradients']['error']:.2g} / tol "
                f"{f['gradients']['tolerance']:.2g}")
    if "control_error" in f:
        return (f"err {f['error']:.2g} / tol {f['tolerance']:.2g} (noise {f['noise']:.2g}), control "
                f"{f['control_error']:.2g}")
    if "identical_outputs" in f:
        return f"{f['identical_outputs']}/{f['questions']} identical; execution: {f['scored']} scored"
    if "speedup" in f:
        return f"{f['questions_per_s_plain']:.1f} -> {f['questions_per_s_kv_reuse']:.1f} q/s ({f['speedup']:.2f}x)"
    if "at_load" in f:
        return (f"load {f['at_load']['measured_gb']:.2f} GB vs {f['at_load']['predicted_gb']:.2f} predicted "
                f"({f['at_load']['ratio']:.3f}x)")
    if "speedup_examples_per_s" in f:
        return f"prefix sharing {f['speedup_examples_per_s']:.2f}x examples/s (token ratio {f['token_ratio']:.2f}x)"
    if "target_tokens_per_s_ratio" in f:
        return f"ours / TRL target tok/s {f['target_tokens_per_s_ratio']:.2f}x"
    return ""


def summary_table(results: list[Result]) -> str:
    lines = ["| part | check | status | s | figures / reason |", "|---|---|---|---|---|"]
    for r in sorted(results, key=lambda r: r.part):
        try:
            head = headline(r)
        except Exception as e:  # noqa: BLE001 - a figure that can't be shown must not cost the report
            head = f"(figures in the JSON; headline failed: {type(e).__name__})"
        lines.append(f"| {r.part} | `{r.name}` | {r.status} | {r.seconds:.1f} | {head} |")
    return "\n".join(lines) + "\n"


def exit_code(results: list[Result]) -> int:
    return 1 if any(r.status == "FAIL" for r in results) else 0


def versions() -> dict:
    import importlib.metadata as md

    out = {}
    for pkg in ("torch", "transformers", "peft", "accelerate", "bitsandbytes", "sqlglot", "trl", "datasets",
                "flash-attn", "triton", "tokenizers"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    return out


def machine() -> dict:
    import torch

    out = {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
           "cuda_available": torch.cuda.is_available()}
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        out |= {"gpu": p.name, "gpu_memory_gb": p.total_memory / 1e9, "capability": f"{p.major}.{p.minor}",
                "cuda": torch.version.cuda, "bf16": torch.cuda.is_bf16_supported()}
    return out


FORMULAS = {
    "tokens_per_s": "non-padding tokens of the timed micro-batches / their wall time (CUDA-synchronized), warm-up "
                    "micro-batches excluded; packed rows hold no padding",
    "target_tokens_per_s": "tokens with a loss (the SQL answer, its closing fence, EOS) / the same wall time",
    "mfu": "6 * N * tokens_per_s / peak_flops (ft.tracking.mfu); N = ft.tracking.model_params(model): every "
           "parameter a token multiplies with, 4-bit weights counted unpacked, the input embedding excluded; "
           "peak_flops = ft.tracking.peak_flops(GPU name) (989e12 on H100/H200 SXM, dense bf16), else 989e12. "
           "Attention's own FLOPs and gradient checkpointing's recomputation are not counted (the usual model-FLOPs "
           "convention), nor is LoRA's missing weight gradient",
    "peak_memory": "torch.cuda.max_memory_allocated over the timed and warm-up micro-batches",
    "equivalence_tolerance": "max(4 x noise, eps/16): noise = the plain (unpacked / unshared) computation in the "
                             "compute dtype vs a float32 (CPU: float64) reference on the same examples; the checked "
                             "computation is compared with the same reference",
    "resume_tolerance": "0.01 x lr x resumed steps (see resume_tolerance in bench/gpu_check.py)",
}


def write_report(ctx: Ctx, out: Path, setup_s: float, extra: dict) -> None:
    results = ctx.results
    parts = {}
    for r in results:
        p = parts.setdefault(str(r.part), {"title": PARTS[r.part], "seconds": 0.0, "checks": []})
        p["seconds"] += r.seconds
        p["checks"].append(r.name)
    doc = {"check": "gpu_check", "mode": ctx.mode, "argv": sys.argv[1:], "started": time.strftime("%Y-%m-%d %H:%M:%S"),
           "machine": machine(), "versions": versions(), "setup": {"seconds": setup_s, "built": ctx.built},
           "checks": [r.__dict__ for r in results], "parts": parts, "total_seconds": ctx.elapsed(),
           "summary": {s: sum(r.status == s for r in results) for s in ("PASS", "FAIL", "SKIP")},
           "formulas": FORMULAS} | extra
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=1, default=str))
    tmp.replace(out)
    out.with_suffix(".md").write_text(
        f"GPU check ({ctx.mode}, {doc['machine'].get('gpu', 'no GPU')}, {ctx.elapsed():.0f} s; "
        f"`bench/gpu_check.sh {' '.join(sys.argv[1:])}`)\n\n" + summary_table(results))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dry-run", action="store_true", help="build everything, run nothing (CI: no GPU needed)")
    ap.add_argument("--no-speed", action="store_true", help="skip parts 6 and 7 (the 7B-shape model)")
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda",
                    help="cpu: a developer's run of the equivalence checks in float32 vs float64")
    ap.add_argument("--dtype", choices=["auto", "bfloat16", "float32"], default="auto",
                    help="compute dtype of the equivalence checks (auto: bfloat16 on CUDA, float32 on CPU); the "
                         "reference is the next wider dtype")
    ap.add_argument("--only", default="", help="comma-separated check names (the others SKIP)")
    ap.add_argument("--out", type=Path, default=None,
                    help="JSON path (default: bench/results/gpu_check.json for a full CUDA run, else the temp folder); "
                         "the summary table goes beside it (.md)")
    ap.add_argument("--workdir", type=Path, default=None, help="where models and runs go (default: a temp folder)")
    ap.add_argument("--keep-workdir", action="store_true")
    ap.add_argument("--big-shape", choices=["7b", "tiny"], default="7b",
                    help="tiny: a 2-layer Qwen2 shape for parts 6-7 (a developer's check of their code, CPU or GPU)")
    ap.add_argument("--spider", default=None, help=f"Spider folder for the speed part (default {SPIDER})")
    ap.add_argument("--budget-s", type=float, default=540.0, help="checks starting later than this SKIP")
    ap.add_argument("--list", action="store_true", help="list the checks and exit")
    args = ap.parse_args(argv)
    if args.list:
        for c in CHECKS:
            print(f"part {c.part}  {c.name:28s} {c.title}")
        return 0
    for k, v in {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
                 "WANDB_MODE": "disabled", "TOKENIZERS_PARALLELISM": "false"}.items():
        os.environ.setdefault(k, v)
    t0 = time.perf_counter()
    import torch

    if args.dry_run:
        mode = "dry-run"
    elif args.device == "cpu":
        mode = "cpu"
    elif not torch.cuda.is_available():
        print("error: no CUDA device; use --dry-run (CI) or --device cpu (the equivalence checks on CPU)",
              file=sys.stderr)
        return 2
    else:
        mode = "cuda"
    work = args.workdir or Path(tempfile.mkdtemp(prefix="sqlft-gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    # Only a full run on the real shape replaces the evidence in bench/results/; partial and developer runs go to tmp.
    full = mode == "cuda" and args.big_shape == "7b" and not args.only
    out = args.out or (RESULTS / "gpu_check.json" if full
                       else Path(tempfile.gettempdir()) / f"sqlft_gpu_check_{mode}.json")
    ctx = Ctx(args=args, mode=mode, work=work, t0=t0)
    ctx.env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO)] + [p for p in
                                                          os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    if mode == "cuda":
        ctx.device, ctx.dtype, ctx.ref_dtype = torch.device("cuda", 0), torch.bfloat16, torch.float32
        torch.backends.cuda.matmul.allow_tf32 = False  # the float32 reference is float32, not TF32
        torch.backends.cudnn.allow_tf32 = False
    else:
        ctx.device, ctx.dtype, ctx.ref_dtype = torch.device("cpu"), torch.float32, torch.float64
    if args.dtype != "auto":
        ctx.dtype = getattr(torch, args.dtype)
        ctx.ref_dtype = torch.float32 if ctx.dtype == torch.bfloat16 else torch.float64
    ctx.eps = torch.finfo(ctx.dtype).eps
    selected = {c.name for c in CHECKS} if not args.only else set(args.only.split(","))
    unknown = selected - {c.name for c in CHECKS}
    if unknown:
        print(f"error: unknown check(s) {sorted(unknown)}; --list shows them", file=sys.stderr)
        return 2
    print(f"gpu_check: mode {mode}, work folder {work}", flush=True)
    code = 0
    try:
        try:
            setup(ctx)
        except Exception as e:  # noqa: BLE001 - a broken build is the one thing the dry run must catch
            print(f"[FAIL] setup: {type(e).__name__}: {e}\n{traceback.format_exc()}", flush=True)
            ctx.results.append(Result("setup", 0, "build models, tokenizers, data, configs", "FAIL",
                                      f"{type(e).__name__}: {e}"))
            PARTS[0] = "setup"
            write_report(ctx, out, time.perf_counter() - t0, {})
            return 1
        setup_s = time.perf_counter() - t0
        print(f"setup done in {setup_s:.1f} s: " + json.dumps({k: v.get("seconds") for k, v in ctx.built.items()}),
              flush=True)
        if mode != "dry-run":
            runnable = {c.name for c in CHECKS if skip_reason(c, ctx, selected) is None}
            start_background(ctx, runnable)
        for c in CHECKS:
            ctx.results.append(run_check(c, ctx, selected))
            try:
                write_report(ctx, out, setup_s, {})  # after every check: a crash or a timeout keeps what was done
            except Exception as e:  # noqa: BLE001 - the checks go on; the final write reports it
                print(f"warning: could not write {out}: {type(e).__name__}: {e}", flush=True)
        table = summary_table(ctx.results)
        print("\n" + table)
        print(f"total {ctx.elapsed():.0f} s; results: {out} and {out.with_suffix('.md')}")
        code = exit_code(ctx.results)
    finally:
        if ctx.pool is not None:
            ctx.pool.shutdown(wait=False, cancel_futures=True)
        free_big(ctx)
        if not args.keep_workdir:
            shutil.rmtree(work, ignore_errors=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
