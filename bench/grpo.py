"""GRPO on SmolLM2-135M (the demo model), CPU: step time with shared prompts against unshared, and (given an SFT
adapter) K GRPO steps against continuing SFT for the same CPU time.

    python bench/grpo.py steps                            # step time, shared vs unshared (minutes)
    python bench/grpo.py steps --steps 3 --group-size 8 --prompts 2 --max-new-tokens 64
    python bench/grpo.py compare --adapter runs/demo      # GRPO vs more SFT from the same adapter (an hour or more)

`steps`: each step samples grpo.group_size completions for each of --prompts bundled training questions
(ft.grpo.Rollout: one prompt pass, LoRA on), rewards them by execution, then times the update (forward + backward of
the GRPO loss) on the same completions twice, interleaved: shared prompts (one row per prompt, its completions as
branches under the tree mask) and unshared (one row per completion, the prompt repeated). Every completion is
trained in both (a group whose rewards are all equal gets stand-in advantages: the timing is of the layout, not of
what a step happens to skip); the optimizer is not stepped, so both run on the same weights. Also: the largest
difference between the two layouts' per-token log-probabilities on the real model. Seconds are wall and CPU time of
this process with one torch thread by default (other jobs on the machine change the first, hardly the second).
Results: bench/results/grpo.json (machine, versions, settings, per-step figures, means).

`compare` (needs an SFT adapter, e.g. the demo's: `sqlft train`): from the same adapter, (a) K GRPO steps, (b) SFT
continued for the same wall time (stopped by SIGUSR1: it checkpoints and exits 75), both through ft/train.py, then
execution accuracy of the start, GRPO and SFT adapters on the bundled held-out split (unseen questions on the
training databases and two unseen databases), greedy and voted (eval.samples): bench/results/grpo_vs_sft.json.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
RESULTS = REPO / "bench" / "results"
DEMO = REPO / "configs" / "demo.yaml"


def machine() -> dict:
    import torch
    import transformers

    import ft.system as system

    return {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
            "transformers": transformers.__version__, "threads": torch.get_num_threads(),
            "fastest_dtype": str(system.fastest_dtype()), "loadavg_start": os.getloadavg()}


def _clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def _since(t) -> dict:
    w, c = _clock()
    return {"wall_s": w - t[0], "cpu_s": c - t[1]}


# ------------------------------------------------------------------------------------------------
# step time: shared prompts vs unshared


def recipe_setup(overrides: dict):
    """The recipe's own setup (ft.train.setup) of the demo config with `overrides`, the GRPO objective, in a temporary
    output folder: accelerator, tokenizer, the prompts' plan, the model with LoRA, the sampler."""
    import tempfile

    from ft.config import load_config, resolve
    from ft.train import setup

    base = {"train.objective": "grpo", "model.gradient_checkpointing": "false", "tracking.wandb": "false",
            "eval.at_end": "false", "train.output_dir": tempfile.mkdtemp(prefix="bench-grpo-")}
    return setup(resolve(load_config(DEMO, base | overrides), training=True))


