"""One typed configuration: dataclasses loaded from YAML, overridden by dotted CLI keys, validated early.

    cfg = load_config("configs/demo.yaml", ["--lora.r", "64", "--train.learning_rate", "1e-4"])

Every error names the key and the value; unknown keys suggest the closest valid one.
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import os
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml


class ConfigError(ValueError):
    pass


# The choices of a key, written once: the field's type. Loading (`_coerce`), validate() and the commands' short options
# (ft.cli) read them from here (`choices`).
Attention = Literal["auto", "sdpa", "eager", "flash_attention_2", "flex_attention"]
Dtype = Literal["auto", "bfloat16", "float16", "float32"]
SourceFormat = Literal["auto", "jsonl", "json", "csv", "parquet", "hf", "spider", "bird", "bundled"]
ObjectiveName = Literal["sft", "grpo"]  # ft/objectives/__init__.py's OBJECTIVES, one module each


@dataclass
class ModelConfig:
    name_or_path: str = "smollm2-135m-instruct"  # Hub id, local folder, GGUF file, or a known alias
    gguf_file: str | None = None  # file name inside name_or_path when it is a folder holding a GGUF
    revision: str | None = None
    trust_remote_code: bool = False
    attn_implementation: Attention = "auto"
    gradient_checkpointing: bool = True
    cache_dir: str = "~/.cache/sqlft/models"  # where GGUF files are converted once
    # A LoRA adapter to start from (its folder, a checkpoint or a run folder), trained further instead of new LoRA
    # weights: usually the SFT adapter a GRPO run (train.objective grpo) starts from. lora.* must match it.
    adapter: str | None = None


@dataclass
class QuantizationConfig:
    mode: Literal["4bit", "8bit", "none"] = "4bit"
    quant_type: Literal["nf4", "fp4"] = "nf4"
    double_quant: bool = True
    # auto: bfloat16 where the hardware computes it natively (Ampere+ GPUs, CPUs with AVX512-BF16/AMX), float16 on
    # older GPUs, float32 on other CPUs, where bf16 matmuls fall back to scalar code ~70x slower than fp32.
    compute_dtype: Dtype = "auto"
    dtype: Dtype = "auto"  # dtype of the unquantized weights (and 4-bit storage, for ZeRO-3)


@dataclass
class LoraConfig:
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    bias: Literal["none", "all", "lora_only"] = "none"


@dataclass
class DataConfig:
    # Training source.
    source: str = "bundled"  # path, HF dataset name, or "bundled"
    format: SourceFormat = "auto"
    split: str | None = None  # spider/bird: train_spider | train_others | dev ...; hf: split name
    columns: dict[str, str] = field(default_factory=dict)  # our field -> source column
    # Eval split: a given eval source, a fraction of rows, or held-out databases.
    eval_source: str | None = None
    eval_format: SourceFormat = "auto"
    eval_split: str | None = None
    # None: a file source without an eval split gets DEFAULT_EVAL_FRACTION of its rows held out (at least one full
    # batch), so base vs fine-tuned is measured unless switched off with 0.
    eval_fraction: float | None = None
    eval_dbs: list[str] = field(default_factory=list)
    max_eval_rows: int | None = None
    # Prompting and tokenization.
    template: Literal["default", "chat", "schema_first"] = "default"
    max_length: int = 1024
    overlong: Literal["skip", "truncate_schema", "error"] = "truncate_schema"
    packing: bool = False  # best-fit-decreasing bins; a micro-batch's bins run end to end in one row (no padding)
    group_by_length: bool = False
    # Micro-batch widths rounded up to a multiple of this (1: to the longest row): a few shapes instead of a new one
    # each step, so a long run's memory stays flat (ft.data.batching.padded_width). Padding carries no loss.
    pad_to_multiple_of: int = 64
    prefix_sharing: bool = False  # a schema once per row, its questions as branches; needs schema_first
    skip_bad_rows: bool = False
    drop_unparsable_gold: bool = False
    limit: int | None = None  # use only the first N training rows (after shuffling with the seed)
    cache_dir: str = "~/.cache/sqlft/data"  # the bundled dataset; encoded data, built once (ft/data/encoded.py)
    # Schema linking (ft/data/linking.py): each question gets the part of its schema it needs, in training and at
    # inference alike; in training the gold query's tables and columns are always kept. Replaces truncate_schema.
    schema_linking: bool = False
    schema_budget: int = 0  # most tokens of schema text; 0: what max_length (and at inference the context) leaves
    value_hints: bool = True  # with schema_linking: database values named in the question, as DDL comments
    max_value_hints: int = 8  # values shown per prompt (at most 3 per column, each at most 48 characters)
    # The database rows that name none run on (ft/sql/engine.py): a SQLite / DuckDB file or a URL such as
    # postgresql://user@host:5432/db (never a password: PGPASSWORD or ~/.pgpass hold it).
    db: str | None = None
    # The SQL's dialect: validation, SQL normalisation and the prompt follow it. auto: each row's database engine
    # (SQLite when it has none); or a sqlglot dialect name (sqlite, postgres, duckdb, mysql, snowflake, ...).
    dialect: str = "auto"


@dataclass
class TrainConfig:
    output_dir: str = "auto"  # auto: runs/demo for the demo, else runs/<data>-<model> (never another run's folder)
    seed: int = 42
    # How long: `epochs` passes over the data, unless `max_steps` (optimizer steps) or `max_minutes` (a time budget:
    # the steps are planned for it after timing the first ones, ft/budget.py) is set; with both of those, the run
    # ends at whichever comes first. A length given on the command line replaces the config file's (LENGTH_RULE).
    epochs: float = 1.0
    max_steps: int | None = None
    max_minutes: float | None = None  # the whole run's wall time: start-up, steps, checkpoints, final evaluation
    per_device_batch_size: int = 4  # rows per micro-batch (packed: bins of up to max_length tokens each)
    gradient_accumulation_steps: int = 1
    learning_rate: float = 2e-4
    weight_decay: float = 0.0
    warmup_steps: int = 10
    lr_scheduler: Literal["cosine", "linear", "constant"] = "cosine"
    max_grad_norm: float = 1.0
    # Steps in a row whose loss or gradient norm is NaN / Inf (each one's update skipped) before the run stops with
    # an error; the last good checkpoint stays, nothing non-finite is saved or published (ft/nonfinite.py).
    max_nonfinite_steps: int = 3
    optimizer: Literal["adamw", "paged_adamw_8bit"] = "adamw"  # paged_adamw_8bit: CUDA only
    log_every: int = 5
    # CPU runs only: torch threads per process; 0 = the cores this process may use / processes on this node.
    # (`accelerate launch` pins CPU-only hosts to OMP_NUM_THREADS=1, which halves a 2-core machine.)
    cpu_threads: int = 0
    objective: ObjectiveName = "sft"  # grpo: rewards from executing sampled answers (the grpo section, ft/grpo.py)


@dataclass
class CheckpointConfig:
    every: int = 0  # optimizer steps between checkpoints (0: only at the end)
    keep_last: int = 2
    resume: str = "auto"  # auto | none | PATH


@dataclass
class TrackingConfig:
    wandb: bool = True
    project: str = "sqlft"
    entity: str | None = None
    run_name: str | None = None
    group: str | None = None
    tags: list[str] = field(default_factory=list)
    upload_adapters: bool = False  # W&B adapter artifacts: upload the files instead of referencing their path


@dataclass
class EvalConfig:
    loss_every: int = 0  # held-out loss every N optimizer steps (0: only at the end, on the whole split)
    loss_batches: int = 8  # batches of the eval split used for the periodic held-out loss
    final_loss_batches: int | None = None  # batches of the end-of-training held-out loss (None: the whole split)
    at_end: bool = True  # evaluate base and fine-tuned by execution at the end of training
    every: int = 0  # execution eval on a fixed sample every N steps (0: off)
    sample_size: int = 32
    max_new_tokens: int = 192
    batch_size: int = 8
    timeout_s: float = 5.0
    max_rows: int = 10000
    retries: int = 0  # alternatives sampled when an answer fails schema validation; the first that validates wins
    samples: int = 0  # execution-guided decoding: N sampled candidates per question besides the greedy one; the
    # answer is the largest group of valid candidates with the same result (0: the greedy answer)
    temperature: float = 0.8  # sampling, for samples and retries
    top_p: float = 0.95
    reuse_schema_cache: bool = False  # one KV cache per schema, reused for its questions; needs schema_first
    # Tables after FROM / JOIN and columns after `t.` limited to the prompt schema's names while decoding
    # (ft.sql.constrain: PICARD-style checks of the top 8 next tokens); measured in bench/results/constrained.json
    constrain: bool = False
    # EX compares values exactly (the official rule, ft/sql/compare.py). > 0: a second figure, ex_tol, with numbers
    # equal within this relative tolerance (math.isclose), reported beside EX with the tolerance; 0: off.
    float_tolerance: float = 0.0
    # Test-suite accuracy (ts, Spider's official metric): K neighbour databases per database (ft/eval/testsuite.py);
    # an answer counts only if it matches gold on the database and on every neighbour kept for its question. 0: off.
    test_suite: int = 0
    test_suite_seed: int = 0  # neighbours are deterministic for (database content, this seed, the gold literals)
    test_suite_cache: str = "~/.cache/sqlft/testsuite"  # built once, read-only, reused by every evaluation
    # A writable scratch PostgreSQL database (postgresql://user@host/scratch) where the neighbours of PostgreSQL
    # databases are created, one schema each, and reused: sqlft's role on your database only reads. TS on a
    # PostgreSQL database without it is refused. SQLite and DuckDB neighbours are files under test_suite_cache.
    neighbour_db: str | None = None
    # Which form of a fine-tuned model `sqlft eval --adapter` scores: served (the merged 16-bit model `sqlft merge`
    # writes, what a serving engine runs) or trained (the base quantized as quantization.* says, the adapter on top:
    # what training's own evaluations score). Measured differences: README, "Which model is scored".
    scored_model: Literal["served", "trained"] = "served"


@dataclass
class GrpoConfig:
    # train.objective grpo (ft/grpo.py). Prompts per micro-batch: train.per_device_batch_size; micro-batches per
    # update: train.gradient_accumulation_steps; optimizer steps per sampled batch: updates_per_batch.
    group_size: int = 8  # completions sampled per prompt (G); advantages are normalised within each group
    temperature: float = 1.0  # sampling; the policy's log-probabilities use the same temperature
    top_p: float = 1.0
    max_new_tokens: int = 128
    clip_eps: float = 0.2  # the importance ratio is clipped to [1 - clip_eps, 1 + clip_eps]
    kl_beta: float = 0.0  # KL penalty to the reference (the model with its adapter off); 0: none, no extra forward
    # Optimizer steps on one batch of samples (> 1: off-policy, the ratio matters); train.warmup_steps and the
    # schedule count optimizer steps (train.max_steps x updates_per_batch).
    updates_per_batch: int = 1
    shared_prompts: bool = True  # a prompt once per group, its completions as branches under a tree mask
    # Reward of one completion: reward_match when its result equals the gold result, else reward_executes if it
    # runs plus reward_valid if it passes schema validation; penalty_no_fence off when it lacks the closing fence.
    reward_match: float = 1.0
    reward_executes: float = 0.1
    reward_valid: float = 0.1
    penalty_no_fence: float = 0.5
    # reward_match only for a result equal to the gold one on the database and on every neighbour database the test
    # suite keeps for the question (eval.test_suite K > 0): a filter that filters nothing there earns no reward
    reward_test_suite: bool = False


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    quantization: QuantizationConfig = field(default_factory=QuantizationConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    grpo: GrpoConfig = field(default_factory=GrpoConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# ----------------------------------------------------------------------------------------------
# building from dicts, with did-you-mean errors


def _suggest(name: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.5)
    return f" Did you mean '{close[0]}'?" if close else f" Valid keys: {', '.join(valid)}."


def _coerce(value, tp, key: str):
    """Turn a YAML / CLI value into the annotated type; errors name the key."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is Literal:
        text = value if isinstance(value, str) or value is None else str(value)
        _one_of(key, text, args)
        return text
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value is None or (isinstance(value, str) and value.lower() in ("null", "none")):
            if type(None) in args:
                return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key)
    if origin is list:
        if isinstance(value, str):
            value = [v for v in (s.strip() for s in value.split(",")) if v] if value else []
        if not isinstance(value, list):
            raise ConfigError(f"Config key '{key}' must be a list, got {value!r}.")
        return [_coerce(v, args[0], key) for v in value]
    if origin is dict:
        if isinstance(value, str):
            value = yaml.safe_load(value) or {}
        if not isinstance(value, dict):
            raise ConfigError(f"Config key '{key}' must be a mapping, got {value!r}.")
        return {str(k): str(v) for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "0", "no", "off"):
            return False
        raise ConfigError(f"Config key '{key}' must be true or false, got {value!r}.")
    if tp in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"Config key '{key}' must be a number, got {value!r}.")
        try:
            out = tp(float(value)) if tp is int and isinstance(value, str) and "e" in value.lower() else tp(value)
        except (TypeError, ValueError, OverflowError):
            kind = "an integer" if tp is int else "a number"
            raise ConfigError(f"Config key '{key}' must be {kind}, got {value!r}.") from None
        if tp is int and isinstance(value, float) and value != int(value):
            raise ConfigError(f"Config key '{key}' must be an integer, got {value!r}.")
        if not math.isfinite(out):
            raise ConfigError(f"Config key '{key}' must be a finite number, got {value!r}.")
        return out
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"Config key '{key}' must be a string, got {value!r}.")
        return str(value)
    return value


