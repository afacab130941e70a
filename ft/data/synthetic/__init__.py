"""The bundled text-to-SQL dataset: enterprise-like SQLite databases and templated questions.

    path = ensure_dataset()            # ~/.cache/sqlft/data/bundled-v<VERSION>-s0, generated once
    generate("data/bundled", seed=1)   # or write a copy anywhere
    python -m ft.data.synthetic --out data/bundled --seed 1

Deterministic (pure Python `random` + `sqlite3`, no network) and fast (a few seconds). Every gold query
executes on its database, with the database's in-house macros registered, and returns rows.
"""
from .generator import VERSION, dataset_dir, ensure_dataset, generate, schema_text
from .questions import TIERS
from .schemas import DATABASES, HELDOUT_DBS
from .spider import spider_tables_entry, write_spider_layout

__all__ = [
    "VERSION", "TIERS", "DATABASES", "HELDOUT_DBS", "generate", "ensure_dataset", "dataset_dir",
    "write_spider_layout", "spider_tables_entry", "schema_text",
]
