"""`sqlft eval` (`python -m ft.eval`): execution accuracy of a model (or model + adapter) on any dataset.

    sqlft eval --adapter runs/demo/adapter                    # the run's model, config and held-out split
    sqlft eval --model smollm2-135m-instruct --data bundled --split eval --out runs/base-eval
    sqlft eval --adapter runs/demo/adapter --eval.batch_size 16 --eval.retries 4
    sqlft eval --compare runs/base-eval runs/demo/adapter/eval
"""
from __future__ import annotations

import sys
from pathlib import Path

from ft.cli import Alias, Command, run
from ft.data.rows import DataError
from ft.model import ModelError


def _own(p) -> None:
    p.add_argument("--adapter", help="LoRA adapter folder, checkpoint folder or run folder")
    p.add_argument("--out", default=None, help="output folder [<adapter>/eval, else runs/eval]")
    p.add_argument("--wandb", action="store_true", help="log a predictions table and summary metrics to W&B")
    p.add_argument("--compare", nargs=2, metavar=("A", "B"), help="print two prediction files side by side")


def _run_config(args):
    from ft.inference import resolve_adapter

    return resolve_adapter(args.adapter)[1] if args.adapter else None


COMMAND = Command(
    name="eval",
    description=__doc__,
    add_arguments=_own,
    default_config=_run_config,
    aliases=[
        Alias("--model", "model.name_or_path", "base model: Hub id, folder, GGUF file or alias"),
        Alias("--data", "data.eval_source", "dataset to evaluate on (file, folder, HF name or 'bundled') "
                                            "[the config's eval split]"),
        Alias("--format", "data.eval_format", "format of --data"),
        Alias("--split", "data.eval_split", "split of --data (bundled: eval; spider: dev ...)"),
        Alias("--limit", "data.max_eval_rows", "evaluate a fixed seeded subset of N rows"),
        Alias("--quantization", "quantization.mode", choices=["4bit", "8bit", "none"]),
        Alias("--batch-size", "eval.batch_size"),
        Alias("--max-new-tokens", "eval.max_new_tokens"),
        Alias("--retries", "eval.retries", "sampled alternatives when an answer fails validation"),
    ],
)


def evaluate_command(cfg, args) -> int:
    from ft.eval.output import compare, format_table, prediction_table_rows, write_results

    if args.compare:
        print(compare(*args.compare))
        return 0
    from ft.config import resolve
    from ft.data.sources import load_eval_rows
    from ft.eval.scoring import evaluate
    from ft.inference import load_for_inference

    cfg = resolve(cfg)
    rows = load_eval_rows(cfg.data, cfg.train.seed)
    if not rows:
        raise DataError("No rows to evaluate: the config has no eval split; give one with --data.")
    model, tokenizer = load_for_inference(cfg, args.adapter)
    e = cfg.eval
    preds, metrics = evaluate(model, tokenizer, rows, template=cfg.data.template, batch_size=e.batch_size,
                              max_new_tokens=e.max_new_tokens, timeout_s=e.timeout_s, max_rows=e.max_rows,
                              retries=e.retries, reuse_schema_cache=e.reuse_schema_cache)
    out = Path(args.out) if args.out else (Path(args.adapter) / "eval" if args.adapter else Path("runs/eval"))
    pred_path, metrics_path = write_results(out, preds, metrics)
    print(format_table({"model": metrics}))
    print(f"\npredictions: {pred_path}\nmetrics: {metrics_path}")
    if args.wandb:
        import wandb

        run_ = wandb.init(project=cfg.tracking.project, entity=cfg.tracking.entity, job_type="eval",
                          config=cfg.to_dict())
        cols, data = prediction_table_rows(preds)
        run_.log({"eval/predictions": wandb.Table(columns=cols, data=data)})
        run_.summary.update({f"eval/{k}": v for k, v in metrics.items() if isinstance(v, (int, float))})
        run_.finish()
    return 0


def main(argv: list[str] | None = None) -> int:
    return run(COMMAND, evaluate_command, argv, errors=(DataError, ModelError, FileNotFoundError))


if __name__ == "__main__":
    sys.exit(main())
