"""What each process holds while a 4-bit model loads under ZeRO-3, and after DeepSpeed partitions it.

    python bench/zero3_load.py                   # 2 CPU processes over gloo (accelerate_configs/cpu_zero3.yaml)

transformers creates quantized models outside `zero.Init` (its modeling_utils enters zero.Init only for
non-quantized models) and the bitsandbytes 4-bit quantizer places the whole model on each process's device;
DeepSpeed partitions only in `deepspeed.initialize` (accelerate's prepare). This measures it on the recipe's own path
(ft.model.load_base_model + add_lora, then accelerator.prepare): the bytes of parameter storage each process holds
(exact, hardware-independent; on a GPU these would be on the device) and its resident memory, after loading and
after prepare, against one process loading the same model. Writes bench/results/zero3_load.json.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "results" / "zero3_load.json"


def held_bytes(model) -> int:
    """Bytes of parameter and buffer storage this process holds (a ZeRO-3 shard counts its own part only)."""
    seen, total = set(), 0
    for t in [*model.parameters(), *model.buffers()]:
        data = getattr(t, "ds_tensor", None)  # a ZeRO-3 parameter keeps its shard there, an empty tensor in .data
        data = t.data if data is None else data
        if data.numel() == 0 or data.data_ptr() in seen:
            continue
        seen.add(data.data_ptr())
        total += data.numel() * data.element_size()
    return total


def worker(model_dir: str, out: str) -> None:
    """One process of the rehearsal: load as ft/train.py does, measure, prepare, measure."""
    from accelerate import Accelerator

    from ft import distributed as dist
    from ft.config import load_config, resolve
    from ft.model import add_lora, load_base_model
    from ft.system import process_rss_mb
    from ft.train import make_optimizer

    dist.cpu_rehearsal_shim()
    cfg = resolve(load_config(None, {"model.name_or_path": model_dir, "quantization.mode": "4bit",
                                     "quantization.dtype": "bfloat16", "quantization.compute_dtype": "bfloat16",
                                     "model.gradient_checkpointing": "false", "lora.r": "8"}), training=True)
    acc = Accelerator()
    dist.configure_deepspeed(acc, cfg)
    rss0 = process_rss_mb()
    model, _ = load_base_model(cfg, model_dir)
    model = add_lora(model, cfg, reentrant_checkpointing=dist.zero_stage(acc) == 3)
    loaded = {"held_bytes": held_bytes(model), "rss_mb": process_rss_mb() - rss0}
    optimizer = make_optimizer(model, cfg.train)
    model, optimizer = acc.prepare(model, optimizer)
    prepared = {"held_bytes": held_bytes(acc.unwrap_model(model)), "rss_mb": process_rss_mb() - rss0}
    record = {"rank": acc.process_index, "world": acc.num_processes, "zero_stage": dist.zero_stage(acc),
              "after_load": loaded, "after_prepare": prepared}
    Path(out).with_name(f"{Path(out).stem}-rank{acc.process_index}.json").write_text(json.dumps(record))
    acc.wait_for_everyone()


def build_model(folder: Path, hidden: int, layers: int) -> None:
    sys.path.insert(0, str(REPO / "tests"))
    import torch
    from tiny import build_tokenizer
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = build_tokenizer(folder)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=hidden * 3, num_hidden_layers=layers,
                      num_attention_heads=hidden // 64, num_key_value_heads=hidden // 128, tie_word_embeddings=False,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    LlamaForCausalLM(cfg).to(torch.bfloat16).save_pretrained(folder)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--worker", nargs=2, metavar=("MODEL_DIR", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(*args.worker)
        return 0
    sys.path.insert(0, str(REPO / "bench"))
    from train_throughput import machine, versions

    work = Path(tempfile.mkdtemp(prefix="zero3-load-"))
    build_model(work / "model", args.hidden, args.layers)
    env = os.environ | {"WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1"}
    runs = {}
    for name, cmd in (
        ("one_process", [sys.executable, __file__]),
        ("zero3_two_processes", [str(Path(sys.executable).with_name("accelerate")), "launch", "--config_file",
                                 str(REPO / "accelerate_configs" / "cpu_zero3.yaml"), __file__]),
    ):
        out = work / f"{name}.json"
        proc = subprocess.run([*cmd, "--worker", str(work / "model"), str(out)], env=env, capture_output=True,
                              text=True, timeout=1800)
        if proc.returncode != 0:
            print(proc.stdout[-3000:], proc.stderr[-6000:], file=sys.stderr)
            return 1
        runs[name] = [json.loads(p.read_text()) for p in sorted(work.glob(f"{name}-rank*.json"))]
        print(name, json.dumps(runs[name]), flush=True)
    one = runs["one_process"][0]
    z3 = runs["zero3_two_processes"]
    result = {
        "benchmark": "zero3_load", "machine": machine(), "versions": versions(),
        "settings": {"model": f"random Llama, hidden {args.hidden}, {args.layers} layers, bf16 checkpoint",
                     "quantization": "4bit nf4, double quant, bf16 storage and compute", "lora_r": 8,
                     "accelerate_config": "accelerate_configs/cpu_zero3.yaml (zero3_init_flag: true)"},
        "runs": runs,
        "held_at_load_per_process_vs_one_process": [r["after_load"]["held_bytes"] / one["after_load"]["held_bytes"]
                                                    for r in z3],
        "held_after_prepare_per_process_vs_one_process": [r["after_prepare"]["held_bytes"] /
                                                          one["after_prepare"]["held_bytes"] for r in z3],
    }
    result["conclusion"] = (
        "each ZeRO-3 process holds the whole 4-bit model while it loads (ratio ~1.0 to one process) and its share "
        "only after prepare: size a GPU for the whole 4-bit base plus the CUDA context at load"
        if min(result["held_at_load_per_process_vs_one_process"]) > 0.9 else
        "loading was sharded: each process held a fraction of the model at load")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("held_at_load_per_process_vs_one_process",
                                             "held_after_prepare_per_process_vs_one_process", "conclusion")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
