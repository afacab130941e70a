"""Data encoded once into memory-mapped Arrow files (ft/data/encoded.py): the same examples, rows and batch plans as
the in-memory path (load_splits + encode_rows), a cache keyed by what it depends on, one build for many processes,
and no Python objects per example."""
import json
import multiprocessing
import random
import tracemalloc

import numpy as np
import pytest
from conftest import SCHEMA, make_rows

from ft.config import load_config
from ft.data.encoded import EncodedSet, cache_key, encoded_data, rows_sha1
from ft.data.prefix import plan_for
from ft.data.prompt import encode_rows
from ft.data.rows import DataError
from ft.data.sources import load_source, load_splits

SMALL_SCHEMA = SCHEMA.split(";")[0] + ";"  # customers only
MID_SCHEMA = SCHEMA.rsplit(";", 2)[0] + ";"  # customers + orders


def write_rows(path, n=60, seed=0):
    """Questions on three schemas, interleaved (so schema order differs from row order), some with macros."""
    rows = []
    for i, r in enumerate(make_rows(n)):
        r = dict(r, schema=[SCHEMA, SMALL_SCHEMA, MID_SCHEMA][i // 3 % 3] if r["difficulty"] == "simple" else SCHEMA,
                 db_id=f"db{i % 3}")
        if i % 4 == 0:
            r["macros"] = [{"name": "vat", "params": ["x"], "body": ":x * 1.2", "doc": "with VAT"}]
        rows.append(r)
    random.Random(seed).shuffle(rows)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def rows_path(tmp_path_factory):
    return write_rows(tmp_path_factory.mktemp("scale") / "rows.jsonl", n=120)


def config(tmp_path, source, **data):
    over = {"data.source": str(source), "data.cache_dir": str(tmp_path / "cache"), "data.eval_fraction": 0.2,
            "train.per_device_batch_size": 2, "train.gradient_accumulation_steps": 2, "train.seed": 5}
    return load_config(None, over | {f"data.{k}": v for k, v in data.items()})


def in_memory(cfg, tok):
    """The path before the cache: what training and `data stats` did."""
    from ft.data.linking import make_linker

    d = cfg.data
    train, evals, report = load_splits(d, cfg.train.seed, cfg.train.per_device_batch_size)
    link = make_linker(d, tok, d.template) if d.schema_linking else None
    eval_link = make_linker(d, tok, d.template, training=False) if d.schema_linking else None
    train_ex, counts = encode_rows(train, tok, d.template, d.max_length, d.overlong, link)
    eval_ex, _ = encode_rows(evals, tok, d.template, d.max_length, "skip", eval_link)
    return train, evals, report, train_ex, counts, eval_ex


def trace(examples, cfg, world, pad_id, epochs=2):
    """Everything the loop reads from a plan: micro-batches per epoch, each rank's share of each step, the step's
    counts, and the collated tensors of the first epoch."""
    plan = plan_for(examples, cfg.data, cfg.train, world)
    out = [plan.steps_per_epoch(), plan.padding()]
    for epoch in range(epochs):
        out.append(plan.global_micro_batches(epoch))
        for step in range(plan.steps_per_epoch()):
            out.append(plan.step_counts(epoch, step))
            for rank in range(world):
                micro = plan.step_batches(epoch, step, rank)
                out.append(micro)
                if epoch == 0:
                    out += [{k: v.tolist() for k, v in plan.collate(rows, examples, pad_id).items()} for rows in micro]
    return out


def as_tuples(examples):
    return [(e.input_ids, e.labels, e.outcome, e.prefix_len) for e in examples]


LAYOUTS = {
    "padded": {}, "grouped": {"group_by_length": True}, "packed": {"packing": True, "max_length": 512},
    "prefix": {"template": "schema_first", "prefix_sharing": True, "max_length": 512},
    # rows skipped as overlong (example index != row index) and schemas cut to the tables the query uses
    "skip": {"template": "schema_first", "prefix_sharing": True, "max_length": 200, "overlong": "skip"},
    "truncate": {"max_length": 210, "overlong": "truncate_schema", "packing": True},
    "linking": {"template": "schema_first", "prefix_sharing": True, "max_length": 230, "schema_linking": True,
                "schema_budget": 60},
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_cache_gives_the_in_memory_examples_rows_and_plan(tmp_path, tok, rows_path, layout):
    cfg = config(tmp_path, rows_path, **LAYOUTS[layout])
    train, evals, report, train_ex, counts, eval_ex = in_memory(cfg, tok)
    data = encoded_data(cfg, tok, min_eval=cfg.train.per_device_batch_size)
    assert as_tuples(data.train) == as_tuples(train_ex) and as_tuples(data.eval) == as_tuples(eval_ex)
    assert data.encoding == counts and data.report == report
    assert list(data.train_rows) == train and [r.origin for r in data.train_rows] == [r.origin for r in train]
    assert data.eval_rows == evals and data.train_rows[3] == train[3] and data.train_rows[-2:] == train[-2:]
    assert data.sha1 == rows_sha1(train) and data.train_dbs == sorted({r.db_id for r in train})
    assert list(data.train_rows.values("question", "db")) == [(r.question, r.db) for r in train]
    from ft.eval.scoring import trained_keys

    asked = train[::7] + evals[:2]
    assert trained_keys(data.train_rows, asked) == trained_keys(train, asked) and trained_keys(train, asked)
    if layout in ("skip", "truncate", "linking"):  # the cases are what they say
        assert counts.get({"skip": "skipped_overlong", "truncate": "truncated_schema",
                           "linking": "linked_schema"}[layout])
    for world in (1, 2):
        assert trace(data.train, cfg, world, tok.pad_token_id) == trace(train_ex, cfg, world, tok.pad_token_id)


def test_resume_by_step_and_the_negative_controls(tmp_path, tok, rows_path, capfd):
    cfg = config(tmp_path, rows_path, **LAYOUTS["prefix"])
    cfg.train.per_device_batch_size = 1
    train_ex = in_memory(cfg, tok)[3]
    first = encoded_data(cfg, tok, min_eval=1)
    assert "encoding the data once" in capfd.readouterr().err
    again = encoded_data(cfg, tok, min_eval=1)  # a resumed run: the cache is opened, not rebuilt
    assert "encoding" not in capfd.readouterr().err and again.folder == first.folder
    plan, resumed = (plan_for(x, cfg.data, cfg.train, 2) for x in (train_ex, again.train))
    steps = plan.steps_per_epoch()
    assert steps > 2
    for step in range(steps + 1, 2 * steps):
        epoch, k = divmod(step, steps)
        assert all(resumed.step_batches(epoch, k, r) == plan.step_batches(epoch, k, r) for r in range(2))
    # Negative controls: the comparison catches the examples in their stored (schema-grouped) order instead of the
    # data's, and a single changed token.
    stored = [first.train[int(i)] for i in np.argsort(first.train._position)]
    assert as_tuples(stored) != as_tuples(train_ex) and sorted(as_tuples(stored)) == sorted(as_tuples(train_ex))
    assert trace(stored, cfg, 2, tok.pad_token_id) != trace(train_ex, cfg, 2, tok.pad_token_id)
    changed = list(first.train)
    ex = changed[0]
    changed[0] = ex.__class__(ex.input_ids[:-2] + [ex.input_ids[-2] + 1, ex.input_ids[-1]], ex.labels, ex.outcome,
                              ex.prefix_len)
    assert trace(changed, cfg, 2, tok.pad_token_id) != trace(train_ex, cfg, 2, tok.pad_token_id)


def test_the_key_follows_the_file_the_tokenizer_and_the_settings(tmp_path, tok, rows_path):
    src = write_rows(tmp_path / "rows.jsonl", n=30)
    cfg = config(tmp_path, src)
    stale = tmp_path / "cache" / "encoded" / f".{cache_key(cfg, tok, 5, 1)[0]}.tmp-otherhost-1"
    stale.mkdir(parents=True)  # left by a build that was killed
    base = encoded_data(cfg, tok).folder
    assert not stale.exists() and base.name == cache_key(cfg, tok, 5, 1)[0]
    assert encoded_data(config(tmp_path, src, packing=True), tok).folder == base  # plan-only settings share it
    assert encoded_data(config(tmp_path, src, max_length=300), tok).folder != base
    assert encoded_data(cfg, tok, seed=6).folder != base
    other_tok = tok.__class__.from_pretrained(tok.name_or_path)
    other_tok.add_tokens(["<extra>"])
    assert encoded_data(cfg, other_tok).folder != base
    write_rows(src, n=30, seed=1)  # the same rows in another order: a new build, whose rows follow the file
    rebuilt = encoded_data(cfg, tok)
    assert rebuilt.folder != base and list(rebuilt.train_rows) == load_splits(cfg.data, 5, 1)[0]


def _build_in_child(args):
    from ft.model import load_tokenizer

    cfg_over, tok_dir = args
    cfg = load_config(None, cfg_over)
    data = encoded_data(cfg, load_tokenizer(tok_dir), min_eval=2)
    return str(data.folder), [e.input_ids for e in data.train], data.report


def test_processes_build_once_and_share_the_result_or_the_error(tmp_path, tok, tiny_model, rows_path):
    over = {"data.source": str(rows_path), "data.cache_dir": str(tmp_path / "cache"), "data.eval_fraction": 0.2,
            "train.seed": 5}
    bad = tmp_path / "bad.jsonl"
    bad.write_text(rows_path.read_text() + json.dumps({"question": "q?", "query": "SELECT 1", "schema": ""}) + "\n")
    with pytest.raises(DataError) as expected:
        load_splits(load_config(None, over | {"data.source": str(bad)}).data, 5, 2)
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        results = pool.map(_build_in_child, [(over, str(tiny_model))] * 2, chunksize=1)
        # Bad data: the same one-line error as load_splits, from the builder and from a process that waited for it.
        errors = pool.map(_error_in_child, [(over | {"data.source": str(bad)}, str(tiny_model))] * 2, chunksize=1)
    assert results[0] == results[1] and len(results[0][1]) > 50
    builds = [p for p in (tmp_path / "cache" / "encoded").iterdir() if not p.name.startswith(".")]
    assert len(builds) == 1 and not list((tmp_path / "cache" / "encoded").glob(".*.tmp-*"))
    assert errors == [str(expected.value)] * 2 and "bad.jsonl:121" in errors[0]


def _error_in_child(args):
    try:
        _build_in_child(args)
    except DataError as e:
        return str(e)
    return None


def test_open_cache_holds_no_python_objects_per_example(tmp_path, tok):
    src = write_rows(tmp_path / "rows.jsonl", n=1500)
    cfg = config(tmp_path, src, template="schema_first", prefix_sharing=True, max_length=512)
    encoded_data(cfg, tok)
    tracemalloc.start()
    data = encoded_data(cfg, tok)
    held = tracemalloc.get_traced_memory()[0]
    plan = plan_for(data.train, cfg.data, cfg.train)
    planned = tracemalloc.get_traced_memory()[0] - held
    tracemalloc.stop()
    n = len(data.train)
    assert n > 1000 and isinstance(data.train, EncodedSet)
    encoded = encode_rows(list(data.train_rows), tok, "schema_first", 512, "truncate_schema")[0]
    tracemalloc.start()
    kept = [[list(e.input_ids), list(e.labels)] for e in encoded]
    as_objects = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    # The opened cache (with its held-out rows as Row objects: a fifth of these rows) and the plan: a few numbers per
    # example; the same examples as Python lists: kilobytes each (more with a real vocabulary's token ids).
    print(f"bytes per example: cache {held / n:.0f}, plan {planned / n:.0f}, as Python lists {as_objects / n:.0f}")
    assert held / n < 300 and planned / n < 600 and as_objects / n > 2000, (held / n, planned / n, as_objects / n)
    assert plan.steps_per_epoch() > 0 and kept


def test_rows_on_one_schema_share_its_text(rows_path):
    rows = load_source(str(rows_path))
    by_schema = {}
    for r in rows:
        by_schema.setdefault(r.schema, set()).add(id(r.schema))
        assert not hasattr(r, "__dict__")  # slots: no per-row dict
    assert len(by_schema) == 3 and all(len(ids) == 1 for ids in by_schema.values())
    macros = [r.macros for r in rows if r.macros]
    assert len(macros) > 5 and all(m is macros[0] for m in macros)
