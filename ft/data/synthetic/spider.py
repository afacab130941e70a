"""Write rows in Spider's on-disk layout (a fixture for the Spider loader's tests).

    <out>/train_spider.json               [{"question", "query", "db_id"}, ...]
    <out>/tables.json                     one entry per database, in Spider's format
    <out>/database/<db_id>/<db_id>.sqlite

tables.json is derived from the SQLite files themselves (PRAGMA table_info / foreign_key_list), so it
always matches the databases.
"""
from __future__ import annotations

import json
import os
import shutil
import sqlite3
from pathlib import Path
from typing import Iterable

from ..rows import Row


def _spider_type(decl: str) -> str:
    d = decl.lower()
    if any(k in d for k in ("int", "real", "num", "dec", "float", "double", "bool")):
        return "number"
    if "date" in d or "time" in d:
        return "time"
    return "text"


def _natural(name: str) -> str:
    """Spider's normalised names: 'Home_Town' -> 'home town'."""
    return name.replace("_", " ").lower()


def spider_tables_entry(db_id: str, sqlite_path: str | os.PathLike) -> dict:
    """One tables.json entry for a SQLite database."""
    conn = sqlite3.connect(f"file:{Path(sqlite_path).absolute()}?mode=ro", uri=True)
    try:
        tables = [n for (n,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY rowid")]
        columns: list[list] = [[-1, "*"]]
        types = ["text"]
        index: dict[tuple[str, str], int] = {}
        primary_keys: list[int] = []
        pk_of: dict[str, str] = {}
        for ti, table in enumerate(tables):
            pks = []
            for _cid, name, decl, _notnull, _default, pk in conn.execute(f'PRAGMA table_info("{table}")'):
                index[(table.lower(), name.lower())] = len(columns)
                columns.append([ti, name])
                types.append(_spider_type(decl or ""))
                if pk:
                    pks.append((pk, len(columns) - 1, name))
            primary_keys += [i for _, i, _ in sorted(pks)]
            if len(pks) == 1:
                pk_of[table.lower()] = pks[0][2]
        foreign_keys = []
        for table in tables:
            for row in conn.execute(f'PRAGMA foreign_key_list("{table}")'):
                ref_table, src, dst = row[2].lower(), row[3], row[4] or pk_of.get(row[2].lower())
                if dst is not None and (ref_table, dst.lower()) in index:
                    foreign_keys.append([index[(table.lower(), src.lower())], index[(ref_table, dst.lower())]])
    finally:
        conn.close()
    return {
        "column_names": [[t, c if t < 0 else _natural(c)] for t, c in columns],
        "column_names_original": columns,
        "column_types": types,
        "db_id": db_id,
        "foreign_keys": foreign_keys,
        "primary_keys": primary_keys,
        "table_names": [_natural(t) for t in tables],
        "table_names_original": tables,
    }


def _source_db(row: dict, base: Path | None) -> Path:
    candidates = []
    if row.get("db_path"):
        p = Path(row["db_path"]).expanduser()
        candidates.append(p if p.is_absolute() or base is None else base / p)
    if base is not None:
        candidates += [base / "databases" / f"{row['db_id']}.sqlite", base / f"{row['db_id']}.sqlite"]
    for c in candidates:
        if c.is_file():
            return c
    raise FileNotFoundError(f"no SQLite file for db_id {row['db_id']!r}; tried {[str(c) for c in candidates]}")


def write_spider_layout(
    rows: Iterable[Row | dict],
    out_dir: str | os.PathLike,
    tables_json_from: str | os.PathLike | None = None,
    split: str = "train_spider",
) -> Path:
    """Write `rows` as `<out_dir>/<split>.json` plus Spider's `database/` folder and `tables.json`.

    `tables_json_from` is the folder the rows' relative `db_path`s resolve against (a bundled dataset folder,
    whose `databases/<db_id>.sqlite` is also tried); the SQLite files found there are copied in and
    tables.json is derived from them. Calling it again with another `split` (e.g. "dev") adds that file;
    tables.json always covers every database under `<out_dir>/database`.
    """
    out = Path(out_dir)
    base = Path(tables_json_from).expanduser() if tables_json_from is not None else None
    records = []
    for r in rows:
        d = r.to_dict() if isinstance(r, Row) else dict(r)
        if not d.get("db_id"):
            raise ValueError(f"row without db_id cannot go in a Spider layout: {d.get('question')!r}")
        target = out / "database" / d["db_id"] / f"{d['db_id']}.sqlite"
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(_source_db(d, base), target)
        records.append({"question": d["question"], "query": d["query"], "db_id": d["db_id"]})
    (out / "database").mkdir(parents=True, exist_ok=True)
    (out / f"{split}.json").write_text(json.dumps(records, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    entries = [spider_tables_entry(p.name, p / f"{p.name}.sqlite")
               for p in sorted((out / "database").iterdir()) if (p / f"{p.name}.sqlite").is_file()]
    (out / "tables.json").write_text(json.dumps(entries, indent=2) + "\n", encoding="utf-8")
    return out
