"""The data a config trains on, encoded once into Arrow files that every process (and node) memory-maps.

    data = encoded_data(cfg, tokenizer, min_eval=4)   # builds <data.cache_dir>/encoded/<key>/ once, or opens it
    data.train        # EncodedSet: the training examples (a Sequence of Encoded, read from the map on access)
    data.eval         # EncodedSet: the held-out examples, as the eval loss reads them (linked as at inference)
    data.train_rows   # RowSet: the training rows (a Sequence of Row, read from the map)
    data.eval_rows    # list[Row]: the held-out rows (execution evaluation)
    data.report, data.encoding, data.sha1, data.train_dbs

What is held in memory per process is then a few numbers per example (lengths, prefix ids), not Python objects per
row and token: the examples' tokens stay in the page cache, shared by every process of a node.

The cache key covers everything the result depends on: the source files (path, size, modification time: editing a
file makes a new key), every data.* setting except those that only shape the batch plan, the seed and the eval
minimum, the tokenizer (its whole definition), the code that reads, checks, links and encodes rows, and the library
versions doing it. One process builds it under a file lock; the others wait for it and open the result. A build is
written to a temporary folder and renamed into place, so a reader never sees half of one, even where the
filesystem gives no lock. The databases rows point at are not part of the key (only their paths).

The examples are exactly those of `load_splits` + `encode_rows` (tests/test_data_scale.py compares them and the
batch plans built on them).
"""
from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import json
import logging
import os
import shutil
import socket
import sys
import time
from bisect import bisect_right
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa

from ft.data.prompt import Encoded, iter_encoded
from ft.data.rows import DataError, Row

log = logging.getLogger("sqlft")

FORMAT_VERSION = 2
# data.* settings that only decide how examples are laid out in batches: the same cache serves all of them.
PLAN_ONLY = ("packing", "group_by_length", "prefix_sharing", "pad_to_multiple_of", "cache_dir")
OUTCOMES = ("kept", "truncated_schema", "linked_schema")
_CODE = ("ft/data/encoded.py", "ft/data/sources.py", "ft/data/prompt.py", "ft/data/linking", "ft/data/rows.py",
         "ft/sql/macros.py", "ft/sql/parse.py", "ft/sql/engine.py")  # files, or folders of .py files
_BATCH = 4096  # rows per Arrow record batch while writing: what the builder holds beyond the rows themselves


# ------------------------------------------------------------------------------------------------ reading


class EncodedSet(Sequence):
    """Encoded examples in a memory-mapped Arrow table; `lengths`, `prompt_lens`, `prefix_lens`, `prefix_ids` are
    small arrays (4 bytes an example) the batch plans read without touching any example's tokens."""

    def __init__(self, table: pa.Table):
        ids = table.column("input_ids")
        # Zero-copy views of each record batch's offsets and token values: an example is a slice of one of them.
        self._chunks = [(c.offsets.to_numpy(), c.values.to_numpy()) for c in ids.chunks]
        self._starts = np.cumsum([0] + [len(c) for c in ids.chunks]).tolist()
        # Examples are stored in the order they were encoded (grouped by schema); example i is the i-th kept row.
        self._position = np.argsort(_column(table, "row"), kind="stable")
        lengths = np.concatenate([np.diff(o) for o, _ in self._chunks]) if self._chunks else np.zeros(0, np.int64)
        self.lengths = lengths[self._position]
        self.prompt_lens = _column(table, "prompt_len")[self._position]
        self.prefix_lens = _column(table, "prefix_len")[self._position]
        self.prefix_ids = _first_appearance(_column(table, "prefix_id")[self._position])
        self._outcomes = _column(table, "outcome")[self._position]

    def __len__(self) -> int:
        return len(self.prompt_lens)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        at = int(self._position[i])
        k = bisect_right(self._starts, at) - 1
        offsets, values = self._chunks[k]
        j = at - self._starts[k]
        ids = values[offsets[j] : offsets[j + 1]].tolist()
        p = int(self.prompt_lens[i])
        return Encoded(ids, [-100] * p + ids[p:], OUTCOMES[self._outcomes[i]], int(self.prefix_lens[i]))