def _build(cls, data: dict, prefix: str):
    if not isinstance(data, dict):
        raise ConfigError(f"Config section '{prefix.rstrip('.') or '<root>'}' must be a mapping, got {data!r}.")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            raise _unknown_key(f"{prefix}{key}", [prefix + n for n in names])
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = _build(tp, value or {}, f"{prefix}{key}.")
        else:
            kwargs[key] = _coerce(value, tp, f"{prefix}{key}")
    return cls(**kwargs)


def _set_dotted(tree: dict, dotted: str, value) -> None:
    parts = dotted.split(".")
    node = tree
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"Config key '{dotted}': '{p}' is not a section.")
    node[parts[-1]] = value


def choices(key: str, cls=Config) -> list[str] | None:
    """The values a dotted key may take (its Literal type), None when it takes any of its type."""
    section, _, rest = key.partition(".")
    tp = typing.get_type_hints(cls).get(section)
    if tp is None:
        return None
    if rest:
        return choices(rest, tp) if dataclasses.is_dataclass(tp) else None
    return list(typing.get_args(tp)) if typing.get_origin(tp) is Literal else None


def all_keys(cls=Config, prefix="") -> list[str]:
    """Every dotted config key, in declaration order."""
    out = []
    for f in dataclasses.fields(cls):
        tp = typing.get_type_hints(cls)[f.name]
        if dataclasses.is_dataclass(tp):
            out += all_keys(tp, f"{prefix}{f.name}.")
        else:
            out.append(f"{prefix}{f.name}")
    return out


