"""Data sources, bad-row checks and train / eval splits: everything between a dataset on disk and `list[Row]`.

    rows = load_source("data/train.jsonl")                        # jsonl | json | csv | parquet, by suffix
    rows = load_source("b-mc2/sql-create-context", "hf", columns={"query": "answer", "schema": "context"})
    rows = load_source("/data/spider", split="dev")                # folder with tables.json
    rows, report = check_rows(rows, skip_bad_rows=False)            # raises DataError naming file:row
    train, eval_, report = load_splits(cfg.data, seed=cfg.train.seed)  # what training calls

Every Row carries `origin` = "file:N" (N is the 1-based line for JSONL / CSV, the 1-based record
otherwise), so any later error can point at the exact place in the user's data.
"""
from __future__ import annotations

import csv
import difflib
import json
import logging
import math
import os
import random
import re
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

from ft.data.rows import REQUIRED_FIELDS, ROW_FIELDS, DataError, Row
from ft.files import share
from ft.sql.engine import DatabaseError, database, redact

log = logging.getLogger(__name__)

FORMATS = ("auto", "jsonl", "json", "csv", "parquet", "hf", "spider", "bird", "bundled")
_SUFFIX_FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".parquet": "parquet",
                   ".pq": "parquet"}
# Formats whose column names come from the user's data; the others have a fixed layout.
_MAPPABLE = ("jsonl", "json", "csv", "parquet", "hf")
_OPTIONAL_STR_FIELDS = ("db_id", "db_path", "evidence", "difficulty", "db", "dialect")
_HF_DISK_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")


# ----------------------------------------------------------------------------------------------
# loading


def load_source(
    source: str,
    format: str = "auto",
    split: str | None = None,
    columns: dict | None = None,
    cache_dir: str = "~/.cache/sqlft/data",
) -> list[Row]:
    """Read any supported source into Rows (unchecked: run `check_rows` next)."""
    columns = dict(columns or {})
    fmt = detect_format(source) if format == "auto" else format
    if fmt not in FORMATS or fmt == "auto":
        raise DataError(f"Unknown data format '{format}' for '{source}'. Valid formats: {', '.join(FORMATS)}.")
    unknown = [k for k in columns if k not in ROW_FIELDS]
    if unknown:
        raise DataError(f"Column mapping for '{source}' names unknown field(s) {unknown}: keys are our fields "
                        f"({', '.join(ROW_FIELDS)}), values are the source's column names.")
    if columns and fmt not in _MAPPABLE:
        raise DataError(f"A column mapping ({columns}) does not apply to the '{fmt}' source '{source}': its layout "
                        f"is fixed. "
                        f"Mappings work for {', '.join(_MAPPABLE)}.")

    if fmt == "bundled":
        return _load_bundled(split, cache_dir)
    if fmt == "spider":
        return _load_spider(Path(source).expanduser(), split)
    if fmt == "bird":
        return _load_bird(Path(source).expanduser(), split)
    if fmt == "hf":
        records, name, base_dir = _read_hf(source, split)
    else:
        path = Path(source).expanduser()
        if not path.is_file():
            raise DataError(f"Data file '{source}' does not exist (format {fmt}).")
        if split is not None:
            log.warning("data split %r is ignored for the single-file source '%s'", split, source)
        reader = {"jsonl": _iter_jsonl, "json": _read_json, "csv": _read_csv, "parquet": _read_parquet}[fmt]
        records = reader(path)
        name, base_dir = str(source), path.parent
    return _records_to_rows(records, columns, name, base_dir)


def detect_format(source: str) -> str:
    """`auto`: by file suffix, by the marker files of a folder, else a Hugging Face dataset name."""
    if source == "bundled":
        return "bundled"
    path = Path(source).expanduser()
    if path.is_file():
        fmt = _SUFFIX_FORMATS.get(path.suffix.lower())
        if fmt is None:
            raise DataError(f"Cannot tell the format of '{source}' from its suffix '{path.suffix}'. "
                            f"Known suffixes: {', '.join(_SUFFIX_FORMATS)}; or set data.format explicitly.")
        return fmt
    if path.is_dir():
        has = lambda name: (path / name).exists()  # noqa: E731
        # Spider's own release also ships test_tables.json, so its train files are checked before BIRD's markers.
        if has("train_spider.json") or has("train_others.json"):
            return "spider"
        if has("train_tables.json") or has("dev_tables.json") or has("train_databases") or has("dev_databases"):
            return "bird"
        if has("tables.json"):
            return "spider"
        if any(has(m) for m in _HF_DISK_MARKERS):
            return "hf"
        raise DataError(f"Cannot tell what kind of dataset the folder '{source}' holds: expected tables.json (Spider), "
                        f"*_tables.json (BIRD), or a Hugging Face save_to_disk folder. Set data.format explicitly.")
    if path.suffix.lower() in _SUFFIX_FORMATS or source.startswith((".", "/", "~")):
        raise DataError(f"Data file or folder '{source}' does not exist.")
    return "hf"  # e.g. "b-mc2/sql-create-context"


