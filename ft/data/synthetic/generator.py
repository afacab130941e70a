"""Build the bundled dataset: databases, questions, splits, manifest; written atomically.

Layout of a generated folder:
    databases/<db_id>.sqlite
    train.jsonl, eval.jsonl      one Row.to_dict() per line, db_path relative to the folder
    manifest.json                written last: a folder without it is incomplete
"""
from __future__ import annotations

import contextlib
import functools
import json
import os
import random
import shutil
import sqlite3
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

from ..rows import Row
from .questions import TIERS, draw_examples
from .schemas import DATABASES, HELDOUT_DBS, Database
from .templates import TEMPLATES

VERSION = "5"  # bump when the output changes, so cached copies are regenerated
GENERATOR = "sqlft.data.synthetic"
PER_TEMPLATE = 20  # examples per template unless it sets its own target (or runs out of distinct values)
EVAL_FRACTION = 0.05  # share of each training database's questions (per tier) held out for eval
HELDOUT_PER_TIER = 6  # eval questions per tier from each held-out database


def schema_text(conn: sqlite3.Connection, compact: bool = True) -> str:
    """The CREATE TABLE statements as executed, one per line (each ending in ';'), separated by blank lines;
    compact=False keeps each statement's own lines (and so its `--` comments)."""
    rows = conn.execute("SELECT sql FROM sqlite_master WHERE type = 'table' ORDER BY rowid").fetchall()
    if not compact:
        return "\n\n".join(sql.strip() + ";" for (sql,) in rows)
    return "\n\n".join(" ".join(sql.split()).replace("( ", "(").replace(" )", ")") + ";" for (sql,) in rows)


def _register_memoized(conn: sqlite3.Connection, macros: list[dict]) -> None:
    """Same results as ft.sql.macros.register_macros, memoized: drawing questions calls each macro on the
    same few thousand dates ~10^5 times. (The written dataset is checked with the real one in the tests.)"""
    scratch = sqlite3.connect(":memory:")
    for m in macros:
        stmt, params = f"SELECT {m['body']}", list(m["params"])

        @functools.lru_cache(maxsize=None, typed=True)
        def fn(*args, _stmt=stmt, _params=params):
            return scratch.execute(_stmt, dict(zip(_params, args))).fetchone()[0]

        conn.create_function(m["name"], len(params), fn, deterministic=True)


def _build(db: Database, folder: Path, seed: int, seen_questions: set[str]) -> list[Row]:
    """Create one database file and draw its questions."""
    rel = f"databases/{db.db_id}.sqlite"
    conn = sqlite3.connect(folder / rel)
    try:
        db.build(conn, random.Random(f"{seed}:{db.db_id}:rows"))
        conn.commit()
        macros = [dict(m) for m in db.macros]
        _register_memoized(conn, macros)
        schema = schema_text(conn, compact=db.compact_ddl)
        drawn = draw_examples(conn, TEMPLATES[db.db_id], random.Random(f"{seed}:{db.db_id}:questions"),
                              PER_TEMPLATE, seen_questions)
    finally:
        conn.close()
    return [Row(question=q, query=sql, schema=schema, db_id=db.db_id, db_path=rel, difficulty=tpl.tier,
                macros=macros) for tpl, q, sql in drawn]


def _split(rows: list[Row], heldout: bool, rng: random.Random) -> tuple[list[Row], list[Row]]:
    """Per tier: a held-out database gives a few eval rows (the rest is dropped, never trained on);
    a training database gives EVAL_FRACTION of its rows (at least one) to eval."""
    by_tier: dict[str, list[Row]] = defaultdict(list)
    for r in rows:
        by_tier[r.difficulty].append(r)
    train, evals = [], []
    for tier in TIERS:
        group = by_tier.get(tier, [])
        rng.shuffle(group)
        k = HELDOUT_PER_TIER if heldout else max(1, round(EVAL_FRACTION * len(group)))
        evals += group[:k]
        if not heldout:
            train += group[k:]
    return train, evals


def _counts(rows: list[Row]) -> dict:
    return {
        "total": len(rows),
        "by_db": dict(sorted(Counter(r.db_id for r in rows).items())),
        "by_tier": {t: n for t in TIERS if (n := sum(r.difficulty == t for r in rows))},
    }


