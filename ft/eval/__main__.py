"""`sqlft eval` (`python -m ft.eval`): execution accuracy of a model (or model + adapter) on any dataset, or of SQL
written by anyone.

    sqlft eval --adapter runs/demo/adapter                    # the run's model as served, its held-out split
    sqlft eval --adapter runs/demo/adapter --as trained       # as training scored it (its base as loaded + adapter)
    sqlft eval --model smollm2-135m-instruct --data bundled --split eval --out runs/base-eval
    sqlft eval --adapter runs/demo/adapter --eval.test_suite 8 --eval.retries 4
    sqlft eval --predictions preds.jsonl --data dev.jsonl     # another system's SQL, same rules, no model
    sqlft eval --compare runs/base-eval runs/demo/adapter/eval

What is scored is said every time: "N of M questions" (and why any were left out), which model in which form,
questions the adapter was trained on apart from the others, and a held-out split too small to measure.
"""
from __future__ import annotations

import dataclasses
import json
import re
import sys
from pathlib import Path

from ft.cli import Alias, Command, adapter_run_config, run
from ft.constants import EXIT_PREEMPTED
from ft.data.rows import DataError, Row
from ft.signals import StopFlag, Stopped


def _own(p) -> None:
    p.add_argument("--adapter", help="LoRA adapter folder, checkpoint folder or run folder")
    p.add_argument("--predictions", metavar="FILE",
                   help="score SQL written elsewhere, no model: JSONL with `predicted` and the question's `key` or "
                        "`question` text, or one SQL a line in the dataset's order (as Spider's evaluator takes it)")
    p.add_argument("--out", default=None, help="output folder [<run>/eval for a run's adapter, else runs/eval]")
    p.add_argument("--wandb", action="store_true", help="log a predictions table and summary metrics to W&B")
    p.add_argument("--compare", nargs=2, metavar=("A", "B"), help="print two prediction files side by side")


COMMAND = Command(
    name="eval",
    description=__doc__,
    add_arguments=_own,
    default_config=adapter_run_config,
    aliases=[
        Alias("--model", "model.name_or_path", "base model: Hub id, folder, GGUF file or alias"),
        Alias("--data", "data.eval_source", "dataset to evaluate on (file, folder, HF name or 'bundled'), every "
                                            "row unless --limit [the config's eval split]"),
        Alias("--format", "data.eval_format", "format of --data"),
        Alias("--split", "data.eval_split", "split of --data (bundled: eval; spider: dev ...)"),
        Alias("--limit", "data.max_eval_rows", "evaluate a fixed seeded subset of N rows"),
        Alias("--as", "eval.scored_model", "served: the merged 16-bit model `sqlft merge` writes (default); "
                                           "trained: the base as the run's config loads it + the adapter"),
        Alias("--quantization", "quantization.mode", "base model quantization (implies --as trained)"),
        Alias("--batch-size", "eval.batch_size"),
        Alias("--max-new-tokens", "eval.max_new_tokens"),
        Alias("--retries", "eval.retries", "sampled alternatives when an answer fails validation"),
        Alias("--constrain", "eval.constrain", "only the schema's table / column names while decoding", const="true"),
        Alias("--test-suite", "eval.test_suite", "test-suite accuracy on K neighbour databases per database"),
    ],
)


# ------------------------------------------------------------------------------------------------
# what is evaluated


@dataclasses.dataclass
class Questions:
    rows: list[Row]  # the ones scored
    all_rows: list[Row]  # the dataset they come from (M)
    source: str  # what the dataset is, in words
    why: str  # why N < M, or "" when every row is scored