# Files are decoded with errors="surrogateescape": a byte that isn't UTF-8 becomes a lone surrogate in the text, so
# the record holding it is found and reported (or skipped) by its file and line instead of ending the whole load.
_NOT_UTF8 = re.compile("[\udc80-\udcff]")


def _read_jsonl(path: Path) -> list[tuple[int, dict]]:
    return list(_iter_jsonl(path))


def _iter_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, record), one line at a time: a large file is never held in memory as records."""
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{lineno}: not valid JSON ({e.msg} at column {e.colno}).") from None
            if not isinstance(obj, dict):
                raise DataError(f"{path}:{lineno}: expected a JSON object per line, got {type(obj).__name__}.")
            yield lineno, obj


def _read_json(path: Path) -> list[tuple[int, dict]]:
    text = path.read_text(encoding="utf-8", errors="surrogateescape")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        # Many "*.json" files in the wild are really JSON Lines.
        if e.msg == "Extra data" and text.lstrip().startswith("{"):
            return _read_jsonl(path)
        raise DataError(f"{path}:{e.lineno}: not valid JSON ({e.msg} at column {e.colno}).") from None
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of objects or {{\"data\": [...]}}, got {type(data).__name__}.")
    for i, obj in enumerate(data, 1):
        if not isinstance(obj, dict):
            raise DataError(f"{path}:{i}: record {i} is a {type(obj).__name__}, expected an object.")
    return list(enumerate(data, 1))


def _read_csv(path: Path) -> Iterator[tuple[int, dict]]:
    # The csv module keeps every value a string (a question like "42" stays text) and reports the
    # line where each record starts, even when quoted SQL spans several lines.
    csv.field_size_limit(2**31 - 1)
    with open(path, encoding="utf-8", errors="surrogateescape", newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None:  # reading the header here so line numbers start after it
            return
        start = reader.line_num + 1
        for rec in reader:
            if None in rec:  # more cells than header names
                raise DataError(f"{path}:{start}: row has {len(rec) - 1 + len(rec[None])} cells but the header has "
                                f"{len(reader.fieldnames)}.")
            yield start, rec
            start = reader.line_num + 1


def _read_parquet(path: Path) -> Iterator[tuple[int, dict]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow raises several types for a damaged file
        raise DataError(f"{path}: cannot read as Parquet ({e}).") from None
    n = 0
    for batch in table.to_batches(max_chunksize=4096):  # as Python objects a batch at a time, not all at once
        for rec in batch.to_pylist():
            n += 1
            yield n, rec


def _read_hf(source: str, split: str | None) -> tuple[Iterator[tuple[int, dict]], str, Path | None]:
    """A Hub dataset by name, or a folder written by `save_to_disk`."""
    import datasets

    local = Path(source).expanduser()
    if local.is_dir():
        ds = datasets.load_from_disk(str(local))
        if isinstance(ds, datasets.DatasetDict):
            want = split or "train"
            if want not in ds:
                raise DataError(f"Split '{want}' is not in the saved dataset '{source}'. Splits: {', '.join(ds)}.")
            ds = ds[want]
            name = f"{source}[{want}]"
        else:
            name = source
        base_dir = local.resolve()
    else:
        try:
            ds = datasets.load_dataset(source, split=split or "train")
        except Exception as e:  # network, unknown name, unknown split: all the same to the user
            raise DataError(f"Cannot load Hugging Face dataset '{source}' (split {split or 'train'}): {e}") from None
        name, base_dir = f"{source}[{split or 'train'}]", None
    return _iter_hf(ds), name, base_dir


def _iter_hf(ds) -> Iterator[tuple[int, dict]]:
    # A block of rows at a time as plain lists (one Arrow->Python pass, far faster than indexing rows), so a large
    # dataset is never all Python objects at once.
    n = 0
    for batch in ds.iter(batch_size=4096):
        for i in range(len(next(iter(batch.values()), []))):
            n += 1
            yield n, {c: v[i] for c, v in batch.items()}


def _records_to_rows(records: Iterable[tuple[int, dict]], columns: dict, name: str,
                     base_dir: Path | None) -> list[Row]:
    # Rows are made as records stream in; the column checks need every record's keys, so they run at the end.
    shared: dict = {}  # one object for the text many rows repeat (schemas, db ids, macros)
    rows, seen = [], set()
    for n, rec in records:
        seen.update(rec)
        rows.append(_make_row(rec, columns, f"{name}:{n}", base_dir, shared))
    available = sorted(seen)
    if rows:
        missing = [f"'{col}'" for col in columns.values() if col not in available]
        if missing:
            raise DataError(f"Column mapping names column(s) {', '.join(missing)} that '{name}' does not have. "
                            f"Available columns: {', '.join(available)}.")
        absent = [f for f in REQUIRED_FIELDS if columns.get(f, f) not in available]
        if absent:
            raise DataError(f"'{name}' has no column for required field(s) {', '.join(absent)}. Available columns: "
                            f"{', '.join(available)}. Map them with data.columns, e.g. "
                            f"{{\"{absent[0]}\": \"<their column>\"}}.")
    return rows


def _not_utf8(vals: dict) -> str | None:
    for key, v in vals.items():
        text = json.dumps(v, ensure_ascii=False) if isinstance(v, (list, dict)) else v
        if isinstance(text, str) and (m := _NOT_UTF8.search(text)):
            return f"{key} holds a byte that is not UTF-8 (0x{ord(m.group()) - 0xDC00:02x})"
    return None


def _make_row(rec: dict, columns: dict, origin: str, base_dir: Path | None, shared: dict | None = None) -> Row:
    vals = {f: rec.get(columns.get(f, f)) for f in ROW_FIELDS}
    problem = _not_utf8(vals)
    for f in _OPTIONAL_STR_FIELDS:
        v = vals[f]
        if v is None or v == "" or (isinstance(v, float) and math.isnan(v)):
            vals[f] = None
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            vals[f] = str(v)  # e.g. a numeric db_id in Parquet
    macros = vals["macros"]
    if isinstance(macros, str):  # CSV / Parquet store macros as a JSON string
        if not macros.strip():
            macros = None
        else:
            try:
                macros = json.loads(macros)
            except json.JSONDecodeError:
                pass  # left as a string: check_rows reports it as malformed
    vals["macros"] = macros
    if isinstance(vals["db_path"], str) and base_dir is not None and not problem:
        vals["db_path"] = _resolve(vals["db_path"], base_dir, shared)
    if isinstance(vals["db"], str) and not problem:
        vals["db"] = _resolve_db(vals["db"], base_dir, shared)
    if shared is not None:
        _share(vals, shared)
    return Row(**vals, origin=origin, problem=problem)


_SHARED_STR_FIELDS = ("schema", "db_id", "db_path", "db", "evidence", "difficulty")


def _share(vals: dict, shared: dict) -> None:
    """Rows on one database repeat its schema (often kilobytes), its id, path and macros: each distinct value is kept
    once, so a million rows on a few thousand databases hold a few thousand schemas, not a million copies."""
    for f in _SHARED_STR_FIELDS:
        v = vals[f]
        if isinstance(v, str):
            vals[f] = shared.setdefault(v, v)
    macros = vals["macros"]
    if isinstance(macros, list):
        try:
            key = ("macros", json.dumps(macros, sort_keys=True))
        except (TypeError, ValueError):
            return
        vals["macros"] = shared.setdefault(key, macros)


def _resolve_db(name: str, base_dir: Path | None, memo: dict | None = None) -> str:
    """A database name with its file (if it is one) resolved against the data file's folder, as ft.sql.engine
    spells it; a name that isn't valid is kept as written for check_rows to report."""
    key = ("db", name, str(base_dir))
    if memo is not None and key in memo:
        return memo[key]
    try:
        out = database(name, base_dir).url
    except DatabaseError:
        out = name
    if memo is not None:
        memo[key] = out
    return out


