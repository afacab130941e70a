"""Which form of a fine-tuned model is scored, measured: the same adapter and questions as trained (4-bit base +
adapter, what training's own evaluation scores), as `sqlft eval` once picked on a CPU (16-bit base + adapter, not
merged) and as served (merged into the bf16 base as `sqlft merge` writes it; `sqlft eval`'s default).

    python bench/scored_forms.py --adapter runs/demo/adapter [--questions 112] [--test-suite 8]

Greedy answers, the run's held-out split capped as its config says (seeded), prompts linked to fit as `sqlft eval`
does. Reports EX (and TS with --test-suite), and for every pair of forms how many greedy answers are the same SQL.
Writes bench/results/scored_forms.json.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).parent))
OUT = REPO / "bench" / "results" / "scored_forms.json"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--adapter", required=True)
    p.add_argument("--questions", type=int, default=112)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--test-suite", type=int, default=0)
    p.add_argument("--out", default=str(OUT))
    args = p.parse_args()

    import torch
    from train_throughput import machine, versions

    from ft.config import load_config, resolve
    from ft.data.linking import make_fitter
    from ft.data.sources import load_eval_rows
    from ft.eval.__main__ import load_scored_model
    from ft.eval.scoring import evaluate, test_suite_for
    from ft.inference import load_for_inference, resolve_adapter, run_of

    cfg = load_config(resolve_adapter(args.adapter)[1], {"data.max_eval_rows": args.questions})
    rows = load_eval_rows(cfg.data, cfg.train.seed)
    e = dataclasses.replace(cfg.eval, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens, retries=0,
                            samples=0, constrain=False, test_suite=args.test_suite)
    suite, suite_figures = test_suite_for(e, rows)
    state = run_of(args.adapter)[1]
    train_dbs = set(state.get("train_dbs") or []) or None

    def unmerged_16bit():
        c = resolve(dataclasses.replace(cfg, quantization=dataclasses.replace(cfg.quantization, mode="none")))
        model, tok = load_for_inference(c, args.adapter)
        return model, tok, f"16-bit base ({c.quantization.dtype}) + adapter, not merged"

    forms = {"trained": lambda: load_scored_model(cfg, args.adapter, "trained"),
             "unmerged_16bit": unmerged_16bit,
             "served": lambda: load_scored_model(cfg, args.adapter, "served")}
    results, answers = {}, {}
    for name, load in forms.items():
        model, tok, what = load()
        fit = make_fitter(tok, cfg.data.template, cfg.data, model.config.max_position_embeddings,
                          reserve=e.max_new_tokens)
        torch.manual_seed(0)
        t0 = time.perf_counter()
        preds, m = evaluate(model, tok, rows, e, template=cfg.data.template, train_dbs=train_dbs, suite=suite,
                            prompt_rows=[fit(r) for r in rows], progress=name)
        answers[name] = [p.predicted for p in preds]
        keep = ("n", "ex", "ex_set", "ts", "ts_rejected", "valid", "hallucination")
        results[name] = {"model": what, "wall_s": round(time.perf_counter() - t0, 1)} | {
            k: m[k] for k in keep if k in m} | {"kinds": {k: {f: v[f] for f in ("n", "ex", "ts") if f in v}
                                                           for k, v in m.get("kinds", {}).items()}}
        print(name, json.dumps(results[name]), flush=True)
        del model
    names = list(forms)
    same = {f"{a}_vs_{b}": sum(x == y for x, y in zip(answers[a], answers[b]))
            for i, a in enumerate(names) for b in names[i + 1:]}
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    result = {"benchmark": "scored_forms", "date": date.today().isoformat(), "commit": commit, "machine": machine(),
              "versions": versions(), "command": "python bench/scored_forms.py " + " ".join(sys.argv[1:]),
              "data": {"split": "the adapter's run's held-out split", "questions": len(rows),
                       "seed": cfg.train.seed},
              "settings": {"batch_size": e.batch_size, "max_new_tokens": e.max_new_tokens,
                           "test_suite": args.test_suite},
              "results": results, "same_greedy_sql": same, "test_suite": suite_figures}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
