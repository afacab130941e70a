"""Schema linking and value hints (ft/data/linking.py), and the bundled warehouse they are measured on."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import sqlite3
from pathlib import Path

import pytest

from ft.config import Config, ConfigError, load_config
from ft.data import linking
from ft.data.linking import (
    MAX_HINT_CHARS,
    MAX_HINTS_PER_COLUMN,
    TokenCounter,
    fit_prompt,
    gold_columns,
    link_schema,
    make_linker,
    measure,
    parse_schema,
    recall,
)
from ft.data.prompt import encode_rows, prompt_ids
from ft.data.rows import DataError, Row
from ft.data.synthetic import TIERS, generate
from ft.sql.execute import execute
from ft.sql.parse import split_ddl


def words(text: str) -> int:
    """A tokenizer-free token count (words and punctuation): close enough to BPE counts on DDL for these tests."""
    return len(re.findall(r"\w+|[^\w\s]", text))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return generate(tmp_path_factory.mktemp("linking") / "bundled", seed=0)


def load(folder: Path, split: str, db_id: str | None = "warehouse") -> list[Row]:
    out = []
    with open(folder / f"{split}.jsonl", encoding="utf-8") as f:
        for line in f:
            d = json.loads(line)
            if db_id is None or d["db_id"] == db_id:
                out.append(Row(**(d | {"db_path": str(folder / d["db_path"])})))
    return out


@pytest.fixture(scope="module")
def warehouse(dataset) -> list[Row]:
    return load(dataset, "train") + load(dataset, "eval")


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    from tiny import build_tokenizer

    return build_tokenizer(tmp_path_factory.mktemp("tok"))


# ------------------------------------------------------------------------------------------- the warehouse


def test_warehouse_is_large_realistic_and_complete(dataset, warehouse):
    schema = warehouse[0].schema
    assert all(r.schema == schema for r in warehouse)
    blocks = split_ddl(schema)
    names = [n for n, _ in blocks]
    assert len(names) >= 150
    areas = {n.split("_")[0] for n in names}
    assert {"sales", "fin", "hr", "log", "sup", "mkt", "mfg", "proc"} <= areas
    index = parse_schema(schema)
    assert sum(len(t.fks) for t in index.tables) >= 150  # keys everywhere
    assert sum(bool(t.comment) for t in index.tables) == len(index.tables)  # every table says what it holds
    assert all(t.columns for t in index.tables)
    with sqlite3.connect(f"file:{dataset / 'databases/warehouse.sqlite'}?mode=ro", uri=True) as conn:
        tables = [n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY rowid")]
        assert tables == names
        assert all(conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] > 0 for t in tables)
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []  # every key points at a real row
        people = [n for (n,) in conn.execute("SELECT full_name FROM hr_employee")]
        assert len(set(people)) == len(people) and all(re.fullmatch(r"[A-Z][a-z]+ [A-Z][a-z]+", p) for p in people)
    from ft.data.synthetic.spider import spider_tables_entry

    entry = spider_tables_entry("warehouse", dataset / "databases/warehouse.sqlite")
    assert set(entry["column_types"]) <= {"text", "number", "time"} and len(entry["foreign_keys"]) >= 150


def test_warehouse_ddl_is_over_20000_tokens_for_the_demo_model(warehouse):
    from ft.model import load_tokenizer, local_model_dir

    try:
        smol = load_tokenizer(local_model_dir(Config()))
    except Exception as e:  # noqa: BLE001 - the demo model is installed by `make` set-up
        pytest.skip(f"demo model not available: {e}")
    assert len(smol(warehouse[0].schema)["input_ids"]) >= 20_000


def test_warehouse_questions_cover_every_tier_in_both_splits_and_execute(dataset):
    train, evals = load(dataset, "train"), load(dataset, "eval")
    assert {r.difficulty for r in train} == set(TIERS) and {r.difficulty for r in evals} == set(TIERS)
    for r in train + evals:
        result = execute(r.db_path, r.query, r.macros)  # read-only, with the database's macros
        assert result.ok and result.rows, (r.question, r.query, result.error)
    # Questions name real rows: most carry a value the database holds (what value hints are for).
    hinted = sum(bool(link_schema(r, 10**6, words).hints) for r in train)
    assert hinted >= 0.5 * len(train)


# ------------------------------------------------------------------------------------------------- recall


def _schema_order_linker(row, budget, count):
    """A dumb linker for the negative control: the schema's first tables until the budget is spent."""
    blocks, kept, used = [(t.name, t.text) for t in parse_schema(row.schema).tables], [], 0
    for _, text in blocks:
        if used + count(text) > budget:
            break
        kept.append(text)
        used += count(text)
    shown = {n.lower(): None for n, _ in blocks[: len(kept)]}
    return linking.Linked("\n\n".join(kept), list(shown), [], [], [], used, count(row.schema), budget, True, shown)


