"""The SQL layer: one engine interface to SQLite, DuckDB and PostgreSQL (engine.py: sandboxed read-only execution,
introspection, EXPLAIN), parsing helpers, validation against a schema in the SQL's dialect, transpiling SQLite SQL
to the other engines, result comparison under the official rules (compare.py), and in-house macros."""
from .compare import order_matters, query_has_order_by, results_match
from .engine import Database, DatabaseError, database
from .execute import ExecResult, execute
from .macros import describe_macros, register_macros
from .parse import extract_sql, normalize_sql, schema_catalog, split_ddl, tables_in_query
from .validate import Issue, Validation, hallucinated_names, validate

__all__ = [
    "Database", "DatabaseError", "database",
    "ExecResult", "execute", "order_matters", "query_has_order_by", "results_match",
    "describe_macros", "register_macros",
    "extract_sql", "normalize_sql", "schema_catalog", "split_ddl", "tables_in_query",
    "Issue", "Validation", "hallucinated_names", "validate",
]
