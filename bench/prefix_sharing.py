"""Shared-schema prefix packing vs ordinary packing: tokens per example, and a short real training comparison.

    python bench/prefix_sharing.py                       # token arithmetic + a short CPU training run (minutes)
    python bench/prefix_sharing.py --no-train            # token arithmetic only (seconds)
    python bench/prefix_sharing.py --train-examples 32 --train-datasets spider

1. Token arithmetic (exact, fast), on Spider's training questions and on the bundled set, at several max_length:
   tokens the model processes per training example with ordinary packing (every example carries its schema) and
   with prefix sharing (a schema once per row, its questions as branches), the branches per row, and the rows.
2. Training (SmolLM2-135M + LoRA, bf16, CPU), both modes taking the same optimizer steps on the same examples:
   each step is a few consecutive rows of the prefix-sharing plan (>= --step-examples examples, as shared as in a
   full run); ordinary packing packs the same examples into its own rows (best fit decreasing). One row per forward;
   steps of the two modes interleaved in time. Rates are per CPU-second of this process with one torch thread
   (default), so other jobs on the machine change the wall time but hardly the measure; wall-clock rates too.
   Also: the loss of every step in both modes (equal up to bf16 rounding: the same gradient in exact arithmetic),
   and, before any update, each branch's loss in a shared row vs the example alone, on the real model in its dtype.

Results: bench/results/prefix_sharing.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
RESULTS = REPO / "bench" / "results"
SPIDER = "/work/shared/data/spider"


def load_rows(name: str):
    from ft.data.sources import load_source

    if name == "spider":
        return load_source(SPIDER, "spider")
    return load_source("bundled", split="train")


def tokenizer():
    from ft.config import load_config
    from ft.model import load_tokenizer, local_model_dir

    return load_tokenizer(local_model_dir(load_config(REPO / "configs" / "demo.yaml")))


def arithmetic(examples, max_length: int, seed: int = 0, batch_size: int = 4, max_branches: int | None = None) -> dict:
    """Tokens processed per example: ordinary packing vs prefix sharing (and padding at batch_size rows)."""
    from ft.data.batching import BatchPlan, padding_stats
    from ft.data.prefix import PrefixPlan

    lengths = [len(e.input_ids) for e in examples]
    packed = BatchPlan(lengths, batch_size, max_length, True, False, seed)
    shared = PrefixPlan(examples, batch_size, max_length, seed, max_branches=max_branches)
    n = len(examples)

    def padded_per_example(plan, plan_lengths, flat=False):  # rows padded to the longest of their micro-batch
        batches = plan.global_micro_batches(0)
        placed = sum(len(r) for mb in batches for r in mb)
        return padding_stats(batches, plan_lengths, packed=flat)["padded_tokens"] / max(1, placed)

    s = shared.stats()
    return {
        "examples": n,
        "schemas": s["schemas"],
        "mean_example_tokens": sum(lengths) / n,
        "mean_prefix_tokens": sum(e.prefix_len for e in examples) / n,
        "packing": {"tokens_per_example": sum(lengths) / n, "rows": len(packed.bins),
                    "examples_per_row": n / len(packed.bins),
                    f"padded_tokens_per_example_bs{batch_size}": padded_per_example(packed, lengths, flat=True)},
        "prefix_sharing": {"tokens_per_example": s["tokens_per_example"], "rows": s["rows"],
                           "examples_per_row": n / s["rows"], "groups": s["groups"],
                           "branches_per_group": s["branches_per_group"],
                           f"padded_tokens_per_example_bs{batch_size}": padded_per_example(shared, shared.lengths)},
        "token_ratio": s["token_ratio"],
        "row_ratio": len(packed.bins) / s["rows"],
    }


# ------------------------------------------------------------------------------------------------
# training


def load_model(dtype: str):
    import torch

    from ft.config import load_config
    from ft.model import add_lora, load_base_model, local_model_dir

    cfg = load_config(REPO / "configs" / "demo.yaml", {
        "quantization.mode": "none", "quantization.dtype": dtype, "quantization.compute_dtype": dtype,
        "model.attn_implementation": "sdpa", "lora.dropout": 0.0,
    })
    model, _ = load_base_model(cfg, local_model_dir(cfg))
    torch.manual_seed(0)  # the same LoRA init for both modes
    model = add_lora(model, cfg)
    model.train()
    return model, cfg


def per_branch_check(model, examples, row: list[int], plan, pad_id: int) -> dict:
    """On the real model (its dtype): each branch's loss in the shared row vs the example run alone."""
    import torch
    import torch.nn.functional as F

    from ft.data.batching import collate
    from ft.objectives.base import token_loss_sum

    with torch.no_grad():
        batch = plan.collate([row], examples, pad_id)
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        logits = model(**inputs, use_cache=False).logits.float()
        per_pos = F.cross_entropy(logits[0, :-1], batch["labels"][0, 1:], reduction="none", ignore_index=-100)
        out, t = [], 0
        for group in plan.split_groups(row):
            t += examples[group[0]].prefix_len
            for i in group:
                n = len(examples[i].input_ids) - examples[i].prefix_len
                shared = per_pos[t - 1 : t + n - 1].sum().item()
                alone, k = token_loss_sum(model, collate([[i]], examples, pad_id, packed=True))
                out.append({"example": i, "targets": k, "shared": shared / k, "alone": alone.item() / k})
                t += n
    worst = max(abs(r["shared"] - r["alone"]) / abs(r["alone"]) for r in out)
    return {"branches": out, "max_relative_difference": worst}