def steps(args) -> dict:
    import torch

    from ft import grpo
    from ft.objectives.base import backward_window

    overrides = {"quantization.mode": args.quantization, "quantization.compute_dtype": args.dtype,
                 "quantization.dtype": args.dtype, "grpo.group_size": str(args.group_size),
                 "grpo.max_new_tokens": str(args.max_new_tokens), "train.per_device_batch_size": str(args.prompts)}
    if args.adapter:
        overrides["model.adapter"] = args.adapter
    run = recipe_setup(overrides)
    cfg, acc, tok, model, attn, plan = run.cfg, run.accelerator, run.tokenizer, run.model, run.attn, run.plan
    rollout, rows = run.objective.rollout, run.objective.rows
    model.train()
    g = cfg.grpo
    per_step = []
    for step in range(args.steps):
        prompts = [rows[i] for row in plan.step_batches(0, step, 0)[0] for i in row]
        t = _clock()
        groups = rollout.sample(prompts, grpo.rollout_seed(cfg.train.seed, step, 0))
        gen = _since(t)
        t = _clock()
        rollout.score(groups)
        rew = _since(t)
        zero_variance = sum(not grp.active for grp in groups)
        stand_in = torch.Generator().manual_seed(step)
        for grp in groups:  # train every completion in both layouts (see the docstring)
            if not grp.active:
                for c in grp.completions:
                    c.advantage = float(torch.randn((), generator=stand_in))
        batches = {mode: grpo.collate_groups(groups, tok.pad_token_id, attn, shared=mode == "shared")
                   for mode in ("shared", "unshared")}
        with torch.no_grad():
            model.eval()
            lp = {m: grpo.target_logprobs(model, b, g.temperature) for m, b in batches.items()}
            model.train()
        order = ("shared", "unshared") if step % 2 == 0 else ("unshared", "shared")
        update = {}
        for mode in order:
            model.zero_grad(set_to_none=True)
            t = _clock()
            loss_sum, n, _ = backward_window(model, acc, [batches[mode]], grpo.PolicyLoss(g.clip_eps, 0.0,
                                                                                           g.temperature))
            update[mode] = _since(t) | {"tokens": int(batches[mode]["tokens"]), "rows": int(batches[mode][
                "input_ids"].shape[0]), "width": int(batches[mode]["input_ids"].shape[1]), "loss_sum": loss_sum}
        model.zero_grad(set_to_none=True)
        comps = [c for grp in groups for c in grp.completions]
        rec = {"step": step, "generation": gen, "rewards": rew, "update": update,
               "completion_tokens_mean": statistics.fmean(len(c.ids) for c in comps),
               "prompt_tokens_mean": statistics.fmean(len(grp.prompt) for grp in groups),
               "reward_mean": statistics.fmean(c.reward for c in comps),
               "sample_ex": statistics.fmean(c.correct for c in comps), "zero_variance_groups": zero_variance,
               "max_abs_logprob_diff": float((lp["shared"] - lp["unshared"]).abs().max())}
        for mode in ("shared", "unshared"):
            rec[f"step_{mode}"] = {k: gen[k] + rew[k] + update[mode][k] for k in ("wall_s", "cpu_s")}
        per_step.append(rec)
        print(json.dumps({k: rec[k] for k in ("step", "step_shared", "step_unshared", "max_abs_logprob_diff")}),
              flush=True)

    def mean(f):
        return statistics.fmean(f(r) for r in per_step)

    summary = {
        "generation_cpu_s": mean(lambda r: r["generation"]["cpu_s"]),
        "rewards_cpu_s": mean(lambda r: r["rewards"]["cpu_s"]),
        "update_shared_cpu_s": mean(lambda r: r["update"]["shared"]["cpu_s"]),
        "update_unshared_cpu_s": mean(lambda r: r["update"]["unshared"]["cpu_s"]),
        "step_shared_cpu_s": mean(lambda r: r["step_shared"]["cpu_s"]),
        "step_unshared_cpu_s": mean(lambda r: r["step_unshared"]["cpu_s"]),
        "step_shared_wall_s": mean(lambda r: r["step_shared"]["wall_s"]),
        "step_unshared_wall_s": mean(lambda r: r["step_unshared"]["wall_s"]),
        "update_tokens_shared": mean(lambda r: r["update"]["shared"]["tokens"]),
        "update_tokens_unshared": mean(lambda r: r["update"]["unshared"]["tokens"]),
        "max_abs_logprob_diff": max(r["max_abs_logprob_diff"] for r in per_step),
    }
    summary["update_speedup"] = summary["update_unshared_cpu_s"] / summary["update_shared_cpu_s"]
    if args.fp32_check:
        summary["fp32_check"] = fp32_check(rows[0], args)
    summary["step_speedup"] = summary["step_unshared_cpu_s"] / summary["step_shared_cpu_s"]
    settings = {"model": cfg.model.name_or_path, "quantization": cfg.quantization.mode,
                "compute_dtype": cfg.quantization.compute_dtype, "weights_dtype": cfg.quantization.dtype,
                "attention": attn, "lora_r": cfg.lora.r,
                "lora_targets": cfg.lora.target_modules, "adapter": args.adapter, "prompts_per_step": args.prompts,
                "group_size": g.group_size, "max_new_tokens": g.max_new_tokens, "temperature": g.temperature,
                "top_p": g.top_p, "template": cfg.data.template, "steps": args.steps}
    return {"settings": settings, "summary": summary, "per_step": per_step}


