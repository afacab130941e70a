"""`python -m ft.generate`: one question + a schema -> validated SQL (and, with --db, its rows).

    python -m ft.generate --adapter runs/demo/adapter --schema schema.sql --question "Total sales per category?"
    python -m ft.generate --model smollm2-135m-instruct --schema schema.sql --question "..." --db shop.sqlite
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ft.config import ConfigError
from ft.data.rows import DataError, Row
from ft.model import ModelError


def answer(model, tokenizer, row: Row, template: str, max_new_tokens: int, retries: int) -> tuple[str, object, bool]:
    """(SQL, validation, whether alternatives were sampled): greedy first, sampled alternatives if it fails."""
    from ft.data.prompt import encode_prompt
    from ft.evaluate import first_valid_alternative, generate_batch, sql_from_output
    from ft.sql.validate import validate

    sql = sql_from_output(generate_batch(model, tokenizer, [encode_prompt(row, tokenizer, template)], max_new_tokens)[0])
    check = validate(sql, row.schema, row.macros)
    if check.ok or retries <= 0:
        return sql, check, False
    text = first_valid_alternative(model, tokenizer, row, template, retries, max_new_tokens)
    if text is None:
        return sql, check, True
    alt = sql_from_output(text)
    return alt, validate(alt, row.schema, row.macros), True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ft.generate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="base model (default: the adapter's run's model)")
    ap.add_argument("--adapter", help="LoRA adapter, checkpoint or run folder")
    ap.add_argument("--config", help="config YAML")
    ap.add_argument("--schema", required=True, help="file with CREATE TABLE statements")
    ap.add_argument("--question", required=True)
    ap.add_argument("--evidence", help="hint text (as in BIRD)")
    ap.add_argument("--macros", help="JSON file with in-house macros [{name, params, body, doc}]")
    ap.add_argument("--db", help="SQLite file: run the SQL (read-only) and print the rows")
    ap.add_argument("--retries", type=int, default=4, help="sampled alternatives when validation fails")
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--quantization", choices=["4bit", "8bit", "none"], default=None)
    args = ap.parse_args(argv)
    try:
        from ft.inference import inference_config, load_for_inference
        from ft.sql.execute import execute

        schema_path = Path(args.schema)
        if not schema_path.is_file():
            raise DataError(f"Schema file '{schema_path}' (--schema) does not exist.")
        macros = json.loads(Path(args.macros).read_text()) if args.macros else None
        row = Row(question=args.question, query="", schema=schema_path.read_text(), evidence=args.evidence, macros=macros)
        cfg = inference_config(args.adapter, args.config, {"model.name_or_path": args.model, "quantization.mode": args.quantization})
        model, tokenizer = load_for_inference(cfg, args.adapter)
        sql, check, retried = answer(model, tokenizer, row, cfg.data.template, args.max_new_tokens, args.retries)
    except (ConfigError, DataError, ModelError, FileNotFoundError, json.JSONDecodeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(sql)
    if not check.ok:
        print("\n-- validation failed" + (" (also after sampling alternatives)" if retried else "") + ":", file=sys.stderr)
        for issue in check.errors:
            print(f"--   {issue.message}", file=sys.stderr)
    if args.db:
        res = execute(args.db, sql, macros)
        if res.error:
            print(f"\n-- execution error: {res.error}", file=sys.stderr)
            return 1
        print("\n" + " | ".join(res.columns))
        for r in res.rows[:50]:
            print(" | ".join("NULL" if v is None else str(v) for v in r))
        if len(res.rows) > 50 or res.truncated:
            print(f"... ({len(res.rows)}{'+' if res.truncated else ''} rows)")
    return 0 if check.ok else 1


if __name__ == "__main__":
    sys.exit(main())
