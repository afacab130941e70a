"""What every engine's sandbox checks before SQL reaches the database, and masking passwords in anything printed.

    statement, refusal = check_statement(sql, "postgres")   # one read statement, no denied function
    print(redact(message))                                  # user:secret@ -> user:***@, password=... -> ***
"""
from __future__ import annotations

import re

from sqlglot.tokens import TokenType

from .parse import first_statement, tokenize


class DatabaseError(ValueError):
    """A database name that can't be used (bad URL, a password in it, an engine we don't support)."""

_URL_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^:/?#@\s]*):[^@/\s]*@", re.I)
_KV_PASSWORD = re.compile(r"(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s&]+)", re.I)


def redact(text) -> str:
    """`text` with any password in a URL (`user:secret@`) or a `password=...` parameter masked as ***."""
    text = _URL_PASSWORD.sub(r"\1:***@", str(text))
    return _KV_PASSWORD.sub(r"\1***", text)


# ---------------------------------------------------------------------------------------------------- statements

# Functions that reach outside the database, change the session, signal or lock other sessions, or run SQL given
# as text (which would bypass this check). Engines refuse most of them anyway (DuckDB: no file access at all;
# PostgreSQL: a read-only role has no right to them); this list is the layer that holds when sqlft connects as
# a superuser. Names are matched as any identifier called like a function, schema-qualified or quoted.
DENIED_FUNCTIONS = frozenset("""
pg_read_file pg_read_binary_file pg_ls_dir pg_stat_file pg_ls_logdir pg_ls_waldir pg_ls_tmpdir pg_ls_archive_statusdir
pg_file_write pg_file_rename pg_file_unlink pg_logdir_ls pg_current_logfile pg_terminate_backend pg_cancel_backend
pg_reload_conf pg_rotate_logfile pg_switch_wal pg_promote pg_create_restore_point
pg_backup_start pg_backup_stop pg_start_backup pg_stop_backup pg_import_system_collations pg_notify
pg_logical_emit_message set_config query_to_xml query_to_xmlschema query_to_xml_and_xmlschema cursor_to_xml
cursor_to_xmlschema dblink dblink_exec dblink_connect dblink_connect_u dblink_send_query dblink_open
read_csv read_csv_auto read_parquet read_json read_json_auto read_text read_blob glob parquet_scan sniff_csv
load_extension readfile writefile edit fts3_tokenizer
""".split())
DENIED_PREFIXES = ("lo_", "dblink", "pg_advisory", "pg_try_advisory", "pg_replication_", "pg_create_",
                   "pg_drop_", "pg_ls_", "pg_read_", "pg_file_")
# Catalogs that hold secrets or other sessions' SQL (password hashes, user mappings, queries in flight): only a
# superuser reads most of them, and answers are written to files and logs.
DENIED_RELATIONS = frozenset("""
pg_authid pg_shadow pg_user_mapping pg_user_mappings pg_stat_activity pg_hba_file_rules pg_ident_file_mappings
pg_file_settings duckdb_secrets
""".split())
# Functions that build a value as large as their argument says: a literal above this size is refused (SQLite
# bounds values itself; PostgreSQL allows 1 GB and DuckDB's memory limit doesn't count strings).
SIZED_FUNCTIONS = frozenset({"repeat", "lpad", "rpad", "zeroblob", "randomblob", "space", "replicate"})
MAX_VALUE_BYTES = 50_000_000
_READ_KEYWORDS = {"SELECT", "WITH", "VALUES"}
_MORE_READ_KEYWORDS = {"duckdb": {"FROM", "TABLE"}, "postgres": {"TABLE"}}  # FROM t SELECT ...; TABLE t


def check_statement(sql: str, dialect: str) -> tuple[str | None, str | None]:
    """(the one read statement without its trailing ';', None) or (None, why it is refused).

    One statement (only whitespace, comments and empty statements may follow the first ';'), starting like a read
    (SELECT / WITH / VALUES; DuckDB's FROM-first and TABLE too), naming no denied catalog, calling no denied
    function, and building no value over MAX_VALUE_BYTES from a literal size. SQL that can't be tokenized is
    refused: what this layer can't read it can't check."""
    sql = sql or ""
    first = first_statement(sql)
    try:
        if any(t.token_type != TokenType.SEMICOLON for t in tokenize(sql[len(first) + 1:], dialect)):
            return None, "only one SQL statement is allowed"
        tokens = tokenize(first, dialect)
    except Exception:  # noqa: BLE001 - an unterminated string, quote or comment
        return None, "SQL that cannot be tokenized (unterminated string, quote or comment) is refused"
    if not tokens:
        return None, "empty SQL"
    keyword = tokens[0].text.upper()
    if keyword not in _READ_KEYWORDS | _MORE_READ_KEYWORDS.get(dialect, set()):
        return None, f"only read queries (SELECT) are allowed, got {keyword}"
    for tok in tokens:
        if tok.token_type != TokenType.STRING and tok.text.lower() in DENIED_RELATIONS:
            return None, f"{tok.text} is not readable here (it holds secrets or other sessions' SQL)"
    for i, tok in enumerate(tokens[:-1]):
        if tokens[i + 1].token_type != TokenType.L_PAREN or tok.token_type == TokenType.STRING:
            continue
        name = tok.text.lower()
        if name in DENIED_FUNCTIONS or name.startswith(DENIED_PREFIXES):
            return None, f"function {tok.text}() is not allowed (it reaches outside the database or the session)"
        if name in SIZED_FUNCTIONS:
            depth = 0
            for t in tokens[i + 1:]:
                depth += (t.token_type == TokenType.L_PAREN) - (t.token_type == TokenType.R_PAREN)
                if depth == 0:
                    break
                if t.token_type == TokenType.NUMBER and _number(t.text) > MAX_VALUE_BYTES:
                    return None, f"{tok.text}() of {t.text} would build a value over {MAX_VALUE_BYTES:,} bytes"
    return first.strip(), None


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return 0.0
