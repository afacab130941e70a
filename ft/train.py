"""THE RECIPE: fine-tune a text-to-SQL model with QLoRA.

    sqlft train [--config configs/X.yaml] [--section.key value ...]           # one machine, exit codes kept
    accelerate launch [--config_file accelerate_configs/X.yaml] ft/train.py [--config ...] [--section.key ...]

Reads top to bottom: main (the process: signals, environment, logging) -> setup (config -> data -> model ->
optimizer and schedule -> resume -> tracker) -> fit (the loop: a step of the objective, log, eval, checkpoint) ->
finish (final evaluation, the adapter). The objective (SFT, GRPO: ft/objectives/) is the one thing that differs.

    run = setup(cfg)                                          # every piece, prepared: a Setup
    preempted = fit(run, cfg.train, cfg.eval, cfg.checkpoint, stop)
    result = finish(run, cfg.eval, stop, preempted)
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ft import budget as bud
from ft import checkpoint as ckpt
from ft import distributed as dist
from ft import nonfinite, objectives, runlock
from ft.cli import TIME_BUDGET, Command, no_hub_kernels, parse
from ft.config import CheckpointConfig, Config, ConfigError, EvalConfig, TrainConfig, fixed_steps, resolve, to_yaml
from ft.constants import EXIT_PREEMPTED, EXIT_USAGE
from ft.data.batching import LazyBatches, Plan, collate
from ft.data.linking import make_fitter
from ft.data.prefix import PrefixPlan, collate_prefix
from ft.data.rows import DataError, Row
from ft.distributed import cpu_rehearsal_shim, sum_across
from ft.eval.output import PredictionLog, format_table, prediction_table_rows, result_settings
from ft.files import check_writable, no_space_line, share
from ft.inference import resolve_adapter
from ft.model import ModelError, add_lora, load_base_model, load_tokenizer, local_model_dir, trainable_parameters
from ft.objectives.base import Objective, StepData, token_loss_sum
from ft.signals import StopFlag, Stopped
from ft.system import set_process_defaults
from ft.tracking import Tracker, Window, new_run_id, wandb_offline_default

if TYPE_CHECKING:
    from accelerate import Accelerator

    from ft.data.encoded import EncodedData

log = logging.getLogger("sqlft")


# ------------------------------------------------------------------------------------------------
# building blocks: the schedule, evaluation, checkpoints


def total_steps(train: TrainConfig, steps_per_epoch: int, budget: bud.BudgetPlan | None = None,
                calibration: bud.Calibration | None = None) -> int:
    """The run's length in steps of the loop: train.max_steps, else train.epochs of the plan (ft.config.fixed_steps);
    with train.max_minutes, the budget's plan (while its first steps are timed: a provisional length the plan
    replaces). The schedule counts optimizer steps: this times the objective's updates per step (setup)."""
    if budget is not None:
        return budget.total_steps
    if calibration is not None:
        return bud.PROVISIONAL_STEPS
    return fixed_steps(train, steps_per_epoch)


def make_scheduler(optimizer, train: TrainConfig, optimizer_steps: int):
    from transformers import get_scheduler

    name = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}[train.lr_scheduler]
    return get_scheduler(name, optimizer, num_warmup_steps=train.warmup_steps, num_training_steps=optimizer_steps)


def make_optimizer(model, train: TrainConfig):
    params = [p for p in model.parameters() if p.requires_grad]
    if train.optimizer == "paged_adamw_8bit":  # CUDA only: ft.config.resolve refuses it elsewhere
        import bitsandbytes as bnb

        return bnb.optim.PagedAdamW8bit(params, lr=train.learning_rate, weight_decay=train.weight_decay)
    return torch.optim.AdamW(params, lr=train.learning_rate, weight_decay=train.weight_decay)


def eval_loss_batches(examples, pad_id: int, cfg: Config, device=None) -> Sequence[dict]:
    """The held-out examples as loss batches, in a fixed order. With data.prefix_sharing, rows of prefix-shared
    groups as in training (each schema's forward once for its questions: the same losses, about half the tokens);
    otherwise one example a row. Rows are shuffled once (seeded) so a capped curve spans several databases.
    Each batch is collated when read (datascale: a large held-out split is never all tensors at once)."""
    bs = cfg.train.per_device_batch_size
    if not examples:
        return []
    if cfg.data.prefix_sharing:
        plan = PrefixPlan(examples, bs, cfg.data.max_length, cfg.train.seed, attn=cfg.model.attn_implementation,
                          device=device)
        rows = plan.row_groups
        random.Random(cfg.train.seed).shuffle(rows)
        return LazyBatches([rows[s : s + bs] for s in range(0, len(rows), bs)],
                           partial(collate_prefix, examples=examples, pad_id=pad_id, attn=plan.attn, device=device,
                                   multiple=cfg.data.pad_to_multiple_of))
    return LazyBatches([[[i] for i in range(s, min(s + bs, len(examples)))] for s in range(0, len(examples), bs)],
                       partial(collate, examples=examples, pad_id=pad_id, packed=False,
                               multiple=cfg.data.pad_to_multiple_of, limit=cfg.data.max_length))


