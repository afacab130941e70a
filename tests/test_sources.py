"""Data sources, bad-row checks and splits (ft/data/sources.py) and the `python -m ft.data convert` CLI."""
from __future__ import annotations

import csv
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from ft.config import DataConfig
from ft.data.rows import DataError, Row
from ft.data.sources import check_rows, load_source, load_splits, render_schema, split_rows, write_jsonl

REPO = Path(__file__).resolve().parents[1]
SPIDER = Path("/work/shared/data/spider")
SCHEMA = "CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT)"
MACRO = {"name": "double", "params": ["x"], "body": ":x * 2", "doc": "twice x"}


def _rec(i: int, **kw) -> dict:
    d = {"question": f"q{i}", "query": f"SELECT name FROM t WHERE id = {i}", "schema": SCHEMA, "db_id": f"db{i % 3}"}
    d.update(kw)
    return d


def _write_jsonl(path: Path, recs: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return path


def _make_db(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(path)
    con.execute(SCHEMA)
    con.commit()
    con.close()
    return path


# ---- file formats -----------------------------------------------------------------------------


def test_jsonl_basic_and_origin(tmp_path):
    p = _write_jsonl(tmp_path / "d.jsonl", [_rec(0, macros=[MACRO], evidence="", difficulty="easy"), _rec(1)])
    rows = load_source(str(p))
    assert [r.question for r in rows] == ["q0", "q1"]
    assert rows[0].macros == [MACRO] and rows[0].difficulty == "easy"
    assert rows[0].evidence is None  # empty optional fields are absent, not ""
    assert rows[1].origin == f"{p}:2"


def test_json_list_and_data_wrapper(tmp_path):
    a = tmp_path / "a.json"
    a.write_text(json.dumps([_rec(0), _rec(1)]))
    b = tmp_path / "b.json"
    b.write_text(json.dumps({"data": [_rec(0), _rec(1)]}))
    assert load_source(str(a)) == load_source(str(b))
    assert load_source(str(a))[1].origin == f"{a}:2"


def test_csv_keeps_strings_and_parses_macros(tmp_path):
    p = tmp_path / "d.csv"
    with open(p, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["question", "query", "schema", "db_id", "macros"])
        w.writeheader()
        w.writerow({"question": "42", "query": "SELECT\n  1", "schema": SCHEMA, "db_id": "007",
                    "macros": json.dumps([MACRO])})
        w.writerow({"question": "q", "query": "SELECT 2", "schema": SCHEMA, "db_id": "", "macros": ""})
    rows = load_source(str(p))
    assert rows[0].question == "42" and rows[0].db_id == "007"  # not 42 / 7
    assert rows[0].macros == [MACRO] and rows[1].macros is None and rows[1].db_id is None
    # origins are the line a record starts on, even after a multi-line quoted field
    assert rows[0].origin == f"{p}:2" and rows[1].origin == f"{p}:4"


def test_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    recs = [_rec(0, macros=json.dumps([MACRO])), _rec(1, macros=None)]
    pq.write_table(pa.Table.from_pylist(recs), tmp_path / "d.parquet")
    rows = load_source(str(tmp_path / "d.parquet"))
    assert len(rows) == 2 and rows[0].macros == [MACRO] and rows[1].macros is None
    assert rows[1].origin.endswith("d.parquet:2")


def test_column_mapping_on_files_and_bad_mapping(tmp_path):
    p = _write_jsonl(tmp_path / "d.jsonl", [{"question": "q", "answer": "SELECT 1", "context": SCHEMA}])
    rows = load_source(str(p), columns={"query": "answer", "schema": "context"})
    assert rows[0].query == "SELECT 1" and rows[0].schema == SCHEMA
    with pytest.raises(DataError) as e:
        load_source(str(p), columns={"query": "sql"})
    assert "'sql'" in str(e.value) and "answer, context, question" in str(e.value)
    with pytest.raises(DataError, match="no column for required field"):
        load_source(str(p))  # without the mapping, 'query' and 'schema' are nowhere
    with pytest.raises(DataError, match="unknown field"):
        load_source(str(p), columns={"sql": "answer"})


def test_hf_save_to_disk_with_mapping(tmp_path):
    datasets = pytest.importorskip("datasets")
    recs = [{"question": f"q{i}", "answer": f"SELECT {i}", "context": SCHEMA} for i in range(3)]
    datasets.Dataset.from_list(recs).save_to_disk(str(tmp_path / "ds"))
    rows = load_source(str(tmp_path / "ds"), "hf", columns={"query": "answer", "schema": "context"})
    assert [r.query for r in rows] == ["SELECT 0", "SELECT 1", "SELECT 2"]
    assert load_source(str(tmp_path / "ds"), columns={"query": "answer", "schema": "context"}) == rows  # auto -> hf
    with pytest.raises(DataError) as e:
        load_source(str(tmp_path / "ds"), "hf", columns={"query": "sql"})
    assert "'sql'" in str(e.value) and "answer" in str(e.value)
    # a DatasetDict folder: the split picks the part
    datasets.DatasetDict({"train": datasets.Dataset.from_list(recs), "test": datasets.Dataset.from_list(recs[:1])}) \
        .save_to_disk(str(tmp_path / "dd"))
    assert len(load_source(str(tmp_path / "dd"), "hf", "test", {"query": "answer", "schema": "context"})) == 1
    with pytest.raises(DataError, match="Splits: "):
        load_source(str(tmp_path / "dd"), "hf", "dev", {"query": "answer", "schema": "context"})


def test_relative_db_path_resolves_against_file_folder(tmp_path, monkeypatch):
    sub = tmp_path / "data"
    sub.mkdir()
    _make_db(sub / "dbs" / "x.sqlite")
    _write_jsonl(sub / "d.jsonl", [_rec(0, db_path="dbs/x.sqlite"), _rec(1, db_path=str(sub / "abs.sqlite"))])
    monkeypatch.chdir(tmp_path)  # the working directory must not matter
    rows = load_source(str(Path("data") / "d.jsonl"))
    assert rows[0].db_path == str((sub / "dbs" / "x.sqlite").resolve())
    assert Path(rows[0].db_path).is_absolute() and Path(rows[0].db_path).is_file()
    assert rows[1].db_path == str(sub / "abs.sqlite")


def test_malformed_json_line_names_file_and_line(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text(json.dumps(_rec(0)) + "\n\n" + '{"question": "q", broken\n')
    with pytest.raises(DataError, match=rf"{p}:3: not valid JSON"):
        load_source(str(p))


def test_missing_file_and_unknown_suffix(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_source(str(tmp_path / "nope.jsonl"))
    (tmp_path / "d.txt").write_text("x")
    with pytest.raises(DataError, match="suffix"):
        load_source(str(tmp_path / "d.txt"))


# ---- Spider / BIRD layouts --------------------------------------------------------------------

TABLES = [{
    "db_id": "concert",
    "table_names_original": ["singer", "concert show"],
    "column_names_original": [[-1, "*"], [0, "id"], [0, "name"], [0, "age"], [1, "show id"], [1, "singer_id"],
                              [1, "Year"], [1, "order"]],
    "column_types": ["text", "number", "text", "number", "number", "number", "time", "others"],
    "primary_keys": [1, 4, 5],  # two key columns in one table: a composite key
    "foreign_keys": [[5, 1]],
}, {
    "db_id": "pets",
    "table_names_original": ["pet"],
    "column_names_original": [[-1, "*"], [0, "pet_id"], [0, "kind"]],
    "column_types": ["text", "number", "text"],
    "primary_keys": [[1]],  # newer Spider files nest keys in lists
    "foreign_keys": [],
}]


def _spider_folder(root: Path) -> Path:
    root.mkdir()
    (root / "tables.json").write_text(json.dumps(TABLES))
    (root / "train_spider.json").write_text(json.dumps([
        {"db_id": "concert", "question": "How many singers?", "query": "SELECT count(*) FROM singer"},
        {"db_id": "pets", "question": "Kinds?", "query": "SELECT kind FROM pet"},
    ]))
    (root / "dev.json").write_text(json.dumps([
        {"db_id": "pets", "question": "N?", "query": "SELECT count(*) FROM pet"},
    ]))
    _make_db(root / "database" / "concert" / "concert.sqlite")
    return root


def test_render_schema_types_keys_quoting():
    import sqlglot

    ddl = render_schema(TABLES[0])
    assert 'CREATE TABLE "concert show" (' in ddl
    assert '"show id" NUMERIC' in ddl and "Year DATETIME" in ddl and '"order" TEXT' in ddl and "name TEXT" in ddl
    assert 'PRIMARY KEY ("show id", singer_id)' in ddl
    assert "FOREIGN KEY (singer_id) REFERENCES singer(id)" in ddl
    stmts = sqlglot.parse(ddl, read="sqlite")
    assert [type(s).__name__ for s in stmts] == ["Create", "Create"]
    assert "PRIMARY KEY (pet_id)" in render_schema(TABLES[1])


def test_spider_layout(tmp_path):
    root = _spider_folder(tmp_path / "spider")
    rows = load_source(str(root))  # auto -> spider, default split train_spider
    assert [r.db_id for r in rows] == ["concert", "pets"]
    assert rows[0].db_path == str((root / "database" / "concert" / "concert.sqlite").resolve())
    assert rows[1].db_path is None  # no database file for pets
    assert rows[0].origin == f"{root / 'train_spider.json'}:1"
    assert rows[0].schema == render_schema(TABLES[0])
    assert [r.question for r in load_source(str(root), "spider", "dev")] == ["N?"]
    with pytest.raises(DataError, match="Split 'train_others' not found"):
        load_source(str(root), "spider", "train_others")
    assert check_rows(rows, skip_bad_rows=False)[1]["bad_rows"] == 0


def test_bird_layout(tmp_path):
    root = tmp_path / "bird"
    root.mkdir()
    (root / "dev_tables.json").write_text(json.dumps(TABLES))
    (root / "dev.json").write_text(json.dumps([{
        "db_id": "concert", "question": "Oldest?", "SQL": "SELECT name FROM singer ORDER BY age DESC LIMIT 1",
        "evidence": "oldest refers to MAX(age)", "difficulty": "simple"}]))
    _make_db(root / "dev_databases" / "concert" / "concert.sqlite")
    rows = load_source(str(root))  # auto -> bird, default split falls back to dev
    assert len(rows) == 1
    r = rows[0]
    assert r.query.startswith("SELECT name") and r.evidence == "oldest refers to MAX(age)" and r.difficulty == "simple"
    assert r.db_path == str((root / "dev_databases" / "concert" / "concert.sqlite").resolve())
    assert "CREATE TABLE singer" in r.schema


# ---- checks -----------------------------------------------------------------------------------


def test_bad_rows_error_lists_rows_and_count(tmp_path):
    recs = [_rec(0), _rec(1, query=""), {"question": "q", "schema": SCHEMA}, _rec(3, schema="CREATE TABLE t ("),
            _rec(4, question=5), _rec(5)]
    p = _write_jsonl(tmp_path / "d.jsonl", recs)
    rows = load_source(str(p))
    with pytest.raises(DataError) as e:
        check_rows(rows, skip_bad_rows=False, source_name=str(p))
    msg = str(e.value)
    assert "4 of 6 rows" in msg and "data.skip_bad_rows: true" in msg
    for line, why in [(2, "empty query"), (3, "missing query"), (4, "schema does not parse"), (5, "question is a int")]:
        assert f"{p}:{line}: {why}" in msg


def test_bad_rows_first_five_only(tmp_path):
    p = _write_jsonl(tmp_path / "d.jsonl", [_rec(i, query=" ") for i in range(8)])
    with pytest.raises(DataError) as e:
        check_rows(load_source(str(p)), skip_bad_rows=False)
    assert "8 of 8 rows" in str(e.value) and f"{p}:5:" in str(e.value) and f"{p}:6:" not in str(e.value)
    assert "and 3 more" in str(e.value)


def test_skip_bad_rows_counts(tmp_path):
    recs = [_rec(0), _rec(1, query=""), _rec(2, schema="hello world"), _rec(3, macros="not json"), _rec(4)]
    rows = load_source(str(_write_jsonl(tmp_path / "d.jsonl", recs)))
    good, rep = check_rows(rows, skip_bad_rows=True)
    assert [r.question for r in good] == ["q0", "q4"]
    assert rep == {"rows_in": 5, "rows_out": 2, "bad_rows": 3,
                   "bad_reasons": {"empty query": 1, "schema has no CREATE TABLE": 1, "malformed macros": 1},
                   "unparsable_gold": 0, "dropped_unparsable_gold": 0}


def test_ddl_sqlglot_only_reads_as_command_is_bad(tmp_path):
    # sqlglot does not raise on 'CREATE TABL ...': it logs a warning and keeps an opaque Command.
    rows = load_source(str(_write_jsonl(tmp_path / "d.jsonl", [_rec(0, schema=SCHEMA + ";\nCREATE TABL u (x)")])))
    good, rep = check_rows(rows, skip_bad_rows=True)
    assert good == [] and rep["bad_reasons"] == {"schema does not parse": 1}


def test_unparsable_gold_counted_and_optionally_dropped(tmp_path):
    rows = load_source(str(_write_jsonl(tmp_path / "d.jsonl", [_rec(0), _rec(1, query="SELECT FROM WHERE ((")])))
    kept, rep = check_rows(rows, skip_bad_rows=False)
    assert len(kept) == 2 and rep["unparsable_gold"] == 1 and rep["dropped_unparsable_gold"] == 0
    kept, rep = check_rows(rows, skip_bad_rows=False, drop_unparsable_gold=True)
    assert [r.question for r in kept] == ["q0"] and rep["unparsable_gold"] == 1 and rep["dropped_unparsable_gold"] == 1
    assert rep["rows_out"] == 1 and rep["bad_rows"] == 0


# ---- splits -----------------------------------------------------------------------------------


def _rows(n: int) -> list[Row]:
    return [Row(question=f"q{i}", query="SELECT 1", schema=SCHEMA, db_id=f"db{i % 5}") for i in range(n)]


def test_split_by_fraction_deterministic_and_disjoint():
    rows = _rows(100)
    tr, ev = split_rows(rows, eval_fraction=0.2, seed=7)
    assert len(ev) == 20 and len(tr) == 80
    assert {r.question for r in tr}.isdisjoint({r.question for r in ev})
    assert split_rows(rows, eval_fraction=0.2, seed=7) == (tr, ev)
    assert split_rows(rows, eval_fraction=0.2, seed=8)[1] != ev
    assert split_rows(rows, eval_fraction=0.001, seed=0)[1] != []  # a tiny fraction still yields one row


def test_split_by_eval_dbs_and_unknown_db():
    rows = _rows(50)
    tr, ev = split_rows(rows, eval_dbs=["db1", "db3"])
    assert {r.db_id for r in ev} == {"db1", "db3"} and "db1" not in {r.db_id for r in tr}
    assert len(ev) == 20
    tr2, ev2 = split_rows(rows, eval_dbs=["db1"], eval_fraction=0.25, seed=1)
    assert len(ev2) == 10 + 10 and {r.db_id for r in tr2} <= {"db0", "db2", "db3", "db4"}
    with pytest.raises(DataError) as e:
        split_rows(rows, eval_dbs=["db_1"])
    assert "'db_1'" in str(e.value) and "db1" in str(e.value)


def test_load_splits_fraction_limit_and_cap(tmp_path):
    p = _write_jsonl(tmp_path / "d.jsonl", [_rec(i) for i in range(60)] + [_rec(99, query="")])
    cfg = DataConfig(source=str(p), eval_fraction=0.25, limit=10, max_eval_rows=5, skip_bad_rows=True)
    tr, ev, rep = load_splits(cfg, seed=3)
    assert len(tr) == 10 and len(ev) == 5
    assert rep["checks"]["train"]["bad_rows"] == 1 and rep["train_rows_before_limit"] == 45
    assert rep["eval_rows_before_cap"] == 15 and rep["train_rows"] == 10 and rep["eval_rows"] == 5
    assert load_splits(cfg, seed=3)[:2] == (tr, ev)
    # the limit never moves rows between the splits
    _, ev_all, _ = load_splits(DataConfig(source=str(p), eval_fraction=0.25, skip_bad_rows=True), seed=3)
    assert set(r.question for r in ev) <= set(r.question for r in ev_all)


def test_load_splits_eval_source_and_bad_rows_raise(tmp_path):
    tr_p = _write_jsonl(tmp_path / "tr.jsonl", [_rec(i) for i in range(5)])
    ev_p = _write_jsonl(tmp_path / "ev.jsonl", [_rec(i) for i in range(10, 13)])
    tr, ev, rep = load_splits(DataConfig(source=str(tr_p), eval_source=str(ev_p)), seed=0)
    assert len(tr) == 5 and [r.question for r in ev] == ["q10", "q11", "q12"]
    assert rep["checks"]["eval"]["rows_in"] == 3
    bad = _write_jsonl(tmp_path / "bad.jsonl", [_rec(0, schema="")])
    with pytest.raises(DataError, match="skip_bad_rows"):
        load_splits(DataConfig(source=str(tr_p), eval_source=str(bad)), seed=0)


def test_write_jsonl_atomic_roundtrip(tmp_path):
    rows = [Row(question="q", query="SELECT 1", schema=SCHEMA, macros=[MACRO], db_path=str(tmp_path / "x.sqlite"))]
    out = write_jsonl(rows, tmp_path / "out" / "o.jsonl")
    assert load_source(str(out)) == rows
    assert os.listdir(tmp_path / "out") == ["o.jsonl"]  # no temp file left behind


# ---- CLI --------------------------------------------------------------------------------------


def _cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ft.data", *args], cwd=REPO, capture_output=True, text=True)


def test_convert_cli_roundtrip(tmp_path):
    root = _spider_folder(tmp_path / "spider")
    out = tmp_path / "o.jsonl"
    res = _cli("convert", str(root), "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert load_source(str(out)) == load_source(str(root))

    src = _write_jsonl(tmp_path / "m.jsonl", [{"question": "q", "answer": "SELECT 1", "context": SCHEMA}])
    res = _cli("convert", str(src), "--columns", "query=answer,schema=context", "--out", str(tmp_path / "m2.jsonl"))
    assert res.returncode == 0, res.stderr
    assert load_source(str(tmp_path / "m2.jsonl"))[0].query == "SELECT 1"


def test_convert_cli_errors(tmp_path):
    bad = _write_jsonl(tmp_path / "b.jsonl", [_rec(0, query="")])
    res = _cli("convert", str(bad), "--out", str(tmp_path / "o.jsonl"))
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert f"{bad}:1: empty query" in res.stderr and not (tmp_path / "o.jsonl").exists()


# ---- real data (optional) ---------------------------------------------------------------------


@pytest.mark.skipif(not (SPIDER / "tables.json").is_file(), reason="Spider copy not available")
def test_real_spider():
    import sqlglot

    rows = load_source(str(SPIDER))
    assert len(rows) == 7000
    schemas = {r.schema for r in rows}
    assert len(schemas) == 140
    for s in schemas:
        assert all(isinstance(x, sqlglot.exp.Create) for x in sqlglot.parse(s, read="sqlite"))
    good, rep = check_rows(rows, skip_bad_rows=False)  # about 1 s for 7,000 rows (schema checks are cached)
    assert rep["bad_rows"] == 0 and len(good) == 7000


# ---- bundled (needs ft.data.synthetic) --------------------------------------------------------


def test_bundled_train(tmp_path):
    synthetic = pytest.importorskip("ft.data.synthetic")
    if not hasattr(synthetic, "ensure_dataset"):
        pytest.skip("ft.data.synthetic.ensure_dataset not written yet")
    rows = load_source("bundled", split="train", cache_dir=str(tmp_path / "cache"))
    assert rows
    good, rep = check_rows(rows, skip_bad_rows=False)
    assert rep["bad_rows"] == 0
    assert all(r.db_path is None or Path(r.db_path).is_file() for r in rows)
    ev = load_source("bundled", split="eval", cache_dir=str(tmp_path / "cache"))
    assert ev
    # with no eval settings, training gets the bundled eval split
    tr, ev2, rep = load_splits(DataConfig(source="bundled", cache_dir=str(tmp_path / "cache")), seed=0)
    assert len(tr) == len(good) and ev2 == ev and rep["eval_from"] == "bundled eval split"
