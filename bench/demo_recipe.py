"""The embedded demo's recipe, chosen by measurement: candidate overrides of configs/demo.yaml run end to end through
the README's main command (`sqlft train`), each timed, with base and fine-tuned execution accuracy on the held-out
questions of the training databases (seen_db, the users' case) and of the databases never trained on (unseen_db).

    python bench/demo_recipe.py                       # every candidate below; results appended as they finish
    python bench/demo_recipe.py --only lr2e-3 --max-eval-rows 112
    python bench/demo_recipe.py --fresh-clone         # the README's main command as a new user runs it (below)
    python bench/demo_recipe.py --fresh-clone --keep runs/demo    # ... and keep its run (adapter) for other benches
    python bench/demo_recipe.py --only budget budget-value-hints      # the time budget, value hints off / on
    python bench/demo_recipe.py --only budget --max-eval-rows 8 --set train.max_minutes=3 --out /tmp/check.json

`--fresh-clone` clones this repository's HEAD into a temporary folder, runs `make setup` there (timed, excluded from
the budget), then times `make train` with HOME pointing at an empty folder, so the dataset is generated and the GGUF
model converted inside the timed run, as on a new machine.

Target (issues 16, 34): within 15 minutes on any 2-core CPU (set-up excluded), fine-tuned EX on seen_db questions
beats the base model's by at least 15 points on at least 64 questions. The demo trains to a time budget
(train.max_minutes in configs/demo.yaml): each record says what the budget planned (steps, seconds a step, the
evaluation's expected time) and how the run's wall time compares with it, and fresh-clone records are kept per CPU
model (they differ from machine to machine; measure on each). Writes bench/results/demo_recipe.json (--out).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "results" / "demo_recipe.json"

# name -> overrides on top of configs/demo.yaml (the held-out size is set by --max-eval-rows for all of them)
CANDIDATES = {
    "demo-20-steps": {},
    "50-steps": {"train.max_steps": 50, "eval.reuse_schema_cache": True, "eval.max_new_tokens": 100},
    "50-steps-lr2e-3": {"train.max_steps": 50, "train.learning_rate": 2e-3, "eval.reuse_schema_cache": True,
                        "eval.max_new_tokens": 100},
    "30-steps-batch4": {"train.max_steps": 30, "train.per_device_batch_size": 4, "eval.reuse_schema_cache": True,
                        "eval.max_new_tokens": 100},
    # 2026-12-02, on a 2-core Xeon with native bf16 (~6 s a step of 2 rows): one row a step, twice the updates for
    # the same examples, and a larger evaluation batch to leave more of the 15 minutes to training. Since then
    # configs/demo.yaml's own settings (these overrides change nothing there).
    "batch1-150-steps": {"train.max_steps": 150, "train.per_device_batch_size": 1, "eval.batch_size": 32},
    # Its held-out loss rose after step 100 (0.181 -> 0.232) while the rate was still high for one-row steps.
    "batch1-150-steps-lr1e-3": {"train.max_steps": 150, "train.per_device_batch_size": 1, "eval.batch_size": 32,
                                "train.learning_rate": 1e-3},
    # The warehouse's linked schemas cut to 320 tokens (the other schemas have 239-315): its questions went one a row
    # (35 % of the rows for 7.5 % of the examples); now 6.0 examples a row instead of 4.7 at the same tokens a row.
    "schema-budget-320": {"train.max_steps": 150, "data.schema_budget": 320},
    # Issue 34: configs/demo.yaml as it is (a time budget, train.max_minutes, instead of 150 steps), and with value
    # hints on, now that they sit in each question's branch and leave the schema's prefix shared.
    "budget": {},
    "budget-value-hints": {"data.value_hints": True},
    # 2026-12-07, the EPYC: the budget plans ~74 steps there (6.2 s a step), half the Xeon's 150; a higher peak rate
    # for the shorter cosine schedule.
    "budget-lr4e-3": {"train.learning_rate": 4e-3},
    # 2026-12-07 evening, the EPYC: LoRA on the bf16 base instead of 4-bit QLoRA (no NF4 dequantization in every
    # forward and backward; and the trained form is then the served one, no 4-bit base to merge away from).
    "budget-lora-bf16": {"quantization.mode": "none"},
}


def kinds(metrics: dict) -> dict:
    return {k: {"n": v.get("n"), "ex": v.get("ex")} for k, v in metrics.get("kinds", {}).items()}


def run(name: str, overrides: dict, max_eval_rows: int) -> dict:
    from train_throughput import machine

    out = REPO / "runs" / f"recipe-{name}"
    shutil.rmtree(out, ignore_errors=True)
    args = {"data.max_eval_rows": max_eval_rows, "train.output_dir": str(out), **overrides}
    cmd = [str(Path(sys.executable).with_name("sqlft")), "train"]
    cmd += [a for k, v in args.items() for a in (f"--{k}", str(v).lower() if isinstance(v, bool) else str(v))]
    t0 = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ | {"WANDB_MODE": "offline"})
    wall = time.time() - t0
    rec = {"name": name, "overrides": overrides, "command": " ".join(cmd[1:]), "exit_code": proc.returncode,
           "wall_s": round(wall, 1), "machine": machine()}
    if proc.returncode != 0:
        return rec | {"error": proc.stderr[-3000:]}
    return summarise(rec | {"max_eval_rows": max_eval_rows}, out)


def fresh_clone(keep: Path | None = None) -> dict:
    """`make setup` then `make train` in a new clone of HEAD, with an empty cache; only `make train` is budgeted.
    `keep`: where the run's folder (runs/demo: adapter, checkpoints, evaluations) is copied before the clone goes."""
    from train_throughput import machine

    rec = {"name": "fresh-clone-make-train", "overrides": {}, "command": "make train",
           "git_commit": subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                                        text=True).stdout.strip(), "machine": machine()}
    with tempfile.TemporaryDirectory(prefix="sqlft-fresh-") as tmp:
        clone, home = Path(tmp) / "sqlft", Path(tmp) / "home"
        home.mkdir()
        subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SQLFT_", "WANDB_"))}
        t0 = time.time()
        setup = subprocess.run(["make", "setup"], cwd=clone, env=env, capture_output=True, text=True)
        rec["setup_s"] = round(time.time() - t0, 1)
        if setup.returncode != 0:
            return rec | {"exit_code": setup.returncode, "error": setup.stderr[-3000:]}
        # An empty HOME for the timed run only (set-up needs the real one for pip's and pyenv's settings): no cached
        # dataset or converted model, so both are made inside the budget, as on a new machine.
        t0 = time.time()
        proc = subprocess.run(["make", "train"], cwd=clone, env=env | {"HOME": str(home)}, capture_output=True,
                              text=True)
        wall = time.time() - t0
        rec |= {"exit_code": proc.returncode, "wall_s": round(wall, 1)}
        if proc.returncode != 0:
            return rec | {"error": proc.stderr[-3000:]}
        run_json = json.loads((clone / "runs" / "demo" / "run.json").read_text())
        rec["compute_dtype"] = run_json["config"]["quantization"]["compute_dtype"]
        rec["load_avg_at_end"] = list(os.getloadavg())  # a busy machine's record says so
        if keep is not None:
            shutil.rmtree(keep, ignore_errors=True)
            shutil.copytree(clone / "runs" / "demo", keep)
        return summarise(rec, clone / "runs" / "demo")