@torch.no_grad()
def eval_loss(model, accelerator, batches: Sequence[dict], max_batches: int | None) -> float | None:
    """Token-mean loss on held-out batches (eval_loss_batches); each rank takes every world_size-th batch (in
    lockstep under ZeRO-3).

    `max_batches` counts batches in all (not per process), so the periodic curve is the same whatever the config.
    """
    if not batches:
        return None
    if max_batches:
        batches = batches[:max_batches]
    # The bare module, as for generation: the DeepSpeed engine's forward prepares a backward (hooks, accumulation
    # state); ZeRO-3's parameter gathering hooks sit on the module itself.
    net = accelerator.unwrap_model(model)
    model.eval()
    total = count = 0.0
    for i, counts in dist.lockstep_shard(range(len(batches)), accelerator):  # datascale: collated one at a time
        batch = batches[i]
        loss, n = token_loss_sum(net, {k: v.to(accelerator.device) if torch.is_tensor(v) else v
                                       for k, v in batch.items()})
        if counts:
            total, count = total + loss.item(), count + n
    model.train()
    total, count = sum_across(accelerator, total), sum_across(accelerator, count)
    return total / count if count else None


def execution_eval(model, accelerator, tokenizer, rows, cfg: Config, *, train_dbs: set[str] | None = None,
                   log: PredictionLog | None = None, stop: StopFlag | None = None,
                   label: str | None = None, prompts: list | None = None, trained: set | None = None,
                   scored_model: str | None = None) -> tuple[list, dict] | None:
    """Generate + pick + execute on `rows` (those `log` has not done yet), sharded over processes, each batch's
    predictions gathered on every rank and written by the main one as they come. A stop signal ends it after the
    current batch (`summary["complete"]` False); every rank runs the same number of batches (the last shard is
    padded with repeats that are dropped), so per-batch collectives and ZeRO-3's synced generation line up.
    `prompts`: the rows as the model reads them (schemas fitted to its context), aligned with `rows`; `trained`:
    question_key()s of training rows among them (reported apart); `scored_model`: words for the model scored."""
    from accelerate.utils import gather_object

    from ft.eval.scoring import evaluate, summarize

    if not rows:
        return None
    log = log or PredictionLog(None, "eval", rows, {})
    world, rank = accelerator.num_processes, accelerator.process_index
    todo = log.todo
    per_rank = math.ceil(len(todo) / world)
    mine = todo[rank * per_rank : (rank + 1) * per_rank]
    real = len(mine)
    mine += [todo[0]] * (per_rank - real) if todo else []
    before = len(log.done)

    def on_batch(scored):
        pairs = [(mine[i], p) for i, p in scored if i < real]
        log.append([x for part in (gather_object([pairs]) if world > 1 else [pairs]) for x in part])

    e = cfg.eval
    lockstep = dist.needs_lockstep(accelerator)
    t0 = time.perf_counter()
    if mine:
        # Retries sample a data-dependent number of times per rank: under ZeRO-3 a collective would be left waiting.
        # Schema reuse batches by schema, so ranks would run different numbers of batches: one process only.
        # A stop is heard between generation steps (`interrupt`, this process's flag) and agreed on between batches.
        evaluate(accelerator.unwrap_model(model), tokenizer, [rows[i] for i in mine],
                 dataclasses.replace(e, retries=0 if lockstep else e.retries,
                                     reuse_schema_cache=e.reuse_schema_cache and world == 1),
                 template=cfg.data.template, synced_gpus=lockstep, train_dbs=train_dbs, on_batch=on_batch,
                 should_stop=(lambda: stop.should_stop(accelerator)) if stop is not None else None,
                 interrupt=(lambda: stop.received is not None) if stop is not None else None,
                 progress=label if accelerator.is_main_process else None,
                 prompt_rows=[prompts[i] for i in mine] if prompts is not None else None, dataset=rows,
                 trained=trained)
    preds = log.predictions()
    wall = time.perf_counter() - t0
    summary = summarize(preds) | {"complete": len(preds) == len(rows)}
    if scored_model:
        summary["scored_model"] = scored_model
    if len(preds) > before:
        summary["questions_per_s"] = (len(preds) - before) / wall  # this attempt's questions only
    log.finish(summary)
    return preds, summary