def test_recall_of_gold_tables_on_generated_questions(warehouse, dataset):
    good = measure(warehouse, words, "default", 1024)
    assert good["rows_linked"] == len(warehouse)
    assert good["gold_table_recall"] >= 0.95 and good["all_gold_tables_kept"] >= 0.9
    assert good["gold_column_recall"] >= 0.9
    assert good["prompt_tokens_after"]["max"] <= 1024 + 200 < good["prompt_tokens_before"]["mean"]
    # Negative controls: the same budget spent on the schema's first tables, and a budget of two small tables.
    dumb = measure(warehouse, words, "default", 1024, linker=_schema_order_linker)
    assert dumb["gold_table_recall"] < 0.3
    tiny = measure(warehouse, words, "default", 60)
    assert tiny["gold_table_recall"] < good["gold_table_recall"] - 0.2
    # More budget, more recall.
    assert measure(warehouse, words, "default", 2048)["gold_table_recall"] >= good["gold_table_recall"]
    # The small bundled schemas fit whole at such budgets: nothing changes (no hints asked for).
    small = load(dataset, "eval", db_id=None)
    small = [r for r in small if r.db_id != "warehouse"]
    assert all(not link_schema(r, 1024, words, value_hints=False).changed for r in small)


def test_gold_columns_resolves_aliases_and_skips_output_names():
    schema = ("CREATE TABLE a (id INTEGER PRIMARY KEY, x TEXT, y REAL);\n"
              "CREATE TABLE b (id INTEGER, a_id INTEGER, z TEXT);")
    tables, cols = gold_columns("SELECT t.x, SUM(b.z) AS total FROM a AS t JOIN b ON b.a_id = t.id GROUP BY t.x "
                                "ORDER BY total", schema)
    assert tables == {"a", "b"}
    assert cols == {("a", "x"), ("a", "id"), ("b", "z"), ("b", "a_id")}
    with pytest.raises(ValueError):
        gold_columns("SELECT (", schema)


# -------------------------------------------------------------------------------------- foreign-key paths


def _chain_schema(n_distractors: int = 30) -> str:
    blocks = [
        "CREATE TABLE region (region_id INTEGER PRIMARY KEY, region_label TEXT, zone TEXT)",
        # The bridge: nothing in its name or columns is a word of the question below.
        "CREATE TABLE depot (depot_id INTEGER PRIMARY KEY, area_ref INTEGER REFERENCES region(region_id), "
        "opened TEXT)",
        "CREATE TABLE parcel (parcel_id INTEGER PRIMARY KEY, hub INTEGER REFERENCES depot(depot_id), "
        "weight REAL)",
    ]
    for i in range(n_distractors):
        blocks.append(f"CREATE TABLE misc_{i} (misc_{i}_id INTEGER PRIMARY KEY, label_{i} TEXT, amount_{i} REAL)")
    return ";\n\n".join(blocks) + ";"


def test_foreign_key_paths_between_kept_tables_are_kept():
    # The question names the first and the last table of region <- depot <- parcel, never the middle one.
    row = Row(question="What is the average parcel weight per region label?", query="SELECT 1", schema=_chain_schema())
    costs = {n: words(t) for n, t in split_ddl(row.schema)}
    budget = costs["region"] + costs["parcel"] + costs["depot"] + 30  # room for the three, not for many more
    kept = link_schema(row, budget, words, fill=False).kept
    assert {"region", "parcel", "depot"} <= set(kept)
    # Negative control: without path keeping, the bridge is not chosen (nothing in the question names it).
    assert "depot" not in link_schema(row, budget, words, keep_paths=False, fill=False).kept
    # Over the warehouse: a kept table within two hops of another kept one has its bridge kept too.
    index = parse_schema(_chain_schema())
    assert index.path_to("parcel", {"region"}) == ["depot"]
    assert index.path_to("region", {"parcel", "misc_1"}) == ["depot"]
    assert index.path_to("misc_3", {"parcel"}) is None


# ------------------------------------------------------------------------------------------- determinism


def test_same_question_same_schema_and_inference_never_reads_the_gold_query(warehouse):
    rows = warehouse[:40]
    first = [link_schema(r, 700, words) for r in rows]
    parse_schema.cache_clear()
    linking.values._VALUE_CACHE.clear()
    again = [link_schema(r, 700, words) for r in rows]
    assert [a.schema for a in first] == [b.schema for b in again]
    # Inference: the gold query can't matter (a row with another, or no, query gets the same schema).
    blind = [link_schema(dataclasses.replace(r, query="SELECT 1"), 700, words) for r in rows]
    assert [a.schema for a in first] == [b.schema for b in blind]
    # ... while different questions do get different schemas (the test above could fail).
    assert len({a.schema for a in first}) > 10