# Keys that moved: the old name answers with the new one instead of a plain "unknown key".
RENAMED = {
    "train.eval_every": "eval.loss_every",
    "train.eval_batches": "eval.loss_batches",
}


def _unknown_key(key: str, valid: list[str]) -> ConfigError:
    if key in RENAMED:
        return ConfigError(f"Config key '{key}' is now '{RENAMED[key]}' (evaluation settings live in the eval "
                           f"section). Did you mean '{RENAMED[key]}'?")
    return ConfigError(f"Unknown config key '{key}'.{_suggest(key, valid)}")


def parse_overrides(args: list[str]) -> dict[str, str]:
    """`--a.b 1 --c.d=2` -> {"a.b": "1", "c.d": "2"}; the value is parsed as YAML later."""
    out, i = {}, 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--"):
            raise ConfigError(f"Unexpected argument '{arg}': overrides look like --section.key VALUE.")
        key = arg[2:]
        if "=" in key:
            key, value = key.split("=", 1)
            i += 1
        else:
            if i + 1 >= len(args):
                raise ConfigError(f"Override '--{key}' has no value.")
            value = args[i + 1]
            i += 2
        valid = all_keys()
        if key not in valid:
            raise _unknown_key(key, valid)
        out[key] = value
    return out


def _yaml_value(text: str):
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | dict | None = None) -> Config:
    tree: dict = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"Config file '{p}' does not exist.")
        try:
            tree = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"Config file '{p}' is not valid YAML: {e}") from None
        if not isinstance(tree, dict):
            raise ConfigError(f"Config file '{p}' must hold a mapping of sections, got {type(tree).__name__}.")
    if isinstance(overrides, list):
        overrides = parse_overrides(overrides)
    for key, value in (overrides or {}).items():
        _set_dotted(tree, key, _yaml_value(value) if isinstance(value, str) else value)
    cfg = _build(Config, tree, "")
    validate(cfg)
    return cfg