def final_evaluation(model, accelerator, tokenizer, eval_rows, cfg: Config, state, stop, tracker,
                     prompts: list | None = None, names=("base", "finetuned"), trained: set | None = None
                     ) -> dict[str, dict]:
    """Base (adapter off) and fine-tuned on the whole held-out split, into <output_dir>/eval/{base,finetuned}_*; an
    evaluation finished by an earlier attempt of this run (same settings, same step) is reused, not redone. The
    model is scored as trained (the base quantized as configured, the adapter on top), and each result says so:
    `sqlft eval --as trained` scores the same form, its default `--as served` the merged 16-bit model."""
    e = cfg.eval
    settings = result_settings(e) | {"template": cfg.data.template, "form": "trained"}
    q = cfg.quantization
    as_trained = (f"as trained: base {q.mode}" + (f" {q.quant_type}" if q.mode == "4bit" else "")
                  + f", compute {q.compute_dtype}")
    train_dbs = set(state.train_dbs) if state.train_dbs else None
    summaries = {}
    for name in names:
        with accelerator.main_process_first():  # the main process settles the files before the others read them
            which = {"model": cfg.model.name_or_path, "step": state.step if name != "base" else 0}
            log = PredictionLog(Path(cfg.train.output_dir) / "eval", name, eval_rows, settings | which,
                                enabled=accelerator.is_main_process)
        if log.complete:
            summaries[name] = json.loads(log.metrics_path.read_text())
            preds = log.predictions()
        else:
            off = accelerator.unwrap_model(model).disable_adapter() if name == "base" else contextlib.nullcontext()
            with off:
                what = (f"{cfg.model.name_or_path}" + (f" + adapter at step {state.step}" if name != "base" else "")
                        + f", {as_trained}")
                preds, summaries[name] = execution_eval(model, accelerator, tokenizer, eval_rows, cfg,
                                                        train_dbs=train_dbs, log=log, stop=stop, label=f"eval {name}",
                                                        prompts=prompts, trained=trained, scored_model=what)
        if not summaries[name]["complete"]:
            break
        tracker.log(eval_metrics(f"final/{name}", summaries[name]), step=state.step)
        if name == "finetuned":
            tracker.log_table("final/predictions", *prediction_table_rows(preds), step=state.step)
    if all(m.get("complete") for m in summaries.values()) and len(summaries) == 2:
        tracker.summary({f"final/{n}/ex": m.get("ex", 0.0) for n, m in summaries.items()})
    return summaries


def eval_metrics(prefix: str, metrics: dict) -> dict:
    """Flatten a summary into tracker keys: eval/ex, eval/tier/join/ex, ..."""
    def numbers(d: dict) -> dict:
        return {k: v for k, v in d.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}

    out = {f"{prefix}/{k}": v for k, v in numbers(metrics).items()}
    for group, key in (("tiers", "tier"), ("kinds", "kind")):
        for name, vals in metrics.get(group, {}).items():
            out |= {f"{prefix}/{key}/{name}/{k}": v for k, v in numbers(vals).items() if k != "n"}
    return out


def save_adapter(accelerator, model, tokenizer, dest: Path) -> None:
    """Adapter weights only (the frozen base is never written), loadable by PeftModel.from_pretrained.

    Every rank calls this: under ZeRO-3 the adapter is gathered from its shards first (a collective).
    """
    state_dict = dist.trainable_state_dict(accelerator, model)
    if accelerator.is_main_process:
        unwrapped = accelerator.unwrap_model(model)
        # save_embedding_layers=False: with lm_head among the LoRA targets, peft would otherwise copy the whole
        # frozen lm_head (1 GB for a 128k vocabulary) into every checkpoint.
        unwrapped.save_pretrained(dest, state_dict=state_dict, safe_serialization=True, save_embedding_layers=False)
        tokenizer.save_pretrained(dest)


def save_checkpoint(accelerator, model, optimizer, scheduler, tokenizer, state, cfg: Config) -> Path:
    out = cfg.train.output_dir
    nonfinite.check_weights(accelerator, model, state.step, out)  # NaN / Inf weights are never saved
    tmp = ckpt.begin(out, state.step, accelerator.is_main_process)
    accelerator.wait_for_everyone()
    with ckpt.writing(tmp, out):
        save_adapter(accelerator, model, tokenizer, tmp / "adapter")
        ckpt.save_rng(tmp, accelerator.process_index)
        if dist.zero_stage(accelerator) is not None:
            ckpt.save_deepspeed_state(model, tmp)  # every rank writes its optimizer shard
        elif accelerator.is_main_process:
            torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        if accelerator.is_main_process:
            torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
            ckpt.write_state(tmp, state, to_yaml(cfg))
    accelerator.wait_for_everyone()  # every rank's files are in before one process publishes
    final = ckpt.step_dir(out, state.step)
    if accelerator.is_main_process:
        share(tmp)  # safetensors writes 0600: adapters others can read, as any file the user writes
        ckpt.publish(tmp, out, state.step)
        ckpt.prune(out, cfg.checkpoint.keep_last)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(path: Path, accelerator, model, optimizer, scheduler) -> ckpt.TrainState:
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    if dist.zero_stage(accelerator) is not None:
        ckpt.load_deepspeed_state(model, path)  # adapter + optimizer shard, on every rank
    else:
        if not (path / "optimizer.pt").is_file():
            raise FileNotFoundError(f"{path} has no optimizer.pt (written under DeepSpeed?): resume with the same kind "
                                    "of accelerate config, or start a new run (checkpoint.resume none).")
        adapter = load_file(path / "adapter" / "adapter_model.safetensors")
        set_peft_model_state_dict(accelerator.unwrap_model(model), adapter)
        # weights_only=False deliberately: optimizer / scheduler states are our own files and hold Python objects.
        # Read onto the CPU (torch can't map to "cpu:0", the device of a multi-CPU rank); load_state_dict moves
        # each state tensor to its parameter's device.
        optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=False, map_location="cpu"))
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=False))
    if not ckpt.load_rng(path, accelerator.process_index):
        log.warning("no RNG state for rank %d in %s (world size changed?); continuing with fresh RNG",
                    accelerator.process_index, path)
    return ckpt.read_state(path)


# ------------------------------------------------------------------------------------------------
# setup: every piece the loop uses, prepared once