# -------------------------------------------------------------------------------- training keeps the gold


def test_training_path_never_drops_a_gold_table_or_column(warehouse):
    for budget in (40, 600):
        for r in warehouse:
            linked = link_schema(r, budget, words, gold=True)
            tables, cols = linking.schema._gold(r.query, r.schema)  # gold_columns, memoized
            shown = linked.shown_columns if linked.changed else None
            if shown is None:
                continue
            assert tables <= set(shown), (r.question, budget)
            assert all(shown[t] is None or c in shown[t] for t, c in cols), (r.question, budget)
            # ... and they are really in the text: each gold table's CREATE, each gold column's name
            ddl = {n.lower(): text for n, text in split_ddl(linked.schema)}
            assert tables <= set(ddl)
            assert all(re.search(rf"\b{c}\b", ddl[t]) for t, c in cols)
    # Negative control: the inference linker, which can't know the gold query, misses some at a small budget.
    missed = sum(not recall(r, link_schema(r, 300, words))[2] for r in warehouse)
    assert missed > 0
    # A gold query that can't be parsed: nothing is dropped.
    odd = dataclasses.replace(warehouse[0], query="SELECT FROM WHERE (")
    assert not link_schema(odd, 300, words, gold=True, value_hints=False).changed


def test_encode_rows_with_the_linker_fits_max_length_and_keeps_gold(warehouse, dataset, tok):
    # (The test tokenizer spends ~3x the demo model's tokens on this text: 2048 here is like 700 there.)
    cfg = load_config(None, ["--data.schema_linking", "true", "--data.max_length", "2048"])
    link = make_linker(cfg.data, tok, "schema_first")
    rows = warehouse[:12]
    encoded, counts = encode_rows(rows, tok, "schema_first", 2048, "skip", link)
    assert counts["linked_schema"] == len(rows) and counts["skipped_overlong"] == 0
    for r, e in zip(rows, encoded):
        assert len(e.input_ids) <= 2048
        text = tok.decode(e.input_ids)
        assert all(f"CREATE TABLE {t} " in text for t in gold_columns(r.query, r.schema)[0])
    # Rows whose schema fits, value hints off: the very same examples as without the linker (prefix sharing intact).
    small = [r for r in load(dataset, "train", db_id="sales")][:30]
    quiet = make_linker(dataclasses.replace(cfg.data, value_hints=False), tok, "schema_first")
    plain, _ = encode_rows(small, tok, "schema_first", 1024, "skip")
    linked, counts = encode_rows(small, tok, "schema_first", 1024, "skip", quiet)
    assert [e.input_ids for e in plain] == [e.input_ids for e in linked] and counts["kept"] == len(small)


# ---------------------------------------------------------------------------------------------- value hints


def _hostile_db(path: Path) -> str:
    """A database whose names try to break out of the hint query, and the schema text that names them."""
    ddl = ('CREATE TABLE "city""; DROP TABLE shop; --" (id INTEGER PRIMARY KEY, "name"" FROM shop; DELETE FROM shop; '
           '--" TEXT);\n\nCREATE TABLE shop (shop_id INTEGER PRIMARY KEY, city TEXT, note TEXT, label TEXT)')
    conn = sqlite3.connect(path)
    conn.executescript(ddl + ";")
    cities = ["Paris", "Lyon", "Nice", "Lille", "Rennes", "Tours", "Metz", "Brest"]
    rows = [(i, c, "multi\nline" if i == 1 else "x" * (MAX_HINT_CHARS + 5), "O'Brien")
            for i, c in enumerate(cities * 3, 1)]
    conn.executemany("INSERT INTO shop VALUES (?, ?, ?, ?)", rows)
    conn.execute('INSERT INTO "city""; DROP TABLE shop; --" VALUES (1, \'Paris\')')
    conn.commit()
    conn.close()
    return ddl + ";"


