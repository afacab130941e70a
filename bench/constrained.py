"""Identifier constraints while decoding (eval.constrain, ft.sql.constrain), measured: does limiting tables and
columns to the schema's names pay for its time?

    python bench/constrained.py --adapter runs/X/adapter [--questions 112] [--samples 0]

On the bundled held-out split with a trained adapter, batch by batch, the same batch is evaluated unconstrained and
constrained, alternating which goes first (so a noisy machine slows both alike): EX (seen_db / unseen_db), valid
SQL, hallucinated names, seconds per question, tokens the constraint masked, and how often it changed the answer
and whether that helped or hurt. Also: how many gold queries of the bundled data (and Spider's training questions,
../shared/data/spider, when present) the guard would have blocked: a constraint that blocks right answers costs
accuracy. Writes bench/results/constrained.json.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
OUT = REPO / "bench" / "results" / "constrained.json"
SPIDER = (REPO / ".." / "shared" / "data" / "spider").resolve()


def gold_blocked(rows) -> dict:
    """Gold queries some prefix of which the guard rejects (each prefix of the text, character by character)."""
    from ft.sql.constrain import IdentifierGuard

    blocked, checks, t0 = [], 0, time.perf_counter()
    for r in rows:
        guard, q = IdentifierGuard.from_ddl(r.schema), r.query.strip().rstrip(";")
        for k in range(1, len(q) + 1):
            checks += 1
            if not guard.ok(q[:k]):
                blocked.append({"db_id": r.db_id, "query": q, "blocked_at": q[:k][-40:]})
                break
    return {"queries": len(rows), "blocked": len(blocked), "examples": blocked[:5], "checks": checks,
            "us_per_check": round(1e6 * (time.perf_counter() - t0) / max(checks, 1), 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--adapter", required=True)
    ap.add_argument("--questions", type=int, default=112)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=100)
    ap.add_argument("--samples", type=int, default=0, help="also vote over N samples (both arms)")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()
    sys.path.insert(0, str(REPO / "bench"))
    from train_throughput import machine, versions
    from voting import held_out

    from ft.data.sources import load_source
    from ft.eval.scoring import evaluate, summarize

    result: dict = {"benchmark": "constrained_decoding", "date": time.strftime("%Y-%m-%d"), "machine": machine(),
                    "versions": versions()}
    bundled = [r for s in ("train", "eval") for r in load_source("bundled", "bundled", s)]
    result["gold_blocked"] = {"bundled": gold_blocked(bundled)}
    if (SPIDER / "train_spider.json").is_file():
        result["gold_blocked"]["spider_train"] = gold_blocked(load_source(str(SPIDER), "spider", split="train_spider"))
    print(json.dumps(result["gold_blocked"], indent=1), flush=True)

    cfg, note, rows, prompts, model, tok, state, train_dbs = held_out(args.adapter, args.questions,
                                                                      args.max_new_tokens)
    e = cfg.eval
    result["settings"] = {"adapter": args.adapter, "questions": len(rows), "batch_size": args.batch_size,
                          "max_new_tokens": args.max_new_tokens, "samples": args.samples, "top_k_checked": 8,
                          "quantization": cfg.quantization.mode, "note": note, "step": state.get("step")}
    preds: dict[str, list] = {"unconstrained": [], "constrained": []}
    seconds = {"unconstrained": 0.0, "constrained": 0.0}
    masked = 0
    for b, s in enumerate(range(0, len(rows), args.batch_size)):
        arms = ["unconstrained", "constrained"][:: 1 if b % 2 == 0 else -1]
        for arm in arms:
            torch.manual_seed(b)
            t0 = time.perf_counter()
            p, m = evaluate(model, tok, rows[s:s + args.batch_size],
                            dataclasses.replace(e, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
                                                samples=args.samples, retries=0, constrain=arm == "constrained"),
                            template=cfg.data.template, train_dbs=train_dbs,
                            prompt_rows=prompts[s:s + args.batch_size])
            seconds[arm] += time.perf_counter() - t0
            preds[arm] += p
            masked += m.get("constrain_masked_tokens", 0)
        print(f"batch {b}: " + ", ".join(f"{a} EX {sum(x.correct for x in preds[a])}/{len(preds[a])}"
                                         for a in preds), flush=True)
    keep = ("n", "ex", "valid", "hallucination", "ex_greedy", "questions_per_s")
    for arm, p in preds.items():
        m = summarize(p)
        result[arm] = {k: m[k] for k in keep if k in m} | {
            "kinds": {k: {"n": v["n"], "ex": v.get("ex")} for k, v in m.get("kinds", {}).items()},
            "seconds_per_question": round(seconds[arm] / len(p), 3)}
    changed = [(a, c) for a, c in zip(preds["unconstrained"], preds["constrained"]) if a.predicted != c.predicted]
    result["effect"] = {
        "answers_changed": len(changed), "helped": sum(c.correct and not a.correct for a, c in changed),
        "hurt": sum(a.correct and not c.correct for a, c in changed), "tokens_masked": masked,
        "time_ratio_constrained_over_unconstrained": round(seconds["constrained"] / seconds["unconstrained"], 3),
        "ex_points": round(100 * (result["constrained"]["ex"] - result["unconstrained"]["ex"]), 1)}
    Path(args.out).write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(json.dumps({k: result[k] for k in ("unconstrained", "constrained", "effect")}, indent=1, default=str))
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
