"""Padding, measured: the share of pad tokens in the micro-batches training builds, on the bundled data and on
Spider's 7,000 training questions, for each layout, under the demo config (schema linking to 320 tokens included) with
packing on, prefix sharing off and 2 rows a micro-batch: what `sqlft data stats --data.packing true
--data.prefix_sharing false --train.per_device_batch_size 2` prints.

    python bench/padding.py [--spider ../shared/data/spider] [--max-length N] [--batch-size N]

Layouts: padded (each example a row, a micro-batch padded to its longest), packed (best-fit-decreasing bins, a
micro-batch's bins end to end in one row, as the loop runs them), and packed bins kept as separate padded rows. The
packed figure is counted from the collated tensors (their positions beyond the examples' tokens, in every micro-batch
of an epoch), not from the plan, beside the plan's own figure. Widths are rounded up to data.pad_to_multiple_of (64),
as training rounds them; `unrounded` holds the same plans' figures without it. Writes bench/results/padding.json.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).parent))
OUT = REPO / "bench" / "results" / "padding.json"


def measure(cfg) -> dict:
    from ft.data.__main__ import _encoded_from_config
    from ft.data.batching import BatchPlan, padding_stats

    tok, data = _encoded_from_config(cfg)
    encoded, lengths = data.train, data.train.lengths.tolist()
    t, d = cfg.train, cfg.data
    m, limit = d.pad_to_multiple_of, d.max_length
    out = {"examples": len(encoded), "encoding": data.encoding, "pad_to_multiple_of": m}
    padded = BatchPlan(lengths, t.per_device_batch_size, limit, False, False, t.seed, pad_multiple=m)
    packed = BatchPlan(lengths, t.per_device_batch_size, limit, True, False, t.seed, pad_multiple=m)
    real = positions = 0
    for micro in packed.global_micro_batches(0):  # as the loop gets them: positions beyond the examples' tokens
        batch = packed.collate(micro, encoded, tok.pad_token_id)  # (pad may be EOS: its id can't tell padding)
        real += sum(lengths[i] for row in micro for i in row)
        positions += batch["input_ids"].numel()
    out["padded_padding"] = padded.padding()["padding_fraction"]
    out["packed_padding_plan"] = packed.padding()["padding_fraction"]
    out["packed_padding_collated"] = (positions - real) / positions if positions else None
    out["packed_rows"] = len(packed.bins)
    out["packed_bins_as_padded_rows"] = padding_stats(packed.global_micro_batches(0), lengths, multiple=m,
                                                      limit=limit)["padding_fraction"]
    # the same plans with widths not rounded (data.pad_to_multiple_of 1)
    out["unrounded"] = {
        "padded_padding": padding_stats(padded.global_micro_batches(0), lengths)["padding_fraction"],
        "packed_padding_plan": padding_stats(packed.global_micro_batches(0), lengths, packed=True)["padding_fraction"],
        "packed_bins_as_padded_rows": padding_stats(packed.global_micro_batches(0), lengths)["padding_fraction"]}
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--spider", default=str(REPO.parent / "shared" / "data" / "spider"))
    p.add_argument("--max-length", type=int, default=None, help="[the demo config's: 1024]")
    p.add_argument("--batch-size", type=int, default=2, help="rows (bins) per micro-batch [2]")
    p.add_argument("--out", default=str(OUT))
    args = p.parse_args()

    from train_throughput import machine, versions

    from ft.config import load_config
    from ft.constants import DEFAULT_CONFIG

    # the README's command: `sqlft data stats --data.packing true --data.prefix_sharing false` (the demo config)
    common = {"data.packing": True, "data.prefix_sharing": False}
    if args.max_length:
        common["data.max_length"] = args.max_length
    if args.batch_size:
        common["train.per_device_batch_size"] = args.batch_size
    results = {"bundled": measure(load_config(DEFAULT_CONFIG, common | {"data.source": "bundled"}))}
    print("bundled", json.dumps(results["bundled"]), flush=True)
    if Path(args.spider).is_dir():
        results["spider_train"] = measure(load_config(DEFAULT_CONFIG, common | {
            "data.source": args.spider, "data.format": "spider", "data.split": "train", "data.eval_fraction": 0.0}))
        print("spider", json.dumps(results["spider_train"]), flush=True)
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    result = {"benchmark": "padding", "date": date.today().isoformat(), "commit": commit, "machine": machine(),
              "versions": versions(), "command": "python bench/padding.py " + " ".join(sys.argv[1:]),
              "settings": {"config": "configs/demo.yaml with data.packing true, data.prefix_sharing false",
                           "overrides": common},
              "data": {"bundled": "train split (training rows after the held-out split)",
                       "spider_train": "train_spider.json, 7,000 questions (schemas from tables.json)"},
              "results": results}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