def fp32_check(row, args) -> dict:
    """The real model in float32: per-token log-probabilities of one prompt's completions in the shared layout, the
    unshared one, and each [prompt + completion] alone (a plain forward): the bf16 run's differences are rounding."""
    import torch

    from ft import grpo

    run = recipe_setup({"quantization.mode": "none", "quantization.compute_dtype": "float32",
                        "quantization.dtype": "float32", "grpo.group_size": "4", "grpo.max_new_tokens": "32"})
    tok, model, attn, rollout = run.tokenizer, run.model.eval(), run.attn, run.objective.rollout
    groups = rollout.sample([row], 0)
    for k, c in enumerate(groups[0].completions):
        c.advantage = 1.0 + k
    with torch.no_grad():
        lp = {m: grpo.target_logprobs(model, grpo.collate_groups(groups, tok.pad_token_id, attn, shared=m == "shared"))
              for m in ("shared", "unshared")}
        alone = []
        for c in groups[0].completions:
            ids = torch.tensor([groups[0].prompt + c.ids])
            logp = model(input_ids=ids, use_cache=False).logits[0].float().log_softmax(-1)
            p = len(groups[0].prompt)
            alone.append(logp[p - 1:-1].gather(-1, torch.tensor(c.ids)[:, None]).squeeze(-1))
        alone = torch.cat(alone)
    return {"completions": len(groups[0].completions), "tokens": int(alone.numel()),
            "max_abs_diff_shared_vs_alone": float((lp["shared"] - alone).abs().max()),
            "max_abs_diff_unshared_vs_alone": float((lp["unshared"] - alone).abs().max())}


# ------------------------------------------------------------------------------------------------
# K GRPO steps vs continuing SFT for the same time, from the same adapter


def _train(args_list: list[str], log: Path, stop_after_s: float | None = None) -> dict:
    """ft/train.py in a subprocess; with stop_after_s, SIGUSR1 then (checkpoint, exit 75). Wall and CPU seconds."""
    import resource

    t0, cpu0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, str(REPO / "ft" / "train.py"), *args_list], stdout=out,
                                stderr=subprocess.STDOUT, cwd=REPO)
        if stop_after_s is not None:
            try:
                proc.wait(timeout=stop_after_s)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGUSR1)
        proc.wait()
    cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"exit": proc.returncode, "wall_s": time.perf_counter() - t0,
            "cpu_s": cpu.ru_utime + cpu.ru_stime - cpu0.ru_utime - cpu0.ru_stime}


def _evaluate(adapter: str | None, args) -> dict:
    import torch

    from ft.config import load_config, resolve
    from ft.data.linking import make_fitter
    from ft.data.sources import load_splits
    from ft.eval.scoring import evaluate
    from ft.inference import load_for_inference

    overrides = {"quantization.mode": "none", "data.max_eval_rows": str(args.eval_rows)}
    cfg = resolve(load_config(DEMO, overrides))
    model, tok = load_for_inference(cfg, adapter, device="cpu")
    train_rows, rows, _ = load_splits(cfg.data, cfg.train.seed)  # the demo's held-out split, capped at eval_rows
    e = cfg.eval
    # Prompts linked to fit as `sqlft eval` does (the warehouse's whole DDL is 24k tokens: 16 of them ran out of
    # memory here).
    fit = make_fitter(tok, cfg.data.template, cfg.data, model.config.max_position_embeddings, e.max_new_tokens)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    _, summary = evaluate(model, tok, rows, dataclasses.replace(e, samples=args.vote_samples, retries=0),
                          template=cfg.data.template, train_dbs={r.db_id for r in train_rows if r.db_id},
                          prompt_rows=[fit(r) for r in rows])
    voted = args.vote_samples > 0  # without samples the summary's ex is the greedy answer's
    keep = ("n", "valid", "vote_changed", "vote_helped", "vote_hurt", "valid_candidates", "agreement", "kinds")
    return {k: summary[k] for k in keep if k in summary} | {
        "ex_greedy": summary["ex_greedy"] if voted else summary["ex"], "ex_voted": summary["ex"] if voted else None,
        "wall_s": round(time.perf_counter() - t0, 1)}


def compare(args) -> dict:
    from ft.inference import resolve_adapter

    start = str(resolve_adapter(args.adapter)[0])
    out = Path(args.work)
    out.mkdir(parents=True, exist_ok=True)
    if args.reuse_runs:  # evaluate the adapters an earlier compare trained in --work (its timings are in its logs)
        return _evaluate_all(args, start, {"reused": str(out / "grpo.log")}, {"reused": str(out / "sft.log")})
    common = ["--config", str(DEMO), "--model.adapter", start, "--eval.at_end", "false", "--tracking.wandb",
              "false", "--checkpoint.resume", "none", "--train.lr_scheduler", "constant", "--train.warmup_steps",
              "0", "--data.max_eval_rows", "8", "--quantization.mode", args.quantization]
    grpo_run = _train(common + ["--train.objective", "grpo", "--train.output_dir", str(out / "grpo"),
                                "--train.max_steps", str(args.grpo_steps), "--train.learning_rate",
                                str(args.grpo_lr), "--train.per_device_batch_size", str(args.prompts),
                                "--grpo.group_size", str(args.group_size), "--grpo.max_new_tokens",
                                str(args.max_new_tokens), "--checkpoint.every", str(args.grpo_steps)],
                      out / "grpo.log")
    if grpo_run["exit"] != 0:  # nothing to compare: say why instead of training SFT for no reason
        sys.exit(f"the GRPO run failed (exit {grpo_run['exit']}): see {out / 'grpo.log'}")
    sft_run = _train(common + ["--train.output_dir", str(out / "sft"), "--train.max_steps", "100000",
                               "--train.learning_rate", str(args.sft_lr), "--train.seed", "7",
                               "--checkpoint.every", "0"], out / "sft.log", stop_after_s=grpo_run["wall_s"])
    return _evaluate_all(args, start, grpo_run, sft_run)


