"""Generation on a CPU: the 4-bit model against the unquantized one (what `sqlft eval` / `sqlft generate` pick on a
machine without CUDA), same questions, same greedy decoding, with and without schema KV reuse.

    python bench/cpu_inference.py [--questions 32] [--batch-size 16] [--max-new-tokens 64] [--rounds 2]

Runs alternate between the modes (round robin) so a noisy machine hurts both alike. Writes
bench/results/cpu_inference_quantization.json.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "results" / "cpu_inference_quantization.json"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--questions", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    sys.path.insert(0, str(REPO / "bench"))
    from train_throughput import machine, versions

    from ft.config import load_config, resolve
    from ft.data.sources import load_source
    from ft.eval.generation import Generator
    from ft.inference import load_for_inference

    rows = [r for r in load_source("bundled", split="eval") if r.db_id != "warehouse"][: args.questions]
    models = {}
    for mode in ("4bit", "none"):
        cfg = resolve(load_config(REPO / "configs" / "demo.yaml", {"quantization.mode": mode}))
        models[mode] = (load_for_inference(cfg), cfg.quantization.compute_dtype)
    times: dict[str, list[float]] = {f"{m}{'+reuse' if r else ''}": [] for m in models for r in (False, True)}
    texts: dict[str, list[str]] = {}
    for _ in range(args.rounds):
        for key in times:
            mode, reuse = key.split("+")[0], key.endswith("reuse")
            (model, tok), _ = models[mode]
            gen = Generator(model, tok, "schema_first", args.max_new_tokens, reuse_schema_cache=reuse)
            t0 = time.perf_counter()
            out = {}
            for chunk in gen.batches(rows, args.batch_size):
                for i, g in zip(chunk, gen.run([rows[i] for i in chunk])):
                    out[i] = g.text
            times[key].append(time.perf_counter() - t0)
            texts[key] = [out[i] for i in range(len(rows))]
            print(key, round(times[key][-1], 1), flush=True)
    best = {k: min(v) for k, v in times.items()}
    result = {
        "benchmark": "cpu_inference_quantization", "machine": machine(), "versions": versions(),
        "settings": {"model": "smollm2-135m-instruct", "questions": len(rows), "batch_size": args.batch_size,
                     "max_new_tokens": args.max_new_tokens, "template": "schema_first", "rounds": args.rounds,
                     "compute_dtype": {m: dt for m, (_, dt) in models.items()}},
        "seconds": times, "questions_per_s_best": {k: len(rows) / v for k, v in best.items()},
        "unquantized_speedup": {"no_reuse": best["4bit"] / best["none"],
                                "reuse": best["4bit+reuse"] / best["none+reuse"]},
        "same_greedy_sql_4bit_vs_none": sum(a == b for a, b in zip(texts["4bit"], texts["none"])),
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("questions_per_s_best", "unquantized_speedup")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