# data.dialect: auto, or sqlglot's names (and the spellings people use for them).
DIALECTS = ["auto", "sqlite", "postgres", "postgresql", "duckdb", "mysql", "snowflake", "bigquery", "tsql", "oracle",
            "trino", "presto", "spark", "databricks", "redshift", "clickhouse"]


def _has_password(url: str) -> bool:
    """Whether a database URL carries a password (user:secret@ or password=...), without printing it anywhere."""
    from urllib.parse import parse_qs, urlsplit

    if "://" not in url:
        return False
    parts = urlsplit(url)
    try:
        has_user_password = bool(parts.password)
    except ValueError:
        has_user_password = False
    return has_user_password or "password" in {k.lower() for k in parse_qs(parts.query)}


def _check(cond: bool, key: str, value, why: str) -> None:
    if not cond:
        raise ConfigError(f"Config key '{key}' has a bad value {value!r}: {why}.")


def _one_of(key: str, value, options) -> None:
    _check(value in options, key, value, f"must be one of {', '.join(map(str, options))}")


def _check_choices(obj, prefix: str = "") -> None:
    """Every key with a Literal type holds one of its values (a config built or changed in code, too)."""
    for f in dataclasses.fields(obj):
        tp, value = typing.get_type_hints(type(obj))[f.name], getattr(obj, f.name)
        if dataclasses.is_dataclass(tp):
            _check_choices(value, f"{prefix}{f.name}.")
        elif typing.get_origin(tp) is Literal:
            _one_of(f"{prefix}{f.name}", value, typing.get_args(tp))


