"""Data that outgrows memory: peak RSS and time of `sqlft data stats` and of training set-up, at 50k-1M rows.

    python bench/data_scale.py                                  # 50k, 500k, 1M rows (long: see the record's times)
    python bench/data_scale.py --rows 20000 --out /tmp/x.json  # a quick check
    python bench/data_scale.py --generate 1000000 --to big.jsonl   # only write the generated rows

Rows are the bundled dataset's training questions and schemas with variation, shaped like SynSQL-2.5M (the set
OmniSQL trains on: ~150 questions per database, a distinct question and gold query per row): each row picks a
bundled question at random and one of n/150 schema variants of its database (a column added to its first table, so
every variant is a distinct schema text and a distinct shared prefix), a question suffix makes it distinct, and a
gold query without LIMIT gets a distinct one (returning the same rows), so the sqlglot check parses every row.
7.5 % of rows are on the 170-table warehouse (an 80 kB schema), as in the bundled set.

Each measurement runs in a subprocess of its own (`python bench/data_scale.py --child ...`) that starts the command
as its child and reports that child's peak RSS (getrusage: the largest process waited for, i.e. per process) and
wall time:

- `stats`: `sqlft data stats` with the demo config (schema_first, prefix sharing, schema linking) on the rows;
  cold (no encoded cache yet: it is built) and warm (cache built by the cold run).
- `train_setup`: `sqlft train` (one process, W&B off) on the same rows, stopped with SIGINT as soon as its first
  optimizer step is logged: set-up (load, check, split, encode or open the cache, plan, model) up to step 1.

RSS does not depend on the machine's load; wall times do (record the `uptime` load printed with them, and re-run
on a quiet machine for timings).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
RESULTS = REPO / "bench" / "results"
ROWS_PER_SCHEMA = 150  # SynSQL-2.5M: 2.5M questions on 16,583 databases


def _variant_schema(schema: str, v: int) -> str:
    """The schema with one more column in its first table: a distinct text (and prefix) per variant."""
    close = schema.index(");")
    return f"{schema[:close]}, note_{v} TEXT{schema[close:]}"


def generate(n: int, out: Path, seed: int = 0, cache_dir: str | None = None) -> dict:
    """n rows shaped like SynSQL from the bundled set, written as JSONL (streamed: never all in memory)."""
    from ft.data.synthetic import ensure_dataset

    folder = Path(ensure_dataset(Path(cache_dir or "~/.cache/sqlft/data").expanduser()))
    base = [json.loads(line) for line in (folder / "train.jsonl").read_text().splitlines() if line.strip()]
    dbs = sorted({r["db_id"] for r in base})
    variants = max(1, n // ROWS_PER_SCHEMA // len(dbs))  # per database
    schemas = {db: next(r["schema"] for r in base if r["db_id"] == db) for db in dbs}
    rng = random.Random(f"data_scale:{seed}")
    out.parent.mkdir(parents=True, exist_ok=True)
    distinct_queries = 0
    with open(out, "w", encoding="utf-8") as f:
        for i in range(n):
            r = base[rng.randrange(len(base))]
            v = rng.randrange(variants)
            query = r["query"]
            if not re.search(r"\bLIMIT\b", query, re.I):
                query = f"{query} LIMIT {1_000_000 + i}"
                distinct_queries += 1
            row = {"question": f"{r['question']} (request {i})", "query": query,
                   "schema": _variant_schema(schemas[r["db_id"]], v), "db_id": f"{r['db_id']}_{v}",
                   "db_path": str((folder / r["db_path"]).resolve()), "difficulty": r["difficulty"]}
            if r.get("macros"):
                row["macros"] = r["macros"]
            f.write(json.dumps(row) + "\n")
    return {"rows": n, "schemas": variants * len(dbs), "rows_with_distinct_query": distinct_queries,
            "bytes": out.stat().st_size, "seed": seed}


# ------------------------------------------------------------------------------------------------ measuring


def _child(argv: list[str], stop_on: str | None, log_path: Path) -> dict:
    """Run argv; with stop_on, SIGINT its process group once that text appears in its output. Peak RSS of the
    largest process in its tree, and wall time (to the stop, when stopping)."""
    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=REPO)
        stopped_at = None
        while proc.poll() is None:
            time.sleep(0.5)
            if stop_on and stopped_at is None and stop_on in log_path.read_text(errors="replace"):
                stopped_at = time.perf_counter() - t0
                os.killpg(proc.pid, signal.SIGINT)
        rc = proc.wait()
    wall = time.perf_counter() - t0
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # Linux: KiB; the largest waited-for process
    return {"rc": rc, "peak_rss_mb": round(peak_kb / 1024, 1), "wall_s": round(wall, 1),
            "to_first_step_s": round(stopped_at, 1) if stopped_at is not None else None}


def measure(kind: str, rows_file: Path, work: Path, extra: list[str]) -> dict:
    """One measurement in a fresh subprocess (so getrusage sees only this command's tree)."""
    env = dict(os.environ, PYTHONPATH=str(REPO), WANDB_MODE="disabled", TOKENIZERS_PARALLELISM="false")
    sqlft = [sys.executable, "-m", "ft.cli"] if not (Path(sys.executable).parent / "sqlft").exists() \
        else [str(Path(sys.executable).parent / "sqlft")]
    common = ["--data.source", str(rows_file), "--data.cache_dir", str(work / "cache"), *extra]
    if kind == "stats":
        argv, stop_on = [*sqlft, "data", "stats", *common], None
    else:
        argv = [*sqlft, "train", *common, "--train.output_dir", str(work / f"run-{time.time_ns()}"),
                "--tracking.wandb", "false", "--train.log_every", "1", "--eval.at_end", "false"]
        stop_on = "train/loss"
    log_path = work / f"{kind}-{time.time_ns()}.log"
    out = subprocess.run([sys.executable, __file__, "--child", json.dumps({"argv": argv, "stop_on": stop_on,
                                                                          "log": str(log_path)})],
                         env=env, capture_output=True, text=True, cwd=REPO)
    if out.returncode != 0:
        raise SystemExit(f"measuring {kind} failed: {out.stderr[-2000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    ok = result["rc"] == 0 if kind == "stats" else result["to_first_step_s"] is not None
    if not ok:
        raise SystemExit(f"{kind} on {rows_file} failed (exit {result['rc']}); its output: {log_path}\n"
                         + log_path.read_text(errors="replace")[-3000:])
    result["command"] = " ".join(argv)
    return result


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def _cpu() -> str:
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    return next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")),
                platform.processor())


def _versions() -> dict:
    import importlib.metadata as md

    return {p: md.version(p) for p in ("torch", "transformers", "datasets", "pyarrow", "tokenizers", "sqlglot")} | {
        "python": platform.python_version()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, nargs="+", default=[50_000, 500_000, 1_000_000])
    p.add_argument("--kinds", nargs="+", default=["stats", "stats_warm", "train_setup"])
    p.add_argument("--work", default=None, help="folder for the generated rows and caches (default: a temporary one)")
    p.add_argument("--out", default=str(RESULTS / "data_scale.json"))
    p.add_argument("--generate", type=int, help="only write this many rows to --to")
    p.add_argument("--to", help="with --generate: the JSONL file")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("extra", nargs="*", help="more overrides for every command, e.g. --data.max_length 512")
    args, unknown = p.parse_known_args()
    if args.child:
        spec = json.loads(args.child)
        print(json.dumps(_child(spec["argv"], spec["stop_on"], Path(spec["log"]))))
        return
    if args.generate:
        print(json.dumps(generate(args.generate, Path(args.to))))
        return
    extra = [*args.extra, *unknown]
    work = Path(args.work or tempfile.mkdtemp(prefix="data_scale-"))
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=REPO).stdout.strip()
    record = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"), "cpu": _cpu(), "cores": os.cpu_count(), "commit": commit,
        "command": " ".join([Path(sys.executable).name, *sys.argv]), "versions": _versions(),
        "config": "configs/demo.yaml defaults (the embedded default) + --data.source <generated rows>" +
                  (f" {' '.join(extra)}" if extra else ""),
        "note": "peak_rss_mb: the largest process's peak resident set (getrusage), which does not depend on the "
                "machine's load; wall times do: each is recorded with `uptime` at its start and end. Re-run on a "
                "quiet machine for timings.",
        "results": [],
    }
    for n in args.rows:
        rows_file = work / f"rows-{n}.jsonl"
        t0 = time.perf_counter()
        gen = generate(n, rows_file, cache_dir=str(work / "cache"))
        entry = {"rows": n, "generated": gen | {"seconds": round(time.perf_counter() - t0, 1)}}
        for kind in args.kinds:
            load = _uptime()
            entry[kind] = measure("stats" if kind.startswith("stats") else "train_setup", rows_file, work, extra)
            entry[kind] |= {"uptime_before": load, "uptime_after": _uptime()}
            entry[kind]["peak_rss_kb_per_row"] = round(entry[kind]["peak_rss_mb"] * 1024 / n, 2)
            print(json.dumps({"rows": n, kind: entry[kind]}), flush=True)
        record["results"].append(entry)
        rows_file.unlink()
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(record, indent=2) + "\n")  # after each size: a long run keeps its part
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