def select_questions(cfg, overrides: dict, seed: int, min_eval: int) -> Questions:
    """The dataset's rows and the ones scored: every row of --data unless --limit; the run's held-out split capped
    by its data.max_eval_rows when no --data is given (what training evaluated), said so."""
    from ft.data.sources import _seeded_subset, load_eval_rows, load_splits

    d = cfg.data
    whole = dataclasses.replace(d, max_eval_rows=None)
    if d.eval_source:
        all_rows = load_eval_rows(whole, seed)
        source = f"{d.eval_source}" + (f" (split {d.eval_split})" if d.eval_split else "")
    else:
        # the split exactly as training made it (its batch size is the default split's smallest size)
        all_rows = load_splits(whole, seed, min_eval)[1]
        source = f"the held-out split of {d.source}"
    if not all_rows:
        raise DataError("No rows to evaluate: the config has no eval split; give one with --data.")
    limit, explicit = d.max_eval_rows, "data.max_eval_rows" in overrides
    if limit is None or (d.eval_source and not explicit and "data.eval_source" in overrides):
        return Questions(all_rows, all_rows, source, "")  # --data FILE: every row unless --limit
    rows = _seeded_subset(all_rows, limit, f"eval_cap:{seed}")
    if limit >= len(all_rows):
        why = f"--limit {limit} is more than the {len(all_rows)} questions there are: all of them" if explicit else ""
    elif explicit:
        why = f"--limit {limit}: a fixed seeded subset"
    else:
        why = (f"data.max_eval_rows {limit} in the config (the sample training evaluated on); --limit "
               f"{len(all_rows)} scores them all")
    return Questions(rows, all_rows, source, why)


def trained_questions(args, rows: list[Row]) -> set | None:
    """question_key()s of the rows the adapter's run trained on that are among `rows` (None: unknown)."""
    from ft.config import load_config
    from ft.data.sources import load_splits
    from ft.eval.scoring import trained_keys
    from ft.inference import resolve_adapter

    if not args.adapter:
        return None
    config = resolve_adapter(args.adapter)[1]
    if config is None:
        return None
    try:
        run_cfg = load_config(config)
        train = load_splits(run_cfg.data, run_cfg.train.seed, run_cfg.train.per_device_batch_size)[0]
    except Exception as e:  # noqa: BLE001 - the run's data may live elsewhere: then it is unknown, and said
        print(f"note: the run's training rows could not be read ({type(e).__name__}: {e}); questions it trained on "
              "are not recognised", file=sys.stderr)
        return None
    return trained_keys(train, rows)


def read_predictions(path: str, rows: list[Row]) -> tuple[list[str], int]:
    """(one answer per row of `rows`, how many rows had none) from a predictions file; bad input is a DataError
    naming the file and line."""
    from ft.eval.output import row_keys

    p = Path(path)
    try:
        lines = p.read_text().splitlines()
    except OSError as e:
        raise DataError(f"--predictions {path}: cannot read it ({e.strerror or e}).") from None
    if p.suffix.lower() not in (".jsonl", ".json"):
        sql = [line.split("\t")[0].strip() for line in lines if line.strip()]  # Spider: SQL [TAB db_id]
        if len(sql) != len(rows):
            raise DataError(f"--predictions {path}: {len(sql)} SQL lines for {len(rows)} questions; one SQL a line "
                            "in the dataset's order is read only when the counts agree (or give JSONL with keys).")
        return sql, 0
    keys = {k: i for i, k in enumerate(row_keys(rows))}
    by_text: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        by_text.setdefault(" ".join(r.question.lower().split()), []).append(i)
    answers: list[str | None] = [None] * len(rows)
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            raise DataError(f"--predictions {path}:{n}: not a JSON object.") from None
        if not isinstance(rec, dict) or not isinstance(rec.get("predicted"), str):
            raise DataError(f"--predictions {path}:{n}: needs a string `predicted` (the SQL).")
        if rec.get("key") is not None:
            if rec["key"] not in keys:
                raise DataError(f"--predictions {path}:{n}: key {rec['key']!r} is not a question of the dataset.")
            i = keys[rec["key"]]
        elif isinstance(rec.get("question"), str):
            found = by_text.get(" ".join(rec["question"].lower().split()), [])
            if rec.get("db_id") is not None:
                found = [i for i in found if rows[i].db_id == rec["db_id"]]
            if not found:
                raise DataError(f"--predictions {path}:{n}: question {rec['question'][:60]!r} is not in the dataset.")
            i = next((i for i in found if answers[i] is None), found[0])
        else:
            raise DataError(f"--predictions {path}:{n}: needs the question's `key` or `question` text.")
        if answers[i] is not None:
            raise DataError(f"--predictions {path}:{n}: a second answer to the question of line "
                            f"{rows[i].question[:60]!r}.")
        answers[i] = rec["predicted"]
    missing = sum(a is None for a in answers)
    return [a if a is not None else "" for a in answers], missing


