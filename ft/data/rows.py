"""The one row type every data source produces and every consumer reads."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ft.sql.engine import dialect_name, engine_of, file_of


def sql_dialect(dialect: str | None, db: str | None) -> str:
    """sqlglot's name of the dialect SQL is in: `dialect`, else the database's engine, else SQLite."""
    return dialect_name(dialect or engine_of(db) or "sqlite")


@dataclass(slots=True)  # no per-row __dict__: a million rows are held at once
class Row:
    question: str
    query: str  # gold SQL
    schema: str  # CREATE TABLE statements
    db_id: str | None = None
    db_path: str | None = None  # a SQLite file (the older name of `db`): kept in step with `db` for SQLite rows
    evidence: str | None = None  # hints (BIRD)
    difficulty: str | None = None  # tier name, e.g. "easy" / "join" / "nested"
    macros: list[dict] | None = None  # [{"name", "params": [...], "body": SQL expression, "doc"}]
    # Database values the question names, as `-- values of t.c: 'Paris'` lines: set by schema linking
    # (ft/data/linking.py, data.value_hints), never read from a file; the prompt shows them after the schema, in the
    # question's part, so questions on one schema still share its prefix.
    value_hints: str | None = None
    # The database the SQL runs on (ft.sql.engine.database): a SQLite / DuckDB file or a PostgreSQL URL, never
    # with a password in it.
    db: str | None = None
    dialect: str | None = None  # the SQL's dialect when it isn't the database's (data.dialect); None: the db's
    origin: str | None = field(default=None, compare=False)  # "file:row" for error messages
    problem: str | None = field(default=None, compare=False)  # found while reading (e.g. bytes that aren't UTF-8)

    def __post_init__(self):
        if self.db is None:
            self.db = self.db_path
        elif isinstance(self.db, str) and engine_of(self.db) == "sqlite":
            self.db_path = file_of(self.db)

    @property
    def sql_dialect(self) -> str:
        """sqlglot's name of the dialect the row's SQL is in: `dialect`, else its database's engine, else SQLite."""
        return sql_dialect(self.dialect, self.db)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("origin")
        d.pop("problem")
        if d["db_path"] is not None and (d["db"] is None or engine_of(d["db"]) == "sqlite"):
            d.pop("db")  # a SQLite row is written as before (db_path), so older readers keep working
        return {k: v for k, v in d.items() if v is not None}


ROW_FIELDS = ("question", "query", "schema", "db_id", "db_path", "evidence", "difficulty", "macros", "db", "dialect")
REQUIRED_FIELDS = ("question", "query", "schema")


class DataError(ValueError):
    """Bad input data; the message names the file / row / key."""
