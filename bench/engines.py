"""The bundled held-out split on SQLite, DuckDB and PostgreSQL: the same questions, answers and scores on each.

    python bench/engines.py [--adapter runs/X/adapter | --model smollm2-135m-instruct] [--pg URL] [--repeats 5]

1. The split's SQLite databases are copied to PostgreSQL (a server this script starts in a temporary folder, as the
   tests do, unless --pg names one) and to DuckDB files (ft/data/copy_db.py, what `sqlft data convert --to-db`
   runs): gold agreement is how many transpiled gold queries return the SQLite rows there.
2. One model's answers (an adapter's, or a base model's; greedy, generated once on the SQLite prompts) are
   transpiled as the gold SQL is and scored on every engine through the evaluation's own path: EX on each, and on
   how many questions the outcome is the same everywhere.
3. Time per executed query (each gold query `--repeats` times, the median per query, then over queries), with what
   one call costs on its own (`SELECT 1`: connecting, the sandbox's checks, a round trip).
4. What voting with N = 8 costs in round trips: 9 candidates per question (the answer, the gold query and 7 more)
   checked as `eval.samples 8` checks them (validation with the engine's EXPLAIN, then execution), plus the gold
   query once; seconds per question on each engine.

Timings need a quiet machine: the load average before and after is recorded with them. Writes
bench/results/engines.json.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "results" / "engines.json"
ENGINES = ("sqlite", "duckdb", "postgres")


def _versions() -> dict:
    import importlib.metadata as md
    import sqlite3

    out = {"sqlite": sqlite3.sqlite_version}
    for pkg in ("duckdb", "psycopg", "sqlglot", "torch", "transformers", "peft"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    return out


def _machine() -> dict:
    import platform

    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")),
                 platform.processor())
    return {"cpu_model": model, "cpus": os.cpu_count(), "platform": platform.platform()}


def _commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=REPO,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


@contextlib.contextmanager
def _postgres(url: str | None):
    """(the URL of an empty database for the copy, the server version): the given server, or one started here."""
    import psycopg

    if url:
        with psycopg.connect(url) as conn:
            version = conn.execute("SHOW server_version").fetchone()[0]
        yield url, version
        return
    sys.path.insert(0, str(REPO / "tests"))
    from pg_server import find_bindir, running_postgres

    bindir = find_bindir()
    if bindir is None:
        sys.exit("no PostgreSQL server binaries (initdb, pg_ctl) found; install postgresql or give --pg URL")
    with running_postgres(bindir) as server:
        url = server.create_database("bench")
        with psycopg.connect(url) as conn:
            version = conn.execute("SHOW server_version").fetchone()[0]
        yield url, version


def _answers(args, rows) -> tuple[list[str], dict]:
    """The model's SQL for every row (SQLite prompts, greedy), and what produced it."""
    if args.answers:
        by_question = {}
        for line in Path(args.answers).read_text().splitlines():
            rec = json.loads(line)
            by_question[rec["question"]] = rec["predicted"]
        return [by_question.get(r.question, "") for r in rows], {"answers_file": args.answers}
    import torch

    from ft.config import load_config, resolve
    from ft.constants import DEFAULT_CONFIG
    from ft.data.linking import make_fitter
    from ft.eval.scoring import evaluate
    from ft.inference import load_for_inference, prefer_unquantized_on_cpu, resolve_adapter

    base = resolve_adapter(args.adapter)[1] if args.adapter else DEFAULT_CONFIG  # the demo's settings (linking)
    overrides = {} if args.adapter else {"model.name_or_path": args.model}
    cfg = load_config(base, overrides)
    note = prefer_unquantized_on_cpu(cfg, explicit=False)
    cfg = resolve(cfg)
    model, tok = load_for_inference(cfg, args.adapter)
    fit = make_fitter(tok, cfg.data.template, cfg.data, model.config.max_position_embeddings, args.max_new_tokens)
    torch.manual_seed(0)
    e = dataclasses.replace(cfg.eval, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens)
    preds, summary = evaluate(model, tok, rows, e, template=cfg.data.template, prompt_rows=[fit(r) for r in rows],
                              progress="answers")
    return [p.predicted for p in preds], {"adapter": args.adapter, "model": cfg.model.name_or_path,
                                          "quantization": cfg.quantization.mode, "note": note,
                                          "sqlite_ex_from_evaluate": summary.get("ex")}