def validate(cfg: Config) -> None:
    """Cheap checks that run before any model is loaded."""
    _check_choices(cfg)
    m, lo, d, t, c, e = cfg.model, cfg.lora, cfg.data, cfg.train, cfg.checkpoint, cfg.eval
    _check(bool(m.name_or_path), "model.name_or_path", m.name_or_path, "must not be empty")
    looks_local = m.name_or_path.startswith((".", "/", "~")) or m.name_or_path.endswith(".gguf")
    if looks_local:
        _check(Path(m.name_or_path).expanduser().exists(), "model.name_or_path", m.name_or_path, "path does not exist")
    _check(t.cpu_threads >= 0, "train.cpu_threads", t.cpu_threads, "must be >= 0 (0 = all cores)")
    _check(lo.r > 0, "lora.r", lo.r, "must be > 0")
    _check(lo.alpha > 0, "lora.alpha", lo.alpha, "must be > 0")
    _check(0 <= lo.dropout < 1, "lora.dropout", lo.dropout, "must be in [0, 1)")
    _check(len(lo.target_modules) > 0, "lora.target_modules", lo.target_modules, "must name at least one module")
    for key, on in (("data.prefix_sharing", d.prefix_sharing), ("eval.reuse_schema_cache", e.reuse_schema_cache)):
        _check(not on or d.template == "schema_first", key, on,
               f"sharing a schema needs the schema to come first: set data.template: schema_first (is {d.template!r})")
    _check(not d.prefix_sharing or m.attn_implementation in ("auto", "sdpa", "eager", "flex_attention"),
           "data.prefix_sharing", d.prefix_sharing,
           f"its tree-shaped mask can't run with model.attn_implementation {m.attn_implementation!r}; use auto, "
           "sdpa or flex_attention")
    _check(d.max_length >= 16, "data.max_length", d.max_length, "must be >= 16")
    _check(d.pad_to_multiple_of >= 1, "data.pad_to_multiple_of", d.pad_to_multiple_of, "must be >= 1 (1: no rounding)")
    _check(d.eval_fraction is None or 0 <= d.eval_fraction < 1, "data.eval_fraction", d.eval_fraction,
           "must be in [0, 1) (0: no held-out split)")
    _check(d.limit is None or d.limit > 0, "data.limit", d.limit, "must be > 0")
    _check(d.schema_budget >= 0, "data.schema_budget", d.schema_budget, "must be >= 0 (0: what data.max_length leaves)")
    _check(d.schema_budget == 0 or d.schema_budget >= 16, "data.schema_budget", d.schema_budget,
           "must be 0 (automatic) or at least 16 tokens")
    _check(d.max_value_hints >= 0, "data.max_value_hints", d.max_value_hints, "must be >= 0 (0: no value hints)")
    _one_of("data.dialect", d.dialect, DIALECTS)
    if d.db and _has_password(d.db):
        raise ConfigError("Config key 'data.db' holds a password; sqlft never stores or logs one: take it out of the "
                          "URL and put it in PGPASSWORD or ~/.pgpass (libpq's rules).")
    for key, src, fmt in (("data.source", d.source, d.format), ("data.eval_source", d.eval_source, d.eval_format)):
        if src and src != "bundled" and fmt not in ("hf",) and (src.startswith((".", "/", "~")) or Path(src).suffix):
            _check(Path(src).expanduser().exists(), key, src, "file or folder does not exist")
    _check(t.per_device_batch_size > 0, "train.per_device_batch_size", t.per_device_batch_size, "must be > 0")
    _check(t.gradient_accumulation_steps > 0, "train.gradient_accumulation_steps", t.gradient_accumulation_steps,
           "must be > 0")
    _check(t.learning_rate > 0, "train.learning_rate", t.learning_rate, "must be > 0")
    _check(t.epochs > 0, "train.epochs", t.epochs, "must be > 0")
    _check(t.max_steps is None or t.max_steps > 0, "train.max_steps", t.max_steps, "must be > 0")
    _check(t.max_minutes is None or t.max_minutes > 0, "train.max_minutes", t.max_minutes,
           "must be > 0 (minutes of wall time for the whole run)")
    _check(t.warmup_steps >= 0, "train.warmup_steps", t.warmup_steps, "must be >= 0")
    _check(t.max_grad_norm >= 0, "train.max_grad_norm", t.max_grad_norm, "must be >= 0 (0 disables clipping)")
    _check(t.log_every > 0, "train.log_every", t.log_every, "must be > 0")
    _check(t.max_nonfinite_steps >= 1, "train.max_nonfinite_steps", t.max_nonfinite_steps, "must be >= 1")
    _check(bool(t.output_dir), "train.output_dir", t.output_dir, "must not be empty")
    _check(c.every >= 0, "checkpoint.every", c.every, "must be >= 0")
    _check(c.keep_last >= 1, "checkpoint.keep_last", c.keep_last, "must be >= 1")
    if c.resume not in ("auto", "none"):
        _check(Path(c.resume).is_dir(), "checkpoint.resume", c.resume,
               "must be auto, none, or an existing checkpoint folder")
    _check(e.loss_every >= 0, "eval.loss_every", e.loss_every, "must be >= 0")
    _check(e.loss_batches > 0, "eval.loss_batches", e.loss_batches, "must be > 0")
    _check(e.final_loss_batches is None or e.final_loss_batches > 0, "eval.final_loss_batches",
           e.final_loss_batches, "must be > 0 (or null: the whole split)")
    _check(e.every >= 0, "eval.every", e.every, "must be >= 0")
    _check(e.sample_size > 0, "eval.sample_size", e.sample_size, "must be > 0")
    _check(e.max_new_tokens > 0, "eval.max_new_tokens", e.max_new_tokens, "must be > 0")
    _check(e.batch_size > 0, "eval.batch_size", e.batch_size, "must be > 0")
    _check(e.timeout_s > 0, "eval.timeout_s", e.timeout_s, "must be > 0")
    _check(e.retries >= 0, "eval.retries", e.retries, "must be >= 0")
    _check(e.samples >= 0, "eval.samples", e.samples, "must be >= 0")
    _check(not (e.samples and e.retries), "eval.samples", e.samples,
           "samples and retries are two ways to pick among sampled answers; set one of eval.samples / eval.retries")
    _check(e.temperature > 0, "eval.temperature", e.temperature, "must be > 0")
    _check(0 < e.top_p <= 1, "eval.top_p", e.top_p, "must be in (0, 1]")
    # A result cut at the row cap can't be compared with the gold one; 0 or a negative cap would cut every result.
    _check(e.max_rows > 0, "eval.max_rows", e.max_rows, "must be > 0")
    _check(0 <= e.float_tolerance < 1, "eval.float_tolerance", e.float_tolerance,
           "must be a relative tolerance in [0, 1) (0: exact comparison, the official rule)")
    _check(not cfg.grpo.reward_test_suite or e.test_suite > 0, "grpo.reward_test_suite", cfg.grpo.reward_test_suite,
           "needs neighbour databases: set eval.test_suite K (> 0)")
    _check(0 <= e.test_suite <= 100, "eval.test_suite", e.test_suite, "must be 0 (off) to 100 neighbour databases")
    if e.neighbour_db and _has_password(e.neighbour_db):
        raise ConfigError("Config key 'eval.neighbour_db' holds a password; sqlft never stores or logs one: take it "
                          "out of the URL and put it in PGPASSWORD or ~/.pgpass")
    _check(not e.neighbour_db or str(e.neighbour_db).split("://", 1)[0].lower() in ("postgresql", "postgres"),
           "eval.neighbour_db", e.neighbour_db, "must be a PostgreSQL URL (postgresql://user@host:port/scratch)")
    _check(m.adapter is None or Path(m.adapter).expanduser().exists(), "model.adapter", m.adapter,
           "path does not exist (a LoRA adapter folder, a checkpoint or a run folder)")
    g = cfg.grpo
    _check(g.group_size >= 2, "grpo.group_size", g.group_size, "must be >= 2 (advantages compare a group's samples)")
    _check(g.temperature > 0, "grpo.temperature", g.temperature, "must be > 0")
    _check(0 < g.top_p <= 1, "grpo.top_p", g.top_p, "must be in (0, 1]")
    _check(g.max_new_tokens > 0, "grpo.max_new_tokens", g.max_new_tokens, "must be > 0")
    _check(g.max_new_tokens < d.max_length or t.objective != "grpo", "grpo.max_new_tokens", g.max_new_tokens,
           f"must leave room for the prompt within data.max_length ({d.max_length})")
    _check(0 < g.clip_eps < 1, "grpo.clip_eps", g.clip_eps, "must be in (0, 1)")
    _check(g.kl_beta >= 0, "grpo.kl_beta", g.kl_beta, "must be >= 0 (0: no KL penalty)")
    _check(g.updates_per_batch >= 1, "grpo.updates_per_batch", g.updates_per_batch, "must be >= 1")
    _check(t.objective != "grpo" or not g.shared_prompts
           or m.attn_implementation in ("auto", "sdpa", "eager", "flex_attention"),
           "grpo.shared_prompts", g.shared_prompts, f"its tree-shaped mask can't run with model.attn_implementation "
           f"{m.attn_implementation!r}; use auto, sdpa or flex_attention, or set grpo.shared_prompts false")
    for key in ("reward_executes", "reward_valid", "penalty_no_fence"):
        _check(getattr(g, key) >= 0, f"grpo.{key}", getattr(g, key), "must be >= 0")
    _check(g.reward_match > g.reward_executes + g.reward_valid, "grpo.reward_match", g.reward_match,
           f"must be more than the partial credit a wrong answer can get (grpo.reward_executes + grpo.reward_valid "
           f"= {g.reward_executes + g.reward_valid:g})")


