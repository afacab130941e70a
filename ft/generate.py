"""`sqlft generate` (`python -m ft.generate`): one question + a schema -> validated SQL (and, with --db, its rows).

    sqlft generate --adapter runs/demo/adapter --schema schema.sql --question "Total sales per category?"
    sqlft generate --model smollm2-135m-instruct --schema schema.sql --question "..." --db shop.sqlite --retries 4
    sqlft generate --adapter runs/pg/adapter --db postgresql://analyst@warehouse/sales --question "..." --samples 8

With --db alone the schema (and the database's own functions) come from the live database; --schema overrides it.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from ft.cli import Alias, Command, adapter_run_config, run
from ft.data.rows import DataError, Row
from ft.eval.generation import Generator
from ft.eval.scoring import Candidate, check_answer, first_valid, vote
from ft.model import ModelError
from ft.sql.engine import DatabaseError, database
from ft.system import set_process_defaults


def answer(model, tokenizer, row: Row, template: str, e, prompt: Row | None = None) -> tuple[Candidate, bool]:
    """(the chosen candidate, whether alternatives were sampled) for one question, by the same rules as `sqlft eval`
    (ft.eval.scoring): the greedy answer; with eval.samples the vote over executed candidates (it needs --db: without
    a database nothing executes, and the greedy answer stands); with eval.retries the first sample that validates
    when the greedy answer doesn't."""
    def checked(texts, logprobs):
        return [check_answer(row, t, e.timeout_s, e.max_rows, logprob=lp) for t, lp in zip(texts, logprobs)]

    gen = Generator(model, tokenizer, template, e.max_new_tokens, samples=e.samples, temperature=e.temperature,
                    top_p=e.top_p, constrain=e.constrain)
    prompt = prompt or row  # what the model reads (a linked schema); answers are checked against `row`
    out = gen.run([prompt])[0]
    greedy = check_answer(row, out.text, e.timeout_s, e.max_rows, greedy=True)
    if e.samples:
        return vote([greedy, *checked(out.samples, out.sample_logprobs)])[0], True
    if e.retries and greedy.validation_errors:
        extra = Generator(model, tokenizer, template, e.max_new_tokens, samples=e.retries, temperature=e.temperature,
                          top_p=e.top_p, constrain=e.constrain).run([prompt], greedy=False)[0]
        return first_valid(greedy, checked(extra.samples, extra.sample_logprobs)), True
    return greedy, False


def _own(p) -> None:
    p.add_argument("--adapter", help="LoRA adapter, checkpoint or run folder")
    p.add_argument("--schema", help="file with CREATE TABLE statements [with --db: read from the database]")
    p.add_argument("--question", required=True)
    p.add_argument("--evidence", help="hint text (as in BIRD)")
    p.add_argument("--macros", help="JSON file with in-house macros [{name, params, body, doc}]")
    p.add_argument("--db", help="database to run the SQL on (read-only) and print the rows: a SQLite or DuckDB file, "
                                "duckdb:///FILE or postgresql://user@host:port/db [data.db]")


COMMAND = Command(
    name="generate",
    description=__doc__,
    add_arguments=_own,
    default_config=adapter_run_config,
    aliases=[
        Alias("--model", "model.name_or_path", "base model [the adapter's run's]"),
        Alias("--quantization", "quantization.mode"),
        Alias("--retries", "eval.retries", "sampled alternatives when validation fails"),
        Alias("--samples", "eval.samples", "execution-guided decoding: vote over N executed samples (needs --db)"),
        Alias("--constrain", "eval.constrain", "only the schema's table / column names while decoding", const="true"),
        Alias("--max-new-tokens", "eval.max_new_tokens"),
    ],
)


def generate_command(cfg, args) -> int:
    from ft.config import resolve
    from ft.data.linking import fit_prompt
    from ft.inference import load_for_inference, prefer_unquantized_on_cpu

    url = args.db or cfg.data.db
    db = database(url) if url else None
    if db is not None and (problem := db.problem()):
        raise DataError(f"--db: {problem}")
    if args.schema:
        schema_path = Path(args.schema)
        if not schema_path.is_file():
            raise DataError(f"Schema file '{schema_path}' (--schema) does not exist.")
        schema = schema_path.read_text()
    elif db is not None:
        schema = db.schema()
        if not schema.strip():
            raise DataError(f"--db {db.url} has no table this role can read, and no --schema was given.")
    else:
        raise DataError("Give the schema: --schema FILE, or --db DATABASE to read it from the database.")
    macros = json.loads(Path(args.macros).read_text()) if args.macros else (db.functions() if db else None) or None
    row = Row(question=args.question, query="", schema=schema, evidence=args.evidence, macros=macros,
              db=db.url if db else None, dialect=None if cfg.data.dialect == "auto" else cfg.data.dialect)
    if note := prefer_unquantized_on_cpu(cfg, explicit="quantization.mode" in args.overrides):
        print(note, file=sys.stderr)
    cfg = resolve(cfg)
    model, tokenizer = load_for_inference(cfg, args.adapter)
    # Never over the model's context: the schema linked to fit (data.schema_linking), or an error saying how.
    prompt = fit_prompt(row, tokenizer, cfg.data.template, cfg.data, model.config.max_position_embeddings,
                        reserve=cfg.eval.max_new_tokens)
    print(_tables_shown(row, prompt), file=sys.stderr)
    chosen, sampled = answer(model, tokenizer, row, cfg.data.template, cfg.eval, prompt=prompt)
    print(chosen.sql)
    if chosen.validation_errors:
        also = " (also after sampling alternatives)" if sampled else ""
        print(f"\n-- validation failed{also}:", file=sys.stderr)
        for message in chosen.validation_errors:
            print(f"--   {message}", file=sys.stderr)
    if db is not None:
        res = chosen.result
        if res.error:
            print(f"\n-- execution error: {res.error}", file=sys.stderr)
            return 1
        print("\n" + " | ".join(res.columns))
        for r in res.rows[:50]:
            print(" | ".join("NULL" if v is None else str(v) for v in r))
        if len(res.rows) > 50 or res.truncated:
            print(f"... ({len(res.rows)}{'+' if res.truncated else ''} rows)")
    return 1 if chosen.validation_errors else 0


def _tables_shown(row: Row, prompt: Row) -> str:
    """One line saying which tables the model was shown (all, or those schema linking kept)."""
    from ft.sql.parse import split_ddl

    try:
        every, shown = [n for n, _ in split_ddl(row.schema)], [n for n, _ in split_ddl(prompt.schema)]
    except ValueError:
        return "-- schema: shown as given"
    where = f" of {database(row.db).display} database {row.db}" if row.db else ""
    if prompt.schema == row.schema:
        return f"-- schema{where}: all {len(every)} tables shown to the model"
    listed = ", ".join(shown[:20]) + (f", ... ({len(shown) - 20} more)" if len(shown) > 20 else "")
    return f"-- schema{where}: {len(shown)} of {len(every)} tables shown to the model (schema linking): {listed}"


def main(argv: list[str] | None = None) -> int:
    set_process_defaults()
    return run(COMMAND, generate_command, argv,
               errors=(DataError, DatabaseError, ModelError, FileNotFoundError, json.JSONDecodeError))


if __name__ == "__main__":
    sys.exit(main())
