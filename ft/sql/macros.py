"""In-house SQL macros: SQL functions a dataset declares and every connection registers.

A macro is data, so it can travel inside a dataset file:
    {"name": "fiscal_quarter", "params": ["d"], "body": "<SQL expression over :d>", "doc": "..."}
On SQLite the body is a scalar SQL expression with named parameters (:d); it is evaluated on a private in-memory
SQLite connection, so a macro can never read or write the user's database. On DuckDB the body is a DuckDB
expression over the bare parameter names, created as a macro on each connection (ft/sql/engine_duckdb.py). An entry
without a body describes a function the database itself holds (PostgreSQL functions, DuckDB macros stored in the
file; `signature` says how it is declared): shown to the model and known to validation, never registered.
"""
from __future__ import annotations

import sqlite3


def _make_function(body: str, params: list[str]):
    scratch = sqlite3.connect(":memory:", check_same_thread=False)
    stmt = f"SELECT {body}"

    def fn(*args):
        return scratch.execute(stmt, dict(zip(params, args))).fetchone()[0]

    return fn


def register_macros(conn: sqlite3.Connection, macros: list[dict] | None) -> None:
    for m in macros or []:
        if m.get("body") is None:
            continue  # described only: nothing to register
        params = list(m.get("params", []))
        conn.create_function(m["name"], len(params), _make_function(m["body"], params), deterministic=True)


def describe_macros(macros: list[dict] | None) -> str:
    """Lines shown to the model in the prompt so it can learn to call the macros."""
    lines = []
    for m in macros or []:
        if m.get("body") is None and m.get("signature"):  # a function of the database, as it is declared
            lines.append(f"-- function {m['signature']}: {m.get('doc', '').strip()}")
            continue
        sig = f"{m['name']}({', '.join(m.get('params', []))})"
        lines.append(f"-- macro {sig}: {m.get('doc', '').strip()}")
    return "\n".join(lines)