# ----------------------------------------------------------------------------------------------
# how long a run trains: epochs, max_steps, max_minutes

LENGTH_KEYS = ("train.epochs", "train.max_steps", "train.max_minutes")


def _file_length_keys(path: str | os.PathLike | None) -> dict:
    """The length keys a config file sets itself (not by default), with their values."""
    if path is None or not Path(path).is_file():
        return {}
    try:
        train = (yaml.safe_load(Path(path).read_text()) or {}).get("train") or {}
    except (yaml.YAMLError, AttributeError):
        return {}  # load_config says what is wrong with the file
    if not isinstance(train, dict):
        return {}
    return {k: train[k.split(".")[1]] for k in LENGTH_KEYS if train.get(k.split(".")[1]) is not None}


def length_precedence(path: str | os.PathLike | None, overrides: dict) -> tuple[dict, list[str], list[str]]:
    """A length given on the command line replaces the config file's: `--train.epochs 2` with a file that sets
    train.max_minutes (or max_steps) trains 2 epochs, not the file's budget. Returns (the overrides with the file's
    other length keys unset, the length keys that are set, notes saying what gave way)."""
    given = [k for k in LENGTH_KEYS if k in overrides  # (`--train.max_steps null` unsets, doesn't give one)
             and (_yaml_value(overrides[k]) if isinstance(overrides[k], str) else overrides[k]) is not None]
    in_file = _file_length_keys(path)
    if not given:
        return overrides, list(in_file), []
    out, notes = dict(overrides), []
    for key in in_file:
        if key in given:
            continue
        if key != "train.epochs":  # max_steps / max_minutes override epochs: a file's epochs needs no unsetting
            out[key] = None
        flags = " and ".join(f"--{k} {overrides[k]}" for k in given)
        notes.append(f"{flags} replaces {key} {in_file[key]} of {Path(path).name} (a length given on the command "
                     f"line replaces the config file's)")
    return out, given, notes


