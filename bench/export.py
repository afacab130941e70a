"""Export: sizes and times, GGUF vs merged logits and greedy SQL, and EX of the q8_0 GGUF vs the merged model.

    python bench/export.py --run runs/demo [--questions 32] [--types f16 q8_0] [--eval-questions 32]

1. `sqlft export RUN --out <work>/exported --gguf f16 --gguf q8_0` (timed; file sizes);
2. the merged folder and each GGUF file loaded by transformers (the GGUF through its own GGUF loader), all in
   float32, on the first --questions prompts of the run's held-out split (schemas linked as `sqlft eval` links them):
   the next-token logits at the end of each prompt (max and mean absolute difference, relative to the largest
   logit, and how often the top token agrees), and greedy SQL from ft.eval.generation (identical answers);
3. with --eval-questions N: `sqlft eval --config <export>/sqlft.yaml` on the merged model and with `--model
   <export>/gguf/model-q8_0.gguf` (eval reads a GGUF file itself) on the same N held-out questions: EX, valid SQL.
Writes bench/results/export.json (the machine, load average, commit, command, versions with every figure). Times
need a quiet machine; logits, agreement and EX do not depend on load.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from train_throughput import machine, versions  # noqa: E402


def commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def sqlft(*args: str) -> tuple[float, subprocess.CompletedProcess]:
    env = os.environ | {"PYTHONPATH": str(REPO)}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "ft.cli", *args], capture_output=True, text=True, cwd=REPO, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"sqlft {' '.join(args)} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return time.perf_counter() - t0, proc


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="run folder, adapter or checkpoint")
    ap.add_argument("--work", default="runs/bench-export", help="where the export and evaluations go")
    ap.add_argument("--types", nargs="+", default=["f16", "q8_0"])
    ap.add_argument("--questions", type=int, default=32, help="held-out prompts for logits and greedy SQL")
    ap.add_argument("--max-new-tokens", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--eval-questions", type=int, default=0, help="also `sqlft eval` merged vs q8_0 on N questions")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "export.json"))
    args = ap.parse_args()

    import torch
    from transformers import AutoModelForCausalLM

    from ft.config import load_config, resolve
    from ft.data.linking import make_fitter
    from ft.data.prompt import prompt_ids, sql_from_output
    from ft.data.sources import load_eval_rows
    from ft.eval.generation import Generator
    from ft.model import load_tokenizer

    start, head = machine(), commit()
    work = Path(args.work)
    export_dir = work / "exported"
    gguf_args = [a for t in args.types for a in ("--gguf", t)]
    export_s, _ = sqlft("export", args.run, "--out", str(export_dir), *gguf_args)
    sizes = {str(p.relative_to(export_dir)): p.stat().st_size for p in export_dir.rglob("*") if p.is_file()}
    print(f"export: {export_s:.1f} s; " + ", ".join(f"{k} {v / 2**20:.1f} MiB" for k, v in sorted(sizes.items())),
          flush=True)

    cfg = resolve(load_config(export_dir / "sqlft.yaml", {"model.name_or_path": str(export_dir.resolve())}))
    tok = load_tokenizer(str(export_dir))
    rows = load_eval_rows(cfg.data, cfg.train.seed)[: args.questions]

    def load(which: str):
        t0 = time.perf_counter()
        if which == "merged":
            m = AutoModelForCausalLM.from_pretrained(str(export_dir), dtype=torch.float32)
        else:
            m = AutoModelForCausalLM.from_pretrained(str(export_dir / "gguf"), gguf_file=f"model-{which}.gguf",
                                                     dtype=torch.float32)
        return m.eval(), time.perf_counter() - t0

    merged, merged_load_s = load("merged")
    fit = make_fitter(tok, cfg.data.template, cfg.data, merged.config.max_position_embeddings,
                      reserve=args.max_new_tokens)
    prompts = [fit(r) for r in rows]
    ids = [prompt_ids(p, tok, cfg.data.template)[0] for p in prompts]

    @torch.no_grad()
    def last_logits(model):
        return torch.stack([model(input_ids=torch.tensor([x]), logits_to_keep=1).logits[0, -1] for x in ids])

    def greedy(model):
        gen = Generator(model, tok, cfg.data.template, args.max_new_tokens)
        out = [None] * len(prompts)
        for chunk in gen.batches(prompts, args.batch_size):
            for i, g in zip(chunk, gen.run([prompts[i] for i in chunk])):
                out[i] = sql_from_output(g.text)
        return out

    want = last_logits(merged)
    want_sql = greedy(merged)
    scale = want.abs().max().item()
    results = {}
    for t in args.types:
        model, load_s = load(t)
        got = last_logits(model)
        diff = (got - want).abs()
        sql = greedy(model)
        results[t] = {"file_mib": sizes[f"gguf/model-{t}.gguf"] / 2**20, "load_s_transformers": load_s,
                      "logit_max_abs_diff": diff.max().item(), "logit_mean_abs_diff": diff.mean().item(),
                      "logit_max_abs_diff_relative": diff.max().item() / scale,
                      "top_token_agreement": (got.argmax(-1) == want.argmax(-1)).float().mean().item(),
                      "greedy_sql_identical": sum(a == b for a, b in zip(sql, want_sql)) / len(sql),
                      "greedy_sql_differing_examples": [{"merged": b, t: a} for a, b in zip(sql, want_sql)
                                                        if a != b][:3]}
        print(t, {k: v for k, v in results[t].items() if "examples" not in k}, flush=True)
        del model

    evals = {}
    if args.eval_questions:
        if "q8_0" not in args.types:
            raise SystemExit("--eval-questions compares the q8_0 GGUF: keep q8_0 in --types")
        conf = str(export_dir / "sqlft.yaml")
        common = ["--limit", str(args.eval_questions), "--batch-size", str(args.batch_size), "--max-new-tokens",
                  str(args.max_new_tokens), "--model.name_or_path"]
        for name, model in (("merged", str(export_dir.resolve())),
                            ("gguf_q8_0", str((export_dir / "gguf" / "model-q8_0.gguf").resolve()))):
            seconds, _ = sqlft("eval", "--config", conf, *common, model, "--out", str(work / f"eval-{name}"))
            m = json.loads((work / f"eval-{name}" / "metrics.json").read_text())
            evals[name] = {"n": m["n"], "ex": m.get("ex"), "valid": m.get("valid"), "kinds": {
                k: {"n": v["n"], "ex": v.get("ex")} for k, v in m.get("kinds", {}).items()}, "wall_s": seconds}
            print("eval", name, evals[name], flush=True)
        a = [json.loads(line) for line in (work / "eval-merged" / "predictions.jsonl").read_text().splitlines()]
        b = [json.loads(line) for line in (work / "eval-gguf_q8_0" / "predictions.jsonl").read_text().splitlines()]
        evals["same_sql"] = sum(x["predicted"] == y["predicted"] for x, y in zip(a, b)) / max(len(a), 1)
        evals["same_outcome"] = sum(x["correct"] == y["correct"] for x, y in zip(a, b)) / max(len(a), 1)

    out = {"benchmark": "export", "date": time.strftime("%Y-%m-%d %H:%M"), "machine": start,
           "load_avg_at_end": os.getloadavg(), "commit": head,
           "command": "python bench/export.py " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
           "versions": versions() | {"gguf": __import__("importlib.metadata").metadata.version("gguf")},
           "settings": {"run": args.run, "template": cfg.data.template, "questions": len(rows),
                        "split": "the run's held-out split (ft.data.sources.load_eval_rows), first N",
                        "max_new_tokens": args.max_new_tokens, "compute": "float32, all models",
                        "merged_dtype_on_disk": json.loads((export_dir / "config.json").read_text()).get("dtype")},
           "export_s": export_s, "merged_load_s": merged_load_s,
           "sizes_mib": {k: v / 2**20 for k, v in sorted(sizes.items())},
           "logit_scale_max_abs": scale, "gguf": results, "eval": evals,
           "note": "times were measured on a shared machine unless load_avg says it was quiet"}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