def summarise(rec: dict, out: Path) -> dict:
    """Adds what the run folder `out` holds to `rec` (which has its wall_s): timings, losses, both evaluations."""
    evals = {n: json.loads((out / "eval" / f"{n}_metrics.json").read_text()) for n in ("base", "finetuned")}
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [m["train/loss"] for m in metrics if "train/loss" in m]
    logged = [(m["step"], m["time"]) for m in metrics if "train/loss" in m]
    (s0, t0), (s1, t1) = (logged[0], logged[-1]) if logged else ((0, 0), (0, 0))
    rec |= {
        # Where the wall time went, so runs on machines of different speed can be compared (a step's seconds
        # include the periodic held-out loss and checkpoints).
        "seconds": {"per_step": round((t1 - t0) / (s1 - s0), 2) if s1 > s0 else None,
                    **{f"eval_{n}": round(e["n"] / e["questions_per_s"], 1) for n, e in evals.items()
                       if e.get("questions_per_s")}},
        "examples_seen": next((m["train/examples_seen"] for m in reversed(metrics) if "train/examples_seen" in m),
                              None),
        "train_loss_first_last": [losses[0], losses[-1]] if losses else None,
        "eval_loss_last": next((m["eval/loss"] for m in reversed(metrics) if "eval/loss" in m), None),
        # Both models alike: every figure of the README's demo table comes from here.
        **{n: {k: e.get(k) for k in ("n", "ex", "valid", "hallucination", "questions_per_s")} | {"kinds": kinds(e)}
           for n, e in evals.items()},
    }
    rec |= budget_record(out, rec["wall_s"])
    seen_b = rec["base"]["kinds"].get("seen_db", {}).get("ex") or 0.0
    seen_f = rec["finetuned"]["kinds"].get("seen_db", {}).get("ex") or 0.0
    n_seen = rec["finetuned"]["kinds"].get("seen_db", {}).get("n") or 0
    rec["seen_gain_points"] = round(100 * (seen_f - seen_b), 1)
    rec["meets_target"] = bool(rec["wall_s"] <= 15 * 60 and n_seen >= 64 and seen_f - seen_b >= 0.15)
    return rec


