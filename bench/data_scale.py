"""Data that outgrows memory: peak RSS and time of `sqlft data stats` and of training set-up, at 50k-1M rows.

    python bench/data_scale.py                                  # 50k, 500k, 1M rows (long: see the record's times)
    python bench/data_scale.py --rows 20000 --out /tmp/x.json  # a quick check
    python bench/data_scale.py --generate 1000000 --to big.jsonl   # only write the generated rows

The measured commands import the code of the checkout this script is in: to keep working while it runs (hours at
1M rows), run it from an export, e.g.
    mkdir /tmp/frozen && git archive HEAD | tar -x -C /tmp/frozen && git rev-parse HEAD > /tmp/frozen/.commit
    ln -s $PWD/.venv /tmp/frozen/
    (cd /tmp/frozen && .venv/bin/python bench/data_scale.py --out $OLDPWD/bench/results/data_scale.json)

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

`peak_anon_mb`: the largest anonymous memory (RSS less file-backed pages) seen, sampled every 0.25 s; peak RSS
also counts the memory-mapped encoded data's pages once read, which the kernel drops under pressure.
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
import shutil
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
BEFORE = "2d1bee5"  # the last commit before the encoded-data cache (in-memory rows and examples)


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


def _child(argv: list[str], env: dict, cwd: str, stop_file: str | None, log_path: Path) -> dict:
    """Run argv; with stop_file, SIGINT its process group once a training step is logged there. Peak RSS of the
    largest process in its tree, and wall time (to the stop, when stopping). Also the peak of its anonymous memory
    (RSS less the file-backed pages: the memory-mapped encoded data and libraries, which the kernel can drop and
    re-read), sampled every 0.25 s: what the rows really cost."""
    import psutil

    def anon_mb(pid: int) -> float:
        try:
            root = psutil.Process(pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return 0.0
        most = 0.0
        for p in procs:
            try:
                m = p.memory_info()
                most = max(most, (m.rss - m.shared) / 2**20)  # Linux: shared = RssFile + RssShmem
            except psutil.NoSuchProcess:
                pass
        return most

    peak_anon = 0.0
    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=cwd, env=env)
        stopped_at = None
        while proc.poll() is None:
            time.sleep(0.25)
            peak_anon = max(peak_anon, anon_mb(proc.pid))
            if stop_file and stopped_at is None and Path(stop_file).is_file() \
                    and "train/loss" in Path(stop_file).read_text():
                stopped_at = time.perf_counter() - t0
                os.killpg(proc.pid, signal.SIGINT)
        rc = proc.wait()
    wall = time.perf_counter() - t0
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # Linux: KiB; the largest waited-for process
    return {"rc": rc, "peak_rss_mb": round(peak_kb / 1024, 1), "peak_anon_mb": round(peak_anon, 1),
            "wall_s": round(wall, 1),
            "to_first_step_s": round(stopped_at, 1) if stopped_at is not None else None}


def measure(kind: str, rows_file: Path, work: Path, extra: list[str], code: Path = REPO) -> dict:
    """One measurement in a fresh subprocess (so getrusage sees only this command's tree), running the code in
    `code` (this checkout, or an export of the commit before the cache for the side-by-side)."""
    env = dict(os.environ, PYTHONPATH=str(code), WANDB_MODE="disabled", TOKENIZERS_PARALLELISM="false")
    sqlft = [str(Path(sys.executable).parent / "sqlft")]
    common = ["--data.source", str(rows_file), "--data.cache_dir", str(work / "cache"), *extra]
    stop_file = None
    if kind.startswith("stats"):
        argv = [*sqlft, "data", "stats", *common]
    else:
        out_dir = work / f"run-{time.time_ns()}"
        argv = [*sqlft, "train", *common, "--train.output_dir", str(out_dir), "--tracking.wandb", "false",
                "--train.log_every", "1", "--eval.at_end", "false"]
        stop_file = str(out_dir / "metrics.jsonl")
    if kind.endswith("_cold"):  # no encoded data yet (the bundled set and the converted model stay)
        shutil.rmtree(work / "cache" / "encoded", ignore_errors=True)
    log_path = work / f"{kind}-{time.time_ns()}.log"
    spec = {"argv": argv, "env": env, "cwd": str(code), "stop_file": stop_file, "log": str(log_path)}
    out = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"measuring {kind} failed: {out.stderr[-2000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    ok = result["rc"] == 0 if kind.startswith("stats") else result["to_first_step_s"] is not None
    if not ok:
        raise SystemExit(f"{kind} on {rows_file} failed (exit {result['rc']}); its output: {log_path}\n"
                         + log_path.read_text(errors="replace")[-3000:])
    result["command"] = " ".join(argv[1:]).replace(str(work), "<work>")
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
    p.add_argument("--kinds", nargs="+", default=["stats_cold", "stats_warm", "train_setup_warm", "train_setup_cold"])
    p.add_argument("--before", default=BEFORE, help="commit of the in-memory path, measured side by side")
    p.add_argument("--before-max-rows", type=int, default=50_000,
                   help="largest row count to run the in-memory path on (it needs ~25 kB a row)")
    p.add_argument("--cold-train-max-rows", type=int, default=50_000,
                   help="largest row count to run train_setup_cold on (its build is the one stats_cold times)")
    p.add_argument("--append", action="store_true", help="add to --out's results (same commit) instead of replacing")
    p.add_argument("--work", default=None, help="folder for the generated rows and caches (default: a temporary one)")
    p.add_argument("--out", default=str(RESULTS / "data_scale.json"))
    p.add_argument("--generate", type=int, help="only write this many rows to --to")
    p.add_argument("--to", help="with --generate: the JSONL file")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args, extra = p.parse_known_args()
    if args.child:
        spec = json.loads(args.child)
        print(json.dumps(_child(spec["argv"], spec["env"], spec["cwd"], spec["stop_file"], Path(spec["log"]))))
        return
    if args.generate:
        print(json.dumps(generate(args.generate, Path(args.to))))
        return
    work = Path(args.work or tempfile.mkdtemp(prefix="data_scale-"))
    work.mkdir(parents=True, exist_ok=True)
    def git(*a) -> str:  # in an exported copy (no .git: see --help), the commit it was exported from
        out = subprocess.run(["git", *a], capture_output=True, text=True, cwd=REPO)
        exported = REPO / ".commit"
        return out.stdout if out.returncode == 0 or not exported.is_file() else exported.read_text()

    before = work / "before"
    if args.before and not before.is_dir():  # a plain export of that commit: no worktree, nothing to clean up
        before.mkdir()
        subprocess.run(f"git archive {args.before} | tar -x -C {before}", shell=True, check=True, cwd=REPO)
    record = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"), "cpu": _cpu(), "cores": os.cpu_count(),
        "commit": git("rev-parse", "HEAD").strip(),
        "dirty": bool(git("status", "--porcelain", "--untracked-files=no").strip()) if (REPO / ".git").exists() else
        "exported copy of the commit (git archive)",
        "before_commit": args.before, "command": " ".join(["python", *sys.argv]), "versions": _versions(),
        # The rows are a user's own file, so the library's defaults apply (ft/config.py), not configs/demo.yaml.
        "config": "the library's defaults for a user's own data (ft/config.py: padded examples, 4 a step, no prefix "
                  "sharing, schema linking off, max_length 1024) + --data.source <generated rows> " + " ".join(extra),
        "kinds": {"stats_cold": "sqlft data stats, no encoded data yet (it is built)",
                  "stats_warm": "sqlft data stats again (the encoded data opened)",
                  "train_setup_warm": "sqlft train (1 process) from start to its first logged step, encoded data there",
                  "train_setup_cold": "the same with no encoded data yet (built by the training process)",
                  "before": f"the same commands on commit {args.before}, the in-memory path (no cache: every run "
                            "loads and encodes)"},
        "note": "peak_rss_mb: the largest process's peak resident set (getrusage RUSAGE_CHILDREN), which does not "
                "depend on the machine's load; wall times do: each is recorded with `uptime` before and after. "
                "Re-run on a quiet machine for timings.",
        "results": [],
    }
    out = Path(args.out)
    if args.append and out.is_file():
        earlier = json.loads(out.read_text())
        if earlier["commit"] != record["commit"]:
            raise SystemExit(f"--append: {out} was measured on {earlier['commit']}, this is {record['commit']}")
        record["results"] = earlier["results"]
        record["appended"] = earlier.get("appended", []) + [{"date": record["date"], "command": record["command"]}]
        record["date"] = earlier["date"]
    for n in args.rows:
        rows_file = work / f"rows-{n}.jsonl"
        t0 = time.perf_counter()
        gen = generate(n, rows_file, cache_dir=str(work / "cache"))
        entry: dict = {"rows": n, "generated": gen | {"seconds": round(time.perf_counter() - t0, 1)}}
        runs = [(k, REPO) for k in args.kinds if k != "train_setup_cold" or n <= args.cold_train_max_rows]
        if args.before and n <= args.before_max_rows:
            runs += [(f"before_{k}", before) for k in ("stats", "train_setup")]
        for kind, code in runs:
            load = _uptime()
            r = measure(kind.removeprefix("before_"), rows_file, work, extra, code)
            r |= {"uptime_before": load, "uptime_after": _uptime(),
                  "peak_rss_kb_per_row": round(r["peak_rss_mb"] * 1024 / n, 2)}
            entry[kind] = r
            print(json.dumps({"rows": n, kind: r}), flush=True)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(record | {"results": [*record["results"], entry]}, indent=2) + "\n")
        if "before_stats" in entry:  # stats_cold -> before_stats, train_setup_warm -> before_train_setup
            entry["rss_ratio_before_over_after"] = {
                k: round(entry[f"before_{k.rsplit('_', 1)[0]}"]["peak_rss_mb"] / entry[k]["peak_rss_mb"], 2)
                for k in args.kinds if k in entry}
        record["results"].append(entry)
        rows_file.unlink()
        out.write_text(json.dumps(record, indent=2) + "\n")  # after each size: a long run keeps what it measured
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