def length_rule(t: TrainConfig, keys: list[str]) -> str | None:
    """The rule in words when several length keys are set (None when at most one is)."""
    keys = [k for k in keys if k == "train.epochs" or getattr(t, k.split(".")[1]) is not None]
    if len(keys) < 2:
        return None
    if t.max_minutes is not None and t.max_steps is not None:
        return (f"train.max_minutes {t.max_minutes:g} plans the steps, at most train.max_steps {t.max_steps}: the run "
                f"ends at whichever comes first" + ("; train.epochs doesn't apply" if "train.epochs" in keys else ""))
    if t.max_minutes is not None:
        return (f"train.max_minutes {t.max_minutes:g} plans the steps; train.epochs {t.epochs:g} doesn't apply (a time "
                f"budget sets the length; give train.max_steps to cap it)")
    return f"train.max_steps {t.max_steps} sets the length; train.epochs {t.epochs:g} doesn't apply (max_steps wins)"


def fixed_steps(t: TrainConfig, steps_per_epoch: int) -> int | None:
    """The optimizer steps a run takes when no time budget plans them (max_steps, else epochs); with
    train.max_minutes, the most the budget may plan (max_steps), or None."""
    if t.max_steps is not None or t.max_minutes is not None:
        return t.max_steps
    return math.ceil(t.epochs * steps_per_epoch)


