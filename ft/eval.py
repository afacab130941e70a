"""`python -m ft.eval`: execution accuracy of a model (or model + adapter) on any dataset the data layer reads.

    python -m ft.eval --adapter runs/demo/adapter                       # the run's model, data and eval split
    python -m ft.eval --model smollm2-135m-instruct --data bundled --split eval --out runs/base-eval
    python -m ft.eval --compare runs/base-eval runs/demo/eval
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ft.config import ConfigError
from ft.data.rows import DataError
from ft.model import ModelError


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ft.eval", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="base model: Hub id, folder, GGUF file or alias (default: the run's / config's)")
    ap.add_argument("--adapter", help="LoRA adapter folder, checkpoint folder or run folder")
    ap.add_argument("--config", help="config YAML (default: the adapter's run config, else built-in defaults)")
    ap.add_argument("--data", help="dataset source (file, folder, HF name, or 'bundled'); default: the config's eval split")
    ap.add_argument("--format", default=None, help="source format (auto | jsonl | json | csv | parquet | hf | spider | bird | bundled)")
    ap.add_argument("--split", default=None, help="split of the source (bundled: eval; spider: dev ...)")
    ap.add_argument("--limit", type=int, default=None, help="evaluate the first N rows only")
    ap.add_argument("--quantization", choices=["4bit", "8bit", "none"], default=None)
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--max-new-tokens", type=int, default=None)
    ap.add_argument("--retries", type=int, default=None, help="sampled alternatives when an answer fails validation")
    ap.add_argument("--out", default=None, help="output folder (default: <adapter run>/eval or runs/eval)")
    ap.add_argument("--wandb", action="store_true", help="log a predictions table and summary metrics to W&B")
    ap.add_argument("--compare", nargs=2, metavar=("A", "B"), help="print two prediction files side by side")
    args = ap.parse_args(argv)

    from ft.evaluate import compare, evaluate, format_table, prediction_table_rows, write_results

    if args.compare:
        print(compare(*args.compare))
        return 0
    try:
        from ft.data.sources import check_rows, load_source, load_splits
        from ft.inference import inference_config, load_for_inference

        cfg = inference_config(args.adapter, args.config, {
            "model.name_or_path": args.model, "quantization.mode": args.quantization,
            "eval.batch_size": args.batch_size, "eval.max_new_tokens": args.max_new_tokens, "eval.retries": args.retries,
        })
        if args.data:
            rows = load_source(args.data, args.format or "auto", args.split, cfg.data.columns, cfg.data.cache_dir)
            rows, _ = check_rows(rows, skip_bad_rows=cfg.data.skip_bad_rows, source_name=args.data)
        else:
            _, rows, _ = load_splits(cfg.data, cfg.train.seed)
        if args.limit:
            rows = rows[: args.limit]
        if not rows:
            raise DataError("No rows to evaluate.")
        model, tokenizer = load_for_inference(cfg, args.adapter)
        e = cfg.eval
        preds, metrics = evaluate(model, tokenizer, rows, template=cfg.data.template, batch_size=e.batch_size,
                                  max_new_tokens=e.max_new_tokens, timeout_s=e.timeout_s, max_rows=e.max_rows,
                                  retries=e.retries, reuse_schema_cache=e.reuse_schema_cache)
    except (ConfigError, DataError, ModelError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else (Path(args.adapter) / "eval" if args.adapter else Path("runs/eval"))
    pred_path, metrics_path = write_results(out, preds, metrics)
    print(format_table({"model": metrics}))
    print(f"\npredictions: {pred_path}\nmetrics: {metrics_path}")
    if args.wandb:
        import wandb

        run = wandb.init(project=cfg.tracking.project, entity=cfg.tracking.entity, job_type="eval", config=cfg.to_dict())
        cols, data = prediction_table_rows(preds)
        run.log({"eval/predictions": wandb.Table(columns=cols, data=data)})
        run.summary.update({f"eval/{k}": v for k, v in metrics.items() if isinstance(v, (int, float))})
        run.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