def _resolve(path: str, base_dir: Path, memo: dict | None = None) -> str:
    """Relative db paths are relative to the data file's folder, not the working directory."""
    key = ("db_path", path)
    if memo is not None and key in memo:  # resolve() is a system call per path component: once per distinct path
        return memo[key]
    p = Path(path).expanduser()
    out = str(p if p.is_absolute() else (base_dir / p).resolve())
    if memo is not None:
        memo[key] = out
    return out


def read_question_rows(source: str, columns: dict | None = None) -> list[Row]:
    """Rows of a local file that may hold only question and query (`sqlft data from-db` fills in the schema)."""
    fmt = detect_format(source)
    readers = {"jsonl": _read_jsonl, "json": _read_json, "csv": _read_csv, "parquet": _read_parquet}
    if fmt not in readers:
        raise DataError(f"'{source}': from-db reads a local file of rows (JSONL, JSON, CSV or Parquet), not {fmt}.")
    columns = dict(columns or {})
    path = Path(source).expanduser()
    records = readers[fmt](path)
    for n, rec in records:
        absent = [f for f in ("question", "query") if not rec.get(columns.get(f, f))]
        if absent:
            raise DataError(f"{source}:{n}: no {' and no '.join(absent)} (map other column names with --columns).")
    return [_make_row(rec, columns, f"{source}:{n}", path.parent) for n, rec in records]


def _load_bundled(split: str | None, cache_dir: str) -> list[Row]:
    from ft.data.synthetic import ensure_dataset  # lazy: generating it pulls in more than loading needs

    split = split or "train"
    if split not in ("train", "eval"):
        raise DataError(f"The bundled dataset has splits 'train' and 'eval', not '{split}'.")
    folder = Path(ensure_dataset(Path(cache_dir).expanduser()))
    path = folder / f"{split}.jsonl"
    return _records_to_rows(_iter_jsonl(path), {}, str(path), folder)


