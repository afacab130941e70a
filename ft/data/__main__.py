"""`sqlft data <command>` (`python -m ft.data`): inspect and convert text-to-SQL datasets.

    sqlft data convert /data/spider --split dev --out spider_dev.jsonl
    sqlft data stats [--config configs/demo.yaml] [--data.max_length 512 ...]
    sqlft data show -n 3
    sqlft data convert b-mc2/sql-create-context --format hf --columns query=answer,schema=context --out scc.jsonl
    sqlft data convert bundled --split eval --to-db postgresql://me@localhost/sqlft --out eval_pg.jsonl
    sqlft data from-db postgresql://analyst@warehouse/sales questions.jsonl --out rows.jsonl

stats and show see the data exactly as training will (same config, tokenizer and encoder). Errors are printed to
stderr as one paragraph, without a traceback, and exit with code 2.
"""
from __future__ import annotations

import sys

from ft.cli import Alias, Command, run
from ft.constants import EXIT_USAGE
from ft.data.rows import DataError
from ft.sql.engine import DatabaseError


def _parse_columns(text: str) -> dict[str, str]:
    """`query=answer,schema=context` -> {"query": "answer", "schema": "context"}."""
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        if "=" not in part:
            raise DataError(f"--columns entry '{part}' should look like our_field=their_column.")
        ours, theirs = (s.strip() for s in part.split("=", 1))
        out[ours] = theirs
    return out


# ---- convert ---------------------------------------------------------------------------------


def _convert_args(p) -> None:
    p.add_argument("source", help="file, folder, Hugging Face dataset name, or 'bundled'")
    p.add_argument("--out", required=True, help="output .jsonl (written atomically)")
    p.add_argument("--to-db", help="copy the rows' SQLite databases to this PostgreSQL URL (a schema per database) "
                                   "or DuckDB folder / file, transpile the gold SQL and check every gold query "
                                   "returns the same rows there (a report of those that don't)")
    p.add_argument("--replace", action="store_true", help="with --to-db: overwrite copies made before")


CONVERT = Command(
    name="data convert", description="convert any supported source to our JSONL format", add_arguments=_convert_args,
    aliases=[
        Alias("--format", "data.format"),
        Alias("--split", "data.split", "spider/bird/bundled/hf split name"),
        Alias("--columns", "data.columns", "column mapping our_field=their_column,...", convert=_parse_columns),
        Alias("--skip-bad-rows", "data.skip_bad_rows", "drop bad rows instead of failing (counts are printed)",
              const="true"),
        Alias("--cache-dir", "data.cache_dir", "where the bundled dataset is generated"),
    ],
)


def _cmd_convert(cfg, args) -> int:
    from ft.data.sources import check_rows, load_source, write_jsonl

    d = cfg.data
    rows = load_source(args.source, d.format, d.split, d.columns, d.cache_dir)
    rows, report = check_rows(rows, skip_bad_rows=d.skip_bad_rows, source_name=args.source)
    if args.to_db:
        return _convert_to_db(rows, report, args)
    path = write_jsonl(rows, args.out)
    print(f"wrote {len(rows)} rows to {path} (read {report['rows_in']}, skipped {report['bad_rows']} bad, "
          f"{report['unparsable_gold']} with gold SQL sqlglot cannot parse)")
    return 0


def _convert_to_db(rows, report, args) -> int:
    """Copy, transpile, check; the rows are all written, and the gold queries whose rows differ are listed in
    OUT.report.json (exit 1 when any differs other than in the order of tied rows: nothing wrong passes as right)."""
    import json
    from pathlib import Path

    from ft.data.copy_db import copy_rows
    from ft.data.sources import write_jsonl

    copied, copy_report = copy_rows(rows, args.to_db, replace=args.replace)
    path = write_jsonl(copied, args.out)
    record = Path(str(path) + ".report.json")
    record.write_text(json.dumps(copy_report.to_dict(), indent=1, ensure_ascii=False) + "\n")
    for note in copy_report.notes:
        print(f"note: {note}")
    n, bad = copy_report.checked, copy_report.mismatches
    differ = [m for m in bad if m["kind"] == "differ"]
    ties = len(bad) - len(differ)
    print(f"wrote {len(copied)} rows to {path} (read {report['rows_in']}, skipped {report['bad_rows']} bad); "
          f"databases: {', '.join(f'{k} -> {v}' for k, v in copy_report.databases.items())}")
    print(f"gold queries returning the same rows as on SQLite: {n - len(bad)} of {n}"
          + (f"; {ties} only in another order of rows whose ORDER BY values tie" if ties else "")
          + (f"; {len(differ)} differ (first: {differ[0]['origin']}: {differ[0]['why'][:200]})" if differ else "")
          + f"; every case is listed in {record}")
    return 1 if differ else 0  # tie order is the engine's free choice, not a fault of the copy


