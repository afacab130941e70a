"""python -m ft.data.synthetic --out DIR [--seed N]: generate the bundled dataset and print its counts."""
from __future__ import annotations

import argparse
import json
import time

from .generator import generate


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m ft.data.synthetic", description=__doc__)
    ap.add_argument("--out", required=True, help="output folder (replaced if it holds an older bundled dataset)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    start = time.perf_counter()
    out = generate(args.out, seed=args.seed)
    manifest = json.loads((out / "manifest.json").read_text())
    print(f"wrote {out} in {time.perf_counter() - start:.1f}s (version {manifest['version']}, seed {args.seed}, "
          f"held-out dbs: {', '.join(manifest['heldout_dbs'])})")
    for split, c in manifest["counts"].items():
        print(f"{split:>5}: {c['total']:5d} rows")
        print(f"       by db:   {', '.join(f'{k} {v}' for k, v in c['by_db'].items())}")
        print(f"       by tier: {', '.join(f'{k} {v}' for k, v in c['by_tier'].items())}")


if __name__ == "__main__":
    main()