# ----------------------------------------------------------------------------------------------
# Spider / BIRD: questions in JSON files, schemas in a tables.json rendered to CREATE TABLE


_TYPE_MAP = {"text": "TEXT", "number": "NUMERIC", "time": "DATETIME", "boolean": "BOOLEAN", "others": "TEXT",
             "integer": "INTEGER", "real": "REAL", "date": "DATE", "datetime": "DATETIME", "blob": "BLOB"}
_PLAIN_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# SQLite keywords (sqlite.org/lang_keywords.html) that a bare identifier may not be.
_SQLITE_KEYWORDS = frozenset("""
ABORT ACTION ADD AFTER ALL ALTER ALWAYS ANALYZE AND AS ASC ATTACH AUTOINCREMENT BEFORE BEGIN BETWEEN BY CASCADE
CASE CAST CHECK COLLATE COLUMN COMMIT CONFLICT CONSTRAINT CREATE CROSS CURRENT CURRENT_DATE CURRENT_TIME
CURRENT_TIMESTAMP DATABASE DEFAULT DEFERRABLE DEFERRED DELETE DESC DETACH DISTINCT DO DROP EACH ELSE END ESCAPE
EXCEPT EXCLUDE EXCLUSIVE EXISTS EXPLAIN FAIL FILTER FIRST FOLLOWING FOR FOREIGN FROM FULL GENERATED GLOB GROUP
GROUPS HAVING IF IGNORE IMMEDIATE IN INDEX INDEXED INITIALLY INNER INSERT INSTEAD INTERSECT INTO IS ISNULL JOIN
KEY LAST LEFT LIKE LIMIT MATCH MATERIALIZED NATURAL NO NOT NOTHING NOTNULL NULL NULLS OF OFFSET ON OR ORDER OTHERS
OUTER OVER PARTITION PLAN PRAGMA PRECEDING PRIMARY QUERY RAISE RANGE RECURSIVE REFERENCES REGEXP REINDEX RELEASE
RENAME REPLACE RESTRICT RETURNING RIGHT ROLLBACK ROW ROWS SAVEPOINT SELECT SET TABLE TEMP TEMPORARY THEN TIES TO
TRANSACTION TRIGGER UNBOUNDED UNION UNIQUE UPDATE USING VACUUM VALUES VIEW VIRTUAL WHEN WHERE WINDOW WITH WITHOUT
""".split())


def quote_ident(name: str) -> str:
    """Quote an identifier only when it needs it, so the prompt stays close to how people write SQL."""
    if _PLAIN_IDENT.fullmatch(name) and name.upper() not in _SQLITE_KEYWORDS:
        return name
    return '"' + name.replace('"', '""') + '"'


def render_schema(db: dict) -> str:
    """One Spider-format tables.json entry -> CREATE TABLE statements with types, keys and references."""
    tables = db["table_names_original"]
    cols = db["column_names_original"]  # [[table_index, name], ...]; index 0 is [-1, "*"]
    types = db.get("column_types") or []
    pk_cols: set[int] = set()
    for pk in db.get("primary_keys") or []:  # an int per key column, or a list for a composite key
        pk_cols.update(pk if isinstance(pk, list) else [pk])
    fks_by_table: dict[int, list[tuple[int, int]]] = {}
    for src, dst in db.get("foreign_keys") or []:
        fks_by_table.setdefault(cols[src][0], []).append((src, dst))

    statements = []
    for t, table in enumerate(tables):
        idx = [i for i, (ti, _) in enumerate(cols) if ti == t]
        lines = []
        for i in idx:
            raw = str(types[i]).lower() if i < len(types) else "text"
            sql_type = _TYPE_MAP.get(raw) or (raw.upper() if re.fullmatch(r"[a-z][a-z ]*", raw) else "TEXT")
            lines.append(f"{quote_ident(cols[i][1])} {sql_type}")
        pks = [quote_ident(cols[i][1]) for i in idx if i in pk_cols]
        if pks:
            lines.append(f"PRIMARY KEY ({', '.join(pks)})")
        for src, dst in fks_by_table.get(t, []):
            ref_table = quote_ident(tables[cols[dst][0]])
            src_col, dst_col = quote_ident(cols[src][1]), quote_ident(cols[dst][1])
            lines.append(f"FOREIGN KEY ({src_col}) REFERENCES {ref_table}({dst_col})")
        if not lines:  # a table without columns would not parse; say so in SQL rather than drop it
            statements.append(f"-- table {quote_ident(table)} has no columns in tables.json")
            continue
        body = ",\n  ".join(lines)
        statements.append(f"CREATE TABLE {quote_ident(table)} (\n  {body}\n);")
    return "\n\n".join(statements)


