import json
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from tiny import build_tiny_model  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

SCHEMA = """CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT, city TEXT);

CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER REFERENCES customers(id), total REAL, day TEXT);

CREATE TABLE products (id INTEGER PRIMARY KEY, name TEXT, price REAL);"""

CITIES = ["Paris", "Berlin", "Madrid", "Rome", "Oslo", "Lisbon", "Vienna", "Prague"]


def make_rows(n: int = 48) -> list[dict]:
    """Small fixed text-to-SQL rows with answers of different lengths."""
    rows = []
    for i in range(n):
        city = CITIES[i % len(CITIES)]
        kind = i % 3
        if kind == 0:
            q, sql = f"How many customers live in {city}?", f"SELECT COUNT(*) FROM customers WHERE city = '{city}'"
        elif kind == 1:
            q = f"What is the total of orders by customers from {city}?"
            sql = f"SELECT SUM(o.total) FROM orders o JOIN customers c ON o.customer_id = c.id WHERE c.city = '{city}'"
        else:
            q = f"List the names of the {i % 5 + 1} most expensive products."
            sql = f"SELECT name FROM products ORDER BY price DESC LIMIT {i % 5 + 1}"
        rows.append({"question": q, "query": sql, "schema": SCHEMA, "difficulty": ["simple", "join", "topk"][kind]})
    return rows


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="module")
def tok(tiny_model):
    """tiny_model's tokenizer (a module may define its own `tok`: tests/test_linking.py)."""
    from ft.model import load_tokenizer

    return load_tokenizer(str(tiny_model))


@pytest.fixture(scope="module")
def model(tiny_model):
    """tiny_model in fp32, sdpa, eval mode; one per module, so a module may wrap or change it."""
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(tiny_model), dtype=torch.float32, attn_implementation="sdpa").eval()


@pytest.fixture(scope="session")
def rows_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("rows") / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in make_rows()))
    return path


def build_shop_db(path: Path) -> Path:
    """A SQLite file with SCHEMA's tables and a few rows, for execution tests."""
    import sqlite3

    conn = sqlite3.connect(path)
    conn.executescript(SCHEMA)
    conn.executemany("INSERT INTO customers VALUES (?, ?, ?)",
                     [(i, f"c{i}", CITIES[i % len(CITIES)]) for i in range(1, 41)])
    conn.executemany("INSERT INTO orders VALUES (?, ?, ?, ?)",
                     [(i, i % 40 + 1, round(10 + i * 3.5, 2), f"2024-{i % 12 + 1:02d}-15") for i in range(1, 121)])
    conn.executemany("INSERT INTO products VALUES (?, ?, ?)", [(i, f"p{i}", 5.0 * i) for i in range(1, 21)])
    conn.commit()
    conn.close()
    return path


@pytest.fixture(scope="session")
def shop_rows_file(tmp_path_factory) -> Path:
    """make_rows() with a real database to execute on (db_path relative to the file)."""
    folder = tmp_path_factory.mktemp("shop")
    build_shop_db(folder / "shop.sqlite")
    path = folder / "rows.jsonl"
    path.write_text("".join(json.dumps(r | {"db_id": "shop", "db_path": "shop.sqlite"}) + "\n" for r in make_rows(24)))
    return path