# ----------------------------------------------------------------------------------------------
# resolving: `auto` -> what it means on this machine, once, before the config is printed or saved


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "run"


def default_output_dir(cfg: Config) -> str:
    """`train.output_dir: auto`: runs/demo for the embedded demo, else a folder named for the data and the model,
    so that training on your own data never lands in (and resumes) another run's folder."""
    d, m = cfg.data, cfg.model
    if d.source == "bundled" and m.name_or_path == ModelConfig.name_or_path:
        return "runs/demo"
    data = "bundled" if d.source == "bundled" else Path(d.source.rstrip("/")).stem or d.source
    model = Path(m.name_or_path.rstrip("/")).name.removesuffix(".gguf")
    return f"runs/{_slug(data)}-{_slug(model)}"


def resolve(cfg: Config, training: bool = False) -> Config:
    """A copy of `cfg` with every `auto` replaced by what it means here (attention, dtypes, output folder, run
    name), and what can't run here refused before any model is loaded. Training and the inference commands call
    it once, before the config is printed, logged or saved, and nothing changes it afterwards: a checkpoint's
    config.yaml is the config that ran."""
    from ft import system  # torch: only commands that run a model resolve (the Slurm launcher doesn't)

    out = copy.deepcopy(cfg)
    m, q, d, t = out.model, out.quantization, out.data, out.train
    cuda = system.has_cuda()
    if q.mode == "8bit" and not cuda:
        raise ConfigError("Config key 'quantization.mode' has a bad value '8bit': bitsandbytes' 8-bit layers need "
                          "CUDA (never tested here without it); use 4bit or none on this machine.")
    if training and t.optimizer == "paged_adamw_8bit" and not cuda:
        raise ConfigError("Config key 'train.optimizer' has a bad value 'paged_adamw_8bit': it pages its state "
                          "through CUDA; use adamw on this machine.")
    if training and "float16" in (q.compute_dtype, q.dtype):
        key = "quantization.compute_dtype" if q.compute_dtype == "float16" else "quantization.dtype"
        raise ConfigError(f"Config key '{key}' has a bad value 'float16': training in float16 needs loss scaling, "
                          "which this loop doesn't do (small gradients would underflow to zero); use bfloat16 on "
                          "GPUs that have it, else float32 (auto picks for you).")
    m.attn_implementation = system.choose_attention(m.attn_implementation, tree_mask=d.prefix_sharing)
    if d.prefix_sharing and m.attn_implementation == "flex_attention" and not system.has_flex_attention():
        raise ConfigError("Config key 'model.attn_implementation' has a bad value 'flex_attention': with "
                          "data.prefix_sharing it needs FlexAttention's backward pass, which torch has only on CUDA; "
                          "use auto or sdpa here.")
    fastest = str(system.fastest_dtype()).removeprefix("torch.")
    q.compute_dtype = fastest if q.compute_dtype == "auto" else q.compute_dtype
    q.dtype = fastest if q.dtype == "auto" else q.dtype
    if t.output_dir == "auto":
        t.output_dir = default_output_dir(out)
    if out.tracking.run_name is None:
        out.tracking.run_name = Path(t.output_dir).name
    return out


def to_yaml(cfg: Config) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