# ---- from-db: schema (and db, functions) from a live database for rows of question + SQL ----------------------


def _from_db_args(p) -> None:
    p.add_argument("db", help="the database: postgresql://user@host:port/db, duckdb:///FILE or a SQLite file")
    p.add_argument("source", help="rows with question and query (JSONL, JSON, CSV or Parquet); a row's own db or "
                                  "schema is kept")
    p.add_argument("--out", required=True, help="output .jsonl (written atomically)")


FROM_DB = Command(name="data from-db", description="fill schema and db of question + SQL rows from a live database",
                  add_arguments=_from_db_args,
                  aliases=[Alias("--columns", "data.columns", "column mapping our_field=their_column,...",
                                 convert=_parse_columns)])


def _cmd_from_db(cfg, args) -> int:
    from ft.data.copy_db import rows_from_db
    from ft.data.sources import read_question_rows, write_jsonl

    rows = read_question_rows(args.source, cfg.data.columns)
    filled, report = rows_from_db(rows, args.db)
    path = write_jsonl(filled, args.out)
    failed = report["gold_failed"]
    print(f"wrote {len(filled)} rows to {path}; schema from {', '.join(report['databases'])}")
    if failed:
        first = failed[0]
        print(f"warning: {len(failed)} of {len(filled)} gold queries fail on the database (first: {first['origin']}: "
              f"{first['error'][:200]})", file=sys.stderr)
    return 0


# ---- stats / show: what training will see, through the same config, tokenizer and encoder -------


def _encoded_from_config(cfg):
    """The encoded data training would use (the same cache: ft/data/encoded.py; built here if it isn't yet)."""
    from ft.data.encoded import encoded_data
    from ft.model import load_tokenizer, local_model_dir

    tok = load_tokenizer(local_model_dir(cfg))
    return tok, encoded_data(cfg, tok, min_eval=cfg.train.per_device_batch_size)


