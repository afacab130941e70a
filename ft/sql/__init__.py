"""The SQL layer: parsing helpers, validation against a schema, sandboxed execution of untrusted SQL
on SQLite, result comparison, and in-house macros."""
from .compare import order_matters, query_has_order_by, results_match
from .execute import ExecResult, execute
from .macros import describe_macros, register_macros
from .parse import extract_sql, normalize_sql, schema_catalog, split_ddl, tables_in_query
from .validate import Issue, Validation, hallucinated_names, validate

__all__ = [
    "ExecResult", "execute", "order_matters", "query_has_order_by", "results_match",
    "describe_macros", "register_macros",
    "extract_sql", "normalize_sql", "schema_catalog", "split_ddl", "tables_in_query",
    "Issue", "Validation", "hallucinated_names", "validate",
]
