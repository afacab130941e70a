"""THE RECIPE: fine-tune a text-to-SQL model with QLoRA.

    sqlft train [--config configs/X.yaml] [--section.key value ...]           # one machine, exit codes kept
    accelerate launch [--config_file accelerate_configs/X.yaml] ft/train.py [--config ...] [--section.key ...]

Reads top to bottom: config -> data -> model -> loop (accumulate, step, log, eval, checkpoint) -> finish.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import sys
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F

from ft import checkpoint as ckpt
from ft import distributed as dist
from ft import grpo
from ft.cli import Command, parse
from ft.config import Config, ConfigError, resolve, to_yaml
from ft.constants import EXIT_PREEMPTED, EXIT_USAGE
from ft.data.batching import LazyBatches, collate
from ft.data.linking import make_fitter
from ft.data.prefix import PrefixPlan, collate_prefix, no_step_message, plan_for
from ft.data.rows import DataError
from ft.distributed import StopFlag, Stopped, cpu_rehearsal_shim, loss_scale, sum_across
from ft.eval.output import PredictionLog, format_table, prediction_table_rows, result_settings
from ft.files import check_writable, share
from ft.inference import resolve_adapter
from ft.model import ModelError, add_lora, load_base_model, load_tokenizer, local_model_dir, trainable_parameters
from ft.system import peak_memory_mb
from ft.tracking import Tracker, new_run_id, wandb_offline_default

log = logging.getLogger("sqlft")


# ------------------------------------------------------------------------------------------------
# building blocks the loop calls


def token_loss_sum(model, batch: dict) -> tuple[torch.Tensor, int]:
    """Summed cross-entropy over target tokens, and their count.

    The LM head runs only where the next token is a target (`logits_to_keep` as a boolean mask): prompts are
    mostly schema, so most logits would be thrown away anyway.
    """
    labels = batch["labels"]
    keep = torch.zeros_like(labels, dtype=torch.bool)
    keep[:, :-1] = labels[:, 1:] != -100
    targets = labels[:, 1:][keep[:, :-1]]
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    logits = model(**inputs, use_cache=False, logits_to_keep=keep).logits
    logits = logits.reshape(-1, logits.shape[-1]).float()
    return F.cross_entropy(logits, targets, reduction="sum"), int(targets.numel())


def target_tokens(batch: dict) -> int:
    return int((batch["labels"][:, 1:] != -100).sum())


def backward_window(model, accelerator, batches: list[dict], loss_fn=token_loss_sum) -> tuple[float, int, float]:
    """Forward + backward over one accumulation window; gradients end up those of the window's token mean.

    Token losses are summed and divided by the target tokens of the whole window on all processes, so a
    short example weighs as much per token as a long one (a mean of per-batch means would not). Under DeepSpeed the
    optimizer step happens inside the last micro-batch's `accelerator.backward` (engine.step). `loss_fn(model,
    batch)` -> (summed loss of the batch's target tokens, their count): the cross-entropy (SFT), or GRPO's clipped
    policy-gradient objective on completion tokens (ft.grpo.PolicyLoss), normalised the same way.
    Returns (local loss sum, local target tokens, global target tokens).
    """
    window_targets = sum_across(accelerator, sum(target_tokens(b) for b in batches))
    scale = loss_scale(accelerator.num_processes, window_targets, dist.deepspeed_accumulation(accelerator))
    total, count = 0.0, 0
    for i, batch in enumerate(batches):
        batch = {k: v.to(accelerator.device) for k, v in batch.items()}
        last = i == len(batches) - 1
        with contextlib.nullcontext() if last else dist.accumulating(accelerator, model):  # sync once per window
            loss_sum, n = loss_fn(model, batch)
            accelerator.backward(loss_sum * scale)
        total, count = total + loss_sum.item(), count + n
    return total, count, window_targets


def optimizer_step(model, accelerator, optimizer, scheduler, max_grad_norm: float):
    """Clip, step, schedule, zero the gradients; returns the norm before clipping (None when clipping is off). Under
    DeepSpeed the engine has stepped (and clipped) in the window's last backward: this reads its norm."""
    grad_norm = accelerator.clip_grad_norm_(model.parameters(), max_grad_norm) if max_grad_norm > 0 else None
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return grad_norm


def grpo_step(model, accelerator, optimizer, scheduler, rollout, prompts: list[list], cfg: Config, step: int,
              window: dict) -> tuple[float, int, float, object, int]:
    """One GRPO step (train.objective grpo), in place of backward_window and optimizer_step: grpo.group_size
    completions per prompt from the current policy, rewarded by executing them (ft/grpo.py), then
    grpo.updates_per_batch optimizer steps on those samples, each a backward window of the clipped policy-gradient
    loss, normalised as the SFT loss is. `prompts`: this rank's rows per micro-batch. The step's statistics are added
    to `window["stats"]` (summed over processes when logged), its groups kept in `window["groups"]` (the table).
    Returns (local loss sum, local completion tokens, the window's completion tokens on all processes, gradient norm
    of the last update, tokens the updates processed on all processes)."""
    g, world, rank = cfg.grpo, accelerator.num_processes, accelerator.process_index
    t0 = time.perf_counter()
    groups = [rollout.sample(rows, grpo.rollout_seed(cfg.train.seed, step, m * world + rank))
              for m, rows in enumerate(prompts)]
    t1 = time.perf_counter()
    for micro in groups:
        rollout.score(micro)
    t2 = time.perf_counter()
    batches = [rollout.batch(micro) for micro in groups]
    if g.updates_per_batch > 1 or g.kl_beta > 0:
        grpo.add_reference(accelerator.unwrap_model(model), batches, g.temperature,
                           sampling=g.updates_per_batch > 1, reference=g.kl_beta > 0)
    loss = grpo.PolicyLoss(g.clip_eps, g.kl_beta, g.temperature)
    total, count = 0.0, 0
    for _ in range(g.updates_per_batch):
        loss_sum, n, window_targets = backward_window(model, accelerator, batches, loss)
        grad_norm = optimizer_step(model, accelerator, optimizer, scheduler, cfg.train.max_grad_norm)
        total, count = total + loss_sum, count + n
    tokens = int(sum_across(accelerator, sum(int(b["tokens"]) for b in batches)))
    stats = grpo.rollout_stats([grp for micro in groups for grp in micro]) | loss.stats
    grpo.add_stats(window["stats"], stats | {"steps": 1, "generation_s": t1 - t0, "reward_s": t2 - t1,
                                             "update_s": time.perf_counter() - t2})
    window["groups"] = [grp for micro in groups for grp in micro]
    return total, count, window_targets, grad_norm, tokens


def make_scheduler(optimizer, cfg: Config, total_steps: int):
    from transformers import get_scheduler

    name = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}[cfg.train.lr_scheduler]
    return get_scheduler(name, optimizer, num_warmup_steps=cfg.train.warmup_steps, num_training_steps=total_steps)


def make_optimizer(model, cfg: Config):
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.train.optimizer == "paged_adamw_8bit":  # CUDA only: ft.config.resolve refuses it elsewhere
        import bitsandbytes as bnb

        return bnb.optim.PagedAdamW8bit(params, lr=cfg.train.learning_rate, weight_decay=cfg.train.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.train.learning_rate, weight_decay=cfg.train.weight_decay)


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
                           partial(collate_prefix, examples=examples, pad_id=pad_id, attn=plan.attn, device=device))
    return LazyBatches([[[i] for i in range(s, min(s + bs, len(examples)))] for s in range(0, len(examples), bs)],
                       partial(collate, examples=examples, pad_id=pad_id, packed=False))


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
                   label: str | None = None, prompts: list | None = None) -> tuple[list, dict] | None:
    """Generate + pick + execute on `rows` (those `log` has not done yet), sharded over processes, each batch's
    predictions gathered on every rank and written by the main one as they come. A stop signal ends it after the
    current batch (`summary["complete"]` False); every rank runs the same number of batches (the last shard is
    padded with repeats that are dropped), so per-batch collectives and ZeRO-3's synced generation line up.
    `prompts`: the rows as the model reads them (schemas fitted to its context), aligned with `rows`."""
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
        evaluate(accelerator.unwrap_model(model), tokenizer, [rows[i] for i in mine], template=cfg.data.template,
                 batch_size=e.batch_size, max_new_tokens=e.max_new_tokens, timeout_s=e.timeout_s,
                 max_rows=e.max_rows, retries=0 if lockstep else e.retries, samples=e.samples,
                 temperature=e.temperature, top_p=e.top_p, synced_gpus=lockstep,
                 reuse_schema_cache=e.reuse_schema_cache and world == 1, constrain=e.constrain, train_dbs=train_dbs,
                 on_batch=on_batch,
                 should_stop=(lambda: stop.should_stop(accelerator)) if stop is not None else None,
                 progress=label if accelerator.is_main_process else None,
                 prompt_rows=[prompts[i] for i in mine] if prompts is not None else None)
    preds = log.predictions()
    wall = time.perf_counter() - t0
    summary = summarize(preds) | {"complete": len(preds) == len(rows)}
    if len(preds) > before:
        summary["questions_per_s"] = (len(preds) - before) / wall  # this attempt's questions only
    log.finish(summary)
    return preds, summary


def final_evaluation(model, accelerator, tokenizer, eval_rows, cfg: Config, state, stop, tracker,
                     prompts: list | None = None) -> dict[str, dict]:
    """Base (adapter off) and fine-tuned on the whole held-out split, into <output_dir>/eval/{base,finetuned}_*; an
    evaluation finished by an earlier attempt of this run (same settings, same step) is reused, not redone."""
    e = cfg.eval
    settings = result_settings(e) | {"template": cfg.data.template}
    train_dbs = set(state.train_dbs) if state.train_dbs else None
    summaries = {}
    for name in ("base", "finetuned"):
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
                preds, summaries[name] = execution_eval(model, accelerator, tokenizer, eval_rows, cfg,
                                                        train_dbs=train_dbs, log=log, stop=stop, label=f"eval {name}",
                                                        prompts=prompts)
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
# the recipe


def train(cfg: Config, stop: StopFlag | None = None) -> dict:
    """Run the recipe on a resolved config (ft.config.resolve). `stop` handles the stop signals (main installs it
    first thing, so a signal during start-up stops the run cleanly too)."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm

    stop = stop or StopFlag()
    # ---- processes, seed, output -------------------------------------------------------------
    cpu_rehearsal_shim()
    dist.set_cpu_threads(cfg.train.cpu_threads)
    wandb_offline_default()
    accelerator = Accelerator(log_with="wandb" if cfg.tracking.wandb else None, project_dir=cfg.train.output_dir)
    dist.configure_deepspeed(accelerator, cfg)  # DeepSpeed's batch size / accumulation / clipping from cfg.train
    is_main, rank, world = accelerator.is_main_process, accelerator.process_index, accelerator.num_processes
    logging.basicConfig(level=logging.INFO if is_main else logging.WARNING, format="%(asctime)s %(message)s")
    set_seed(cfg.train.seed)
    if is_main:
        check_writable(Path(cfg.train.output_dir), "Config key 'train.output_dir'")
        print("---- resolved config ----\n" + to_yaml(cfg) + "-------------------------", flush=True)
    accelerator.wait_for_everyone()

    # ---- data --------------------------------------------------------------------------------
    from ft.data.encoded import encoded_data

    with accelerator.main_process_first():  # the GGUF conversion happens once
        model_dir = local_model_dir(cfg)
        tokenizer = load_tokenizer(model_dir)
    # ---- datascale: rows checked, split and encoded once into Arrow files every process memory-maps ------------
    # (ft/data/encoded.py: one process builds them under a file lock, the others wait and open them; a data error is
    # every rank's own, so each exits with it cleanly instead of the others dying in a barrier.) Schema linking
    # (data.schema_linking): training rows keep their gold tables, held-out ones are linked as at inference.
    data = encoded_data(cfg, tokenizer, min_eval=cfg.train.per_device_batch_size)
    train_rows, eval_rows, data_report = data.train_rows, data.eval_rows, data.report
    eval_ex = data.eval
    if is_main:
        log.info("encoded data: %s (%d training, %d held-out examples)", data.folder, len(data.train), len(eval_ex))
    # ---- end datascale ------------------------------------------------------------------------------------------
    d, t = cfg.data, cfg.train
    eval_sample = eval_rows[: cfg.eval.sample_size]  # fixed: the same questions at every periodic evaluation
    eval_batches = eval_loss_batches(eval_ex, tokenizer.pad_token_id, cfg, accelerator.device)
    if t.objective == "grpo":
        # Prompts to sample completions for (each row with a database to run them on), in micro-batches laid out
        # as the SFT plan's (deterministic, resumable by step).
        grpo_rows, prompt_lengths, enc_report = grpo.prompt_rows(train_rows, tokenizer, d.template, d.max_length,
                                                                 cfg.grpo.max_new_tokens, d.source)
        plan = grpo.prompt_plan(prompt_lengths, t, d.max_length, world)
    else:
        train_ex, enc_report = data.train, data.encoding  # datascale
        if not train_ex:
            raise DataError(f"No training examples left from '{d.source}' after encoding ({enc_report}).")
        # Rows of packed bins, of prefix-shared groups (a schema once, its questions as branches under a tree mask:
        # ft/data/prefix.py), or padded single examples.
        plan = plan_for(train_ex, d, t, world, attn=cfg.model.attn_implementation, device=accelerator.device)
        if d.prefix_sharing and is_main:
            log.info("prefix sharing: %s", plan.stats())
    steps_per_epoch = plan.steps_per_epoch()
    if steps_per_epoch == 0:
        raise DataError(grpo.no_step_message(len(grpo_rows), t, world) if t.objective == "grpo"
                        else no_step_message(plan, len(train_ex), d, t, world))
    total_steps = t.max_steps or math.ceil(t.epochs * steps_per_epoch)
    pad_report = plan.padding()
    # Only this run's own checkpoints are resumed (same model, data, training settings); `resume: none` in a folder
    # another run used sets that run's files aside first, so they are neither resumed nor pruned.
    data_sha1 = data.sha1  # datascale: rows_sha1 of the training rows, computed when the cache was built
    resume_from = ckpt.find_resume(t.output_dir, cfg.checkpoint.resume)
    if resume_from is not None:
        ckpt.check_resumable(resume_from, cfg.to_dict(), data_sha1)
    elif cfg.checkpoint.resume == "none" and is_main and (moved := ckpt.set_aside_previous_run(t.output_dir)):
        log.warning("checkpoint.resume none: the files of the run that used %s before moved to %s", t.output_dir, moved)
    accelerator.wait_for_everyone()
    if is_main:
        log.info("data: %s | encoding: %s | padding %.1f%% | %d steps/epoch, %d steps",
                 data_report, enc_report, 100 * pad_report["padding_fraction"], steps_per_epoch, total_steps)

    # ---- model -------------------------------------------------------------------------------
    # One GPU per process; under DeepSpeed the engine places the model itself.
    on_gpu = accelerator.device.type == "cuda" and accelerator.distributed_type.name != "DEEPSPEED"
    device_map = {"": accelerator.device} if on_gpu else None
    model, attn = load_base_model(cfg, model_dir, device_map=device_map)
    adapter = resolve_adapter(cfg.model.adapter)[0] if cfg.model.adapter else None  # e.g. the SFT adapter for GRPO
    model = add_lora(model, cfg, reentrant_checkpointing=dist.zero_stage(accelerator) == 3, adapter=adapter)
    n_train, n_total = trainable_parameters(model)
    # The held-out questions as the model will read them at evaluation: within its context (linked when
    # data.schema_linking), or an error now, before any training step, rather than after the last one.
    fit = make_fitter(tokenizer, d.template, d, model.config.max_position_embeddings, reserve=cfg.eval.max_new_tokens)
    eval_prompts = [fit(r) for r in eval_rows] if cfg.eval.at_end or cfg.eval.every else None
    if is_main:
        log.info("model %s | attention %s | quantization %s, compute %s | trainable %d / %d params%s",
                 cfg.model.name_or_path, attn, cfg.quantization.mode, cfg.quantization.compute_dtype, n_train, n_total,
                 f" | LoRA from {adapter}" if adapter else "")
    optimizer = make_optimizer(model, cfg)
    model, optimizer = accelerator.prepare(model, optimizer)  # under DeepSpeed: the engine and its ZeRO optimizer
    # Built on the prepared optimizer, whose param groups are the ones that step (DeepSpeed's CPU-offload Adam is a
    # new optimizer); stepped by us once per optimizer step: accelerate would step it per process.
    updates = cfg.grpo.updates_per_batch if t.objective == "grpo" else 1  # optimizer steps per step
    scheduler = make_scheduler(optimizer, cfg, total_steps * updates)

    # ---- resume ------------------------------------------------------------------------------
    if resume_from is not None:
        state = load_checkpoint(resume_from, accelerator, model, optimizer, scheduler)
        if is_main:
            log.info("resumed from %s at step %d", resume_from, state.step)
    else:
        state = ckpt.TrainState(wandb_run_id=new_run_id() if is_main else None, world_size=world)
    state.data_sha1, state.train_dbs = data_sha1, data.train_dbs or None  # datascale
    # Every rank agrees before the loop: a stop signal during start-up ends the run here, with nothing to save.
    stop.start_loop(accelerator)
    tracker = Tracker(accelerator, cfg, state.wandb_run_id, resumed=resume_from is not None)
    if resume_from is None:
        tracker.log({"perf/trainable_params": n_train, "perf/model_params": tracker.model_params(model),
                     "perf/padding_fraction": pad_report["padding_fraction"]}, step=0)
    rollout = None
    if t.objective == "grpo":  # the policy's sampler: the bare model, in lockstep under ZeRO-3
        rollout = grpo.Rollout(accelerator.unwrap_model(model), tokenizer, cfg, attn=attn,
                               synced_gpus=dist.needs_lockstep(accelerator), device=accelerator.device)
        if is_main:
            log.info("grpo: %d prompts x %d completions per step | %s", t.per_device_batch_size * world
                     * t.gradient_accumulation_steps, cfg.grpo.group_size, "shared prompts (tree mask)"
                     if rollout.shared else f"a row per completion (attention {attn} takes no tree mask)")

    # ---- loop --------------------------------------------------------------------------------
    model.train()
    bar = tqdm(total=total_steps, initial=state.step, disable=not is_main, desc="train", dynamic_ncols=True)
    window = {"loss": 0.0, "targets": 0, "tokens": 0, "examples": 0, "t0": time.perf_counter()}
    grpo_window: dict = {"stats": {}, "groups": []}  # GRPO: the logging window's rollout statistics
    trace = open(Path(t.output_dir) / "examples.jsonl", "a") if is_main else None
    preempted = False
    while state.step < total_steps:
        epoch, step_in_epoch = divmod(state.step, steps_per_epoch)
        micro = plan.step_batches(epoch, step_in_epoch, rank)
        seen = plan.step_counts(epoch, step_in_epoch)  # what every rank saw: it follows from the plan
        if t.objective == "grpo":
            prompts = [[grpo_rows[i] for row in rows for i in row] for rows in micro]
            loss_sum, n_targets, window_targets, grad_norm, step_tokens = grpo_step(
                model, accelerator, optimizer, scheduler, rollout, prompts, cfg, state.step, grpo_window)
        else:
            batches = [plan.collate(rows, train_ex, tokenizer.pad_token_id) for rows in micro]
            loss_sum, n_targets, window_targets = backward_window(model, accelerator, batches)
            grad_norm = optimizer_step(model, accelerator, optimizer, scheduler, t.max_grad_norm)
            step_tokens = seen.tokens
        state.step += 1
        state.target_tokens_seen += int(window_targets)
        state.examples_seen += seen.n_examples
        state.tokens_seen += step_tokens
        window["loss"] += loss_sum
        window["targets"] += n_targets
        window["tokens"] += step_tokens
        window["examples"] += seen.n_examples
        if trace is not None:
            trace.write(f'{{"step": {state.step}, "examples": {seen.examples}}}\n')
            trace.flush()
        bar.update(1)

        if state.step % t.log_every == 0 or state.step == total_steps:
            elapsed = time.perf_counter() - window["t0"]
            loss = sum_across(accelerator, window["loss"]) / max(sum_across(accelerator, window["targets"]), 1)
            tokens, examples = window["tokens"], window["examples"]
            targets = sum_across(accelerator, window["targets"])
            metrics = {
                "train/loss": loss, "train/lr": scheduler.get_last_lr()[0],
                "train/epoch": state.step / steps_per_epoch, "train/examples_seen": state.examples_seen,
                "train/tokens_seen": state.tokens_seen, "train/target_tokens_seen": state.target_tokens_seen,
                "perf/target_tokens_per_s": targets / elapsed, "perf/tokens_per_s": tokens / elapsed,
                "perf/samples_per_s": examples / elapsed, "perf/peak_memory_mb": peak_memory_mb(accelerator.device),
            } | tracker.resource_metrics(model, tokens / elapsed)  # sys/rss_mb; on CUDA perf/mfu, sys/gpu_reserved_mb
            if grad_norm is not None:
                metrics["train/grad_norm"] = float(grad_norm)
            if t.objective == "grpo":  # rewards, sample EX, zero-variance groups, KL, generation vs update time
                metrics |= grpo.window_metrics(grpo.sum_stats(accelerator, grpo_window["stats"]),
                                               kl=cfg.grpo.kl_beta > 0, clipping=cfg.grpo.updates_per_batch > 1)
                tracker.log_table("train/rollouts", *grpo.rollout_table(grpo_window["groups"]), step=state.step)
                grpo_window = {"stats": {}, "groups": []}
            tracker.log(metrics, step=state.step)
            bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{tokens / elapsed:.0f}")
            window = {"loss": 0.0, "targets": 0, "tokens": 0, "examples": 0, "t0": time.perf_counter()}

        aside = time.perf_counter()  # evaluation and checkpointing are kept out of the throughput figures
        e = cfg.eval
        if e.loss_every and state.step % e.loss_every == 0 and state.step < total_steps:
            ev = eval_loss(model, accelerator, eval_batches, e.loss_batches)
            if ev is not None:
                tracker.log({"eval/loss": ev}, step=state.step)
        if e.every and state.step % e.every == 0 and state.step < total_steps:
            result = execution_eval(model, accelerator, tokenizer, eval_sample, cfg,
                                    train_dbs=set(state.train_dbs) if state.train_dbs else None,
                                    prompts=eval_prompts[: len(eval_sample)])
            if result is not None:
                tracker.log(eval_metrics("eval", result[1]), step=state.step)
                tracker.log_table("eval/predictions", *prediction_table_rows(result[0]), step=state.step)

        stopping = stop.should_stop(accelerator)
        if (cfg.checkpoint.every and state.step % cfg.checkpoint.every == 0) or stopping or state.step == total_steps:
            path = save_checkpoint(accelerator, model, optimizer, scheduler, tokenizer, state, cfg)
            if is_main:
                tqdm.write(f"checkpoint: {path}")
                tracker.log_adapter(path, state.step)  # W&B model artifact by reference, metrics as metadata
        window["t0"] += time.perf_counter() - aside
        if stopping:
            preempted = True
            if is_main:
                tqdm.write(f"stopped on {stop.name} at step {state.step}: checkpoint written; the same command "
                           f"continues from it (exit {EXIT_PREEMPTED})")
            break
    bar.close()
    if trace is not None:
        trace.close()

    # ---- finish ------------------------------------------------------------------------------
    result = {"step": state.step, "output_dir": t.output_dir, "preempted": preempted}
    if not preempted:
        ev = eval_loss(model, accelerator, eval_batches, None)
        if ev is not None:
            tracker.log({"eval/loss": ev}, step=state.step)
            result["eval_loss"] = ev
        if cfg.eval.at_end and eval_rows:
            # Base vs fine-tuned on the held-out split: the same model with its adapter switched off, then on. Each
            # is written as it goes; a stop keeps what is done, and the same command continues from there.
            summaries = final_evaluation(model, accelerator, tokenizer, eval_rows, cfg, state, stop, tracker,
                                         eval_prompts)
            result["eval"] = summaries
            if not all(m["complete"] for m in summaries.values()):
                result["preempted"] = preempted = True
                if is_main:
                    done = sum(m["n"] + m["gold_failed"] for m in summaries.values())
                    print(f"stopped on {stop.name} during the final evaluation: {done} of {2 * len(eval_rows)} "
                          f"answers kept in {Path(t.output_dir) / 'eval'}; the same command continues it "
                          f"(exit {EXIT_PREEMPTED})", file=sys.stderr, flush=True)
            elif is_main:
                print(f"\nexecution accuracy on the held-out split ({len(eval_rows)} questions):\n"
                      + format_table(summaries), flush=True)
    if not preempted:
        adapter_dir = Path(t.output_dir) / "adapter"
        final = ckpt.step_dir(t.output_dir, state.step) / "adapter"
        if is_main:
            import shutil

            tmp = adapter_dir.with_name(".adapter.tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(final, tmp)
            shutil.rmtree(adapter_dir, ignore_errors=True)
            os.rename(tmp, adapter_dir)
            print(f"\nadapter: {adapter_dir.resolve()}  (checkpoint {final.parent})", flush=True)
        result["adapter"] = str(adapter_dir)
    accelerator.wait_for_everyone()  # before tracker.finish: with W&B it ends the process group (end_training)
    tracker.finish()
    accelerator.end_training()
    return result


COMMAND = Command(
    name="train",
    description="Fine-tune a text-to-SQL model (the recipe in ft/train.py). One process here; several through "
                "`accelerate launch ft/train.py` (or `sqlft train --accelerate-config ...`).",
)


def main(argv: list[str] | None = None) -> int:
    """The recipe's entry point on every process: exit 0 done, 75 stopped by a signal (checkpoint written once
    training had started), 2 bad config or data; with SQLFT_STATUS_DIR set, that code is also written to
    <dir>/rank-<R>.json, where a launcher that can't pass exit codes through (accelerate's) finds it."""
    stop = StopFlag()  # first thing: a stop signal during start-up must not kill the process half-way
    code, step, message = 1, None, None
    try:
        cfg, _ = parse(COMMAND, argv, prog="ft/train.py")
        result = train(resolve(cfg, training=True), stop)
        code, step = (EXIT_PREEMPTED if result["preempted"] else 0), result["step"]
    except (ConfigError, DataError, ModelError, FileNotFoundError) as e:
        code, message = EXIT_USAGE, str(e)
        print(f"error: {e}", file=sys.stderr)
    except Stopped as e:
        code, message = e.code, str(e)
        print(str(e), file=sys.stderr, flush=True)
    except ckpt.CheckpointError as e:
        code, message = 1, str(e)
        print(f"error: {e}", file=sys.stderr, flush=True)
    except SystemExit as e:  # argparse: --help (0) or a usage error (2)
        code = e.code if isinstance(e.code, int) else EXIT_USAGE
    except BaseException as e:
        message = f"{type(e).__name__}: {e}"
        dist.write_exit_status(code, step, message)
        raise
    dist.write_exit_status(code, step, message)
    return code


if __name__ == "__main__":
    sys.exit(main())