def _percentiles(values: list[float]) -> dict:
    s = sorted(values)
    return {"n": len(s), "p50_ms": round(1000 * statistics.median(s), 3),
            "p95_ms": round(1000 * s[min(len(s) - 1, int(0.95 * len(s)))], 3),
            "mean_ms": round(1000 * statistics.fmean(s), 3)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--adapter", help="the adapter whose answers are scored (default: --model's base model)")
    ap.add_argument("--model", default="smollm2-135m-instruct", help="base model when no --adapter is given")
    ap.add_argument("--answers", help="a predictions JSONL (question, predicted) instead of generating answers")
    ap.add_argument("--pg", help="an empty PostgreSQL database to copy into (default: start a server here)")
    ap.add_argument("--repeats", type=int, default=5, help="runs of each gold query for its time")
    ap.add_argument("--vote-questions", type=int, default=60, help="questions the voting cost is measured on")
    ap.add_argument("--limit", type=int, default=0, help="answer only this many questions (a seeded sample; 0: all); "
                                                          "gold agreement and timings always cover the whole split")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--no-timing", action="store_true", help="agreement and EX only (a busy machine)")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()
    sys.path.insert(0, str(REPO))

    from ft.data.copy_db import copy_rows
    from ft.data.sources import check_rows, load_source
    from ft.eval.scoring import check_answer, gold_result, judge
    from ft.sql.engine import database
    from ft.sql.transpile import to_dialect

    result: dict = {"benchmark": "engines", "date": dt.datetime.now().isoformat(timespec="seconds"),
                    "commit": _commit(), "command": " ".join([sys.executable.rsplit("/", 1)[-1], *sys.argv]),
                    "split": "bundled eval (held-out split, 244 questions, 8 databases)", "machine": _machine(),
                    "versions": _versions(), "load_avg_before": os.getloadavg()}
    rows, _ = check_rows(load_source("bundled", "bundled", "eval"), skip_bad_rows=False)
    answered = sorted(random.Random(0).sample(range(len(rows)), args.limit)) if args.limit else list(range(len(rows)))
    some, result["answers"] = _answers(args, [rows[i] for i in answered])
    answers = [""] * len(rows)  # a question left out gets the gold query as its candidate in the voting timing
    for i, sql in zip(answered, some):
        answers[i] = sql
    with _postgres(args.pg) as (pg_url, pg_version), tempfile.TemporaryDirectory(prefix="sqlft-duck-") as duck_dir:
        result["versions"]["postgresql_server"] = pg_version
        copies, reports = {"sqlite": rows}, {}
        for engine, url in (("duckdb", f"duckdb:///{duck_dir}/bundled"), ("postgres", pg_url)):
            t0 = time.perf_counter()
            copies[engine], reports[engine] = copy_rows(rows, url, log=lambda *_: None)
            summary = reports[engine].to_dict()
            result.setdefault("gold_agreement", {})[engine] = {
                "checked": summary["gold_checked"], "same_rows": summary["gold_agree"],
                "differ_in_tie_order_only": summary["gold_differ_in_tie_order_only"],
                "differ": summary["gold_differ"], "copy_and_check_s": round(time.perf_counter() - t0, 1),
                "cases": [{k: m[k] for k in ("origin", "kind", "why", "gold")} for m in summary["mismatches"]]}
            print(engine, "gold", {k: v for k, v in result["gold_agreement"][engine].items() if k != "cases"},
                  flush=True)

        # 2. the same answers, scored on each engine
        outcomes: dict[str, list[str]] = {}
        for engine in ENGINES:
            golds: dict = {}
            outcomes[engine] = []
            for i in answered:
                src, row, sql = rows[i], copies[engine][i], answers[i]
                types = reports[engine].types.get((src.db_id or "").lower()) if engine != "sqlite" else None
                try:
                    text = to_dialect(sql, engine, types) if engine != "sqlite" else sql
                except ValueError:
                    text = sql  # the engine then judges it as written (usually invalid, as on SQLite)
                p = judge(row, check_answer(row, text + "\n```", 5, 10000), gold_result(row, 5, 10000, golds))
                outcomes[engine].append(p.outcome)
        n = len(answered)
        same = sum(len({outcomes[e][k] for e in ENGINES}) == 1 for k in range(n))
        result["answers_scored"] = {
            "ex": {e: round(sum(o == "correct" for o in outcomes[e]) / n, 4) for e in ENGINES},
            "outcomes": {e: {k: outcomes[e].count(k) for k in sorted(set(outcomes[e]))} for e in ENGINES},
            "same_outcome_on_all_engines": same, "questions": n,
            "differing": [{"question": rows[i].question, "sql": answers[i], **{e: outcomes[e][k] for e in ENGINES}}
                          for k, i in enumerate(answered) if len({outcomes[e][k] for e in ENGINES}) > 1]}
        print("answers", {k: v for k, v in result["answers_scored"].items() if k != "differing"}, flush=True)

        # 3 and 4. timings
        if not args.no_timing:
            timing: dict = {}
            for engine in ENGINES:
                db_rows = copies[engine]
                per_query = []
                for row in db_rows:
                    db = database(row.db)
                    runs = []
                    for _ in range(args.repeats):
                        t0 = time.perf_counter()
                        db.execute(row.query, row.macros, timeout_s=30, max_rows=10000)
                        runs.append(time.perf_counter() - t0)
                    per_query.append(statistics.median(runs))
                one = database(db_rows[0].db)
                calls = []
                for _ in range(50):
                    t0 = time.perf_counter()
                    one.execute("SELECT 1", db_rows[0].macros)
                    calls.append(time.perf_counter() - t0)
                vote = []
                for i, (src, row) in enumerate(zip(rows[:args.vote_questions], db_rows)):
                    types = reports[engine].types.get((src.db_id or "").lower()) if engine != "sqlite" else None
                    answer = answers[i] if answers[i] and _transpiles(answers[i], engine, types) else src.query
                    texts = [to_dialect(c, engine, types) if engine != "sqlite" else c
                             for c in [answer, src.query] + [answer] * 7]
                    t0 = time.perf_counter()
                    for t in texts:
                        check_answer(row, t + "\n```", 5, 10000)
                    gold_result(row, 5, 10000)
                    vote.append(time.perf_counter() - t0)
                timing[engine] = {"gold_query": _percentiles(per_query), "one_call_select_1": _percentiles(calls),
                                  "vote_n8_per_question": _percentiles(vote)}
                print(engine, "timing", timing[engine], flush=True)
            base = timing["sqlite"]
            for engine in ENGINES:
                timing[engine]["ratio_to_sqlite"] = {
                    k: round(timing[engine][k]["mean_ms"] / base[k]["mean_ms"], 2)
                    for k in ("gold_query", "one_call_select_1", "vote_n8_per_question")}
            result["timing"] = timing
    result["load_avg_after"] = os.getloadavg()
    Path(args.out).write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"wrote {args.out}")
    return 0


def _transpiles(sql: str, engine: str, types) -> bool:
    from ft.sql.transpile import to_dialect

    if engine == "sqlite":
        return True
    try:
        to_dialect(sql, engine, types)
        return True
    except ValueError:
        return False


if __name__ == "__main__":
    sys.exit(main())
