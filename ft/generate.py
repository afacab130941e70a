"""`sqlft generate` (`python -m ft.generate`): one question + a schema -> validated SQL (and, with --db, its rows).

    sqlft generate --adapter runs/demo/adapter --schema schema.sql --question "Total sales per category?"
    sqlft generate --model smollm2-135m-instruct --schema schema.sql --question "..." --db shop.sqlite --retries 4
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from ft.cli import Alias, Command, run
from ft.data.rows import DataError, Row
from ft.model import ModelError


def answer(model, tokenizer, row: Row, template: str, max_new_tokens: int, retries: int) -> tuple[str, object, bool]:
    """(SQL, validation, whether alternatives were sampled): greedy first, sampled alternatives if it fails."""
    from ft.data.prompt import encode_prompt, sql_from_output
    from ft.eval.generation import generate_batch
    from ft.eval.scoring import first_valid_alternative
    from ft.sql.validate import validate

    prompt = encode_prompt(row, tokenizer, template)
    sql = sql_from_output(generate_batch(model, tokenizer, [prompt], max_new_tokens)[0])
    check = validate(sql, row.schema, row.macros)
    if check.ok or retries <= 0:
        return sql, check, False
    text = first_valid_alternative(model, tokenizer, row, template, retries, max_new_tokens)
    if text is None:
        return sql, check, True
    alt = sql_from_output(text)
    return alt, validate(alt, row.schema, row.macros), True


def _own(p) -> None:
    p.add_argument("--adapter", help="LoRA adapter, checkpoint or run folder")
    p.add_argument("--schema", required=True, help="file with CREATE TABLE statements")
    p.add_argument("--question", required=True)
    p.add_argument("--evidence", help="hint text (as in BIRD)")
    p.add_argument("--macros", help="JSON file with in-house macros [{name, params, body, doc}]")
    p.add_argument("--db", help="SQLite file: run the SQL (read-only) and print the rows")


def _run_config(args):
    from ft.inference import resolve_adapter

    return resolve_adapter(args.adapter)[1] if args.adapter else None


COMMAND = Command(
    name="generate",
    description=__doc__,
    add_arguments=_own,
    default_config=_run_config,
    aliases=[
        Alias("--model", "model.name_or_path", "base model [the adapter's run's]"),
        Alias("--quantization", "quantization.mode", choices=["4bit", "8bit", "none"]),
        Alias("--retries", "eval.retries", "sampled alternatives when validation fails"),
        Alias("--max-new-tokens", "eval.max_new_tokens"),
    ],
)


def generate_command(cfg, args) -> int:
    from ft.config import resolve
    from ft.inference import load_for_inference, prefer_unquantized_on_cpu
    from ft.sql.execute import execute

    schema_path = Path(args.schema)
    if not schema_path.is_file():
        raise DataError(f"Schema file '{schema_path}' (--schema) does not exist.")
    macros = json.loads(Path(args.macros).read_text()) if args.macros else None
    row = Row(question=args.question, query="", schema=schema_path.read_text(), evidence=args.evidence, macros=macros)
    if note := prefer_unquantized_on_cpu(cfg, explicit="quantization.mode" in args.overrides):
        print(note, file=sys.stderr)
    cfg = resolve(cfg)
    model, tokenizer = load_for_inference(cfg, args.adapter)
    sql, check, retried = answer(model, tokenizer, row, cfg.data.template, cfg.eval.max_new_tokens, cfg.eval.retries)
    print(sql)
    if not check.ok:
        also = " (also after sampling alternatives)" if retried else ""
        print(f"\n-- validation failed{also}:", file=sys.stderr)
        for issue in check.errors:
            print(f"--   {issue.message}", file=sys.stderr)
    if args.db:
        res = execute(args.db, sql, macros, timeout_s=cfg.eval.timeout_s, max_rows=cfg.eval.max_rows)
        if res.error:
            print(f"\n-- execution error: {res.error}", file=sys.stderr)
            return 1
        print("\n" + " | ".join(res.columns))
        for r in res.rows[:50]:
            print(" | ".join("NULL" if v is None else str(v) for v in r))
        if len(res.rows) > 50 or res.truncated:
            print(f"... ({len(res.rows)}{'+' if res.truncated else ''} rows)")
    return 0 if check.ok else 1


def main(argv: list[str] | None = None) -> int:
    return run(COMMAND, generate_command, argv,
               errors=(DataError, ModelError, FileNotFoundError, json.JSONDecodeError))


if __name__ == "__main__":
    sys.exit(main())
