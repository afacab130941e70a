"""Data command line: `python -m ft.data <command> ...`.

    python -m ft.data convert /data/spider --split dev --out spider_dev.jsonl
    python -m ft.data stats [--config configs/demo.yaml] [--data.max_length 512 ...]
    python -m ft.data show -n 3
    python -m ft.data convert b-mc2/sql-create-context --format hf --columns query=answer,schema=context --out scc.jsonl

Errors are printed to stderr as one paragraph, without a traceback, and exit with code 2.
To add a command: write `_add_<name>(subparsers)` and `_cmd_<name>(args) -> int`, and list it in COMMANDS.
"""
from __future__ import annotations

import argparse
import sys

from ft.config import ConfigError
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


# ---- stats / show: what training will see, through the same config, tokenizer and encoder -------


def _add_config_args(p) -> None:
    p.add_argument("--config", default=None, help="training config YAML (default: configs/demo.yaml)")
    p.set_defaults(takes_overrides=True)  # any other --section.key value: config overrides, as for ft/train.py


def _encoded_from_config(args):
    from pathlib import Path

    from ft.config import load_config
    from ft.data.prompt import encode_rows
    from ft.data.sources import load_splits
    from ft.model import load_tokenizer, local_model_dir

    path = args.config or Path(__file__).resolve().parents[2] / "configs" / "demo.yaml"
    cfg = load_config(path, args.overrides)
    tok = load_tokenizer(local_model_dir(cfg))
    train, evals, report = load_splits(cfg.data, cfg.train.seed)
    d = cfg.data
    encoded, counts = encode_rows(train, tok, d.template, d.max_length, d.overlong)
    return cfg, tok, train, evals, report, encoded, counts


def _histogram(values: list[int], bins: int = 12, width: int = 40) -> str:
    lo, hi = min(values), max(values)
    step = max(1, -(-(hi - lo + 1) // bins))
    counts = [0] * bins
    for v in values:
        counts[min((v - lo) // step, bins - 1)] += 1
    top = max(counts)
    return "\n".join(f"  {lo + i * step:>6}-{lo + (i + 1) * step - 1:<6} {c:>6} {'#' * round(width * c / top)}"
                     for i, c in enumerate(counts) if c)


def _add_stats(sub) -> None:
    p = sub.add_parser("stats", help="counts, token lengths, truncation and padding, as training will see them")
    _add_config_args(p)


def _cmd_stats(args) -> int:
    import collections
    import statistics

    from ft.data.batching import BatchPlan, padding_stats

    cfg, _, train, evals, report, encoded, counts = _encoded_from_config(args)
    d, t = cfg.data, cfg.train
    lengths = [len(e.input_ids) for e in encoded]
    targets = [sum(l != -100 for l in e.labels) for e in encoded]
    print(f"train rows {len(train)}, eval rows {len(evals)}; checks: {report.get('checks')}")
    print(f"encoding (max_length {d.max_length}, overlong={d.overlong}): {counts}")
    print(f"tokens per example: mean {statistics.mean(lengths):.0f}, median {statistics.median(lengths):.0f}, "
          f"p90 {sorted(lengths)[int(0.9 * (len(lengths) - 1))]}, max {max(lengths)}; "
          f"answer tokens: mean {statistics.mean(targets):.0f} ({100 * sum(targets) / sum(lengths):.1f}% of all)")
    print("token-length histogram:\n" + _histogram(lengths))
    for name, packing, grouped in (("padded", False, False), ("grouped by length", False, True), ("packed", True, False)):
        plan = BatchPlan(lengths, t.per_device_batch_size, d.max_length, packing, grouped, t.seed)
        pad = padding_stats(plan.global_micro_batches(0), lengths, packed=packing)
        print(f"  {name:<18} padding {100 * pad['padding_fraction']:5.1f}%"
              + (f"  ({len(plan.bins)} packed rows for {len(lengths)} examples)" if packing else ""))
    for key in ("difficulty", "db_id"):
        c = collections.Counter(getattr(r, key) for r in train)
        print(f"train by {key}: " + ", ".join(f"{k}={v}" for k, v in sorted(c.items(), key=lambda kv: str(kv[0]))))
    return 0


def _add_show(sub) -> None:
    p = sub.add_parser("show", help="print a few rendered training examples (prompt | answer)")
    p.add_argument("-n", type=int, default=2, help="how many")
    _add_config_args(p)


def _cmd_show(args) -> int:
    _, tok, _, _, _, encoded, _ = _encoded_from_config(args)
    for e in encoded[: args.n]:
        cut = next(i for i, l in enumerate(e.labels) if l != -100)
        print(tok.decode(e.input_ids[:cut]) + "<<<LOSS STARTS HERE>>>" + tok.decode(e.input_ids[cut:]))
        print("=" * 80)
    return 0


COMMANDS = {
    "convert": (_add_convert, _cmd_convert),
    "stats": (_add_stats, _cmd_stats),
    "show": (_add_show, _cmd_show),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ft.data", description="Inspect and convert text-to-SQL datasets.")
    sub = parser.add_subparsers(dest="command", required=True)
    for add, _ in COMMANDS.values():
        add(sub)
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "takes_overrides", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.overrides = extra
    try:
        return COMMANDS[args.command][1](args)
    except (DataError, ConfigError, OSError) as e:
        # One paragraph: the message's own lines (e.g. the listed bad rows) but no blank lines, no traceback.
        text = "\n".join(line for line in str(e).splitlines() if line.strip())
        print(f"error: {text}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
