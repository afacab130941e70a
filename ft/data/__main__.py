"""Data command line: `python -m ft.data <command> ...`.

    python -m ft.data convert /data/spider --split dev --out spider_dev.jsonl
    python -m ft.data convert b-mc2/sql-create-context --format hf --columns query=answer,schema=context --out scc.jsonl

Errors are printed to stderr as one paragraph, without a traceback, and exit with code 2.
To add a command: write `_add_<name>(subparsers)` and `_cmd_<name>(args) -> int`, and list it in COMMANDS.
"""
from __future__ import annotations

import argparse
import sys

from ft.data.rows import DataError


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


def _add_convert(sub) -> None:
    p = sub.add_parser("convert", help="convert any supported source to our JSONL format")
    p.add_argument("source", help="file, folder, Hugging Face dataset name, or 'bundled'")
    p.add_argument("--format", default="auto",
                   choices=["auto", "jsonl", "json", "csv", "parquet", "hf", "spider", "bird", "bundled"])
    p.add_argument("--split", default=None, help="spider/bird/bundled/hf split name")
    p.add_argument("--columns", default="", help="column mapping our_field=their_column,...")
    p.add_argument("--out", required=True, help="output .jsonl (written atomically)")
    p.add_argument("--skip-bad-rows", action="store_true", help="drop bad rows instead of failing (counts are printed)")
    p.add_argument("--cache-dir", default="~/.cache/sqlft/data", help="where the bundled dataset is generated")


def _cmd_convert(args) -> int:
    from ft.data.sources import check_rows, load_source, write_jsonl

    rows = load_source(args.source, args.format, args.split, _parse_columns(args.columns), args.cache_dir)
    rows, report = check_rows(rows, skip_bad_rows=args.skip_bad_rows, source_name=args.source)
    path = write_jsonl(rows, args.out)
    print(f"wrote {len(rows)} rows to {path} (read {report['rows_in']}, skipped {report['bad_rows']} bad, "
          f"{report['unparsable_gold']} with gold SQL sqlglot cannot parse)")
    return 0


# ---- stats / show: to be added here, following the same pattern -------------------------------


COMMANDS = {
    "convert": (_add_convert, _cmd_convert),
    # "stats": (_add_stats, _cmd_stats),
    # "show": (_add_show, _cmd_show),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ft.data", description="Inspect and convert text-to-SQL datasets.")
    sub = parser.add_subparsers(dest="command", required=True)
    for add, _ in COMMANDS.values():
        add(sub)
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command][1](args)
    except (DataError, OSError) as e:
        # One paragraph: the message's own lines (e.g. the listed bad rows) but no blank lines, no traceback.
        text = "\n".join(line for line in str(e).splitlines() if line.strip())
        print(f"error: {text}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