def test_value_hints_come_only_through_the_read_only_connection(tmp_path, monkeypatch):
    db = tmp_path / "shop.sqlite"
    schema = _hostile_db(db)
    before = hashlib.sha256(db.read_bytes()).hexdigest(), db.stat().st_mtime_ns

    import importlib

    ex = importlib.import_module("ft.sql.execute")  # the module (ft.sql exports a function of that name)

    seen_sql, connects = [], []
    real_execute, real_connect = ex.execute, sqlite3.connect

    def spy_execute(path, sql, *a, **kw):
        seen_sql.append(sql)
        return real_execute(path, sql, *a, **kw)

    def spy_connect(target, *a, **kw):
        connects.append((str(target), kw.get("uri")))
        return real_connect(target, *a, **kw)

    monkeypatch.setattr(ex, "execute", spy_execute)
    monkeypatch.setattr(sqlite3, "connect", spy_connect)
    linking.values._VALUE_CACHE.clear()
    parse_schema.cache_clear()
    row = Row(question=f"Which shops are in Paris, Lyon, Nice, Lille, Rennes or Tours, run by O'Brien, noted "
                       f"multi line or {'x' * (MAX_HINT_CHARS + 5)}?",
              query="SELECT 1", schema=schema, db_path=str(db))
    linked = link_schema(row, 10_000, words, max_value_hints=5)
    monkeypatch.undo()

    assert seen_sql, "the values were read"
    from ft.sql.execute import _single_read_statement
    from ft.sql.parse import parse_one

    for sql in seen_sql:  # every hint query is one SELECT, whatever the names in the schema say
        assert _single_read_statement(sql)[1] is None and parse_one(sql).key in ("select", "union")
    assert connects and all(uri and "mode=ro" in target for target, uri in connects)  # only read-only opens
    assert (hashlib.sha256(db.read_bytes()).hexdigest(), db.stat().st_mtime_ns) == before
    # The connection refuses a write outright (the layer under the hint query).
    assert not execute(db, 'DROP TABLE shop').ok and not execute(db, "SELECT 1; DELETE FROM shop").ok

    # Bounds: at most 5 values, 3 per column, short single-line values only, quotes escaped.
    assert 0 < len(linked.hints) <= 5
    per_col: dict = {}
    for t, c, v in linked.hints:
        per_col[(t, c)] = per_col.get((t, c), 0) + 1
        assert len(v) <= MAX_HINT_CHARS and "\n" not in v
    assert max(per_col.values()) <= MAX_HINTS_PER_COLUMN
    assert "-- values of shop.city: 'Paris', 'Lyon', 'Nice'" in linked.hint_text
    assert "'Rennes'" not in linked.hint_text  # the 4th city of the same column is cut
    assert "multi" not in linked.hint_text and "x" * MAX_HINT_CHARS not in linked.hint_text
    assert linked.schema == row.schema and "-- values" not in linked.schema  # the hints come apart from the schema
    many = link_schema(row, 10_000, words, max_value_hints=50)
    assert "'O''Brien'" in many.hint_text and len(many.hints) <= 50
    # Only values the question names; none with hints off.
    other = link_schema(dataclasses.replace(row, question="How many shops are there?"), 10_000, words)
    assert not other.hints and not link_schema(row, 10_000, words, value_hints=False).hints


# ----------------------------------------------------------------------------------------------- inference


def test_over_long_prompt_is_an_error_without_linking_and_fits_with_it(warehouse, tok):
    row = dataclasses.replace(warehouse[0], query="")  # inference rows have no gold query
    off = load_config(None, [])
    with pytest.raises(DataError, match=r"data\.schema_budget") as err:
        fit_prompt(row, tok, "default", off.data, context_length=2048, reserve=128)
    assert "data.schema_linking" in str(err.value) and "2048" in str(err.value)
    small = Row(question="How many customers?", query="", schema="CREATE TABLE customers (id INTEGER PRIMARY KEY);")
    assert fit_prompt(small, tok, "default", off.data, 2048, 128) is small  # fits: untouched

    on = load_config(None, ["--data.schema_linking", "true"])
    fitted = fit_prompt(row, tok, "default", on.data, context_length=2048, reserve=128)
    n = len(prompt_ids(fitted, tok, "default")[0])
    assert n + 128 <= min(2048, on.data.max_length)
    budget = load_config(None, ["--data.schema_linking", "true", "--data.schema_budget", "300"])
    tight = fit_prompt(row, tok, "default", budget.data, context_length=2048, reserve=128)
    assert TokenCounter(tok)(tight.schema) <= 300
    with pytest.raises(DataError, match="even with schema linking"):  # the question alone is over the context
        fit_prompt(dataclasses.replace(row, question="word " * 3000), tok, "default", on.data, 2048, 128)


def test_config_keys_validate():
    cfg = load_config(None, [])
    assert (cfg.data.schema_linking, cfg.data.schema_budget, cfg.data.value_hints) == (False, 0, True)
    for key, value in (("data.schema_budget", "-1"), ("data.schema_budget", "8"), ("data.max_value_hints", "-2")):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            load_config(None, [f"--{key}", value])
