"""Schema linking's outputs, every field, for a refactor to be compared against: link_schema on every row of the
bundled data (train + eval, generated with seed 0) and on every 20th Spider training question (../shared/data/spider,
when present), under several budgets, gold / value-hint / path / fill settings and three token counters (the tests'
word count, a superadditive one that makes the final trimming loop run, the tests' tiny BPE tokenizer).

    python bench/linking_equivalence.py dump OUT.jsonl [--data DIR]     # one line per (setting, row)
    python bench/linking_equivalence.py compare BEFORE.jsonl AFTER.jsonl  # exit 1 when any output differs

To check a change: dump on the commit before it (`git worktree add /tmp/before <commit>`, run there) and on the
change, then compare. Both dumps must use the same --data folder (it is generated there once).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# (rows, budget, settings): small budgets where the schemas are small (Spider, the bundled small databases).
SETTINGS = [
    ("bundled", 700, {}),
    ("bundled", 300, {"gold": True}),
    ("bundled", 1024, {"value_hints": False}),
    ("bundled", 150, {"max_value_hints": 2}),
    ("bundled", 40, {"gold": True, "max_value_hints": 0}),
    ("bundled", 2048, {"keep_paths": False, "fill": False}),
    ("bundled", 60000, {}),  # everything fits: unchanged but for the hints
    ("spider", 60, {}),
    ("spider", 120, {"gold": True}),
    ("spider", 250, {"value_hints": False, "keep_paths": False}),
    ("spider", 40, {"gold": True, "fill": False}),
    ("bundled", 700, {"count": "lumpy"}),
    ("bundled", 300, {"count": "lumpy", "gold": True}),
    ("bundled", 1500, {"count": "lumpy", "max_value_hints": 3, "keep_paths": False}),
    ("spider", 80, {"count": "lumpy"}),
    ("spider", 150, {"count": "lumpy", "gold": True, "fill": False}),
    ("bundled", 2048, {"count": "bpe"}),
    ("bundled", 900, {"count": "bpe", "gold": True}),
    ("spider", 200, {"count": "bpe"}),
]


def words(text: str) -> int:
    """The tests' tokenizer-free count (tests/test_linking.py): words and punctuation."""
    return len(re.findall(r"\w+|[^\w\s]", text))


def lumpy(text: str) -> int:
    """Superadditive in the number of tables: the joined text counts more than its blocks, as a BPE may."""
    return words(text) + text.count("CREATE") ** 2 // 3


def load(folder: Path, split: str) -> list:
    from ft.data.rows import Row

    with open(folder / f"{split}.jsonl", encoding="utf-8") as f:
        return [Row(**(d | {"db_path": str(folder / d["db_path"])})) for d in map(json.loads, f)]


def as_list(linked) -> list:
    """Every field of a Linked, shown_columns in its own order (sets sorted)."""
    return [linked.schema, linked.kept, linked.dropped, linked.compact, [list(h) for h in linked.hints],
            linked.tokens, linked.full_tokens, linked.budget, linked.changed,
            [[k, None if v is None else sorted(v)] for k, v in linked.shown_columns.items()], linked.hint_text]


def dump(out: Path, data: Path) -> None:
    from ft.data.linking import TokenCounter, link_schema
    from ft.data.sources import _load_spider
    from ft.data.synthetic import generate

    sys.path.insert(0, str(REPO / "tests"))
    from tiny import build_tokenizer

    if not (data / "bundled" / "train.jsonl").is_file():
        generate(data / "bundled", seed=0)
    rows = {"bundled": load(data / "bundled", "train") + load(data / "bundled", "eval")}
    spider = REPO.parent / "shared" / "data" / "spider"
    rows["spider"] = _load_spider(spider, "train_spider")[::20] if spider.is_dir() else []
    print(f"bundled rows {len(rows['bundled'])}, spider rows {len(rows['spider'])}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        counters = {"words": words, "lumpy": lumpy, "bpe": TokenCounter(build_tokenizer(Path(tmp)))}
    n = 0
    with open(out, "w", encoding="utf-8") as f:
        for name, budget, settings in SETTINGS:
            start, changed = time.time(), 0
            kw = dict(settings)
            count = counters[kw.pop("count", "words")]
            for i, r in enumerate(rows[name]):
                linked = link_schema(r, budget, count, **kw)
                changed += linked.changed
                f.write(json.dumps([name, budget, settings, i, as_list(linked)]) + "\n")
                n += 1
            print(f"{name} budget={budget} {settings}: {len(rows[name])} rows, {changed} changed "
                  f"({time.time() - start:.0f}s)", flush=True)
    print(f"{n} outputs written to {out}")


def compare(before: Path, after: Path) -> int:
    a = before.read_text(encoding="utf-8").splitlines()
    b = after.read_text(encoding="utf-8").splitlines()
    if len(a) != len(b):
        print(f"{len(a)} outputs in {before}, {len(b)} in {after}")
        return 1
    diff = Counter()
    for x, y in zip(a, b):
        if x != y:
            name, budget, settings = json.loads(x)[:3]
            diff[f"{name} budget={budget} {settings}"] += 1
    print(f"{len(a)} outputs compared, {sum(diff.values())} differ")
    for k, n in diff.items():
        print(f"  {k}: {n}")
    return 1 if diff else 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("dump", help="link every row under every setting, write the outputs")
    d.add_argument("out", type=Path)
    d.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "sqlft-linking-equivalence")
    c = sub.add_parser("compare", help="compare two dumps (exit 1 when any output differs)")
    c.add_argument("before", type=Path)
    c.add_argument("after", type=Path)
    args = p.parse_args()
    if args.cmd == "dump":
        dump(args.out, args.data)
        return 0
    return compare(args.before, args.after)


if __name__ == "__main__":
    sys.exit(main())