# ------------------------------------------------------------------------------------------------
# which model


def scored_form(cfg, overrides: dict, adapter: str | None) -> str:
    """'served' (what `sqlft merge` writes and a serving engine loads) or 'trained' (the base quantized as
    configured, the adapter on top: what training's own evaluations score)."""
    if "quantization.mode" in overrides and cfg.eval.scored_model == "served" and "eval.scored_model" in overrides:
        raise DataError("--as served is the merged 16-bit model; --quantization goes with --as trained.")
    return "trained" if "quantization.mode" in overrides else cfg.eval.scored_model


def load_scored_model(cfg, adapter: str | None, form: str):
    """(model, tokenizer, words for what it is). served: the base in 16-bit with the adapter merged in, as `sqlft
    merge` builds it (bf16 weights), computed in bf16 where the hardware does so natively, else in fp32 from the
    same weights; trained: ft.inference.load_for_inference under the config's quantization."""
    import torch

    from ft.config import resolve
    from ft.inference import load_for_inference, resolve_adapter
    from ft.model import load_base_model, load_tokenizer, local_model_dir
    from ft.system import fastest_dtype

    name = cfg.model.name_or_path + (f" + adapter {adapter}" if adapter else "")
    if form == "trained":
        cfg = resolve(cfg)
        model, tok = load_for_inference(cfg, adapter)
        q = cfg.quantization
        what = (f"{name}, as trained: base {q.mode}"
                + (f" {q.quant_type}" if q.mode == "4bit" else "") + f", compute {q.compute_dtype}")
        return model, tok, what
    cfg = dataclasses.replace(cfg, quantization=dataclasses.replace(cfg.quantization, mode="none", dtype="bfloat16"))
    cfg = resolve(cfg)
    path = local_model_dir(cfg)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, _ = load_base_model(cfg, path, device_map={"": device} if device == "cuda" else None)
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(resolve_adapter(adapter)[0])).merge_and_unload()
    compute = fastest_dtype()
    if compute != torch.bfloat16:
        model = model.float()  # the served bf16 weights, computed in fp32 (no native bf16 here)
    model.eval()
    model.config.use_cache = True
    what = (f"{name}, as served: {'merged into ' if adapter else ''}the bf16 base (as `sqlft merge` writes it), "
            f"compute {str(compute).removeprefix('torch.')}")
    return model, load_tokenizer(path), what


