"""Test-suite accuracy, measured: what TS changes against EX on the same answers, and that it rejects nothing right.

    python bench/test_suite.py [--k 8] [--data bundled --split eval] [--predictions runs/X/eval/*_predictions.jsonl]

On every question of the split (no model needed):
  - the suite itself: time to build the neighbours and distil them, neighbours kept per question, questions no
    neighbour judges;
  - near misses: the gold query's mutants that the question's database can't tell from it (EX accepts them), and the
    share of them TS rejects (some mutants are equivalent to the gold query and can never be rejected: an upper bound
    on what TS could catch is not known, so the share is a floor of its catch rate on such mistakes);
  - false rejections: answers equivalent to the gold query (the gold query itself, its operands of = swapped,
    COUNT(*) as COUNT(1), x > y as NOT x <= y, inside a derived table) that EX accepts: TS must accept them all;
  - with --predictions (files `sqlft eval` wrote): EX and TS of those answers, and how many EX counted right that TS
    rejects.
Any Spider-layout folder works as --data (with --format spider --split dev); this machine has no Spider databases.
Writes bench/results/test_suite.json.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).parent))
OUT = REPO / "bench" / "results" / "test_suite.json"


def rewrites(sql: str) -> list[str]:
    """Answers with the gold query's meaning, written otherwise."""
    from sqlglot import exp

    from ft.sql.compare import order_matters
    from ft.sql.parse import DIALECT, parse_one

    out = [sql]
    try:
        tree = parse_one(sql)
    except Exception:  # noqa: BLE001
        return out

    def variant(fn):
        t = tree.copy()
        changed = False
        for node in list(t.walk()):
            new = fn(node)
            if new is not None:
                node.replace(new)
                changed = True
        if changed:
            out.append(t.sql(dialect=DIALECT))

    variant(lambda n: exp.EQ(this=n.expression.copy(), expression=n.this.copy()) if isinstance(n, exp.EQ) else None)
    variant(lambda n: exp.Count(this=exp.Literal.number(1)) if isinstance(n, exp.Count) and isinstance(
        n.this, exp.Star) else None)
    variant(lambda n: exp.Not(this=exp.LTE(this=n.this.copy(), expression=n.expression.copy()))
            if isinstance(n, exp.GT) and isinstance(n.parent, (exp.Where, exp.And)) else None)
    if not order_matters(sql) and not tree.args.get("with_"):
        out.append(f"SELECT * FROM ({sql}) AS sqlft_t")
    return list(dict.fromkeys(out))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--k", type=int, default=8, help="neighbour databases per database (eval.test_suite)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", default="bundled")
    p.add_argument("--format", default="auto")
    p.add_argument("--split", default="eval")
    p.add_argument("--cache", default=None, help="neighbour cache [a fresh folder, so the build is timed]")
    p.add_argument("--predictions", nargs="*", default=[], help="prediction files of `sqlft eval` to rescore")
    p.add_argument("--out", default=str(OUT))
    args = p.parse_args()

    import tempfile

    from train_throughput import machine, versions

    from ft.config import EvalConfig
    from ft.data.sources import load_source
    from ft.eval.output import row_keys
    from ft.eval.scoring import score_one, summarize
    from ft.eval.testsuite import TestSuite
    from ft.sql.compare import order_matters, results_match
    from ft.sql.execute import execute
    from ft.sql.mutants import mutants

    rows = [r for r in load_source(args.data, args.format, args.split, None, "~/.cache/sqlft/data") if r.db_path]
    cache = args.cache or tempfile.mkdtemp(prefix="sqlft-ts-bench-")
    e = EvalConfig(test_suite=args.k, test_suite_seed=args.seed, test_suite_cache=cache)
    suite = TestSuite(e)
    t0 = time.perf_counter()
    stats = suite.prepare(rows, log=lambda m: print(m, flush=True))
    build_s = time.perf_counter() - t0
    print(f"suite: {json.dumps(stats)} in {build_s:.0f}s", flush=True)

    # near misses EX accepts, and equivalent answers
    near = {"accepted_by_ex": 0, "rejected_by_ts": 0}
    equiv = {"answers": 0, "accepted_by_ex": 0, "rejected_by_ts": 0, "examples_rejected": []}
    t0 = time.perf_counter()
    for r in rows:
        gold = execute(r.db_path, r.query, r.macros, timeout_s=20)
        if not gold.ok:
            continue
        ordered = order_matters(r.query)
        for sql in rewrites(r.query):
            p = score_one(r, sql + "\n```", 0.0, 5, 10000, suite=suite)
            equiv["answers"] += 1
            if p.correct:
                equiv["accepted_by_ex"] += 1
                if not p.correct_ts:
                    equiv["rejected_by_ts"] += 1
                    equiv["examples_rejected"].append({"gold": r.query, "answer": sql, "why": p.ts_error})
        for m in mutants(r.query):
            got = execute(r.db_path, m, r.macros, timeout_s=0.5)
            if got.ok and not got.truncated and results_match(gold.rows, got.rows, ordered=ordered):
                near["accepted_by_ex"] += 1
                ok, _ = suite.check(r, m)
                near["rejected_by_ts"] += not ok
    near["share_rejected"] = near["rejected_by_ts"] / max(near["accepted_by_ex"], 1)
    print(f"near misses: {near}\nequivalent answers: { {k: v for k, v in equiv.items() if k != 'examples_rejected'} }"
          f" ({time.perf_counter() - t0:.0f}s)", flush=True)

    rescored = {}
    by_key = dict(zip(row_keys(rows), rows))
    for path in args.predictions:
        preds = []
        for line in Path(path).read_text().splitlines():
            rec = json.loads(line)
            row = by_key.get(rec.get("key"))
            if row is None:
                continue
            preds.append(score_one(row, rec["predicted"] + "\n```", 0.0, 5, 10000, suite=suite,
                                   train_dbs={"sales", "hotels", "hr", "logistics", "finance", "warehouse"}
                                   if args.data == "bundled" else None))
        m = summarize(preds)
        keep = ("n", "ex", "ex_set", "ts", "ts_rejected", "valid")
        rescored[path] = {k: m[k] for k in keep if k in m} | {
            "kinds": {k: {f: v[f] for f in ("n", "ex", "ts", "ts_rejected") if f in v}
                      for k, v in m.get("kinds", {}).items()}}
        print(path, json.dumps(rescored[path]), flush=True)

    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    result = {
        "benchmark": "test_suite", "date": date.today().isoformat(), "commit": commit, "machine": machine(),
        "versions": versions(), "command": "python bench/test_suite.py " + " ".join(sys.argv[1:]),
        "data": {"source": args.data, "split": args.split, "questions": len(rows),
                 "databases": len({r.db_path for r in rows})},
        "settings": {"k": args.k, "seed": args.seed},
        "suite": stats | {"build_and_distil_s": round(build_s, 1)},
        "near_misses": near, "equivalent_answers": equiv, "predictions": rescored,
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