def _read_tables(path: Path) -> dict[str, dict]:
    try:
        dbs = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        line = path.read_bytes()[: e.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: not valid UTF-8 (byte 0x{e.object[e.start]:02x}).") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}: not valid JSON ({e.msg}).") from None
    if not isinstance(dbs, list):
        raise DataError(f"{path}: expected a list of database schemas (Spider tables.json format).")
    out = {}
    for i, db in enumerate(dbs, 1):
        if not isinstance(db, dict) or not isinstance(db.get("db_id"), str):
            what = "has no db_id" if isinstance(db, dict) else f"is a {type(db).__name__}, not an object"
            raise DataError(f"{path}: entry {i} {what} (each entry is one database schema with its db_id).")
        for key in ("table_names_original", "column_names_original"):
            if not isinstance(db.get(key), list):
                raise DataError(f"{path}: entry {i} (db_id '{db['db_id']}') has no list '{key}'.")
        out[db["db_id"]] = db
    return out


def _load_schema_rows(
    files: list[Path], tables_path: Path, db_dir: Path, query_key: str, extra: tuple[str, ...] = ()
) -> list[Row]:
    """Shared by Spider and BIRD: questions from `files`, schemas from `tables_path`, databases in `db_dir`."""
    if not tables_path.is_file():
        raise DataError(f"Schema file '{tables_path}' does not exist: Spider / BIRD folders need their tables JSON.")
    tables = _read_tables(tables_path)
    schemas: dict[str, str] = {}  # rendered once per database: thousands of questions share a few schemas
    db_paths: dict[str, str | None] = {}
    rows = []
    for file in files:
        for n, rec in _read_json(file):
            db_id = rec.get("db_id")
            if db_id not in schemas and db_id not in tables:  # a bad row like any other (data.skip_bad_rows)
                close = difflib.get_close_matches(str(db_id), list(tables), n=3)
                rows.append(Row(question=rec.get("question"), query=rec.get(query_key), schema="",
                                db_id=db_id if isinstance(db_id, str) else None, origin=f"{file}:{n}",
                                problem=f"db_id '{db_id}' is not in {tables_path}"
                                + (f" (close: {', '.join(close)})" if close else "")))
                continue
            if db_id not in schemas:
                schemas[db_id] = render_schema(tables[db_id])
                db_file = db_dir / db_id / f"{db_id}.sqlite"
                db_paths[db_id] = str(db_file.resolve()) if db_file.is_file() else None
            row = Row(question=rec.get("question"), query=rec.get(query_key), schema=schemas[db_id], db_id=db_id,
                      db_path=db_paths[db_id], origin=f"{file}:{n}")
            for f in extra:
                setattr(row, f, rec.get(f) or None)
            rows.append(row)
    return rows


def _pick_split(folder: Path, split: str | None, default_order: list[str], kind: str) -> str:
    if split is not None:
        return split
    for name in default_order:
        if (folder / f"{name}.json").is_file():
            return name
    raise DataError(f"'{folder}' holds none of {', '.join(n + '.json' for n in default_order)}: not a {kind} folder?")


def _split_files(folder: Path, names: list[str], split: str) -> list[Path]:
    files = [folder / f"{n}.json" for n in names if (folder / f"{n}.json").is_file()]
    if not files:
        have = sorted(p.stem for p in folder.glob("*.json") if not p.stem.endswith("tables"))
        looked = ", ".join(n + ".json" for n in names)
        raise DataError(f"Split '{split}' not found in '{folder}' (looked for {looked}). "
                        f"Question files there: {', '.join(have) or 'none'}.")
    return files


def _load_spider(folder: Path, split: str | None) -> list[Row]:
    split = _pick_split(folder, split, ["train_spider", "train_others", "dev"], "Spider")
    names = ["train_spider", "train_others"] if split == "train" else [split]  # "train": both training files
    files = _split_files(folder, names, split)
    # Spider's release keeps test schemas / databases apart (test_tables.json, test_database/).
    tables = folder / f"{split}_tables.json"
    db_dir = folder / f"{split}_database"
    return _load_schema_rows(files, tables if tables.is_file() else folder / "tables.json",
                             db_dir if db_dir.is_dir() else folder / "database", "query")


def _load_bird(folder: Path, split: str | None) -> list[Row]:
    split = _pick_split(folder, split, ["train", "dev"], "BIRD")
    files = _split_files(folder, [split], split)
    tables = folder / f"{split}_tables.json"
    return _load_schema_rows(files, tables if tables.is_file() else folder / "tables.json",
                             folder / f"{split}_databases", "SQL", extra=("evidence", "difficulty"))


# ----------------------------------------------------------------------------------------------
# checks


def _parse_error(e: Exception) -> str:
    errors = getattr(e, "errors", None)
    if errors:  # ParseError: a structured list; its str() carries ANSI highlighting
        first = errors[0]
        desc = re.sub(r"<Token token_type: [^,]+, text: (.*?), line: .*?>", r"'\1'", str(first.get("description")))
        return f"{desc} (line {first.get('line')}, col {first.get('col')})"
    return str(e).splitlines()[0][:200]


