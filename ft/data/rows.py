"""The one row type every data source produces and every consumer reads."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass(slots=True)  # no per-row __dict__: a million rows are held at once
class Row:
    question: str
    query: str  # gold SQL
    schema: str  # CREATE TABLE statements
    db_id: str | None = None
    db_path: str | None = None  # SQLite file used for execution
    evidence: str | None = None  # hints (BIRD)
    difficulty: str | None = None  # tier name, e.g. "easy" / "join" / "nested"
    macros: list[dict] | None = None  # [{"name", "params": [...], "body": SQL expression, "doc"}]
    origin: str | None = field(default=None, compare=False)  # "file:row" for error messages
    problem: str | None = field(default=None, compare=False)  # found while reading (e.g. bytes that aren't UTF-8)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("origin")
        d.pop("problem")
        return {k: v for k, v in d.items() if v is not None}


ROW_FIELDS = ("question", "query", "schema", "db_id", "db_path", "evidence", "difficulty", "macros")
REQUIRED_FIELDS = ("question", "query", "schema")


class DataError(ValueError):
    """Bad input data; the message names the file / row / key."""
