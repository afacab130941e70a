"""`sqlft eval` (`python -m ft.eval`): execution accuracy of a model (or model + adapter) on any dataset.

    sqlft eval --adapter runs/demo/adapter                    # the run's model, config and held-out split
    sqlft eval --model smollm2-135m-instruct --data bundled --split eval --out runs/base-eval
    sqlft eval --adapter runs/demo/adapter --eval.batch_size 16 --eval.retries 4
    sqlft eval --compare runs/base-eval runs/demo/adapter/eval
"""
from __future__ import annotations

import signal
import sys
from pathlib import Path

from ft.cli import Alias, Command, adapter_run_config, run
from ft.constants import EXIT_PREEMPTED
from ft.data.rows import DataError
from ft.model import ModelError


def _own(p) -> None:
    p.add_argument("--adapter", help="LoRA adapter folder, checkpoint folder or run folder")
    p.add_argument("--out", default=None, help="output folder [<adapter>/eval, else runs/eval]")
    p.add_argument("--wandb", action="store_true", help="log a predictions table and summary metrics to W&B")
    p.add_argument("--compare", nargs=2, metavar=("A", "B"), help="print two prediction files side by side")


COMMAND = Command(
    name="eval",
    description=__doc__,
    add_arguments=_own,
    default_config=adapter_run_config,
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
        Alias("--constrain", "eval.constrain", "only the schema's table / column names while decoding", const="true"),
    ],
)


def evaluate_command(cfg, args) -> int:
    from ft.eval.output import PredictionLog, compare, format_table, prediction_table_rows, result_settings

    if args.compare:
        print(compare(*args.compare))
        return 0
    from ft.config import resolve
    from ft.data.linking import make_fitter
    from ft.data.sources import load_eval_rows
    from ft.eval.scoring import evaluate
    from ft.files import check_writable
    from ft.inference import load_for_inference, prefer_unquantized_on_cpu, run_of
    from ft.tracking import wandb_offline_default

    run_dir, state = run_of(args.adapter) if args.adapter else (None, {})
    # Results land where the run's report finds them (<run>/eval/), beside training's own, never inside adapter/
    # (which training replaces); a dataset other than the run's held-out split gets a name of its own.
    d = cfg.data
    given = "data.eval_source" in args.overrides
    name = "eval-" + Path(d.eval_source.rstrip("/")).stem.replace(" ", "_") if given and d.eval_source else "eval"
    if args.out:
        folder, name = Path(args.out), ""
    else:
        folder = (run_dir or Path(args.adapter).resolve().parent if args.adapter else Path("runs")) / "eval"
    check_writable(folder, "--out")  # before anything slow: a place that can't be written would lose it all
    if note := prefer_unquantized_on_cpu(cfg, explicit="quantization.mode" in args.overrides):
        print(note, file=sys.stderr)
    cfg = resolve(cfg)
    d = cfg.data
    rows = load_eval_rows(d, cfg.train.seed)
    if not rows:
        raise DataError("No rows to evaluate: the config has no eval split; give one with --data.")
    e = cfg.eval
    settings = result_settings(e)
    settings |= {"template": d.template, "model": cfg.model.name_or_path, "adapter": str(args.adapter),
                 "step": state.get("step"), "quantization": cfg.quantization.mode}
    log = PredictionLog(folder, name, rows, settings)
    if log.done:
        print(f"continuing an interrupted evaluation in {folder}: {len(log.done)} of {len(rows)} questions done",
              file=sys.stderr)
    train_dbs = set(state["train_dbs"]) if state.get("train_dbs") else None
    if log.todo:
        if args.wandb:
            wandb_offline_default()  # as training: no login -> offline, not a login prompt
        model, tokenizer = load_for_inference(cfg, args.adapter)
        todo = [rows[i] for i in log.todo]
        index = log.todo
        # Never over the model's context: linked to fit (data.schema_linking), or an error saying how (off).
        fit = make_fitter(tokenizer, d.template, d, model.config.max_position_embeddings, reserve=e.max_new_tokens)
        prompts = [fit(r) for r in todo]

        def on_batch(scored):
            log.append([(index[i], p) for i, p in scored])

        _, partial = evaluate(model, tokenizer, todo, template=d.template, batch_size=e.batch_size,
                              max_new_tokens=e.max_new_tokens, timeout_s=e.timeout_s, max_rows=e.max_rows,
                              retries=e.retries, samples=e.samples, temperature=e.temperature, top_p=e.top_p,
                              reuse_schema_cache=e.reuse_schema_cache, constrain=e.constrain, train_dbs=train_dbs,
                              on_batch=on_batch,
                              should_stop=STOP.requested, progress="eval", prompt_rows=prompts)
        wall_qps = partial.get("questions_per_s")
    else:
        wall_qps = None
    from ft.eval.scoring import summarize

    preds = log.predictions()
    metrics = summarize(preds) | {"complete": len(preds) == len(rows)}
    if wall_qps:
        metrics["questions_per_s"] = wall_qps
    metrics_path = log.finish(metrics)
    print(format_table({"model": metrics}))
    print(f"\npredictions: {log.pred_path}\nmetrics: {metrics_path}")
    if not metrics["complete"]:
        print(f"stopped: {len(preds)} of {len(rows)} questions evaluated and kept; the same command continues "
              f"(exit {EXIT_PREEMPTED})", file=sys.stderr)
        return EXIT_PREEMPTED
    if args.wandb:
        import wandb

        run_ = wandb.init(project=cfg.tracking.project, entity=cfg.tracking.entity, job_type="eval",
                          config=cfg.to_dict())
        cols, data = prediction_table_rows(preds)
        run_.log({"eval/predictions": wandb.Table(columns=cols, data=data)})
        run_.summary.update({f"eval/{k}": v for k, v in metrics.items()
                             if isinstance(v, (int, float)) and not isinstance(v, bool)})
        run_.finish()
    if metrics["gold_failed"]:
        where = ", ".join(f"{db} ({n})" for db, n in metrics.get("gold_failed_by_db", {}).items())
        print(f"WARNING: the gold query of {metrics['gold_failed']} of {len(rows)} questions could not run ({where}); "
              f"they are left out of every rate. Reasons in {log.pred_path} (outcome gold_failed).", file=sys.stderr)
        if metrics["n"] == 0:
            print("error: no gold query ran: nothing was scored.", file=sys.stderr)
            return 1
    return 0


class _Stop:
    """Ctrl-C / SIGTERM during an evaluation: finish the batch, keep what is done; a second Ctrl-C stops at once."""

    def __init__(self):
        self.received = None

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        if self.received is not None and signum == signal.SIGINT:  # ft.cli.run prints this line, exit 130
            raise KeyboardInterrupt("stopped at once (second Ctrl-C); the answers of finished batches are kept")
        self.received = signum
        again = " (Ctrl-C again stops at once)" if signum == signal.SIGINT else ""
        print(f"\n[sqlft] got {signal.Signals(signum).name}: finishing this batch, then stopping{again}",
              file=sys.stderr, flush=True)

    def requested(self) -> bool:
        return self.received is not None


STOP = _Stop()


def main(argv: list[str] | None = None) -> int:
    STOP.install()
    return run(COMMAND, evaluate_command, argv, errors=(DataError, ModelError, FileNotFoundError))


if __name__ == "__main__":
    sys.exit(main())