def _evaluate_all(args, start: str, grpo_run: dict, sft_run: dict) -> dict:
    out = Path(args.work)
    sft_ckpts = sorted((out / "sft" / "checkpoints").glob("step-*"))
    adapters = {"start": start, "grpo": str(out / "grpo" / "adapter"),
                "sft": str(sft_ckpts[-1] / "adapter") if sft_ckpts else None}
    result = {"settings": {k: v for k, v in vars(args).items() if k != "func"}, "grpo_run": grpo_run,
              "sft_run": sft_run, "sft_steps": int(sft_ckpts[-1].name.split("-")[1]) if sft_ckpts else 0,
              "adapters": adapters, "eval": {}, "complete": False}
    metrics = out / "grpo" / "metrics.jsonl"  # what the GRPO run saw: rewards, sample EX, zero-variance groups
    if metrics.is_file():
        result["grpo_metrics"] = [{k: v for k, v in json.loads(line).items() if k.startswith("grpo/") or k == "step"}
                                  for line in metrics.read_text().splitlines() if "grpo/" in line]
    for name, path in adapters.items():  # the evaluations take longest: keep each as it is done
        if path:
            result["eval"][name] = _evaluate(path, args)
            Path(args.out).write_text(json.dumps(result, indent=1, default=str) + "\n")
    result["complete"] = True
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: CPU seconds measure the work)")
    sub = ap.add_subparsers(dest="mode")
    s = sub.add_parser("steps", help="step time with shared prompts against unshared")
    s.add_argument("--steps", type=int, default=3)
    s.add_argument("--prompts", type=int, default=2, help="prompts per step")
    s.add_argument("--group-size", type=int, default=8)
    s.add_argument("--max-new-tokens", type=int, default=64)
    s.add_argument("--quantization", default="none", choices=["none", "4bit"],
                   help="none: fp32 LoRA here (4-bit generation on a CPU is several times slower)")
    s.add_argument("--dtype", default="auto", choices=["auto", "bfloat16", "float32"],
                   help="weights and compute (auto: bf16 where the CPU computes it natively, as the demo)")
    s.add_argument("--no-fp32-check", dest="fp32_check", action="store_false",
                   help="skip the float32 check that the shared layout gives the unshared log-probabilities")
    s.add_argument("--adapter", default=None, help="start from this LoRA adapter (default: a fresh one = the base)")
    s.add_argument("--out", default=str(RESULTS / "grpo.json"))
    c = sub.add_parser("compare", help="K GRPO steps vs continuing SFT for the same time, EX greedy and voted")
    c.add_argument("--adapter", required=True, help="the SFT adapter both start from (adapter, checkpoint or run)")
    c.add_argument("--quantization", default="none", choices=["none", "4bit"],
                   help="both runs' base model (none: bf16/fp32 LoRA, several times faster than 4-bit on a CPU)")
    c.add_argument("--grpo-steps", type=int, default=20)
    c.add_argument("--grpo-lr", type=float, default=5e-5)
    c.add_argument("--sft-lr", type=float, default=2e-4)
    c.add_argument("--prompts", type=int, default=2)
    c.add_argument("--group-size", type=int, default=8)
    c.add_argument("--max-new-tokens", type=int, default=128)
    c.add_argument("--eval-rows", type=int, default=96)
    c.add_argument("--vote-samples", type=int, default=8)
    c.add_argument("--work", default=str(REPO / "runs" / "bench-grpo"))
    c.add_argument("--reuse-runs", action="store_true", help="evaluate the runs already trained in --work")
    c.add_argument("--out", default=str(RESULTS / "grpo_vs_sft.json"))
    args = ap.parse_args(argv)
    if args.mode is None:
        args = ap.parse_args(["steps", *(argv or sys.argv[1:])])
    import torch

    torch.set_num_threads(args.threads)
    result = {"machine": machine()}
    result |= steps(args) if args.mode == "steps" else compare(args)
    result["machine"]["loadavg_end"] = os.getloadavg()
    RESULTS.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1, default=str) + "\n")
    print(json.dumps(result.get("summary") or result.get("eval"), indent=1, default=str))
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