def _parse_sql(text: str):
    """sqlglot statements, or a problem string. A statement sqlglot could only keep as an opaque
    `Command` (it logs "Falling back to parsing as a 'Command'") was not understood: counted as unparsable."""
    import sqlglot

    sqlglot_log = logging.getLogger("sqlglot")
    level = sqlglot_log.level
    sqlglot_log.setLevel(logging.ERROR)  # the fallback warning would repeat per row; our report counts it instead
    try:
        stmts = [s for s in sqlglot.parse(text, read="sqlite") if s is not None]
    except sqlglot.errors.SqlglotError as e:
        return _parse_error(e)
    finally:
        sqlglot_log.setLevel(level)
    opaque = [s for s in stmts if isinstance(s, sqlglot.exp.Command)]
    if opaque:
        return f"sqlglot cannot read {opaque[0].sql()[:60]!r}"
    return stmts


def _schema_problem(schema: str) -> tuple[str, str] | None:
    import sqlite3

    import sqlglot

    stmts = _parse_sql(schema)
    if isinstance(stmts, str):
        # SQLite has the last word: valid SQLite DDL that sqlglot can't read (e.g. WITHOUT ROWID) is fine.
        conn = sqlite3.connect(":memory:")
        try:
            conn.executescript(schema)
            has_table = conn.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table'").fetchone()[0] > 0
        except sqlite3.Error:
            return "schema does not parse", stmts
        finally:
            conn.close()
        return None if has_table else ("schema has no CREATE TABLE", "no CREATE statement found")
    if not any(isinstance(s, sqlglot.exp.Create) for s in stmts):
        return "schema has no CREATE TABLE", "no CREATE statement found"
    return None


def _gold_problem(query: str) -> str | None:
    stmts = _parse_sql(query)
    if isinstance(stmts, str):
        return stmts
    return None if stmts else "no statement"


def _macros_problem(macros) -> str | None:
    if macros is None:
        return None
    if not isinstance(macros, list):
        return f"expected a list of macro objects, got {type(macros).__name__}"
    for m in macros:
        if not isinstance(m, dict) or not isinstance(m.get("name"), str) or not isinstance(m.get("body", ""), str):
            return "each macro needs a string 'name' and a string 'body' (or none: a function the database holds)"
        if not isinstance(m.get("params", []), list):
            return f"macro '{m['name']}': 'params' must be a list"
    return None


def _db_problem(name: str) -> str | None:
    """Why the row's database can't be used (checked once per database), or None."""
    try:
        return database(name).problem()
    except DatabaseError as e:
        return str(e)


def _row_problem(row: Row, schema_cache: dict, db_cache: dict | None = None) -> tuple[str, str] | None:
    """(reason key for the counts, detail for the message), or None for a good row."""
    if row.problem:  # found while reading: bytes that aren't UTF-8, or a db_id its schema file lacks
        return ("unknown db_id" if row.problem.startswith("db_id") else "not valid UTF-8"), row.problem
    for f in REQUIRED_FIELDS:
        v = getattr(row, f)
        if v is None:
            return f"missing {f}", f"missing {f}"
        if not isinstance(v, str):
            return f"{f} is not a string", f"{f} is a {type(v).__name__}: {str(v)[:60]!r}"
        if not v.strip():
            return f"empty {f}", f"empty {f}"
    for f in _OPTIONAL_STR_FIELDS:
        v = getattr(row, f)
        if v is not None and not isinstance(v, str):
            return f"{f} is not a string", f"{f} is a {type(v).__name__}"
    problem = _macros_problem(row.macros)
    if problem:
        return "malformed macros", problem
    if row.schema not in schema_cache:
        schema_cache[row.schema] = _schema_problem(row.schema)
    bad = schema_cache[row.schema]
    if bad:
        return bad[0], f"{bad[0]}: {bad[1]}"
    if row.db and db_cache is not None:
        if row.db not in db_cache:
            db_cache[row.db] = _db_problem(row.db)
        if db_cache[row.db]:
            field_name = "db_path" if row.db_path else "db"  # the field the row named it by
            return f"bad {field_name}", f"{field_name} {redact(db_cache[row.db])}"
        if row.sql_dialect == "postgres" and any(isinstance(m, dict) and m.get("body") for m in row.macros or []):
            return "macros PostgreSQL can't run", ("PostgreSQL runs the functions the database holds: create each "
                                                   "macro there as a function (sqlft data convert --to-db does) and "
                                                   "leave out its body")
    return None