@dataclass
class HeldOut:
    """The held-out split, as the evaluations use it."""

    rows: list[Row]
    sample: list[Row]  # the first eval.sample_size rows: the same questions at every periodic evaluation
    loss_batches: Sequence[dict]  # eval_loss_batches: the held-out loss (each batch collated when read)
    prompts: list | None = None  # the rows as the model reads them at evaluation (schemas fitted to its context)
    # question_key()s of training rows that are also held-out questions (a separate data.eval_source can repeat
    # them): reported apart, never as unseen questions
    trained: set | None = None


@dataclass
class Setup:
    """What `setup` prepares and `fit` / `finish` use; tests and benchmarks call `setup` rather than rebuilding it.
    It is the objectives' `Learner` (accelerator, model, optimizer, scheduler)."""

    cfg: Config
    accelerator: Accelerator
    tokenizer: object
    objective: Objective
    plan: Plan  # the objective's training data laid out in steps (deterministic, resumable by step)
    steps_per_epoch: int
    total_steps: int  # total_steps(): the loop runs until state.step reaches it
    held_out: HeldOut
    model: object  # prepared: DDP / the DeepSpeed engine around the PEFT model
    optimizer: object
    scheduler: object
    attn: str  # the attention implementation the model runs
    state: ckpt.TrainState
    tracker: Tracker
    resumed_from: Path | None = None
    lock: runlock.RunLock | None = None  # the output folder's (main process): one run per folder
    # train.max_minutes: the plan (kept from the checkpoint resumed, or made once the first steps were timed), the
    # steps being timed until then, and when the process started (the budget counts from there)
    budget: bud.BudgetPlan | None = None
    calibration: bud.Calibration | None = None
    started_at: float = 0.0