def _tag(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", text).strip("_")[:80]


def result_name(args, cfg, state: dict, form: str) -> str:
    """The results' file name: the data and the model (base, adapter step, form), so evaluations of other models
    on the same data never replace each other."""
    d = cfg.data
    data = ("eval-" + _tag(Path(d.eval_source.rstrip("/")).stem)) if "data.eval_source" in args.overrides \
        and d.eval_source else "eval"
    if args.predictions:
        return f"{data}__predictions-{_tag(Path(args.predictions).stem)}"
    model = _tag(Path(cfg.model.name_or_path.rstrip("/")).name)
    if args.adapter:
        step = state.get("step")
        model += "+" + (f"step{step}" if step is not None else _tag(Path(args.adapter).resolve().name))
    return f"{data}__{model}__{form}"


def _other_model_in(folder: Path, settings: dict) -> bool:
    try:
        before = json.loads((folder / ".progress.json").read_text())["settings"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return any(before.get(k) != settings.get(k) for k in ("model", "adapter", "step", "form", "predictions"))


# ------------------------------------------------------------------------------------------------
# the command


def evaluate_command(cfg, args) -> int:
    from ft.eval.output import PredictionLog, compare, format_table, result_settings

    if args.compare:
        print(compare(*args.compare))
        return 0
    if args.predictions and args.adapter is None and "model.name_or_path" in args.overrides:
        raise DataError("--predictions scores SQL from a file: no --model is loaded.")
    from ft.eval.scoring import evaluate, score_texts, summarize
    from ft.files import check_writable

    run_dir, state = None, {}
    if args.adapter:
        from ft.inference import run_of  # torch: not for SQL scored from a file

        run_dir, state = run_of(args.adapter)
    form = scored_form(cfg, args.overrides, args.adapter)
    if args.out:
        folder = Path(args.out)
    else:
        folder = (run_dir or Path(args.adapter).resolve().parent if args.adapter else Path("runs")) / "eval"
    check_writable(folder, "--out")  # before anything slow: a place that can't be written would lose it all
    q = select_questions(cfg, args.overrides, cfg.train.seed, cfg.train.per_device_batch_size)
    rows = q.rows
    e = cfg.eval
    texts = None
    if args.predictions:
        all_texts, missing = read_predictions(args.predictions, q.all_rows)
        index = {id(r): i for i, r in enumerate(q.all_rows)}
        texts = [all_texts[index[id(r)]] for r in rows]
        if missing:
            print(f"note: {missing} of {len(q.all_rows)} questions have no answer in {args.predictions}: scored as "
                  "no answer (invalid), never left out", file=sys.stderr)
    print(f"evaluating {len(rows)} of {len(q.all_rows)} questions of {q.source}"
          + (f": {q.why}" if q.why else ""), file=sys.stderr)
    trained = trained_questions(args, rows)
    name = "" if args.out else result_name(args, cfg, state, form)
    settings = result_settings(e) | {"template": cfg.data.template, "adapter": str(args.adapter),
                                     "step": state.get("step"), "form": form,
                                     "model": cfg.model.name_or_path if not args.predictions else None,
                                     "predictions": args.predictions}
    if form == "trained" and not args.predictions:
        settings["quantization"] = cfg.quantization.mode
    if args.out and _other_model_in(folder, settings):  # --out holds another model's results: kept, not replaced
        name = result_name(args, cfg, state, form)
        print(f"{folder} holds another model's evaluation: this one is written as {name}_*", file=sys.stderr)
    log = PredictionLog(folder, name, rows, settings)
    if log.done:
        print(f"continuing an interrupted evaluation in {folder}: {len(log.done)} of {len(rows)} questions done",
              file=sys.stderr)
    train_dbs = set(state["train_dbs"]) if state.get("train_dbs") else None
    what = f"SQL from {args.predictions}" if args.predictions else None
    wall_qps = None
    suite_figures: dict = {}
    if log.todo:
        todo = [rows[i] for i in log.todo]
        index = log.todo

        def on_batch(scored):
            log.append([(index[i], p) for i, p in scored])

        common = dict(train_dbs=train_dbs, trained=trained, on_batch=on_batch, should_stop=STOP.requested,
                      progress="eval", dataset=q.all_rows)
        if args.predictions:
            _, partial = score_texts(todo, [texts[i] for i in index], e, **common)
        else:
            from ft.data.linking import make_fitter

            model, tokenizer, what = load_scored_model(cfg, args.adapter, form)
            print(f"model: {what}", file=sys.stderr)
            # Never over the model's context: linked to fit (data.schema_linking), or an error saying how (off).
            fit = make_fitter(tokenizer, cfg.data.template, cfg.data, model.config.max_position_embeddings,
                              reserve=e.max_new_tokens)
            _, partial = evaluate(model, tokenizer, todo, e, template=cfg.data.template, interrupt=STOP.requested,
                                  prompt_rows=[fit(r) for r in todo], **common)
        wall_qps = partial.get("questions_per_s")
        suite_figures = {k: v for k, v in partial.items() if k.startswith("ts_") and k != "ts_rejected"}
    preds = log.predictions()
    previous = json.loads(log.metrics_path.read_text()) if log.complete and log.metrics_path.is_file() else {}
    what = what or previous.get("scored_model") or f"{cfg.model.name_or_path} ({form}; recorded run)"
    metrics = summarize(preds) | {"complete": len(preds) == len(rows)} | (suite_figures or {
        k: v for k, v in previous.items() if k.startswith("ts_") and k != "ts_rejected"})
    if e.float_tolerance:
        metrics["float_tolerance"] = e.float_tolerance
    metrics |= {"scored_model": what, "questions": len(rows), "dataset_questions": len(q.all_rows),
                "left_out": q.why or None, "source": q.source}
    if wall_qps:
        metrics["questions_per_s"] = wall_qps
    metrics_path = log.finish(metrics)
    print(f"\nscored: {what}\n{len(rows)} of {len(q.all_rows)} questions of {q.source}"
          + (f" ({q.why})" if q.why else ""))
    print(format_table({"model": metrics}))
    if metrics.get("trained_questions"):
        print(f"{metrics['trained_questions']} of these questions were training rows of the adapter's run: "
              "reported apart (ex[trained]), not as unseen questions")
    print(f"\npredictions: {log.pred_path}\nmetrics: {metrics_path}")
    if not metrics["complete"]:
        print(f"stopped: {len(preds)} of {len(rows)} questions evaluated and kept; the same command continues "
              f"(exit {EXIT_PREEMPTED})", file=sys.stderr)
        return EXIT_PREEMPTED
    if args.wandb:
        _log_wandb(cfg, preds, metrics)
    if metrics["gold_failed"]:
        where = ", ".join(f"{db} ({n})" for db, n in metrics.get("gold_failed_by_db", {}).items())
        print(f"WARNING: the gold query of {metrics['gold_failed']} of {len(rows)} questions could not run ({where}); "
              f"they are left out of every rate. Reasons in {log.pred_path} (outcome gold_failed).", file=sys.stderr)
        if metrics["n"] == 0:
            print("error: no gold query ran: nothing was scored.", file=sys.stderr)
            return 1
    return 0


def _log_wandb(cfg, preds, metrics: dict) -> None:
    """The predictions as a W&B table and the figures as its summary (eval --wandb)."""
    import wandb

    from ft.eval.output import prediction_table_rows
    from ft.tracking import wandb_offline_default

    wandb_offline_default()  # as training: no login -> offline, not a login prompt
    run_ = wandb.init(project=cfg.tracking.project, entity=cfg.tracking.entity, job_type="eval", config=cfg.to_dict())
    cols, data = prediction_table_rows(preds)
    run_.log({"eval/predictions": wandb.Table(columns=cols, data=data)})
    run_.summary.update({f"eval/{k}": v for k, v in metrics.items()
                         if isinstance(v, (int, float)) and not isinstance(v, bool)})
    run_.finish()


# Ctrl-C / SIGTERM / SIGUSR1/2 during an evaluation: stop within a generation step, keep every finished answer;
# a second Ctrl-C stops at once.
STOP = StopFlag("stopping, keeping every finished answer", start_up=False)


def main(argv: list[str] | None = None) -> int:
    STOP.install()
    argv = list(sys.argv[1:] if argv is None else argv)
    errors: tuple = (DataError, FileNotFoundError)
    if "--predictions" not in argv or "--adapter" in argv:  # a model or an adapter's run is read (torch)
        from ft.model import ModelError
        from ft.system import set_process_defaults

        set_process_defaults()
        errors += (ModelError,)
    try:
        return run(COMMAND, evaluate_command, argv, errors=errors)
    except Stopped as e:  # a second Ctrl-C
        print("stopped at once (second Ctrl-C); the answers of finished batches are kept", file=sys.stderr)
        return e.code


if __name__ == "__main__":
    sys.exit(main())