def _column(table: pa.Table, name: str) -> np.ndarray:
    return table.column(name).to_numpy()


def _first_appearance(ids: np.ndarray) -> np.ndarray:
    """Ids renumbered 0, 1, ... in order of first appearance (as example_columns numbers prefixes); -1 stays."""
    out = ids.copy()
    valid = ids >= 0
    uniq, first = np.unique(ids[valid], return_index=True)
    rank = np.empty(len(uniq), dtype=ids.dtype)
    rank[np.argsort(first, kind="stable")] = np.arange(len(uniq), dtype=ids.dtype)
    out[valid] = rank[np.searchsorted(uniq, ids[valid])]
    return out


class RowSet(Sequence):
    """Checked rows in a memory-mapped Arrow table, as Row objects made on access (iterating goes a batch at a
    time). Schemas and macros, which many rows share, are stored once in a table of texts."""

    def __init__(self, table: pa.Table, texts: pa.Table):
        self._table, self._texts_col = table, texts.column("text")
        self._texts: dict[int, object] = {}

    def __len__(self) -> int:
        return self._table.num_rows

    def _text(self, i: int | None, as_json: bool = False):
        if i is None or i < 0:
            return None
        if i not in self._texts:
            text = self._texts_col[i].as_py()
            self._texts[i] = json.loads(text) if as_json else text
        return self._texts[i]

    def _rows(self, cols: dict) -> Iterator[Row]:
        for k in range(len(cols["question"])):
            yield Row(question=cols["question"][k], query=cols["query"][k], schema=self._text(cols["schema"][k]),
                      db_id=cols["db_id"][k], db_path=cols["db_path"][k], evidence=cols["evidence"][k],
                      difficulty=cols["difficulty"][k], macros=self._text(cols["macros"][k], as_json=True),
                      db=cols["db"][k], dialect=cols["dialect"][k], origin=cols["origin"][k])

    def __getitem__(self, i):
        if isinstance(i, slice):
            start, stop, step = i.indices(len(self))
            if step != 1:
                return [self[j] for j in range(start, stop, step)]
            return list(self._rows(self._table.slice(start, max(0, stop - start)).to_pydict()))
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        return next(self._rows(self._table.slice(i, 1).to_pydict()))

    def __iter__(self) -> Iterator[Row]:
        for batch in self._table.to_batches(max_chunksize=_BATCH):
            yield from self._rows(batch.to_pydict())

    def by_schema(self, indices: Sequence[int] | None = None) -> Iterator[Row]:
        """Every row (or those at `indices`), grouped by schema: work that parses each schema once per group (schema
        linking) goes fast this way."""
        schema_ids = self._table.column("schema").to_numpy()
        if indices is None:
            order = np.argsort(schema_ids, kind="stable")
        else:
            indices = np.asarray(indices, dtype=np.int64)
            order = indices[np.argsort(schema_ids[indices], kind="stable")]
        for s in range(0, len(order), _BATCH):
            yield from self._rows(self._table.take(order[s : s + _BATCH]).to_pydict())

    def values(self, *names: str) -> Iterator[tuple]:
        """Those fields of every row (e.g. for counts), a tuple a row, without making Rows; read a batch at a time, so
        a pass over a million rows never holds a million values."""
        for batch in self._table.select(list(names)).to_batches(max_chunksize=_BATCH):
            yield from zip(*(batch.column(n).to_pylist() for n in names))


@dataclasses.dataclass
class EncodedData:
    train: EncodedSet
    eval: EncodedSet
    train_rows: RowSet
    eval_rows: list[Row]
    report: dict  # load_splits' report
    encoding: dict  # encode_rows' counts for the training rows
    sha1: str  # of the training rows' content (rows_sha1): a resumed run checks it trains on the same data
    train_dbs: list[str]
    folder: Path


def _open(folder: Path) -> EncodedData:
    meta = json.loads((folder / "meta.json").read_text())
    texts = _read(folder / "texts.arrow")
    eval_rows = list(RowSet(_read(folder / "eval_rows.arrow"), texts))
    return EncodedData(EncodedSet(_read(folder / "train.arrow")), EncodedSet(_read(folder / "eval.arrow")),
                       RowSet(_read(folder / "train_rows.arrow"), texts), eval_rows, meta["report"],
                       meta["encoding"], meta["sha1"], meta["train_dbs"], folder)