def check_rows(
    rows: list[Row], *, skip_bad_rows: bool, drop_unparsable_gold: bool = False, source_name: str = ""
) -> tuple[list[Row], dict]:
    """Validate rows; raise DataError on bad rows unless skipping. Nothing is dropped without being counted."""
    schema_cache: dict[str, tuple[str, str] | None] = {}  # a few schemas are shared by thousands of rows
    gold_cache: dict[str, str | None] = {}
    bad: list[tuple[Row, str]] = []
    reasons: Counter = Counter()
    unparsable: list[tuple[Row, str]] = []
    good: list[Row] = []
    db_cache: dict[str, str | None] = {}
    for row in rows:
        problem = _row_problem(row, schema_cache, db_cache)
        if problem:
            reasons[problem[0]] += 1
            bad.append((row, problem[1]))
            continue
        if row.query not in gold_cache:
            gold_cache[row.query] = _gold_problem(row.query)
        if gold_cache[row.query]:
            unparsable.append((row, gold_cache[row.query]))
            if drop_unparsable_gold:
                continue
        good.append(row)

    where = f" from {source_name}" if source_name else ""
    if bad and not skip_bad_rows:
        listed = "\n".join(f"  {r.origin or '?'}: {why}" for r, why in bad[:5])
        more = f"\n  ... and {len(bad) - 5} more" if len(bad) > 5 else ""
        counts = ", ".join(f"{k}: {v}" for k, v in reasons.most_common())
        raise DataError(f"{len(bad)} of {len(rows)} rows{where} are bad ({counts}):\n{listed}{more}\n"
                        "Fix the data, or set data.skip_bad_rows: true to skip bad rows (they are counted in the "
                        "report).")
    if bad:
        log.warning("skipped %d bad rows%s: %s", len(bad), where, dict(reasons))
    if unparsable:
        first = unparsable[0]
        log.warning("%d rows%s have gold SQL that sqlglot cannot parse (%s), e.g. %s: %s", len(unparsable), where,
                    "dropped" if drop_unparsable_gold else "kept; data.drop_unparsable_gold: true drops them",
                    first[0].origin, first[1])
    report = {
        "rows_in": len(rows),
        "rows_out": len(good),
        "bad_rows": len(bad),
        "bad_reasons": dict(reasons),
        "unparsable_gold": len(unparsable),
        "dropped_unparsable_gold": len(unparsable) if drop_unparsable_gold else 0,
    }
    return good, report


# ----------------------------------------------------------------------------------------------
# splits


DEFAULT_EVAL_FRACTION = 0.05  # held out of a file source that has no eval split (data.eval_fraction unset)


def split_rows(rows: list[Row], *, eval_fraction: float = 0.0, eval_dbs=(), seed: int = 0,
               min_eval: int = 1) -> tuple[list[Row], list[Row]]:
    """Held-out databases go to eval first, then a seeded random fraction of the rest. Order is kept within each
    side."""
    if not 0 <= eval_fraction < 1:
        raise DataError(f"eval_fraction must be in [0, 1), got {eval_fraction}.")
    eval_dbs = list(eval_dbs or [])
    present = sorted({r.db_id for r in rows if r.db_id is not None})
    for db in eval_dbs:
        if db not in present:
            close = difflib.get_close_matches(db, present, n=5, cutoff=0.5)
            hint = f" Close matches: {', '.join(close)}." if close else ""
            raise DataError(f"Eval database '{db}' (data.eval_dbs) does not occur in the data "
                            f"({len(present)} databases present).{hint}")
    held = set(eval_dbs)
    is_eval = [r.db_id in held for r in rows]
    rest = [i for i, e in enumerate(is_eval) if not e]
    if eval_fraction > 0 and len(rest) > 1:
        # At least one eval row, at least one train row: a fraction that rounds to nothing is still a request.
        n_eval = min(max(min_eval, round(len(rest) * eval_fraction)), len(rest) - 1)
        rng = random.Random(f"split:{seed}")  # str seeds are stable across processes (no hash randomization)
        for i in rng.sample(rest, n_eval):
            is_eval[i] = True
    train = [r for r, e in zip(rows, is_eval) if not e]
    eval_ = [r for r, e in zip(rows, is_eval) if e]
    return train, eval_


def _seeded_subset(rows: list[Row], n: int, seed: str) -> list[Row]:
    """The first n of a seeded permutation, in original order: a larger n gives a superset."""
    if n >= len(rows):
        return list(rows)
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    return [rows[i] for i in sorted(order[:n])]


def _load_eval_source(cfg, train_fmt: str | None) -> tuple[list[Row], dict]:
    """The rows of `data.eval_source`, checked."""
    eval_fmt = detect_format(cfg.eval_source) if cfg.eval_format == "auto" else cfg.eval_format
    # One `columns` setting serves both sources only when they are laid out alike.
    eval_columns = cfg.columns if eval_fmt == train_fmt and eval_fmt in _MAPPABLE else None
    rows = with_database(load_source(cfg.eval_source, cfg.eval_format, cfg.eval_split, eval_columns, cfg.cache_dir),
                         cfg)
    return check_rows(rows, skip_bad_rows=cfg.skip_bad_rows, drop_unparsable_gold=cfg.drop_unparsable_gold,
                      source_name=cfg.eval_source)


