"""Schema linking: how much of the gold schema survives a token budget, and (with an adapter) what it does to EX.

    python bench/schema_linking.py                          # recall at 512 / 1,024 / 2,048 tokens (about a minute)
    python bench/schema_linking.py --budgets 256,512 --spider-limit 2000
    python bench/schema_linking.py --adapter runs/demo/adapter [--ex-split eval|train|all] [--ex-budget 1024]

1. Recall (no model; the demo model's tokenizer counts the tokens): for each budget (tokens of schema text), on the
   bundled warehouse's questions (170+ tables, DDL over 20,000 tokens) and on Spider's training questions
   (../shared/data/spider relative to the repository, skipped when absent; no database files there, so no value
   hints), the share of gold tables and gold columns (ft.data.linking.gold_columns) the pruned schema keeps and
   prompt tokens before / after, for
     - linking: ft.data.linking.link_schema as inference runs it (the gold query never looked at), value hints on;
     - truncation: the schema's CREATE TABLE blocks in their order until the budget is spent (the only pruning
       possible without the gold query: what an inference-time `truncate_schema` would be).
2. --adapter PATH: execution accuracy (ft.eval.scoring.evaluate) of that adapter
     - on the warehouse questions, at --ex-budget, with the schema linked vs truncated (and, for reference, the
       gold tables only, which training's truncate_schema gives but inference can't);
     - on the bundled held-out split with schema linking on and value hints on vs off (fit_prompt, the run's
       max_length and context).
   Needs the model; minutes on a CPU.

Results: bench/results/schema_linking.json (machine, versions, settings, figures).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
RESULTS = REPO / "bench" / "results"
SPIDER = (REPO / ".." / "shared" / "data" / "spider").resolve()


def tokenizer():
    from ft.config import load_config
    from ft.model import load_tokenizer, local_model_dir

    return load_tokenizer(local_model_dir(load_config(REPO / "configs" / "demo.yaml")))


def warehouse_rows(cache_dir: str, splits=("train", "eval")):
    from ft.data.sources import load_source

    return [r for s in splits for r in load_source("bundled", "bundled", s, cache_dir=cache_dir)
            if r.db_id == "warehouse"]


def spider_rows(limit: int | None):
    from ft.data.sources import load_source

    if not (SPIDER / "train_spider.json").is_file():
        return None
    rows = load_source(str(SPIDER), "spider", split="train_spider")
    return rows[:limit] if limit else rows


def truncation(row, budget, count):
    """CREATE TABLE blocks in schema order while they fit the budget."""
    from ft.data.linking import Linked, parse_schema

    index = parse_schema(row.schema)
    kept, used = [], 0
    for t in index.tables:
        c = count(t.text) + count("\n\n")
        if used + c > budget:
            break
        kept.append(t)
        used += c
    if len(kept) == len(index.tables):
        return Linked(row.schema, [t.name for t in kept], [], [], [], count(row.schema), count(row.schema), budget,
                      False)
    schema = "\n\n".join(t.text for t in kept)
    shown = {t.key: None for t in kept}
    return Linked(schema, [t.name for t in kept], [t.name for t in index.tables if t.key not in shown], [], [],
                  count(schema), count(row.schema), budget, True, shown)


def gold_only(row, budget, count):
    """The gold query's tables only (training's truncate_schema; impossible at inference)."""
    from ft.data.linking import Linked, gold_columns, parse_schema

    index = parse_schema(row.schema)
    tables, _ = gold_columns(row.query, index)
    kept = [t for t in index.tables if t.key in tables]
    schema = "\n\n".join(t.text for t in kept)
    return Linked(schema, [t.name for t in kept], [], [], [], count(schema), count(row.schema), budget, True,
                  {t.key: None for t in kept})


def recall_section(datasets: dict, budgets: list[int], tok) -> dict:
    from ft.data.linking import measure

    out = {}
    for name, rows in datasets.items():
        out[name] = {"questions": len(rows), "databases": len({r.db_id for r in rows}), "budgets": {}}
        for b in budgets:
            entry = {}
            for label, linker, hints in (("linking", None, True), ("truncation", truncation, False)):
                t0 = time.perf_counter()
                m = measure(rows, tok, "default", b, value_hints=hints, linker=linker)
                m["ms_per_question"] = round(1000 * (time.perf_counter() - t0) / max(1, len(rows)), 2)
                entry[label] = m
                print(f"{name:>9} budget {b:>5} {label:<10} table recall {m['gold_table_recall']:.3f} (all kept "
                      f"{m['all_gold_tables_kept']:.3f}) column recall {m['gold_column_recall']:.3f} prompt tokens "
                      f"{m['prompt_tokens_before']['mean']} -> {m['prompt_tokens_after']['mean']} "
                      f"({m['ms_per_question']} ms/question)", flush=True)
            out[name]["budgets"][str(b)] = entry
    return out


def _ex(model, tok, rows, cfg, label: str) -> dict:
    from ft.eval.scoring import evaluate

    e = cfg.eval
    _, summary = evaluate(model, tok, rows, dataclasses.replace(e, retries=0, samples=0, constrain=False),
                          template=cfg.data.template, progress=label)
    keep = ("n", "ex", "ex_set", "em", "valid", "hallucination", "truncated", "gold_failed")
    figures = {k: summary[k] for k in keep if k in summary}
    figures["by_tier_ex"] = {t: v.get("ex") for t, v in summary.get("tiers", {}).items()}
    print(f"  {label}: {figures}", flush=True)
    return figures


def _spread(rows: list, limit: int | None) -> list:
    """At most `limit` rows spread evenly over the list (its order groups tiers), deterministic."""
    if not limit or limit >= len(rows):
        return rows
    return [rows[i * len(rows) // limit] for i in range(limit)]


def ex_section(adapter: str, ex_split: str, ex_budget: int, cache_dir: str, ex_limit: int | None = None) -> dict:
    """Execution accuracy with a trained adapter: linking vs truncation (warehouse), value hints on / off."""
    from ft.config import load_config, resolve
    from ft.data.linking import TokenCounter, fit_prompt
    from ft.data.sources import load_source
    from ft.inference import load_for_inference, resolve_adapter

    _, run_cfg = resolve_adapter(adapter)
    cfg = resolve(load_config(run_cfg if run_cfg else REPO / "configs" / "demo.yaml"))
    model, tok = load_for_inference(cfg, adapter)
    context = int(getattr(model.config, "max_position_embeddings", 2048))
    reserve = cfg.eval.max_new_tokens
    count = TokenCounter(tok)
    splits = {"eval": ("eval",), "train": ("train",), "all": ("eval", "train")}[ex_split]
    # Each split on its own: held-out questions and questions seen in training say different things.
    wh = {s: _spread(warehouse_rows(cache_dir, (s,)), ex_limit) for s in splits}
    out: dict = {"adapter": str(adapter), "context_length": context, "reserve_tokens": reserve,
                 "warehouse_split": ex_split, "warehouse_questions": {s: len(r) for s, r in wh.items()},
                 "warehouse_limit": ex_limit, "budget": ex_budget}

    def pruned(rows, how):
        res = []
        for r in rows:
            linked = how(r, ex_budget, count)
            res.append(dataclasses.replace(r, schema=linked.schema) if linked.changed else r)
        return res

    from ft.data.linking import link_schema

    def linking(r, b, c):
        return link_schema(r, b, c, gold=False, value_hints=cfg.data.value_hints,
                           max_value_hints=cfg.data.max_value_hints)

    out["warehouse"] = {}
    for split, rows in wh.items():
        out["warehouse"][split] = {}
        for label, how in (("linking", linking), ("truncation", truncation), ("gold_tables_only", gold_only)):
            out["warehouse"][split][label] = _ex(model, tok, pruned(rows, how), cfg, f"warehouse {split} {label}")
    held = load_source("bundled", "bundled", "eval", cache_dir=cache_dir)
    out["heldout_value_hints"] = {"questions": len(held)}
    for hints in (True, False):
        d = dataclasses.replace(cfg.data, schema_linking=True, value_hints=hints)
        rows = [fit_prompt(r, tok, cfg.data.template, d, context, reserve, count) for r in held]
        out["heldout_value_hints"]["on" if hints else "off"] = _ex(model, tok, rows, cfg,
                                                                 f"held-out value hints {'on' if hints else 'off'}")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budgets", default="512,1024,2048", help="schema token budgets, comma-separated")
    ap.add_argument("--spider-limit", type=int, default=None, help="first N Spider questions (default: all)")
    ap.add_argument("--cache-dir", default="~/.cache/sqlft/data", help="where the bundled dataset is generated")
    ap.add_argument("--adapter", help="a trained adapter: also measure execution accuracy (needs the model)")
    ap.add_argument("--ex-split", default="eval", choices=["eval", "train", "all"],
                    help="warehouse questions for the EX comparison (train: seen in training; all: both, apart)")
    ap.add_argument("--ex-budget", type=int, default=1024, help="schema budget for the EX comparison")
    ap.add_argument("--ex-limit", type=int, default=None, 
                    help="at most N warehouse questions of each split, spread evenly")
    ap.add_argument("--out", default=str(RESULTS / "schema_linking.json"))
    args = ap.parse_args(argv)

    import sqlglot
    import transformers

    budgets = [int(b) for b in args.budgets.split(",")]
    tok = tokenizer()
    datasets = {"warehouse": warehouse_rows(args.cache_dir)}
    spider = spider_rows(args.spider_limit)
    if spider is None:
        print(f"Spider not found at {SPIDER}: skipped", flush=True)
    else:
        datasets["spider"] = spider
    from ft.data.linking import TokenCounter, parse_schema

    count = TokenCounter(tok)
    ddl = datasets["warehouse"][0].schema
    result = {
        "benchmark": "schema_linking",
        "date": time.strftime("%Y-%m-%d"),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
                    "transformers": transformers.__version__, "sqlglot": sqlglot.__version__},
        "settings": {"budgets": budgets, "template": "default", "tokenizer": "smollm2-135m-instruct (demo model)",
                     "spider": str(SPIDER) if spider is not None else None, "spider_split": "train_spider",
                     "value_hints": "linking: on (warehouse has its database; Spider's files are not included)",
                     "budget_is": "tokens of schema text (CREATE TABLE statements + value hints)"},
        "warehouse": {"tables": len(parse_schema(ddl).tables), "ddl_tokens": count(ddl),
                      "questions": len(datasets["warehouse"])},
    }
    t0 = time.perf_counter()
    result["recall"] = recall_section(datasets, budgets, tok)
    result["recall_seconds"] = round(time.perf_counter() - t0, 1)
    if args.adapter:
        result["execution"] = ex_section(args.adapter, args.ex_split, args.ex_budget, args.cache_dir, args.ex_limit)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists() and not args.adapter:  # keep an earlier --adapter run's figures
        try:
            old = json.loads(out.read_text())
            if "execution" in old:
                result["execution"] = old["execution"]
        except ValueError:
            pass
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
