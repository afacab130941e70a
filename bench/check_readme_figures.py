"""Every number in the README's tables is found in the bench/results record the table cites: a figure changed by
hand, or left behind when its record was re-measured, fails.

    python bench/check_readme_figures.py [README.md] [--prose]

A table cites the records linked (`bench/results/<file>`) in its own cells, or else in the text between it and the
previous table or heading; `<!-- record: bench/results/X.json -->` just above a table names its record outright. Every
number of the table's body outside its first column (the row labels) and outside `code` and links must equal a value
of a cited record as the README shows it: rounded to the README's decimals, as it is, as a percentage (x 100) or in
another unit (/ 60, / 1,000, / 1,024, / 2**20, / 2**30, / 1e6, / 1e9); in a Markdown record, as text. A table with
numbers and no record fails too. `--prose` also lists paragraphs with figures (a %, an x ratio, a time) that cite no
record, for a person to check (not a failure: prose holds dates, sizes and settings as well).

Exit 0 when every table figure is found, 1 otherwise (each miss on one line: README line, figure, records).
"""
from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RECORD_LINK = re.compile(r"bench/results/[\w.-]+\.(?:json|md)")
RECORD_COMMENT = re.compile(r"<!--\s*record:\s*(.+?)\s*-->")
NUMBER = re.compile(r"(?<![\w.])-?\d[\d,]*(?:\.\d+)?(?![\w])")
UNITS = (1, 100, 1 / 60, 1e-3, 1 / 1024, 2 ** -20, 2 ** -30, 1e-6, 1e-9, 1 / 3600)


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _strip(cell: str) -> str:
    """A cell without `code`, link targets and link texts naming files: numbers there are names, not figures."""
    cell = re.sub(r"`[^`]*`", " ", cell)
    cell = re.sub(r"\[([^\]]*)\]\([^)]*\)", lambda m: " " if "json" in m.group(1) or "/" in m.group(1) else m.group(1),
                  cell)
    return cell


def tables(lines: list[str]) -> list[dict]:
    """Each table: first line number (1-based), its lines, and the records it cites."""
    out, i = [], 0
    while i < len(lines):
        if lines[i].startswith("|") and i + 1 < len(lines) and re.match(r"^\|[\s:|-]+\|?\s*$", lines[i + 1]):
            start = i
            while i < len(lines) and lines[i].startswith("|"):
                i += 1
            body = lines[start:i]
            records = RECORD_LINK.findall("\n".join(body))
            j, before = start - 1, []
            while j >= 0 and not lines[j].startswith(("|", "#")):
                before.append(lines[j])
                j -= 1
            comment = [m for line in before[:3] for m in RECORD_COMMENT.findall(line)]
            if comment:
                records = [r.strip() for c in comment for r in c.split(",")]
            elif not records:
                records = RECORD_LINK.findall("\n".join(reversed(before)))
            out.append({"line": start + 1, "rows": body, "records": list(dict.fromkeys(records))})
        else:
            i += 1
    return out


def _numbers(obj) -> list[float]:
    """Every number of a JSON record, strings included (commands, labels)."""
    if isinstance(obj, bool):
        return []
    if isinstance(obj, (int, float)):
        return [float(obj)] if math.isfinite(obj) else []
    if isinstance(obj, str):
        return [float(x.replace(",", "")) for x in NUMBER.findall(obj)]
    if isinstance(obj, dict):
        return [x for k, v in obj.items() for x in _numbers(k) + _numbers(v)]
    if isinstance(obj, list):
        return [x for v in obj for x in _numbers(v)]
    return []


class Record:
    def __init__(self, path: Path):
        self.path = path
        text = path.read_text()
        self.text = text
        self.values = sorted(set(_numbers(json.loads(text)))) if path.suffix == ".json" else []

    def has(self, token: str) -> bool:
        plain = token.replace(",", "")
        if self.path.suffix != ".json":
            return re.search(rf"(?<![\d.]){re.escape(plain)}(?![\d])", self.text.replace(",", "")) is not None
        x = float(plain)
        decimals = len(plain.partition(".")[2])
        half = 0.5 * 10 ** -decimals + 1e-9
        return any(abs(v * unit - x) <= half for v in self.values for unit in UNITS)


def check(readme: Path, results: Path | None = None) -> tuple[list[str], int]:
    """(one line per figure not found, figures checked)."""
    results = results or readme.parent
    lines = readme.read_text().splitlines()
    misses, checked, cache = [], 0, {}
    for t in tables(lines):
        body = t["rows"][2:]
        figures = [(t["line"] + 2 + k, tok) for k, row in enumerate(body)
                   for cell in _cells(row)[1:] for tok in NUMBER.findall(_strip(cell))]
        if not figures:
            continue
        if not t["records"]:
            misses.append(f"{readme.name}:{t['line']}: a table of {len(figures)} figures cites no bench/results record")
            continue
        recs = []
        for r in t["records"]:
            path = results / r
            if not path.is_file():
                misses.append(f"{readme.name}:{t['line']}: cites {r}, which does not exist")
                continue
            recs.append(cache.setdefault(path, Record(path)))
        for line, tok in figures:
            checked += 1
            if recs and not any(rec.has(tok) for rec in recs):
                misses.append(f"{readme.name}:{line}: {tok} is in no cited record ({', '.join(t['records'])})")
    return misses, checked


FIGURE = re.compile(r"\d(?:[\d,.]*\d)?\s?(?:%|x\b|s\b|min\b|ms\b|GB\b|MiB\b|GiB\b|tok/s|q/s)")


def prose(readme: Path) -> list[str]:
    """Paragraphs (outside tables and code) with figures and no record link."""
    out, block, start, code = [], [], 0, False
    for n, line in enumerate(readme.read_text().splitlines() + [""], 1):
        if line.startswith("```"):
            code = not code
            continue
        if code or line.startswith("|"):
            continue
        if line.strip():
            block.append(line)
            start = start or n
            continue
        text = " ".join(block)
        if block and FIGURE.search(text) and not RECORD_LINK.search(text):
            out.append(f"{readme.name}:{start}: {', '.join(dict.fromkeys(FIGURE.findall(text)))[:160]}")
        block, start = [], 0
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("readme", nargs="?", default=str(REPO / "README.md"))
    p.add_argument("--prose", action="store_true", help="also list prose figures that cite no record")
    args = p.parse_args()
    readme = Path(args.readme)
    misses, checked = check(readme)
    for m in misses:
        print(m)
    if args.prose:
        found = prose(readme)
        print(f"\n{len(found)} paragraphs with figures and no record link (to check by hand):")
        for f in found:
            print("  " + f)
    print(f"{checked} table figures checked, {len(misses)} problems")
    return 1 if misses else 0


if __name__ == "__main__":
    sys.exit(main())
