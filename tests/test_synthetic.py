"""The bundled dataset generator: determinism, executable gold SQL, splits, Spider layout, cache safety."""
from __future__ import annotations

import json
import multiprocessing
import re
import shutil
import sqlite3
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from ft.data.rows import ROW_FIELDS, Row
from ft.data.synthetic import (
    DATABASES,
    HELDOUT_DBS,
    TIERS,
    dataset_dir,
    ensure_dataset,
    generate,
    write_spider_layout,
)
from ft.data.synthetic.__main__ import main as cli_main
from ft.sql.macros import register_macros

SPIDER_TABLES = Path("/work/shared/data/spider/tables.json")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return generate(tmp_path_factory.mktemp("synthetic") / "bundled", seed=0)


def load(folder: Path, split: str) -> list[dict]:
    with open(folder / f"{split}.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def db_dump(path: Path) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


def connect_ro(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


# ------------------------------------------------------------------------------------- structure


def test_layout_manifest_and_rows(dataset):
    manifest = json.loads((dataset / "manifest.json").read_text())
    assert manifest["seed"] == 0 and manifest["heldout_dbs"] == list(HELDOUT_DBS)
    assert set(manifest["databases"]) == {db.db_id for db in DATABASES}
    for split in ("train", "eval"):
        rows = load(dataset, split)
        counts = manifest["counts"][split]
        assert counts["total"] == len(rows)
        assert sum(counts["by_db"].values()) == sum(counts["by_tier"].values()) == len(rows)
        for d in rows:
            assert (set(d) <= set(ROW_FIELDS)
                    and {"question", "query", "schema", "db_id", "db_path", "difficulty"} <= set(d))
            Row(**d)  # loads back into the row type
            assert d["db_path"] == f"databases/{d['db_id']}.sqlite" and (dataset / d["db_path"]).is_file()
            compact = next(db.compact_ddl for db in DATABASES if db.db_id == d["db_id"])
            # Compact DDL has no comments; the warehouse keeps its column comments (tests/test_linking.py).
            assert d["schema"].startswith("CREATE TABLE") and (("--" not in d["schema"]) == compact)
            assert "REFERENCES" in d["schema"]
            assert d["difficulty"] in TIERS
            own = {m["name"] for m in next(db.macros for db in DATABASES if db.db_id == d["db_id"])}
            assert {m["name"] for m in d["macros"]} == own  # only this database's macros
    assert 2800 <= manifest["counts"]["train"]["total"] + manifest["counts"]["eval"]["total"] <= 3600
    assert 150 <= manifest["counts"]["eval"]["total"] <= 250


def test_schema_is_compact_and_matches_database(dataset):
    rows = load(dataset, "train") + load(dataset, "eval")
    compact = {db.db_id for db in DATABASES if db.compact_ddl}  # the warehouse: tests/test_linking.py
    schemas = {d["db_id"]: d["schema"] for d in rows if d["db_id"] in compact}
    assert set(schemas) == compact
    for db_id, schema in schemas.items():
        statements = schema.split("\n\n")
        assert 3 <= len(statements) <= 6
        assert 400 <= len(schema) <= 1300, (db_id, len(schema))  # roughly 150-350 tokens
        with connect_ro(dataset / "databases" / f"{db_id}.sqlite") as conn:
            tables = [n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY rowid")]
            assert [re.match(r"CREATE TABLE (\w+)", s).group(1) for s in statements] == tables
            for t in tables:
                n_cols = len(conn.execute(f"PRAGMA table_info({t})").fetchall())
                assert 3 <= n_cols <= 7
                assert conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] > 0


# ---------------------------------------------------------------------------------------- gold SQL


def test_every_gold_query_executes_read_only_with_macros(dataset):
    by_db: dict[str, list[dict]] = defaultdict(list)
    for d in load(dataset, "train") + load(dataset, "eval"):
        by_db[d["db_id"]].append(d)
    for db_id, rows in by_db.items():
        conn = connect_ro(dataset / "databases" / f"{db_id}.sqlite")
        register_macros(conn, rows[0]["macros"])
        try:
            for d in rows:
                result = conn.execute(d["query"]).fetchall()
                assert result, f"empty result: {d['question']} / {d['query']}"
        finally:
            conn.close()


def test_macro_tier_calls_registered_macros(dataset):
    rows = load(dataset, "train") + load(dataset, "eval")
    used: set[str] = set()
    for d in rows:
        calls = {m["name"] for m in d["macros"] if re.search(rf"\b{m['name']}\(", d["query"])}
        if d["difficulty"] == "macro":
            assert calls, d["query"]
            used |= calls
        else:
            assert not calls, d["query"]  # macros appear only where the tier says so
    assert used == {m["name"] for db in DATABASES for m in db.macros}  # every declared macro gets used
    # Without registration the macro tier cannot run: the macros really are needed.
    d = next(d for d in rows if d["difficulty"] == "macro")
    with connect_ro(dataset / d["db_path"]) as conn, pytest.raises(sqlite3.OperationalError, match="no such function"):
        conn.execute(d["query"])


def test_sql_style_is_consistent(dataset):
    for d in load(dataset, "train"):
        q = d["query"]
        assert q == " ".join(q.split()) and not q.endswith(";")
        assert not re.search(r"\b(select|from|where|group by|order by|join|limit)\b", q)  # keywords uppercase
        if " JOIN " not in q:
            assert not re.search(r"FROM \w+ AS \w+", q), q  # table aliases only where joins need them


# ------------------------------------------------------------------------------------------ splits


def test_splits(dataset):
    train, evals = load(dataset, "train"), load(dataset, "eval")
    assert {d["difficulty"] for d in train} == set(TIERS)
    assert {d["difficulty"] for d in evals} == set(TIERS)
    assert not {d["db_id"] for d in train} & set(HELDOUT_DBS)
    assert set(HELDOUT_DBS) < {d["db_id"] for d in evals}
    assert {d["db_id"] for d in train} < {d["db_id"] for d in evals}  # training DBs' held-out questions
    for db_id in HELDOUT_DBS:
        assert {d["difficulty"] for d in evals if d["db_id"] == db_id} == set(TIERS)
    questions = [d["question"] for d in train + evals]
    assert len(questions) == len(set(questions))  # unique, so no question is shared between splits
    keys = [(d["db_id"], d["query"]) for d in train + evals]
    assert len(keys) == len(set(keys))


# ------------------------------------------------------------------------------------- determinism


def test_same_seed_same_bytes_different_seed_different_data(dataset, tmp_path, capsys):
    cli_main(["--out", str(tmp_path / "again"), "--seed", "0"])
    assert "train:" in capsys.readouterr().out
    again = tmp_path / "again"
    for name in ("train.jsonl", "eval.jsonl", "manifest.json"):
        assert (again / name).read_bytes() == (dataset / name).read_bytes(), name
    for db in DATABASES:
        rel = f"databases/{db.db_id}.sqlite"
        assert db_dump(again / rel) == db_dump(dataset / rel)

    other = generate(tmp_path / "other", seed=1)
    assert (other / "train.jsonl").read_bytes() != (dataset / "train.jsonl").read_bytes()
    assert db_dump(other / "databases/sales.sqlite") != db_dump(dataset / "databases/sales.sqlite")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again", "other"]  # no temp folders left behind


def test_generate_refuses_to_overwrite_foreign_folder(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError):
        generate(tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


# ------------------------------------------------------------------------------------ Spider layout


def test_spider_layout(dataset, tmp_path):
    train, evals = load(dataset, "train"), load(dataset, "eval")
    # The compact databases (the warehouse's Spider entry, with date types and keyless tables: tests/test_linking.py)
    rows = [d for d in train if d["db_id"] != "warehouse"][:40] + [Row(**d) for d in evals
                                                                   if d["db_id"] in HELDOUT_DBS][:10]
    out = write_spider_layout(rows, tmp_path / "spider", tables_json_from=dataset)
    records = json.loads((out / "train_spider.json").read_text())
    assert len(records) == 50 and all(set(r) == {"question", "query", "db_id"} for r in records)
    db_ids = {r["db_id"] for r in records}
    for db_id in db_ids:
        assert (out / "database" / db_id / f"{db_id}.sqlite").is_file()

    tables = json.loads((out / "tables.json").read_text())
    assert {t["db_id"] for t in tables} == db_ids
    reference_keys = set(json.loads(SPIDER_TABLES.read_text())[0]) if SPIDER_TABLES.exists() else None
    for t in tables:
        if reference_keys:
            assert set(t) == reference_keys
        cols, orig = t["column_names"], t["column_names_original"]
        assert cols[0] == orig[0] == [-1, "*"]
        assert len(cols) == len(orig) == len(t["column_types"])
        assert len(t["table_names"]) == len(t["table_names_original"])
        assert set(t["column_types"]) <= {"text", "number"}
        assert all(0 <= ti < len(t["table_names"]) for ti, _ in orig[1:])
        assert all(c[1] == o[1].lower().replace("_", " ") for c, o in zip(cols[1:], orig[1:]))
        assert len(t["primary_keys"]) == len(t["table_names"])  # one integer key per table
        assert all(orig[p][1].endswith("_id") for p in t["primary_keys"])
        for src, dst in t["foreign_keys"]:
            assert dst in t["primary_keys"] or orig[dst][1].endswith("_id")
            assert src != dst and 0 < src < len(orig) and 0 < dst < len(orig)
    sales = next((t for t in tables if t["db_id"] == "sales"), None)
    if sales:
        named = [(sales["table_names_original"][sales["column_names_original"][s][0]],
                  sales["column_names_original"][s][1],
                  sales["table_names_original"][sales["column_names_original"][d][0]],
                  sales["column_names_original"][d][1]) for s, d in sales["foreign_keys"]]
        assert ("order_items", "order_id", "orders", "order_id") in named

    # A second split adds a file and keeps tables.json covering every database.
    write_spider_layout(evals[:5], out, tables_json_from=dataset, split="dev")
    assert len(json.loads((out / "dev.json").read_text())) == 5
    assert {t["db_id"] for t in json.loads((out / "tables.json").read_text())} >= db_ids


# ------------------------------------------------------------------------------------------- cache


def test_ensure_dataset_reuses_cache_and_repairs_incomplete(dataset, tmp_path, capsys):
    target = dataset_dir(tmp_path, seed=0)
    shutil.copytree(dataset, target)  # a cached copy, as a previous run would have left it
    mtime = (target / "manifest.json").stat().st_mtime_ns
    assert ensure_dataset(tmp_path, seed=0) == target
    assert (target / "manifest.json").stat().st_mtime_ns == mtime  # reused, not regenerated
    assert "generating" not in capsys.readouterr().err  # silent when there is nothing to do

    (target / "manifest.json").unlink()  # incomplete: regenerated
    assert ensure_dataset(tmp_path, seed=0) == target
    err = capsys.readouterr().err  # the generation says what it is doing, and when it is done
    assert f"generating the bundled dataset once into {target}" in err and "bundled dataset ready" in err
    assert (target / "train.jsonl").read_bytes() == (dataset / "train.jsonl").read_bytes()
    assert (target / "manifest.json").exists()


def test_ensure_dataset_is_safe_across_processes(dataset, tmp_path):
    # Two fresh interpreters race for the same cache entry: one generates, the other waits and reuses it.
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=2, mp_context=ctx) as pool:
        futures = [pool.submit(ensure_dataset, str(tmp_path), 0) for _ in range(2)]
        paths = [f.result(timeout=120) for f in futures]  # re-raises a worker's exception, with its traceback
    target = dataset_dir(tmp_path, seed=0)
    assert paths == [target, target]
    assert (target / "manifest.json").exists()
    assert (target / "train.jsonl").read_bytes() == (dataset / "train.jsonl").read_bytes()
    assert {p.name for p in tmp_path.iterdir()} <= {target.name, f".{target.name}.lock"}
