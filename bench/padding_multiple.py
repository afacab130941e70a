"""Memory over a run's steps with and without rounded batch widths (data.pad_to_multiple_of), side by side.

    python bench/padding_multiple.py [--steps 80] [--multiples 1 64] [--threads 1]

Runs the demo's training (`sqlft train`, the embedded default config: SmolLM2-135M, prefix-shared rows up to 1024
tokens, a held-out loss every 10 steps, checkpoints every 10) for --steps steps once per multiple, all at the same
time (each with --threads threads), so every run sees the same machine; W&B and the final evaluation off, logging
every step. From each run's metrics.jsonl: the process RSS the loop logs (`sys/rss_mb`) at every step, its growth
per step over the second half of the run (a least-squares slope), and the real tokens a second (padding excluded),
so the cost of the added padding shows. Writes bench/results/padding_multiple.json.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
OUT = REPO / "bench" / "results" / "padding_multiple.json"


def slope(xs: list[float], ys: list[float]) -> float:
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def summarise(metrics: Path) -> dict:
    recs = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    steps = [r for r in recs if "sys/rss_mb" in r and "train/loss" in r]
    xs, rss = [r["step"] for r in steps], [r["sys/rss_mb"] for r in steps]
    half = [i for i, s in enumerate(xs) if s > xs[-1] / 2]
    tps = [r["perf/tokens_per_s"] for r in steps[1:]]  # the first window includes start-up
    return {"steps": xs[-1], "rss_mb_first": round(rss[0]), "rss_mb_last": round(rss[-1]),
            "rss_mb_max": round(max(rss)),
            "rss_mb_per_step_second_half": round(slope([xs[i] for i in half], [rss[i] for i in half]), 2),
            "tokens_per_s_median": round(statistics.median(tps), 1),
            "rss_mb_by_step": {str(s): round(v) for s, v in zip(xs, rss)}}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=80)
    p.add_argument("--multiples", type=int, nargs="+", default=[1, 64])
    p.add_argument("--threads", type=int, default=1, help="torch threads per run (the runs go at the same time)")
    p.add_argument("--work", default=None)
    p.add_argument("--out", default=str(OUT))
    args = p.parse_args()
    from train_throughput import machine, versions

    work = Path(args.work or tempfile.mkdtemp(prefix="padding_multiple-"))
    sqlft = str(Path(sys.executable).parent / "sqlft")
    env = dict(os.environ, WANDB_MODE="disabled", PYTHONPATH=str(REPO))
    procs, commands = {}, {}
    started = time.strftime("%Y-%m-%d %H:%M:%S %z")
    for m in args.multiples:
        out = work / f"multiple-{m}"
        argv = [sqlft, "train", "--train.max_minutes", "null", "--train.max_steps", str(args.steps),
                "--train.log_every", "1", "--eval.at_end", "false", "--tracking.wandb", "false",
                "--checkpoint.resume", "none", "--train.cpu_threads", str(args.threads),
                "--data.pad_to_multiple_of", str(m), "--train.output_dir", str(out)]
        commands[m] = " ".join(["sqlft", *argv[1:]]).replace(str(work), "<work>")
        procs[m] = subprocess.Popen(argv, stdout=open(work / f"multiple-{m}.log", "w"), stderr=subprocess.STDOUT,
                                    env=env, cwd=REPO)
    for m, proc in procs.items():
        if proc.wait() != 0:
            raise SystemExit(f"multiple {m} failed (exit {proc.returncode}): see {work}/multiple-{m}.log")
    runs = {str(m): summarise(work / f"multiple-{m}" / "metrics.jsonl") | {"command": commands[m]}
            for m in args.multiples}
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True)
    result = {"benchmark": "padding_multiple", "date": date.today().isoformat(), "started": started,
              "commit": commit.stdout.strip(), "machine": machine(), "versions": versions(),
              "command": "python bench/padding_multiple.py " + " ".join(sys.argv[1:]),
              "data": "the bundled dataset's training split, the demo config (configs/demo.yaml)",
              "threads_per_run": args.threads, "runs_at_once": len(args.multiples), "runs": runs}
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    for m, r in runs.items():
        print(f"multiple {m}: RSS {r['rss_mb_first']} -> {r['rss_mb_last']} MB over {r['steps']} steps, "
              f"{r['rss_mb_per_step_second_half']} MB/step in the second half, {r['tokens_per_s_median']} tokens/s")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