def _read(path: Path) -> pa.Table:
    """Memory-mapped: the table's buffers are the file's pages (shared by every process that maps it)."""
    with pa.memory_map(str(path), "r") as source:
        return pa.ipc.open_stream(source).read_all()


# ------------------------------------------------------------------------------------------------ the key


def rows_sha1(rows: Iterable[Row]) -> str:
    """Of the training rows' content: a resumed run checks it trains on the same data."""
    h = hashlib.sha1()
    for r in rows:
        h.update(json.dumps([r.question, r.query, r.schema, r.db_id]).encode())
    return h.hexdigest()


def _source_fingerprint(source: str | None, fmt: str, split: str | None, cache_dir: str) -> list:
    from ft.data.sources import detect_format

    if not source:
        return []
    fmt = detect_format(source) if fmt == "auto" else fmt
    if fmt == "bundled":
        from ft.data.synthetic import ensure_dataset

        path = Path(ensure_dataset(Path(cache_dir).expanduser()))
    else:
        path = Path(source).expanduser()
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
    else:  # a Hub dataset: its own cache's fingerprint, when it loads (else the build reports why it doesn't)
        return [source, fmt, split, _hub_fingerprint(source, split)]
    return [source, fmt, split] + [[str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns] for p in files]


def _hub_fingerprint(source: str, split: str | None) -> str | None:
    try:
        import datasets

        return datasets.load_dataset(source, split=split or "train")._fingerprint
    except Exception:  # noqa: BLE001 - whatever stops it loading, the build says so properly
        return None


def _tokenizer_fingerprint(tokenizer) -> str:
    h = hashlib.sha256(type(tokenizer).__name__.encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    h.update((backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))).encode())
    h.update(json.dumps([tokenizer.eos_token_id, tokenizer.bos_token_id, getattr(tokenizer, "chat_template", None),
                         tokenizer.special_tokens_map], sort_keys=True, default=str).encode())
    return h.hexdigest()


def _code_fingerprint() -> str:
    import importlib.metadata as md

    repo = Path(__file__).resolve().parents[2]
    h = hashlib.sha256()
    for name in _CODE:
        path = repo / name
        for f in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            h.update(str(f.relative_to(repo)).encode() + f.read_bytes())
    for package in ("tokenizers", "transformers", "sqlglot", "pyarrow"):
        h.update(f"{package}={md.version(package)}".encode())
    return h.hexdigest()


def cache_key(cfg, tokenizer, seed: int, min_eval: int) -> tuple[str, dict]:
    d = cfg.data
    settings = {k: v for k, v in dataclasses.asdict(d).items() if k not in PLAN_ONLY}
    parts = {
        "format_version": FORMAT_VERSION, "data": settings, "seed": seed, "min_eval": min_eval,
        "source": _source_fingerprint(d.source, d.format, d.split, d.cache_dir),
        "eval_source": _source_fingerprint(d.eval_source, d.eval_format, d.eval_split, d.cache_dir),
        "tokenizer": _tokenizer_fingerprint(tokenizer), "code": _code_fingerprint(),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24], parts


# ------------------------------------------------------------------------------------------------ building


class _Texts:
    """Distinct long texts (schemas, macros as JSON) -> ids, in order of first use."""

    def __init__(self):
        self.ids: dict[str, int] = {}

    def id(self, text: str | None) -> int:
        if text is None:
            return -1
        return self.ids.setdefault(text, len(self.ids))


_ROW_SCHEMA = pa.schema([("question", pa.large_string()), ("query", pa.large_string()), ("schema", pa.int32()),
                         ("db_id", pa.string()), ("db_path", pa.string()), ("evidence", pa.large_string()),
                         ("difficulty", pa.string()), ("macros", pa.int32()), ("db", pa.string()),
                         ("dialect", pa.string()), ("origin", pa.string())])
_EXAMPLE_SCHEMA = pa.schema([("input_ids", pa.large_list(pa.int32())), ("prompt_len", pa.int32()),
                             ("prefix_len", pa.int32()), ("prefix_id", pa.int32()), ("outcome", pa.int8()),
                             ("row", pa.int64())])