def train_compare(examples, max_length: int, n_examples: int, step_examples: int, dtype: str, lr: float,
                  seed: int = 0) -> dict:
    """Both modes take the same optimizer steps on the same examples; only how the rows are built differs.

    Steps are consecutive rows of the prefix-sharing plan (epoch 0) holding >= step_examples examples; ordinary
    packing packs the same examples (best fit decreasing) into its own rows. So each step's gradient is, in exact
    arithmetic, the same in both modes and the loss curves should agree up to bf16 rounding.
    """
    import torch

    from ft.data.batching import collate, pack_best_fit_decreasing
    from ft.data.prefix import PrefixPlan
    from ft.objectives.base import token_loss_sum

    tok = tokenizer()
    shared_plan = PrefixPlan(examples, 1, max_length, seed)
    steps, rows, chosen = [], [], []  # steps: [(prefix rows, packed rows)]
    for (row,) in shared_plan.global_micro_batches(0):
        if len(chosen) >= n_examples:
            break
        rows.append(row)
        chosen += row
        step_ex = [i for r in rows for i in r]
        if len(step_ex) >= step_examples:
            bins = pack_best_fit_decreasing([len(examples[i].input_ids) for i in step_ex], max_length)
            packed = [[step_ex[j] for j in b] for b in bins]
            steps.append((rows, packed))
            rows = []
    if rows:
        step_ex = [i for r in rows for i in r]
        bins = pack_best_fit_decreasing([len(examples[i].input_ids) for i in step_ex], max_length)
        steps.append((rows, [[step_ex[j] for j in b] for b in bins]))
    modes = {
        "packing": {"collate": lambda r: collate([r], examples, tok.pad_token_id, packed=True)},
        "prefix_sharing": {"collate": lambda r: shared_plan.collate([r], examples, tok.pad_token_id)},
    }
    out = {"examples": len(chosen), "optimizer_steps": len(steps), "max_length": max_length, "dtype": dtype, "lr": lr,
           "step_examples": step_examples}
    for name, m in modes.items():
        m["model"], _ = load_model(dtype)
        m["opt"] = torch.optim.AdamW([p for p in m["model"].parameters() if p.requires_grad], lr=lr)
        m.update(wall=0.0, cpu=0.0, examples=0, tokens=0, targets=0, rows=0, loss_sum=0.0, step_losses=[], row_times=[])
        # warm-up (not timed, not trained on): one forward+backward of the first row
        batch = m["collate"](steps[0][0][0] if name == "prefix_sharing" else steps[0][1][0])
        loss, n = token_loss_sum(m["model"], batch)
        (loss / n).backward()
        m["model"].zero_grad(set_to_none=True)
    # bf16 numerics of the real model: a shared row's branches vs the same examples alone, before any update
    out["per_branch_check"] = per_branch_check(modes["prefix_sharing"]["model"], examples, steps[0][0][0], shared_plan,
                                               tok.pad_token_id)
    print(f"  per-branch loss, shared vs alone ({dtype}): max relative difference "
          f"{out['per_branch_check']['max_relative_difference']:.2e}", flush=True)

    def run_step(m, step_rows):
        loss_sum, targets = 0.0, 0
        for row in step_rows:
            t0, c0 = time.perf_counter(), time.process_time()
            batch = m["collate"](row)
            loss, n = token_loss_sum(m["model"], batch)
            loss.backward()
            dt, dc = time.perf_counter() - t0, time.process_time() - c0
            m["wall"], m["cpu"] = m["wall"] + dt, m["cpu"] + dc
            m["row_times"].append({"wall": round(dt, 3), "cpu": round(dc, 3),
                                   "tokens": int(batch["input_ids"].numel())})
            m["tokens"] += int(batch["input_ids"].numel())  # one row per forward: no padding
            m["examples"] += len(row)
            m["rows"] += 1
            loss_sum, targets = loss_sum + loss.item(), targets + n
        t0, c0 = time.perf_counter(), time.process_time()
        for p in m["model"].parameters():  # the token mean over the step's examples
            if p.grad is not None:
                p.grad /= targets
        m["opt"].step()
        m["opt"].zero_grad(set_to_none=True)
        m["wall"], m["cpu"] = m["wall"] + time.perf_counter() - t0, m["cpu"] + time.process_time() - c0
        m["targets"] += targets
        m["loss_sum"] += loss_sum
        m["step_losses"].append(loss_sum / targets)

    for k, (prefix_rows, packed_rows) in enumerate(steps):  # interleaved, alternating which mode goes first
        order = [("packing", packed_rows), ("prefix_sharing", prefix_rows)]
        for name, step_rows in order if k % 2 == 0 else order[::-1]:
            run_step(modes[name], step_rows)
        print(f"  step {k + 1}/{len(steps)}: loss {modes['packing']['step_losses'][-1]:.4f} vs "
              f"{modes['prefix_sharing']['step_losses'][-1]:.4f}; CPU s "
              f"{modes['packing']['cpu']:.1f} vs {modes['prefix_sharing']['cpu']:.1f}", flush=True)
    for name, m in modes.items():
        out[name] = {
            "rows": m["rows"], "wall_s": m["wall"], "cpu_s": m["cpu"],
            "examples_per_wall_s": m["examples"] / m["wall"], "examples_per_cpu_s": m["examples"] / m["cpu"],
            "tokens_processed": m["tokens"], "tokens_per_cpu_s": m["tokens"] / m["cpu"],
            "tokens_per_example": m["tokens"] / m["examples"], "mean_row_tokens": m["tokens"] / m["rows"],
            "target_tokens": m["targets"], "loss_per_target_token": m["loss_sum"] / m["targets"],
            "step_losses": [round(x, 5) for x in m["step_losses"]], "rows_timed": m["row_times"],
        }
    a, b = out["packing"], out["prefix_sharing"]
    out["examples_seen_per_step"] = [sum(len(r) for r in pr) for pr, _ in steps]
    out["max_step_loss_relative_difference"] = max(abs(x - y) / abs(x)
                                                   for x, y in zip(a["step_losses"], b["step_losses"]))
    out["speedup_examples_per_cpu_s"] = b["examples_per_cpu_s"] / a["examples_per_cpu_s"]
    out["speedup_examples_per_wall_s"] = b["examples_per_wall_s"] / a["examples_per_wall_s"]
    out["token_ratio"] = a["tokens_per_example"] / b["tokens_per_example"]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", nargs="*", default=["spider", "bundled"], help="for the token arithmetic")
    ap.add_argument("--max-lengths", nargs="+", type=int, default=[640, 1024, 2048])
    ap.add_argument("--max-branches", nargs="*", type=int, default=[8], help="also with at most N branches per group")
    ap.add_argument("--no-train", action="store_true")
    ap.add_argument("--train-datasets", nargs="*", default=["spider", "bundled"])
    ap.add_argument("--train-examples", type=int, default=16)
    ap.add_argument("--train-max-length", type=int, default=1024)
    ap.add_argument("--step-examples", type=int, default=8, help="examples per optimizer step (at least)")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1: CPU seconds measure the work, whatever else loads the machine)")
    ap.add_argument("--out", default=str(RESULTS / "prefix_sharing.json"))
    args = ap.parse_args(argv)

    import torch
    import transformers

    from ft.data.prompt import encode_rows

    torch.set_num_threads(args.threads)
    out_path = Path(args.out)
    result = json.loads(out_path.read_text()) if out_path.is_file() else {}
    result["machine"] = {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
                         "transformers": transformers.__version__, "threads": torch.get_num_threads(),
                         "loadavg_start": os.getloadavg()}
    tok = tokenizer()
    result.setdefault("tokens", {})
    encoded = {}
    for name in args.datasets:
        rows = load_rows(name)
        for L in args.max_lengths:
            t0 = time.perf_counter()
            ex, counts = encode_rows(rows, tok, "schema_first", L, "truncate_schema")
            encoded[(name, L)] = ex
            r = arithmetic(ex, L) | {"encoding": counts}
            r["seconds"] = time.perf_counter() - t0
            result["tokens"][f"{name}@{L}"] = r
            variants = [(f"{name}@{L}", r)]
            for b in args.max_branches:
                if r["prefix_sharing"]["branches_per_group"] > b:
                    rb = arithmetic(ex, L, max_branches=b) | {"encoding": counts, "max_branches": b}
                    result["tokens"][f"{name}@{L}/max{b}"] = rb
                    variants.append((f"{name}@{L}/max{b}", rb))
            for key, v in variants:
                print(f"{key}: {v['packing']['tokens_per_example']:.0f} -> "
                      f"{v['prefix_sharing']['tokens_per_example']:.0f} tokens/example ({v['token_ratio']:.2f}x), "
                      f"{v['prefix_sharing']['branches_per_group']:.1f} branches/group, rows {v['packing']['rows']} -> "
                      f"{v['prefix_sharing']['rows']}", flush=True)
    if not args.no_train:
        result.setdefault("train", {})
        for name in args.train_datasets:
            key = (name, args.train_max_length)
            if key not in encoded:
                encoded[key], _ = encode_rows(load_rows(name), tok, "schema_first", args.train_max_length,
                                              "truncate_schema")
            print(f"training {name} @ {args.train_max_length}, {args.train_examples} examples per mode ...", flush=True)
            r = train_compare(encoded[key], args.train_max_length, args.train_examples, args.step_examples,
                              args.dtype, args.lr)
            result["train"][f"{name}@{args.train_max_length}"] = r
            a, b = r["packing"], r["prefix_sharing"]
            print(f"{name}: examples per CPU-second packing {a['examples_per_cpu_s']:.3f}, prefix sharing "
                  f"{b['examples_per_cpu_s']:.3f} ({r['speedup_examples_per_cpu_s']:.2f}x; wall "
                  f"{r['speedup_examples_per_wall_s']:.2f}x; token ratio {r['token_ratio']:.2f}x); "
                  f"tokens per CPU-second {a['tokens_per_cpu_s']:.0f} vs {b['tokens_per_cpu_s']:.0f}; "
                  f"loss/target token {a['loss_per_target_token']:.4f} vs {b['loss_per_target_token']:.4f} "
                  f"(steps differ by at most {100 * r['max_step_loss_relative_difference']:.2f}%)", flush=True)
            out_path.parent.mkdir(parents=True, exist_ok=True)
            out_path.write_text(json.dumps(result, indent=1))  # after each data set: a long run keeps what it did
    result["machine"]["loadavg_end"] = os.getloadavg()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=1))
    print(f"results: {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