def setup(cfg: Config) -> Setup:
    """A resolved config (ft.config.resolve) -> the prepared pieces, on every process. Changes nothing process-wide
    (signal handlers, environment, logging, threads: main's)."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    # ---- processes, seed, output -------------------------------------------------------------
    accelerator = Accelerator(log_with="wandb" if cfg.tracking.wandb else None, project_dir=cfg.train.output_dir)
    dist.configure_deepspeed(accelerator, cfg)  # DeepSpeed's batch size / accumulation / clipping from cfg.train
    is_main = accelerator.is_main_process
    set_seed(cfg.train.seed)
    if is_main:
        check_writable(Path(cfg.train.output_dir), "Config key 'train.output_dir'")
    # One run per folder, for the whole run: another live run's folder is refused here (exit 2 on every rank).
    lock = runlock.hold(accelerator, cfg.train.output_dir)
    if is_main:
        print("---- resolved config ----\n" + to_yaml(cfg) + "-------------------------", flush=True)
    accelerator.wait_for_everyone()

    # ---- data: the held-out split, the objective's plan, the run's length ---------------------
    with accelerator.main_process_first():  # the GGUF conversion happens once
        model_dir = local_model_dir(cfg)
        tokenizer = load_tokenizer(model_dir)
    data, held_out = load_data(cfg, accelerator, tokenizer)
    objective = objectives.build(cfg)
    plan = objective.prepare(data, tokenizer, accelerator.num_processes, accelerator.device)
    steps_per_epoch = plan.steps_per_epoch()
    pad_report = plan.padding()
    data_sha1 = data.sha1  # of the training rows' content, computed when the encoded data was built
    resume_from = resume_point(cfg, accelerator, data_sha1)
    budget, calibration = budget_start(cfg.train, resume_from)
    steps = total_steps(cfg.train, steps_per_epoch, budget, calibration)
    if is_main:
        log.info("data: %s | encoding: %s | padding %.1f%% | %d steps/epoch, %s steps",
                 data.report, objective.report, 100 * pad_report["padding_fraction"], steps_per_epoch,
                 "budgeted" if calibration is not None else steps)

    # ---- model, optimizer, schedule ----------------------------------------------------------
    model, attn, n_train = load_model(cfg, accelerator, model_dir)
    # The held-out questions as the model will read them at evaluation: within its context (linked when
    # data.schema_linking), or an error now, before any training step, rather than after the last one.
    if cfg.eval.at_end or cfg.eval.every:
        fit_prompt = make_fitter(tokenizer, cfg.data.template, cfg.data, model.config.max_position_embeddings,
                                 reserve=cfg.eval.max_new_tokens)
        held_out.prompts = [fit_prompt(r) for r in held_out.rows]
    optimizer = make_optimizer(model, cfg.train)
    model, optimizer = accelerator.prepare(model, optimizer)  # under DeepSpeed: the engine and its ZeRO optimizer
    # Built on the prepared optimizer, whose param groups are the ones that step (DeepSpeed's CPU-offload Adam is a
    # new optimizer); stepped by the objective once per optimizer step: accelerate would step it per process.
    scheduler = make_scheduler(optimizer, cfg.train, steps * objective.updates_per_step)

    # ---- resume, tracker ---------------------------------------------------------------------
    state = start_state(resume_from, accelerator, model, optimizer, scheduler)
    state.data_sha1, state.train_dbs = data_sha1, data.train_dbs or None
    if budget is not None:
        cfg.train.max_steps = budget.total_steps  # as the checkpoint's config recorded it
        if is_main:
            log.info("%s (the plan of %s, kept)", budget.line(), resume_from.name)
    elif calibration is not None:
        state.budget = None
        if is_main:
            log.info("budget %g min: timing the costs after step %d (evaluation, checkpoint), then timing steps "
                     "%d-%d, then planning the steps", cfg.train.max_minutes, calibration.first,
                     calibration.first + 1, calibration.end)
    tracker = Tracker(accelerator, cfg, state.wandb_run_id, resumed=resume_from is not None)
    if resume_from is None:
        tracker.log({"perf/trainable_params": n_train, "perf/model_params": tracker.model_params(model),
                     "perf/padding_fraction": pad_report["padding_fraction"]}, step=0)
    run = Setup(cfg, accelerator, tokenizer, objective, plan, steps_per_epoch, steps, held_out, model, optimizer,
                scheduler, attn, state, tracker, resume_from, lock, budget, calibration, bud.process_started_at())
    objective.start(run, attn)
    return run


def load_data(cfg: Config, accelerator, tokenizer) -> tuple[EncodedData, HeldOut]:
    """(the run's data, encoded: ft/data/encoded.py; the held-out split as the evaluations use it). The rows are
    checked, split and encoded once into Arrow files every process memory-maps: one process builds them under a file
    lock, the others wait and open them. A data error is every rank's own, so each exits with it cleanly instead of
    the others dying in a barrier the first never reaches. Schema linking (data.schema_linking): training rows keep
    their gold tables, held-out ones are linked as at inference."""
    from ft.data.encoded import encoded_data
    from ft.eval.scoring import trained_keys

    data = encoded_data(cfg, tokenizer, min_eval=cfg.train.per_device_batch_size)
    if accelerator.is_main_process:
        log.info("encoded data: %s (%d training, %d held-out examples)", data.folder, len(data.train), len(data.eval))
    held_out = HeldOut(data.eval_rows, data.eval_rows[: cfg.eval.sample_size],
                       eval_loss_batches(data.eval, tokenizer.pad_token_id, cfg, accelerator.device),
                       trained=trained_keys(data.train_rows, data.eval_rows))
    return data, held_out


def resume_point(cfg: Config, accelerator, data_sha1: str) -> Path | None:
    """The checkpoint to resume (checkpoint.resume). Only this run's own checkpoints are resumed (same model, data,
    training settings); `resume: none` in a folder another run used sets that run's files aside first, so they are
    neither resumed nor pruned."""
    out = cfg.train.output_dir
    # The newest checkpoint that verifies (damaged ones are named and set aside), chosen by the main process.
    resume_from = dist.on_main(accelerator, ckpt.find_resume, out, cfg.checkpoint.resume)
    if resume_from is not None:
        ckpt.check_resumable(resume_from, cfg.to_dict(), data_sha1)
    elif cfg.checkpoint.resume == "none" and accelerator.is_main_process and (
            moved := ckpt.set_aside_previous_run(out)):
        log.warning("checkpoint.resume none: the files of the run that used %s before moved to %s", out, moved)
    accelerator.wait_for_everyone()
    return resume_from


def load_model(cfg: Config, accelerator, model_dir) -> tuple[object, str, int]:
    """(the PEFT model, not yet prepared; its attention implementation; its trainable parameters)."""
    # One GPU per process; under DeepSpeed the engine places the model itself.
    on_gpu = accelerator.device.type == "cuda" and accelerator.distributed_type.name != "DEEPSPEED"
    model, attn = load_base_model(cfg, model_dir, device_map={"": accelerator.device} if on_gpu else None)
    adapter = resolve_adapter(cfg.model.adapter)[0] if cfg.model.adapter else None  # e.g. the SFT adapter for GRPO
    model = add_lora(model, cfg, reentrant_checkpointing=dist.zero_stage(accelerator) == 3, adapter=adapter)
    n_train, n_total = trainable_parameters(model)
    if accelerator.is_main_process:
        log.info("model %s | attention %s | quantization %s, compute %s | trainable %d / %d params%s",
                 cfg.model.name_or_path, attn, cfg.quantization.mode, cfg.quantization.compute_dtype, n_train, n_total,
                 f" | LoRA from {adapter}" if adapter else "")
    return model, attn, n_train


def start_state(resume_from: Path | None, accelerator, model, optimizer, scheduler) -> ckpt.TrainState:
    """The resumed checkpoint's state (model, optimizer, scheduler, RNG restored), or a new run's."""
    if resume_from is not None:
        with ckpt.loading(resume_from):  # whatever a loader raises: one line naming the checkpoint
            state = load_checkpoint(resume_from, accelerator, model, optimizer, scheduler)
        if accelerator.is_main_process:
            log.info("resumed from %s at step %d", resume_from, state.step)
        return state
    return ckpt.TrainState(wandb_run_id=new_run_id() if accelerator.is_main_process else None,
                           world_size=accelerator.num_processes)


def budget_start(train: TrainConfig, resume_from: Path | None) -> tuple[bud.BudgetPlan | None, bud.Calibration | None]:
    """train.max_minutes: (the plan of the run being resumed, kept when made for the same budget and cap; else None,
    and the steps to time before planning). (None, None) without a budget, or when train.max_steps ends the run
    before a plan could be made (the cap is then the length)."""
    if train.max_minutes is None:
        return None, None
    saved = ckpt.read_state(resume_from) if resume_from is not None else None
    kept = bud.kept_plan(saved.budget if saved else None, train.max_minutes, train.max_steps)
    if kept is not None:
        return kept, None
    calibration = bud.Calibration(saved.step if saved else 0, train.warmup_steps)
    if train.max_steps is not None and train.max_steps <= calibration.end:
        return None, None
    return None, calibration


def measure_costs(run: Setup, stop: StopFlag) -> None:
    """train.max_minutes, after the process's first step (left out of the timing): time a held-out loss batch, the
    base model's half of the end-of-training evaluation (run now: it doesn't depend on training; the plan expects
    the fine-tuned half to take bud.FINETUNED_EVAL_RATIO times as long) and a checkpoint, before the steps are
    timed, so they are timed as the rest of the run trains (after a generation pass). A stop signal meanwhile is
    heard by the loop right after."""
    cfg, acc, state, held_out = run.cfg, run.accelerator, run.state, run.held_out
    e, costs, n_loss = cfg.eval, bud.Costs(), min(cfg.eval.loss_batches, len(held_out.loss_batches))
    if n_loss:
        losses = []
        costs.loss_batch_s = bud.timed(lambda: losses.append(eval_loss(run.model, acc, held_out.loss_batches,
                                                                       n_loss))) / n_loss
        if losses[0] is not None:
            run.tracker.log({"eval/loss": losses[0]}, step=state.step)
    if e.at_end and held_out.rows:
        costs.eval_s = bud.timed(lambda: final_evaluation(
            run.model, acc, run.tokenizer, held_out.rows, cfg, state, stop, run.tracker, held_out.prompts,
            names=("base",), trained=held_out.trained))
    costs.checkpoint_s = bud.timed(lambda: save_checkpoint(acc, run.model, run.optimizer, run.scheduler,
                                                           run.tokenizer, state, cfg))
    run.calibration.costs = costs


def plan_budget(run: Setup) -> None:
    """After the timed steps (train.max_minutes): plan the total steps (ft/budget.py) from them and the costs, and
    build the LR schedule for that total (the timed steps are within the warmup, whose rates don't depend on it)."""
    cfg, acc, state, held_out = run.cfg, run.accelerator, run.state, run.held_out
    t, e, costs = cfg.train, cfg.eval, run.calibration.costs
    n_loss = min(e.loss_batches, len(held_out.loss_batches))

    def weight(step):  # what a future step costs, relative to the timed ones
        return run.objective.step_weight(run.plan.step_counts(*divmod(step - 1, run.steps_per_epoch)))

    n_rows = len(held_out.rows)
    recurring = bud.Recurring(checkpoint_every=cfg.checkpoint.every, loss_every=e.loss_every if n_loss else 0,
                              loss_batches=n_loss,
                              final_loss_batches=min(e.final_loss_batches or len(held_out.loss_batches),
                                                     len(held_out.loss_batches)),
                              exec_every=e.every if n_rows else 0,
                              exec_fraction=min(e.sample_size, n_rows) / max(n_rows, 1))
    # Counted from the process's start; plus the checkpoint that records the plan, right after it.
    elapsed = time.time() - run.started_at + costs.checkpoint_s
    plan = bud.plan_steps(t.max_minutes, elapsed, state.step, run.calibration, weight, recurring,
                          loss_batch_s=costs.loss_batch_s, eval_s=costs.eval_s, checkpoint_s=costs.checkpoint_s,
                          cap=t.max_steps)
    if acc.num_processes > 1:  # every rank trains for the main process's plan
        from accelerate.utils import broadcast_object_list

        plan = broadcast_object_list([plan])[0]
    run.scheduler = bud.rebuild_scheduler(run.scheduler, run.optimizer, lambda: make_scheduler(
        run.optimizer, t, plan.total_steps * run.objective.updates_per_step))
    run.budget, run.calibration, run.total_steps = plan, None, plan.total_steps
    state.budget = plan.to_dict()
    t.max_steps = plan.total_steps  # the config a checkpoint records says how long this run trains


# ------------------------------------------------------------------------------------------------
# fit: the loop, one for every objective


def fit(run: Setup, train: TrainConfig, eval: EvalConfig, checkpoint: CheckpointConfig, stop: StopFlag) -> bool:
    """Steps until state.step reaches run.total_steps: the plan's step -> the objective's step -> the tracker's window
    -> periodic evaluation -> checkpoint. A stop signal ends it after a checkpoint: returns True (preempted)."""
    from tqdm.auto import tqdm

    acc, state, tracker = run.accelerator, run.state, run.tracker
    # Every rank agrees before the loop: a stop signal during start-up ends the run here, with nothing to save.
    stop.start_loop(acc)
    run.model.train()
    bar = tqdm(total=None if run.calibration else run.total_steps, initial=state.step,
               disable=not acc.is_main_process, desc="train", dynamic_ncols=True)
    tracker.window = Window()
    # A NaN / Inf loss or gradient norm: that step's update is skipped; train.max_nonfinite_steps in a row stop the run.
    guard = nonfinite.Guard(train.max_nonfinite_steps, train.output_dir, acc.is_main_process,
                            dist.zero_stage(acc) is None)
    while state.step < run.total_steps:
        epoch, step_in_epoch = divmod(state.step, run.steps_per_epoch)
        data = StepData(state.step, run.plan.step_batches(epoch, step_in_epoch, acc.process_index),
                        run.plan.step_counts(epoch, step_in_epoch))  # what every rank saw: it follows from the plan
        if run.calibration is not None:  # train.max_minutes: this step is timed
            run.calibration.step_started()
        result = run.objective.step(run, data)
        state.step += 1
        guard.check(acc, state.step, result.loss_sum, result.grad_norm)  # NaN / Inf: update skipped; N in a row: stop
        state.target_tokens_seen += int(result.window_targets)
        state.examples_seen += data.counts.n_examples
        state.tokens_seen += result.tokens
        tracker.step_done(state.step, result, data.counts.examples, data.counts.n_examples)
        bar.update(1)
        if state.step % train.log_every == 0 or state.step == run.total_steps:
            m = tracker.log_window(state, run.model, lr=run.scheduler.get_last_lr()[0],
                                   epoch=state.step / run.steps_per_epoch,
                                   objective_metrics=run.objective.window_metrics)
            bar.set_postfix(loss=f"{m['train/loss']:.3f}", tok_s=f"{m['perf/tokens_per_s']:.0f}")

        aside = time.perf_counter()  # evaluation and checkpointing are kept out of the throughput figures
        # train.max_minutes: the costs after the first step, then the timed steps, then the plan (recorded in a
        # checkpoint at once); a stop signal meanwhile: the resumed run times its steps again
        planned = False
        if run.calibration is not None:
            timed_all = run.calibration.step_done(state.step, run.objective.step_weight(data.counts))
            if run.calibration.costs_due(state.step):
                measure_costs(run, stop)
            elif timed_all and run.calibration.costs is not None and not stop.should_stop(acc):
                plan_budget(run)
                planned = True
        if planned:
            bar.total = run.total_steps
            if acc.is_main_process:
                tqdm.write(run.budget.line())
        periodic_evaluation(run, eval)
        stopping = stop.should_stop(acc)
        if ((checkpoint.every and state.step % checkpoint.every == 0) or stopping or state.step == run.total_steps
                or planned):
            path = save_checkpoint(acc, run.model, run.optimizer, run.scheduler, run.tokenizer, state, run.cfg)
            if acc.is_main_process:
                tqdm.write(f"checkpoint: {path}")
                tracker.log_adapter(path, state.step)  # W&B model artifact by reference, metrics as metadata
        tracker.window.exclude(time.perf_counter() - aside)
        if stopping:
            if acc.is_main_process:
                tqdm.write(f"stopped on {stop.name} at step {state.step}: checkpoint written; the same command "
                           f"continues from it (exit {EXIT_PREEMPTED})")
            bar.close()
            return True
    bar.close()
    return False


def periodic_evaluation(run: Setup, eval: EvalConfig) -> None:
    """eval.loss_every: the held-out loss on eval.loss_batches batches; eval.every: execution accuracy on the fixed
    sample. Not at the last step (finish evaluates the whole split)."""
    step, last = run.state.step, run.state.step >= run.total_steps
    if eval.loss_every and step % eval.loss_every == 0 and not last:
        ev = eval_loss(run.model, run.accelerator, run.held_out.loss_batches, eval.loss_batches)
        if ev is not None:
            run.tracker.log({"eval/loss": ev}, step=step)
    if eval.every and step % eval.every == 0 and not last:
        sample = run.held_out.sample
        result = execution_eval(run.model, run.accelerator, run.tokenizer, sample, run.cfg,
                                train_dbs=set(run.state.train_dbs) if run.state.train_dbs else None,
                                prompts=run.held_out.prompts[: len(sample)], trained=run.held_out.trained)
        if result is not None:
            run.tracker.log(eval_metrics("eval", result[1]), step=step)
            run.tracker.log_table("eval/predictions", *prediction_table_rows(result[0]), step=step)


# ------------------------------------------------------------------------------------------------
# finish: final evaluation, the adapter


def finish(run: Setup, eval: EvalConfig, stop: StopFlag, preempted: bool) -> dict:
    """After the loop: the held-out loss and base vs fine-tuned by execution (eval.at_end), then the last checkpoint's
    adapter published as <output_dir>/adapter; a stop keeps what is done and skips the rest. Ends the tracker and the
    process group."""
    acc, state, held_out, out = run.accelerator, run.state, run.held_out, run.cfg.train.output_dir
    result = {"step": state.step, "output_dir": out, "preempted": preempted}
    if not preempted:
        ev = eval_loss(run.model, acc, held_out.loss_batches, eval.final_loss_batches)
        if ev is not None:
            run.tracker.log({"eval/loss": ev}, step=state.step)
            result["eval_loss"] = ev
        if eval.at_end and held_out.rows:
            # Base vs fine-tuned on the held-out split: the same model with its adapter switched off, then on. Each
            # is written as it goes; a stop keeps what is done, and the same command continues from there.
            summaries = final_evaluation(run.model, acc, run.tokenizer, held_out.rows, run.cfg, state, stop,
                                         run.tracker, held_out.prompts, trained=held_out.trained)
            result["eval"] = summaries
            if not all(m["complete"] for m in summaries.values()):
                result["preempted"] = preempted = True
                if acc.is_main_process:
                    done = sum(m["n"] + m["gold_failed"] for m in summaries.values())
                    print(f"stopped on {stop.name} during the final evaluation: {done} of {2 * len(held_out.rows)} "
                          f"answers kept in {Path(out) / 'eval'}; the same command continues it "
                          f"(exit {EXIT_PREEMPTED})", file=sys.stderr, flush=True)
            elif acc.is_main_process:
                print(f"\nexecution accuracy on the held-out split ({len(held_out.rows)} questions):\n"
                      + format_table(summaries), flush=True)
    if not preempted:
        if acc.is_main_process:
            adapter = ckpt.publish_adapter(out, state.step)
            print(f"\nadapter: {adapter.resolve()}  (checkpoint {ckpt.step_dir(out, state.step)})", flush=True)
        result["adapter"] = str(Path(out) / "adapter")
    acc.wait_for_everyone()  # every rank done before the W&B run ends and end_training ends the process group
    run.tracker.finish(EXIT_PREEMPTED if preempted else 0)  # W&B: finished, or marked preempted for the resume
    acc.end_training()
    runlock.release(run.lock)
    if run.budget is not None and not preempted and run.resumed_from is None:  # train.max_minutes: how close
        took, budget_s = time.time() - run.started_at, 60 * run.cfg.train.max_minutes
        result["budget"] = {"planned_s": run.budget.expected_s, "took_s": took, "budget_s": budget_s}
        if acc.is_main_process:
            print(f"budget {run.cfg.train.max_minutes:g} min: the run took {took / 60:.1f} min "
                  f"({100 * took / budget_s:.0f} % of it; planned {run.budget.expected_s / 60:.1f} min)", flush=True)
    return result


def train(cfg: Config, stop: StopFlag | None = None) -> dict:
    """The recipe on a resolved config (ft.config.resolve): setup -> fit -> finish. `stop`: main's, with the signal
    handlers installed first thing (so a signal during start-up stops the run cleanly too); without it, a flag no
    signal sets (calling train() replaces no handler of the process)."""
    stop = stop or StopFlag()
    run = setup(cfg)
    preempted = fit(run, cfg.train, cfg.eval, cfg.checkpoint, stop)
    return finish(run, cfg.eval, stop, preempted)


# ------------------------------------------------------------------------------------------------
# main: the process


COMMAND = Command(
    name="train",
    description="Fine-tune a text-to-SQL model (the recipe in ft/train.py). One process here; several through "
                "`accelerate launch ft/train.py` (or `sqlft train --accelerate-config ...`).",
    aliases=[TIME_BUDGET],
    training=True,
)


def set_up_process(cfg: Config) -> None:
    """What the recipe changes process-wide, in one place (main's): the CPU rehearsal of DDP / DeepSpeed
    (accelerate's backend choice, patched), torch's threads, W&B offline without credentials, logging (INFO on the
    main process, whose rank is known before the accelerator exists)."""
    cpu_rehearsal_shim()
    dist.set_cpu_threads(cfg.train.cpu_threads)
    wandb_offline_default()
    is_main = os.environ.get("RANK", "0") == "0"
    logging.basicConfig(level=logging.INFO if is_main else logging.WARNING, format="%(asctime)s %(message)s")


def main(argv: list[str] | None = None) -> int:
    """The recipe's entry point on every process: exit 0 done, 75 stopped by a signal (checkpoint written once
    training had started), 2 bad config or data; with SQLFT_STATUS_DIR set, that code is also written to
    <dir>/rank-<R>.json, where a launcher that can't pass exit codes through (accelerate's) finds it."""
    stop = StopFlag()
    code, step, message = 1, None, None
    try:
        # First thing: a stop signal during start-up must not kill the process half-way; one that came while the
        # launcher held the signals blocked (the process was importing) is handled here.
        stop.install()
        set_process_defaults()
        no_hub_kernels()  # (`accelerate launch ft/train.py` doesn't pass through `sqlft`)
        cfg, _ = parse(COMMAND, argv, prog="ft/train.py")
        cfg = resolve(cfg, training=True)
        set_up_process(cfg)
        result = train(cfg, stop)
        code, step = (EXIT_PREEMPTED if result["preempted"] else 0), result["step"]
    except (ConfigError, DataError, ModelError, FileNotFoundError) as e:
        code, message = EXIT_USAGE, str(e)
        print(f"error: {e}", file=sys.stderr)
    except Stopped as e:
        code, message = e.code, str(e)
        print(str(e), file=sys.stderr, flush=True)
    except (ckpt.CheckpointError, nonfinite.NonFiniteError) as e:
        code, message = 1, str(e)
        print(f"\nerror: {e}", file=sys.stderr, flush=True)  # (a new line first: the progress bar has none)
    except SystemExit as e:  # argparse: --help (0) or a usage error (2)
        code = e.code if isinstance(e.code, int) else EXIT_USAGE
    except BaseException as e:
        if (full := no_space_line(e)) is None:
            message = f"{type(e).__name__}: {e}"
            dist.write_exit_status(code, step, message)
            raise
        code, message = 1, full  # metrics.jsonl, examples.jsonl, eval files...: one line, as for checkpoints
        print(f"\nerror: {full}", file=sys.stderr, flush=True)
    dist.write_exit_status(code, step, message, reported=True)  # every way here printed its message
    return code


if __name__ == "__main__":
    sys.exit(main())