def _write(path: Path, schema: pa.Schema, batches: Iterable[dict]) -> None:
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
        for cols in batches:
            writer.write_batch(pa.record_batch(cols, schema=schema))


def _row_batches(rows: Sequence[Row], texts: _Texts) -> Iterator[dict]:
    for s in range(0, len(rows), _BATCH):
        part = rows[s : s + _BATCH]
        yield {
            "question": [r.question for r in part], "query": [r.query for r in part],
            "schema": [texts.id(r.schema) for r in part], "db_id": [r.db_id for r in part],
            "db_path": [r.db_path for r in part], "evidence": [r.evidence for r in part],
            "difficulty": [r.difficulty for r in part],
            "macros": [texts.id(None if r.macros is None else json.dumps(r.macros)) for r in part],
            "db": [r.db for r in part], "dialect": [r.dialect for r in part], "origin": [r.origin for r in part],
        }


def _by_schema(rows: Sequence[Row]) -> list[int]:
    """Row indices grouped by schema (in order of first appearance, rows in order within each): linking parses a
    schema once per group instead of once per row when rows on thousands of schemas come shuffled."""
    first: dict[str, int] = {}
    return sorted(range(len(rows)), key=lambda i: first.setdefault(rows[i].schema, len(first)))


def _encoded_by_schema(rows: Sequence[Row], tokenizer, d, overlong: str, link, counts: dict):
    order = _by_schema(rows)
    done = 0
    try:
        for k, ex in iter_encoded((rows[i] for i in order), tokenizer, d.template, d.max_length, overlong, link,
                                  counts):
            done = k + 1
            yield order[k], ex
    except DataError:
        # The error encode_rows would raise: the first bad row in the data's order (an earlier one may not have
        # been reached yet in schema order).
        stop = order[done] if done < len(order) else len(rows)
        for _ in iter_encoded(rows[:stop], tokenizer, d.template, d.max_length, overlong, link):
            pass
        raise


def _example_batches(encoded: Iterator[tuple[int, Encoded]]) -> Iterator[dict]:
    prefixes: dict[tuple[int, ...], int] = {}  # distinct prefix tokens -> id, in order of first appearance
    cols: dict[str, list] = {k: [] for k in _EXAMPLE_SCHEMA.names}
    for row, ex in encoded:
        cols["input_ids"].append(ex.input_ids)
        cols["prompt_len"].append(sum(1 for label in ex.labels if label == -100))
        cols["prefix_len"].append(ex.prefix_len)
        cols["prefix_id"].append(prefixes.setdefault(tuple(ex.input_ids[: ex.prefix_len]), len(prefixes))
                                 if ex.prefix_len > 0 else -1)
        cols["outcome"].append(OUTCOMES.index(ex.outcome))
        cols["row"].append(row)
        if len(cols["row"]) == _BATCH:
            yield cols
            cols = {k: [] for k in _EXAMPLE_SCHEMA.names}
    if cols["row"]:
        yield cols


def _build(cfg, tokenizer, seed: int, min_eval: int, folder: Path, parts: dict) -> None:
    from ft.data.sources import load_splits

    d = cfg.data
    t0 = time.perf_counter()
    train_rows, eval_rows, report = load_splits(d, seed, min_eval)
    loaded = time.perf_counter() - t0
    link = eval_link = None
    if d.schema_linking:  # training rows keep their gold tables, held-out ones are linked as at inference
        from ft.data.linking import make_linker

        link = make_linker(d, tokenizer, d.template)
        eval_link = make_linker(d, tokenizer, d.template, training=False)
    texts = _Texts()
    counts: dict = {}
    _write(folder / "train_rows.arrow", _ROW_SCHEMA, _row_batches(train_rows, texts))
    _write(folder / "train.arrow", _EXAMPLE_SCHEMA, _example_batches(
        _encoded_by_schema(train_rows, tokenizer, d, d.overlong, link, counts)))
    _write(folder / "eval_rows.arrow", _ROW_SCHEMA, _row_batches(eval_rows, texts))
    eval_counts: dict = {}
    _write(folder / "eval.arrow", _EXAMPLE_SCHEMA, _example_batches(
        _encoded_by_schema(eval_rows, tokenizer, d, "skip", eval_link, eval_counts)))
    _write(folder / "texts.arrow", pa.schema([("text", pa.large_string())]), [{"text": list(texts.ids)}])
    meta = {"report": report, "encoding": counts, "eval_encoding": eval_counts, "sha1": rows_sha1(train_rows),
            "train_dbs": sorted({r.db_id for r in train_rows if r.db_id}), "key": parts,
            "built": {"seconds": round(time.perf_counter() - t0, 1), "load_and_check_seconds": round(loaded, 1),
                      "host": socket.gethostname(), "pid": os.getpid(), "at": time.strftime("%Y-%m-%d %H:%M:%S %z")}}
    (folder / "meta.json").write_text(json.dumps(meta, indent=1, default=str))