def _histogram(values: list[int], bins: int = 12, width: int = 40) -> str:
    lo, hi = min(values), max(values)
    step = max(1, -(-(hi - lo + 1) // bins))
    counts = [0] * bins
    for v in values:
        counts[min((v - lo) // step, bins - 1)] += 1
    top = max(counts)
    return "\n".join(f"  {lo + i * step:>6}-{lo + (i + 1) * step - 1:<6} {c:>6} {'#' * round(width * c / top)}"
                     for i, c in enumerate(counts) if c)


STATS = Command(name="data stats", description="counts, token lengths, truncation and padding, as training will see "
                                                "them (the training config and overrides)", training=True)


def _cmd_stats(cfg, args) -> int:
    import collections
    import statistics

    from ft.data.batching import BatchPlan

    tok, data = _encoded_from_config(cfg)
    encoded, counts, report = data.train, data.encoding, data.report
    d, t = cfg.data, cfg.train
    lengths = encoded.lengths.tolist()  # stored per example: no example is read
    targets = (encoded.lengths - encoded.prompt_lens).tolist()  # the loss is on every token after the prompt
    print(f"train rows {len(data.train_rows)}, eval rows {len(data.eval_rows)}; checks: {report.get('checks')}")
    print(f"encoding (max_length {d.max_length}, overlong={d.overlong}): {counts}")
    print(f"tokens per example: mean {statistics.mean(lengths):.0f}, median {statistics.median(lengths):.0f}, "
          f"p90 {sorted(lengths)[int(0.9 * (len(lengths) - 1))]}, max {max(lengths)}; "
          f"answer tokens: mean {statistics.mean(targets):.0f} ({100 * sum(targets) / sum(lengths):.1f}% of all)")
    print("token-length histogram:\n" + _histogram(lengths))
    layouts = (("padded", False, False), ("grouped by length", False, True), ("packed", True, False))
    for name, packing, grouped in layouts:
        plan = BatchPlan(lengths, t.per_device_batch_size, d.max_length, packing, grouped, t.seed,
                         pad_multiple=d.pad_to_multiple_of)
        pad = plan.padding()
        print(f"  {name:<18} padding {100 * pad['padding_fraction']:5.1f}%"
              + (f"  ({len(plan.bins)} packed rows for {len(lengths)} examples)" if packing else ""))
    # The plan this config trains with (one process; several divide the steps).
    from ft.data.prefix import no_step_message, plan_for

    plan = plan_for(encoded, d, t)
    steps = plan.steps_per_epoch()
    kind = "prefix-shared groups" if d.prefix_sharing else "packed bins" if d.packing else "padded examples"
    print(f"this config's plan: {plan.n_rows} rows of {kind}, {steps} optimizer steps per epoch "
          f"({t.per_device_batch_size} rows x {t.gradient_accumulation_steps} accumulation per step, 1 process); "
          f"padding {100 * plan.padding()['padding_fraction']:.1f}% (widths rounded up to data.pad_to_multiple_of "
          f"{d.pad_to_multiple_of})")
    if d.prefix_sharing:
        print(f"  prefix sharing: {plan.stats()}")
    from ft.config import fixed_steps

    total = fixed_steps(t, steps)
    if t.max_minutes is not None:
        cap = f", at most {total} steps (train.max_steps)" if total else ""
        print(f"  length: planned when training starts, for train.max_minutes {t.max_minutes:g} (the first steps "
              f"timed on that machine){cap}")
    elif steps:
        why = "train.max_steps" if t.max_steps is not None else f"train.epochs {t.epochs:g}"
        print(f"  length: {total} optimizer steps ({why}: {total / steps:.2f} epochs of {steps} steps)")
    if steps == 0:
        print(f"  warning: {no_step_message(plan, len(encoded), d, t)}")
    for key in ("difficulty", "db_id"):
        c = collections.Counter(v for (v,) in data.train_rows.values(key))
        shown = c if len(c) <= BY_VALUE else dict(c.most_common(BY_VALUE))  # thousands of databases: the largest
        more = f" ({len(c)} values, the {BY_VALUE} most frequent)" if len(shown) < len(c) else ""
        print(f"train by {key}{more}: "
              + ", ".join(f"{k}={v}" for k, v in sorted(shown.items(), key=lambda kv: str(kv[0]))))
    _dialect_stats(data.train_rows)
    _linking_stats(cfg, data.train_rows, tok)
    return 0


GOLD_CHECKED = 200  # gold queries validated by `data stats` (the first distinct ones)


def _dialect_stats(rows) -> None:
    """The SQL dialect(s) the rows are read in, and how many of the first GOLD_CHECKED gold queries fail to validate
    in it: SQL written for another engine than the rows say is seen here, before training on it."""
    import collections

    from ft.data.rows import sql_dialect
    from ft.sql.engine import database, display_name
    from ft.sql.validate import validate

    # From two columns, not a Row per row: a million rows are counted in a second.
    pairs = collections.Counter(rows.values("dialect", "db")) if hasattr(rows, "values") \
        else collections.Counter((r.dialect, r.db) for r in rows)
    dialects = collections.Counter()
    for (dialect, db), n in pairs.items():
        dialects[sql_dialect(dialect, db)] += n
    print("SQL dialect (data.dialect, else each row's database): "
          + ", ".join(f"{display_name(d)} {n}" for d, n in dialects.most_common()))
    seen, bad = set(), []
    for r in rows:
        if len(seen) >= GOLD_CHECKED:
            break
        if r.query in seen:
            continue
        seen.add(r.query)
        db = database(r.db) if r.db else None
        try:
            v = validate(r.query, r.schema, r.macros, dialect=r.sql_dialect, db=db)
            if not v.ok:
                bad.append((r, v.errors[0].message))
        except Exception as e:  # noqa: BLE001 - a check, never a crash
            bad.append((r, f"could not be checked ({type(e).__name__})"))
    if bad:
        r, why = bad[0]
        print(f"  warning: {len(bad)} of {len(seen)} gold queries checked do not validate as "
              f"{display_name(r.sql_dialect)} (first: {r.origin}: {why[:160]}); if the SQL is written for another "
              "engine, set data.dialect (postgres, duckdb, ...) or give the rows their database (db)")
    else:
        print(f"  the {len(seen)} gold queries checked validate as {', '.join(map(display_name, dialects))}")


BY_VALUE = 40  # values listed per field in the counts by difficulty / database
LINKING_SAMPLE = 20_000  # rows linked for the schema-linking figures; more: a seeded sample of this many


def _linking_stats(cfg, train, tok) -> None:
    """Prompt tokens before / after schema linking and the gold tables it keeps at the budget, linking as inference
    does (the gold query unseen); on a seeded sample of LINKING_SAMPLE rows when there are more (linking every row
    of a million would take as long as encoding them)."""
    import random

    from ft.data.linking import measure

    d = cfg.data
    n = len(train)
    sample = sorted(random.Random(f"linking_stats:{cfg.train.seed}").sample(range(n), LINKING_SAMPLE)) \
        if n > LINKING_SAMPLE else None
    budget = d.schema_budget or None
    m = measure(train.by_schema(sample), tok, d.template, budget, d, value_hints=d.schema_linking and d.value_hints,
                max_value_hints=d.max_value_hints, over=d.max_length)
    at = f"data.schema_budget {budget}" if budget else f"the room data.max_length {d.max_length} leaves each row"
    state = "on" if d.schema_linking else "off: what it would do"
    everyone = f"a seeded sample of {LINKING_SAMPLE} of {n} rows" if sample else "all rows"
    for label, part in ((everyone, m), (f"rows over max_length {d.max_length} unlinked", m.get("over_limit"))):
        if not part or not part["rows"]:
            continue
        b, a = part["prompt_tokens_before"], part["prompt_tokens_after"]
        print(f"schema linking ({state}) at {at}, {label}: {part['rows_linked']} of {part['rows']} linked; prompt "
              f"tokens mean {b['mean']} -> {a['mean']}, p90 {b['p90']} -> {a['p90']}, max {b['max']} -> {a['max']}; "
              f"gold-table recall {part['gold_table_recall']} (all gold tables kept {part['all_gold_tables_kept']}), "
              f"gold-column recall {part['gold_column_recall']}, value hints per row {part['value_hints_per_row']}")


SHOW = Command(name="data show", description="print a few rendered training examples (prompt | answer)",
               add_arguments=lambda p: p.add_argument("-n", type=int, default=2, help="how many"))


def _cmd_show(cfg, args) -> int:
    tok, data = _encoded_from_config(cfg)
    for e in data.train[: args.n]:
        cut = next(i for i, l in enumerate(e.labels) if l != -100)
        print(tok.decode(e.input_ids[:cut]) + "<<<LOSS STARTS HERE>>>" + tok.decode(e.input_ids[cut:]))
        print("=" * 80)
    return 0


COMMANDS = {"convert": (CONVERT, _cmd_convert), "stats": (STATS, _cmd_stats), "show": (SHOW, _cmd_show),
            "from-db": (FROM_DB, _cmd_from_db)}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    if not argv or argv[0] not in COMMANDS:
        print(f"error: {'unknown data command ' + repr(argv[0]) if argv else 'no data command given'}; commands: "
              f"{', '.join(COMMANDS)} (sqlft data COMMAND --help)", file=sys.stderr)
        return EXIT_USAGE
    cmd, body = COMMANDS[argv[0]]
    return run(cmd, body, argv[1:], errors=(DataError, DatabaseError, OSError))


if __name__ == "__main__":
    sys.exit(main())