def _write_jsonl(path: Path, rows: list[Row]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r.to_dict(), ensure_ascii=False) + "\n")


def _generate_into(folder: Path, seed: int) -> dict:
    (folder / "databases").mkdir(parents=True)
    seen_questions: set[str] = set()  # question texts unique across the whole dataset
    train, evals, dbs = [], [], {}
    for db in DATABASES:
        rows = _build(db, folder, seed, seen_questions)
        t, e = _split(rows, db.db_id in HELDOUT_DBS, random.Random(f"{seed}:{db.db_id}:split"))
        train += t
        evals += e
        with contextlib.closing(sqlite3.connect(folder / "databases" / f"{db.db_id}.sqlite")) as conn:
            tables = [n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY rowid")]
            dbs[db.db_id] = {
                "path": f"databases/{db.db_id}.sqlite",
                "split": "eval" if db.db_id in HELDOUT_DBS else "train+eval",
                "tables": {n: conn.execute(f"SELECT COUNT(*) FROM {n}").fetchone()[0] for n in tables},
                "macros": [m["name"] for m in db.macros],
                "questions_drawn": len(rows),
            }
    rng = random.Random(f"{seed}:shuffle")
    rng.shuffle(train)
    rng.shuffle(evals)
    _write_jsonl(folder / "train.jsonl", train)
    _write_jsonl(folder / "eval.jsonl", evals)
    manifest = {
        "generator": GENERATOR,
        "version": VERSION,
        "seed": seed,
        "heldout_dbs": list(HELDOUT_DBS),
        "tiers": list(TIERS),
        "counts": {"train": _counts(train), "eval": _counts(evals)},
        "databases": dbs,
    }
    # Written last: its presence marks a complete dataset.
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def _is_ours(folder: Path) -> bool:
    try:
        return json.loads((folder / "manifest.json").read_text())["generator"] == GENERATOR
    except (OSError, ValueError, KeyError, TypeError):
        return False


def generate(out_dir: str | os.PathLike, seed: int = 0) -> Path:
    """Generate the bundled dataset into `out_dir` and return its path.

    Everything is written into a temporary sibling folder, then renamed into place, so a crash never leaves
    a half dataset. An existing `out_dir` is replaced only if it is empty or a dataset of this generator.
    """
    out = Path(out_dir).expanduser().absolute()
    if out.exists() and any(out.iterdir()) and not _is_ours(out):
        raise FileExistsError(f"{out} exists and is not a dataset made by {GENERATOR}; not overwriting it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; the published folder should read like any other
    try:
        _generate_into(tmp, seed)
        old = None
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, old / "data")
        try:
            os.rename(tmp, out)
        except OSError:
            # Another process published the same folder meanwhile; same seed and version, same content.
            if not _is_ours(out):
                raise
            shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


@contextlib.contextmanager
def _file_lock(path: Path):
    try:
        import fcntl
    except ImportError:  # no flock (Windows): the atomic rename in generate() still keeps folders whole
        yield
        return
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def dataset_dir(cache_dir: str | os.PathLike = "~/.cache/sqlft/data", seed: int = 0) -> Path:
    return Path(cache_dir).expanduser() / f"bundled-v{VERSION}-s{seed}"


def ensure_dataset(cache_dir: str | os.PathLike = "~/.cache/sqlft/data", seed: int = 0) -> Path:
    """Return `<cache_dir>/bundled-v<VERSION>-s<seed>`, generating it first if it is missing or incomplete.

    Safe when several processes (e.g. every rank of a distributed job) call it at once: one generates
    under a file lock while the others wait, then they all reuse it.
    """
    target = dataset_dir(cache_dir, seed)
    if (target / "manifest.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(target.parent / f".{target.name}.lock"):
        if not (target / "manifest.json").exists():
            if target.exists():  # left incomplete by something other than generate(); ours to replace
                shutil.rmtree(target)
            # Once per machine, ~30 s on 2 cores, and silent otherwise: say what is happening.
            print(f"[sqlft] generating the bundled dataset once into {target} (SQLite databases and their "
                  f"questions; about half a minute) ...", file=sys.stderr, flush=True)
            t0 = time.perf_counter()
            generate(target, seed)
            print(f"[sqlft] bundled dataset ready ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
    return target
