"""Our training loop against TRL's SFTTrainer (+ peft), side by side, on the same model, data and settings.

    python bench/train_throughput.py --model smollm2 --steps 8          # SmolLM2-135M (CPU: minutes)
    python bench/train_throughput.py --model tiny --steps 20             # tiny random Llama, the whole matrix

Each (configuration, trainer) runs in its own subprocess (so peak RSS is its own), ours and TRL interleaved.
Per run: target tokens/s (answer tokens, the ones with loss), all tokens/s (non-padding), padding fraction, peak
memory (RSS on CPU, max_memory_allocated on GPU), and the loss at every step. The first step is warm-up and excluded
from the rates. Results: bench/results/train_throughput_<model>.json and .png. TRL is installed only for this
benchmark: `pip install trl`.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
RESULTS = REPO / "bench" / "results"

MATRIX = [  # (name, packing, quantization, gradient checkpointing)
    ("pack-qlora", True, "4bit", False),
    ("pad-qlora", False, "4bit", False),
    ("pack-lora", True, "none", False),   # unquantized base in the auto dtype (bf16 on GPUs)
    ("pad-lora", False, "none", False),
    ("pack-qlora-gc", True, "4bit", True),
    ("pad-qlora-gc", False, "4bit", True),
    # The demo's recipe against TRL's best: ours with shared-schema prefix packing (schema_first template), TRL with
    # packing; both one epoch over the same examples (--epoch-examples), compared at equal examples seen.
    ("prefix-qlora", "prefix", "4bit", False),
    # The same, but ours takes one row per optimizer step: ~6.6 examples an update against TRL's ~8 (prefix sharing
    # puts ~3x more examples in a row), so that the loss at equal examples seen compares equal-sized updates too.
    ("prefix-qlora-matched", "prefix", "4bit", False),
]
OURS_OVERRIDES = {"prefix-qlora-matched": {"batch_size": 1, "accumulation": 1}}


def model_path(name: str) -> str:
    if name == "tiny":
        sys.path.insert(0, str(REPO / "tests"))
        from tiny import build_tiny_model

        folder = Path(tempfile.gettempdir()) / "sqlft-bench-tiny"
        if not (folder / "config.json").is_file():
            build_tiny_model(folder, layers=4, hidden=256)
        return str(folder)
    from ft.config import load_config
    from ft.model import local_model_dir

    return local_model_dir(load_config(REPO / "configs" / "demo.yaml"))


def settings(args, packing: bool, quant: str, gc: bool) -> dict:
    from ft.model import resolve_dtype

    # Both trainers compute in the same dtype: bf16 where the hardware has it, else fp32 (bf16 on an AVX2-only
    # CPU is ~70x slower and would measure the fallback kernels, not the trainers).
    dtype = str(resolve_dtype("auto")).removeprefix("torch.")
    return {"model": model_path(args.model), "dtype": dtype, "packing": packing, "quantization": quant,
            "gradient_checkpointing": gc, "steps": args.steps, "max_length": args.max_length,
            "batch_size": args.batch_size, "accumulation": args.accumulation, "learning_rate": args.learning_rate,
            "lora_r": 16, "examples": args.epoch_examples if packing == "prefix" else args.examples, "seed": 0,
            "epoch": packing == "prefix"}


def rows_for(s: dict):
    from ft.data.sources import load_source

    rows = load_source("bundled", split="train")
    return rows[: s["examples"]]


def peak_memory_mb() -> float:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ------------------------------------------------------------------------------------------------
# workers (each runs in its own process and prints one JSON line)


def run_ours(s: dict) -> dict:
    import yaml

    out = Path(tempfile.mkdtemp(prefix="bench-ours-"))
    from ft.data.sources import write_jsonl

    data = write_jsonl(rows_for(s), out / "train.jsonl")
    cfg = {
        "model": {"name_or_path": s["model"], "gradient_checkpointing": s["gradient_checkpointing"]},
        "quantization": {"mode": s["quantization"], "dtype": s["dtype"], "compute_dtype": s["dtype"]},
        "lora": {"r": s["lora_r"], "alpha": 2 * s["lora_r"], "dropout": 0.0,
                 "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]},
        "data": {"source": str(data), "max_length": s["max_length"], "packing": s["packing"] is True,
                 "prefix_sharing": s["packing"] == "prefix", "overlong": "skip", "eval_fraction": 0.0,
                 **({"template": "schema_first"} if s["packing"] == "prefix" else {})},
        "train": {"output_dir": str(out / "run"), "max_steps": None if s["epoch"] else s["steps"], "epochs": 1,
                  "per_device_batch_size": s["batch_size"],
                  "gradient_accumulation_steps": s["accumulation"], "learning_rate": s["learning_rate"],
                  "warmup_steps": 0, "lr_scheduler": "constant", "log_every": 1, "seed": s["seed"]},
        "checkpoint": {"every": 0}, "tracking": {"wandb": False}, "eval": {"at_end": False},
    }
    (out / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    from ft.train import main

    sys.argv = ["train.py"]
    rc = main(["--config", str(out / "cfg.yaml")])
    assert rc == 0, rc
    m = [json.loads(l) for l in (out / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in m if "train/loss" in r]
    first, last = steps[0], steps[-1]
    dt = last["time"] - first["time"]
    padding = next(r["perf/padding_fraction"] for r in m if "perf/padding_fraction" in r)
    return {"losses": [r["train/loss"] for r in steps],
            "examples_seen": [r["train/examples_seen"] for r in steps],
            "examples_per_s": (last["train/examples_seen"] - first["train/examples_seen"]) / dt,
            "target_tokens_per_s": (last["train/target_tokens_seen"] - first["train/target_tokens_seen"]) / dt,
            "tokens_per_s": (last["train/tokens_seen"] - first["train/tokens_seen"]) / dt,
            "padding_fraction": padding, "peak_memory_mb": peak_memory_mb()}


def run_trl(s: dict) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from ft.data.prompt import build_answer, build_prompt

    rows = rows_for(s)
    # The same text as our loop: prompt, then the SQL and closing fence (TRL appends EOS itself).
    template = "schema_first" if s["packing"] == "prefix" else "default"  # the same prompt text as ours
    ds = Dataset.from_list([{"prompt": build_prompt(r, template), "completion": build_answer(r)} for r in rows])
    tok = AutoTokenizer.from_pretrained(s["model"])
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    dtype = getattr(torch, s["dtype"])
    kwargs = {"dtype": dtype, "attn_implementation": "sdpa"}
    if s["quantization"] == "4bit":
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype, bnb_4bit_quant_storage=dtype)
    model = AutoModelForCausalLM.from_pretrained(s["model"], **kwargs)
    out = tempfile.mkdtemp(prefix="bench-trl-")
    config = SFTConfig(
        output_dir=out, max_steps=-1 if s["epoch"] else s["steps"], num_train_epochs=1,
        per_device_train_batch_size=s["batch_size"],
        gradient_accumulation_steps=s["accumulation"], learning_rate=s["learning_rate"], lr_scheduler_type="constant",
        warmup_steps=0, logging_steps=1, save_strategy="no", report_to=[], seed=s["seed"], max_length=s["max_length"],
        packing=bool(s["packing"]), gradient_checkpointing=s["gradient_checkpointing"], bf16=False,
        use_cpu=not torch.cuda.is_available(), dataloader_num_workers=0, completion_only_loss=True, disable_tqdm=True,
    )
    peft_config = LoraConfig(r=s["lora_r"], lora_alpha=2 * s["lora_r"], lora_dropout=0.0, task_type="CAUSAL_LM",
                             target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                             "down_proj"])
    trainer = SFTTrainer(model=model, args=config, train_dataset=ds, processing_class=tok, peft_config=peft_config)
    if s["quantization"] == "4bit":
        # SFTTrainer casts QLoRA adapter weights to bf16 (the QLoRA paper's recipe). Where the run's dtype is not
        # bf16 (a CPU without native bf16 computes bf16 matmuls ~70x slower) that alone costs TRL ~2.5x, which
        # measures the dtype, not the trainer: there, give the adapters the run's dtype (a no-op where it is bf16).
        for p in trainer.model.parameters():
            if p.requires_grad and p.dtype != dtype:
                p.data = p.data.to(dtype)

    counts = {"target": [], "tokens": [], "padded": [], "examples": []}
    collate = trainer.data_collator

    def counting_collator(features):
        batch = collate(features)
        labels = batch["labels"]
        counts["target"].append(int((labels[:, 1:] != -100).sum()))
        real = int(batch["attention_mask"].sum()) if "attention_mask" in batch else labels.numel()
        counts["tokens"].append(real)
        counts["padded"].append(labels.numel())
        pos = batch.get("position_ids")
        counts["examples"].append(int((pos == 0).sum()) if pos is not None else labels.shape[0])  # packed: starts
        return batch

    trainer.data_collator = counting_collator
    times, losses = [], []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            times.append(time.perf_counter())

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                losses.append(logs["loss"])

    trainer.add_callback(Clock())
    trainer.train()
    acc = s["accumulation"]
    steps = len(times)
    # micro-batches of steps 2..N (the first step is warm-up)
    target = sum(counts["target"][acc : acc * steps])
    tokens = sum(counts["tokens"][acc : acc * steps])
    dt = times[-1] - times[0]
    seen = [sum(counts["examples"][: acc * (k + 1)]) for k in range(steps)]
    return {"losses": losses, "target_tokens_per_s": target / dt, "tokens_per_s": tokens / dt,
            "examples_seen": seen[: len(losses)], "examples_per_s": (seen[-1] - seen[0]) / dt,
            "padding_fraction": 1 - sum(counts["tokens"]) / sum(counts["padded"]), "peak_memory_mb": peak_memory_mb()}


def loss_at_equal_examples(ours: dict, trl: dict, points: int = 4) -> list[dict]:
    """Each trainer's logged loss, linearly interpolated at the same numbers of examples seen (the two pack a step
    differently, so step k of one is not step k of the other): `points` even points over the range both cover."""
    import numpy as np

    lo = max(ours["examples_seen"][0], trl["examples_seen"][0])
    hi = min(ours["examples_seen"][-1], trl["examples_seen"][-1])
    if hi <= lo:
        return []
    grid = np.linspace(lo, hi, points)
    return [{"examples": float(x), "ours": float(np.interp(x, ours["examples_seen"], ours["losses"])),
             "trl": float(np.interp(x, trl["examples_seen"], trl["losses"]))} for x in grid]


# ------------------------------------------------------------------------------------------------


def versions() -> dict:
    import importlib.metadata as md

    out = {}
    for pkg in ("torch", "transformers", "peft", "accelerate", "bitsandbytes", "trl"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    return out


def machine() -> dict:
    import torch

    from ft.system import cpu_has_native_bf16

    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")),
                 platform.processor())
    return {"platform": platform.platform(), "cpus": os.cpu_count(), "cpu_model": model,
            "cpu_native_bf16": cpu_has_native_bf16(), "python": platform.python_version(),
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "load_avg_at_start": os.getloadavg()}


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = result["runs"]
    names = [r["config"] for r in runs if r["trainer"] == "ours"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.5))
    width = 0.38
    for k, trainer in enumerate(("ours", "trl")):
        vals = [next((r["target_tokens_per_s"] for r in runs
                      if r["config"] == n and r["trainer"] == trainer and "error" not in r), 0) for n in names]
        ax1.bar([i + (k - 0.5) * width for i in range(len(names))], vals, width, label=trainer)
    ax1.set_xticks(range(len(names)), names, rotation=20)
    ax1.set_ylabel("target tokens / s")
    ax1.set_title(f"{result['settings']['model_name']}: throughput")
    ax1.legend()
    for r in runs:
        if "losses" in r and r["config"] == names[0]:
            ax2.plot(range(1, len(r["losses"]) + 1), r["losses"], marker="o", label=f"{r['trainer']} ({r['config']})")
    ax2.set_xlabel("optimizer step")
    ax2.set_ylabel("train loss")
    ax2.set_title("loss at equal steps")
    ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=["tiny", "smollm2"], default="smollm2")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--max-length", type=int, default=1024)
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--accumulation", type=int, default=2)
    ap.add_argument("--learning-rate", type=float, default=2e-4)
    ap.add_argument("--examples", type=int, default=400)
    ap.add_argument("--epoch-examples", type=int, default=160, help="examples of the one-epoch prefix-qlora pair")
    ap.add_argument("--configs", default="all", help="comma-separated names from: " + ", ".join(m[0] for m in MATRIX))
    ap.add_argument("--out", help="result file (default bench/results/train_throughput_<model>.json)")
    ap.add_argument("--worker", choices=["ours", "trl"], help=argparse.SUPPRESS)
    ap.add_argument("--settings", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.worker:  # child process: one run, one JSON line
        s = json.loads(args.settings)
        res = run_ours(s) if args.worker == "ours" else run_trl(s)
        print("RESULT " + json.dumps(res), flush=True)
        return 0

    chosen = [m for m in MATRIX if args.configs == "all" or m[0] in args.configs.split(",")]
    runs = []
    for name, packing, quant, gc in chosen:
        s = settings(args, packing, quant, gc)
        for trainer in ("ours", "trl"):  # interleaved, so drift in machine load hits both
            mine = s | (OURS_OVERRIDES.get(name, {}) if trainer == "ours" else {})
            t0 = time.time()
            proc = subprocess.run([sys.executable, __file__, "--worker", trainer, "--settings", json.dumps(mine)],
                                  capture_output=True, text=True, env=os.environ | {"WANDB_MODE": "disabled"})
            line = next((l for l in proc.stdout.splitlines() if l.startswith("RESULT ")), None)
            rec = {"config": name, "trainer": trainer, "wall_s": time.time() - t0,
                   "batch_size": mine["batch_size"], "accumulation": mine["accumulation"]}
            rec |= json.loads(line[7:]) if line else {"error": proc.stderr[-2000:]}
            runs.append(rec)
            print(json.dumps({k: v for k, v in rec.items() if k != "losses"}), flush=True)

    speedups = {}
    for name, *_ in chosen:
        ours = next((r for r in runs if r["config"] == name and r["trainer"] == "ours" and "error" not in r), None)
        trl = next((r for r in runs if r["config"] == name and r["trainer"] == "trl" and "error" not in r), None)
        if ours and trl:
            n = min(len(ours["losses"]), len(trl["losses"]))
            half = slice(n // 2, n)  # the trainers draw different batches, so one step's loss is noisy: average
            speedups[name] = {
                "examples_per_s_ratio": ours["examples_per_s"] / trl["examples_per_s"],
                "peak_memory_mb_ours_trl": [ours["peak_memory_mb"], trl["peak_memory_mb"]],
                "target_tokens_per_s_ratio": ours["target_tokens_per_s"] / trl["target_tokens_per_s"],
                "tokens_per_s_ratio": ours["tokens_per_s"] / trl["tokens_per_s"],
                "final_loss_ours": ours["losses"][n - 1], "final_loss_trl": trl["losses"][n - 1],
                "mean_loss_second_half_ours": sum(ours["losses"][half]) / len(ours["losses"][half]),
                "mean_loss_second_half_trl": sum(trl["losses"][half]) / len(trl["losses"][half]),
                "mean_abs_loss_diff": sum(abs(a - b) for a, b in zip(ours["losses"][:n], trl["losses"][:n])) / n,
                "loss_at_equal_examples": loss_at_equal_examples(ours, trl),
                "optimizer_steps_ours_trl": [len(ours["losses"]), len(trl["losses"])],
                "examples_per_update_ours_trl": [ours["examples_seen"][-1] / len(ours["losses"]),
                                                 trl["examples_seen"][-1] / len(trl["losses"])],
            }
    result = {"benchmark": "train_throughput", "machine": machine(), "versions": versions(),
              "settings": settings(args, None, None, None) | {"model_name": args.model}, "runs": runs,
              "ours_vs_trl": speedups,
              "targets": {"packing_on": "ours >= 1.3x TRL target tokens/s", "packing_off": "ours >= 1.0x TRL"},
              "notes": ["Both trainers pack best-fit-decreasing and run a micro-batch's bins as one padding-free row.",
                        "TRL's QLoRA adapters are cast back from bf16 to the run's dtype where that is not bf16 "
                        "(see run_trl).", "Rates exclude the first (warm-up) step."]}
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = Path(args.out) if args.out else RESULTS / f"train_throughput_{args.model}.json"
    out.write_text(json.dumps(result, indent=2))
    plot(result, out.with_suffix(".png"))
    print(json.dumps(speedups, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