def with_database(rows: list[Row], cfg) -> list[Row]:
    """data.db for the rows that name no database, data.dialect (unless auto) for every row; in place."""
    db = _resolve_db(cfg.db, Path.cwd()) if getattr(cfg, "db", None) else None
    dialect = getattr(cfg, "dialect", "auto")
    for r in rows:
        if db and not r.db:
            r.db = db
            r.__post_init__()  # keeps db_path in step for a SQLite file
        if dialect != "auto":
            r.dialect = dialect
    return rows


def load_eval_rows(cfg, seed: int) -> list[Row]:
    """Only the eval split of a DataConfig (what `sqlft eval` scores): `data.eval_source` when given (the training
    source is then not read at all), else the split training would hold out; capped by `data.max_eval_rows`."""
    if cfg.eval_source:
        train_fmt = detect_format(cfg.source) if cfg.format == "auto" and cfg.source else cfg.format
        rows, _ = _load_eval_source(cfg, train_fmt)
        return _seeded_subset(rows, cfg.max_eval_rows, f"eval_cap:{seed}") if cfg.max_eval_rows else rows
    return load_splits(cfg, seed)[1]


def load_splits(cfg, seed: int, min_eval: int = 1) -> tuple[list[Row], list[Row], dict]:
    """Train and eval rows for a DataConfig, checked, split, limited; plus a report of every count.

    `min_eval`: the fewest rows a default held-out split gets (training passes its batch size: one full batch)."""
    train_fmt = detect_format(cfg.source) if cfg.format == "auto" else cfg.format
    rows = with_database(load_source(cfg.source, cfg.format, cfg.split, cfg.columns, cfg.cache_dir), cfg)
    train, train_check = check_rows(rows, skip_bad_rows=cfg.skip_bad_rows,
                                    drop_unparsable_gold=cfg.drop_unparsable_gold, source_name=cfg.source)
    report: dict = {"train_source": cfg.source, "checks": {"train": train_check}}

    if cfg.eval_source:
        eval_, report["checks"]["eval"] = _load_eval_source(cfg, train_fmt)
        report["eval_from"] = f"eval_source {cfg.eval_source}"
    elif train_fmt == "bundled" and not cfg.eval_fraction and not cfg.eval_dbs:
        eval_rows = with_database(load_source("bundled", "bundled", "eval", None, cfg.cache_dir), cfg)
        eval_, report["checks"]["eval"] = check_rows(eval_rows, skip_bad_rows=cfg.skip_bad_rows,
                                                     drop_unparsable_gold=cfg.drop_unparsable_gold,
                                                     source_name="bundled eval")
        report["eval_from"] = "bundled eval split"
    elif cfg.eval_fraction or cfg.eval_dbs:
        train, eval_ = split_rows(train, eval_fraction=cfg.eval_fraction or 0.0, eval_dbs=cfg.eval_dbs, seed=seed)
        report["eval_from"] = f"split (eval_fraction={cfg.eval_fraction}, eval_dbs={list(cfg.eval_dbs)})"
    elif cfg.eval_fraction is None and len(train) >= 2 * min_eval:
        train, eval_ = split_rows(train, eval_fraction=DEFAULT_EVAL_FRACTION, seed=seed, min_eval=min_eval)
        report["eval_from"] = (f"default held-out split: {len(eval_)} of {len(train) + len(eval_)} rows "
                               f"({100 * DEFAULT_EVAL_FRACTION:g}%, at least {min_eval}; data.eval_fraction 0 turns "
                               f"it off)")
        log.info("no eval split given: %s", report["eval_from"])
    else:
        eval_ = []
        report["eval_from"] = "none"

    # The limit comes after the split so that changing it never moves rows between train and eval.
    report["train_rows_before_limit"] = len(train)
    if cfg.limit is not None:
        train = _seeded_subset(train, cfg.limit, f"limit:{seed}")
    report["eval_rows_before_cap"] = len(eval_)
    if cfg.max_eval_rows is not None:
        eval_ = _seeded_subset(eval_, cfg.max_eval_rows, f"eval_cap:{seed}")
    if not train:
        raise DataError(f"No training rows left from '{cfg.source}' ({report}).")
    report["train_rows"] = len(train)
    report["eval_rows"] = len(eval_)
    report["train_dbs"] = len({r.db_id for r in train if r.db_id})
    report["eval_dbs"] = len({r.db_id for r in eval_ if r.db_id})
    return train, eval_, report


# ----------------------------------------------------------------------------------------------
# writing


def write_jsonl(rows, path) -> Path:
    """Write Rows (or dicts) as JSON Lines atomically: a crash never leaves a half-written file behind."""
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r.to_dict() if isinstance(r, Row) else r, ensure_ascii=False) + "\n")
        share(tmp)  # mkstemp makes it 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