@contextlib.contextmanager
def _lock(path: Path):
    """An exclusive flock, polled (so Ctrl-C gets through); yields whether it is held. Where the filesystem has
    none, no lock: the build's atomic rename still keeps the cache whole (two processes may then both build it)."""
    try:
        import fcntl
    except ImportError:
        yield False
        return
    with open(path, "a+") as f:
        said, held = False, True
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not said:
                    f.seek(0)
                    log.info("waiting for the encoded data another process is building (%s)", f.read().strip())
                    said = True
                time.sleep(0.5)
            except OSError:  # e.g. ENOLCK: a shared filesystem without locks
                held = False
                break
        try:
            f.truncate(0)
            f.write(f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%H:%M:%S')}")
            f.flush()
            yield held
        finally:
            with contextlib.suppress(OSError):
                fcntl.flock(f, fcntl.LOCK_UN)


def encoded_data(cfg, tokenizer, seed: int | None = None, min_eval: int = 1) -> EncodedData:
    """The checked, split, encoded data of a config: built once into data.cache_dir, memory-mapped by every caller.
    `min_eval` as load_splits takes it (training passes its batch size). Raises DataError as load_splits and
    encode_rows do; a process that waited for another's failed build raises the same error without rebuilding."""
    seed = cfg.train.seed if seed is None else seed
    key, parts = cache_key(cfg, tokenizer, seed, min_eval)
    root = Path(cfg.data.cache_dir).expanduser() / "encoded"
    root.mkdir(parents=True, exist_ok=True)
    folder, failed = root / key, root / f".{key}.error"
    if (folder / "meta.json").is_file():
        return _open(folder)
    waited_from = time.time()
    with _lock(root / f".{key}.lock") as locked:
        if (folder / "meta.json").is_file():
            return _open(folder)
        if failed.is_file() and failed.stat().st_mtime >= waited_from - 1:
            raise DataError(failed.read_text())
        if locked:  # nobody else builds this key now: what a killed build left behind goes
            for stale in root.glob(f".{key}.tmp-*"):
                shutil.rmtree(stale, ignore_errors=True)
        tmp = root / f".{key}.tmp-{socket.gethostname()}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        print(f"[sqlft] encoding the data once into {folder} (memory-mapped by every process) ...", file=sys.stderr,
              flush=True)
        t0 = time.perf_counter()
        try:
            _build(cfg, tokenizer, seed, min_eval, tmp, parts)
        except DataError as e:
            failed.write_text(str(e))
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        except OSError as e:
            shutil.rmtree(tmp, ignore_errors=True)
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise DataError(f"no space left on {root} for the encoded data (data.cache_dir): free some, or point "
                                f"data.cache_dir elsewhere.") from None
            raise
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        failed.unlink(missing_ok=True)
        try:
            os.rename(tmp, folder)
        except OSError:  # built meanwhile by a process this lock didn't exclude: theirs is the same
            shutil.rmtree(tmp, ignore_errors=True)
        size = sum(p.stat().st_size for p in folder.iterdir()) / 2**20
        loaded = json.loads((folder / "meta.json").read_text())["built"]["load_and_check_seconds"]
        print(f"[sqlft] encoded data ready ({time.perf_counter() - t0:.0f} s, of which {loaded:.0f} s reading and "
              f"checking rows; {size:.0f} MB)", file=sys.stderr, flush=True)
    return _open(folder)