def budget_record(out: Path, wall_s: float) -> dict:
    """What the time budget planned (the newest checkpoint's state.json) and how the run's wall time compares."""
    states = sorted((out / "checkpoints").glob("step-*/state.json"))
    plan = json.loads(states[-1].read_text()).get("budget") if states else None
    if not plan:
        return {}
    budget_s = 60 * plan["max_minutes"]
    return {"budget": {k: round(v, 2) if isinstance(v, float) else v for k, v in plan.items()},
            # the command's wall time (launcher included) against the budget: within 5 % is the aim
            "wall_over_budget": round(wall_s / budget_s, 3)}


def _key(rec: dict) -> tuple:
    """Records replace earlier ones of the same candidate; fresh-clone records are kept per CPU model."""
    cpu = rec.get("machine", {}).get("cpu_model") if rec["name"].startswith("fresh-clone") else None
    return rec["name"], cpu


def _override(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or "." not in key:
        raise argparse.ArgumentTypeError(f"--set {text!r}: expected section.key=VALUE")
    return key, value


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="*", help="candidate names")
    ap.add_argument("--max-eval-rows", type=int, default=112, help="held-out questions (112 -> 64 seen_db here)")
    ap.add_argument("--fresh-clone", action="store_true", help="time `make train` in a new clone (README command)")
    ap.add_argument("--set", type=_override, action="append", default=[], metavar="KEY=VALUE",
                    help="an override on top of every candidate's (e.g. a short train.max_minutes to check the script)")
    ap.add_argument("--keep", type=Path, metavar="DIR", help="with --fresh-clone: copy the run's folder to DIR (its "
                    "adapter for the other benchmarks)")
    ap.add_argument("--out", type=Path, default=OUT, help=f"results file [{OUT.relative_to(REPO)}]")
    args = ap.parse_args()
    sys.path.insert(0, str(REPO / "bench"))
    from train_throughput import machine, versions

    doc = json.loads(args.out.read_text()) if args.out.is_file() else {"benchmark": "demo_recipe", "runs": []}
    doc |= {"machine": machine(), "versions": versions(),
            "target": "fine-tuned seen_db EX - base seen_db EX >= 15 points on >= 64 seen_db questions, "
                      "within 15 minutes of `sqlft train` (set-up excluded; model conversion and data cached for the "
                      "candidates, made inside the timed run for fresh-clone-make-train) on every 2-core CPU "
                      "measured; a time-budgeted run within 5 % of its budget on a quiet machine"}
    if args.fresh_clone:
        jobs = {"fresh-clone-make-train": partial(fresh_clone, args.keep)}
    else:
        jobs = {name: partial(run, name, overrides | dict(args.set), args.max_eval_rows)
                for name, overrides in CANDIDATES.items() if not args.only or name in args.only}
    for name, job in jobs.items():
        rec = job() | {"finished": time.strftime("%Y-%m-%d %H:%M")}
        print(json.dumps(rec), flush=True)
        doc["runs"] = [r for r in doc["runs"] if _key(r) != _key(rec)] + [rec]
        args.out.write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
