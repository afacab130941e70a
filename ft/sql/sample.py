"""What a neighbour database is drawn from, whichever engine holds the original: its tables' keys and a sample of
their rows (read by the engine module's `sample()`), and the engine's own DDL to recreate the schema.

The content digest names the tables, columns and keys in lower case and the rows in key order, so the copies of a
database on SQLite, DuckDB and PostgreSQL (`sqlft data convert --to-db`) give the same digest, hence the same
random draws and the same neighbours (ft/sql/neighbours.py).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from .ddl import quote_ident

ROWS = 5000  # rows of each original table the values are drawn from


@dataclass
class SampledTable:
    name: str  # as the engine's SQL names it
    columns: list[str]
    types: list[str]  # upper case
    notnull: list[bool]
    pk: list[str]  # primary-key columns, in key order
    fks: list[tuple[list[str], str, list[str]]] = field(default_factory=list)  # (columns, parent, parent columns)
    uniques: list[list[str]] = field(default_factory=list)  # UNIQUE column sets besides the primary key
    rows: list[tuple] = field(default_factory=list)  # at most ROWS, ordered by the key (else by every column)
    schema: str | None = None  # the table's schema where it isn't the default one

    @property
    def ref(self) -> str:
        """The table in SQL: quoted, and qualified when outside the default schema."""
        return (quote_ident(self.schema) + "." if self.schema else "") + quote_ident(self.name)

    @property
    def int_pk(self) -> str | None:
        """The single integer primary-key column (duplicated rows get a new value of it), if any."""
        if len(self.pk) == 1:
            t = self.types[self.columns.index(self.pk[0])]
            return self.pk[0] if "INT" in t else None
        return None


@dataclass
class Sample:
    tables: list[SampledTable]
    ddl: list[str]  # statements creating the empty schema (tables; what must exist before rows)
    ddl_after: list[str]  # statements after the rows (foreign keys checked against them, views, macros, indexes)

    def digest(self) -> str:
        h = hashlib.sha1()
        for t in sorted(self.tables, key=lambda t: t.name.lower()):
            head = [t.name.lower(), [c.lower() for c in t.columns], [c.lower() for c in t.pk], t.int_pk is not None,
                    sorted([[c.lower() for c in cols], p.lower(), [c.lower() for c in tos]] for cols, p, tos in t.fks)]
            h.update(json.dumps(head).encode())
            for r in t.rows:
                h.update(json.dumps(r, default=str).encode())
        return h.hexdigest()


def order_clause(columns: list[str], pk: list[str], quote) -> str:
    """ORDER BY the key (else every column), NULLs first: the same row order on every engine."""
    return "ORDER BY " + ", ".join(f"{quote(c)} NULLS FIRST" for c in (pk or columns))
