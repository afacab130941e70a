"""GPU memory per process for QLoRA training under each accelerate config, and which config to use where.

    python bench/memory_estimate.py                  # writes bench/results/memory_table.md
    python bench/memory_estimate.py --seq-len 4096 --micro-batch 1 --no-gradient-checkpointing
    python bench/memory_estimate.py --verify         # checks the activation model against a real forward on CPU

What is counted, per GPU (GB = 1e9 bytes):
- Frozen base. 4-bit NF4 linear layers: 0.5 byte per weight + quantization constants (double quantization: one 8-bit
  absmax per 64 weights + one fp32 per 256 of those; without it one fp32 per 64). Embeddings, lm_head and norms stay
  unquantized and peft's prepare_model_for_kbit_training upcasts them to fp32 (4 bytes). ZeRO-3 shards all of it over
  the GPUs (plus a working set: the layers being gathered); ZeRO-3 + offload keeps it in CPU memory.
- Adapter. LoRA A/B of every target module: fp32 weight, gradient, Adam's two moments (16 bytes per parameter);
  DeepSpeed also keeps an fp32 master copy of its partition (4 bytes); DDP adds its gradient buckets (4 bytes).
  ZeRO-2 shards gradients and optimizer states, ZeRO-3 everything; offload moves optimizer states + master to the CPU.
- Activations (per process, never sharded): what autograd saves for the backward, per token and per decoder layer,
  for LoRA on the attention projections: A_H * hidden + 12 * intermediate + 8 * kv_dim bytes, A_H = 22.5 (46.5 with
  LoRA dropout, which keeps a dropped copy of each LoRA input); fitted on the real code path (4-bit base, fp32
  residual stream and norms after prepare_model_for_kbit_training, LoRA in fp32, sdpa) with autograd's saved-tensor
  hooks on small random Llamas, see --verify. With gradient checkpointing each layer keeps only its fp32 input
  (4 * hidden) and one layer's full set exists during its recomputation. Logits only at target positions (train.py
  passes logits_to_keep): 4 bytes x vocabulary per target token saved (log-softmax), 8 more while the loss's
  backward runs. Transients of the backward: one layer's MLP gradients (12 * intermediate bytes per token).
- Fixed: CUDA context, allocator fragmentation and kernel workspaces: 1.5 GB, and the dequantized bf16 copy of the
  largest 4-bit weight during its matmul.

A config "fits" when the estimate is at most 90% of the GPU's memory. Preference order: one GPU (DDP needs the same
memory per GPU and only goes faster), else ZeRO-3 on the fewest GPUs that fit (ZeRO-2 shards only the adapter's
optimizer state, which can't rescue a model whose base doesn't fit), else ZeRO-3 with CPU offload.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

GB = 1e9
OUT = Path(__file__).resolve().parent / "results" / "memory_table.md"

# Activation bytes per token (see the module docstring and --verify).
A_H, A_H_DROPOUT, A_I, A_KV = 22.5, 24.0, 12.0, 8.0
A_GC_PER_LAYER = 4.0  # fp32 layer input kept per layer with gradient checkpointing
A_OUTSIDE_H = 6.0  # embedding output, final norm, lm_head input (measured with checkpointing; ~0 without)
A_LOGITS, A_LOGITS_TRANSIENT = 4.0, 8.0  # bytes per vocabulary entry per target token
A_TRANSIENT_I = 12.0  # one layer's MLP gradients during the backward, per token
FIXED = 1.5 * GB
FIT = 0.9


@dataclass(frozen=True)
class Arch:
    name: str
    hidden: int
    layers: int
    intermediate: int
    heads: int
    kv_heads: int
    vocab: int
    tied: bool = False

    @property
    def kv_dim(self) -> int:
        return self.hidden // self.heads * self.kv_heads

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(in, out) of each linear layer of one decoder layer."""
        h, kv, i = self.hidden, self.kv_dim, self.intermediate
        return {"q_proj": (h, h), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (h, h),
                "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}

    def quantized_params(self) -> int:
        return self.layers * sum(a * b for a, b in self.linear_shapes().values())

    def unquantized_params(self) -> int:
        embeddings = self.vocab * self.hidden * (1 if self.tied else 2)
        norms = (2 * self.layers + 1) * self.hidden
        return embeddings + norms

    def lora_params(self, r: int, targets: tuple[str, ...]) -> int:
        shapes = self.linear_shapes()
        per_layer = sum(r * (shapes[t][0] + shapes[t][1]) for t in targets if t in shapes)
        head = r * (self.hidden + self.vocab) if "lm_head" in targets else 0
        return self.layers * per_layer + head


# Published configs (config.json of each model).
MODELS = {
    "7B": Arch("Qwen2.5-Coder-7B", 3584, 28, 18944, 28, 4, 152064),
    "8B": Arch("Llama-3.1-8B", 4096, 32, 14336, 32, 8, 128256),
    "13B": Arch("Llama-2-13B", 5120, 40, 13824, 40, 40, 32000),
    "70B": Arch("Llama-3.1-70B", 8192, 80, 28672, 64, 8, 128256),
}


@dataclass(frozen=True)
class Run:
    seq_len: int = 2048
    micro_batch: int = 2
    lora_r: int = 128
    targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "lm_head")  # the shipped recipes
    dropout: bool = True
    gradient_checkpointing: bool = True
    double_quant: bool = True
    target_fraction: float = 0.25  # share of tokens that are answer (SQL) tokens: logits are computed only there

    @property
    def tokens(self) -> int:
        return self.seq_len * self.micro_batch


def base_bytes(a: Arch, run: Run) -> float:
    per_weight = 0.5 + (1 / 64 + 4 / (64 * 256) if run.double_quant else 4 / 64)
    return a.quantized_params() * per_weight + a.unquantized_params() * 4


def layer_activation_bytes_per_token(a: Arch, run: Run) -> float:
    return (A_H + (A_H_DROPOUT if run.dropout else 0)) * a.hidden + A_I * a.intermediate + A_KV * a.kv_dim


def saved_activation_bytes(a: Arch, run: Run) -> float:
    """What autograd keeps between forward and backward (what --verify measures)."""
    layer = layer_activation_bytes_per_token(a, run)
    per_token = a.layers * (A_GC_PER_LAYER * a.hidden if run.gradient_checkpointing else layer)
    outside = A_OUTSIDE_H * a.hidden * run.tokens if run.gradient_checkpointing else 0.0
    return per_token * run.tokens + outside + A_LOGITS * a.vocab * run.tokens * run.target_fraction


def activation_bytes(a: Arch, run: Run) -> float:
    """Peak: saved activations + a recomputed layer (checkpointing) + the backward's transients."""
    recompute = layer_activation_bytes_per_token(a, run) * run.tokens if run.gradient_checkpointing else 0.0
    transient = (A_TRANSIENT_I * a.intermediate * run.tokens
                 + A_LOGITS_TRANSIENT * a.vocab * run.tokens * run.target_fraction)
    return saved_activation_bytes(a, run) + recompute + transient


def estimate(a: Arch, run: Run, config: str, gpus: int) -> dict[str, float]:
    """Bytes per GPU by component for one accelerate config on `gpus` GPUs."""
    n = gpus
    base = base_bytes(a, run)
    p = a.lora_params(run.lora_r, run.targets)
    largest = max(i * o for i, o in a.linear_shapes().values())
    dequant = 2 * largest  # bf16 copy of the weight being multiplied
    layer_4bit = base_bytes(Arch(a.name, a.hidden, 1, a.intermediate, a.heads, a.kv_heads, 0), run)
    if config in ("single_gpu", "multi_gpu"):
        adapter = p * (16 + (4 if config == "multi_gpu" else 0))
    elif config == "zero2":
        adapter = p * (4 + (4 + 8 + 4) / n) + min(p, a.hidden ** 2) * 4  # weights; grads/Adam/master sharded; bucket
    elif config == "zero3":
        adapter = p * 16 / n + p * 4 / n
        base = base / n + 2 * layer_4bit  # own shard + the gathered layer and the one prefetched
    elif config == "zero3_offload":
        adapter = p * 8 / n  # weight + gradient shards on the GPU; Adam + master in CPU memory
        base = 2 * layer_4bit
    else:
        raise ValueError(config)
    return {"base": base, "adapter": adapter, "activations": activation_bytes(a, run), "fixed": FIXED + dequant}


def load_bytes(a: Arch, run: Run) -> float:
    """Peak per GPU while the model loads, whatever the config: transformers creates a 4-bit model outside ZeRO-3's
    zero.Init and the bitsandbytes quantizer puts all of it on each process's GPU; DeepSpeed shards it only in
    accelerate's prepare (measured: bench/results/zero3_load.json, each of 2 ZeRO-3 processes held 100% of the
    4-bit model after loading, 50% after prepare). Plus the bf16 copy of the weight being quantized, the context."""
    largest = max(i * o for i, o in a.linear_shapes().values())
    return base_bytes(a, run) + 2 * largest + FIXED


def cpu_bytes(a: Arch, run: Run, gpus: int) -> float:
    """CPU memory per node for zero3_offload (8 GPUs per node): base + Adam + master of the node's GPUs."""
    p = a.lora_params(run.lora_r, run.targets)
    return (base_bytes(a, run) + p * 12) * min(gpus, 8) / gpus


def total(parts: dict[str, float]) -> float:
    return sum(parts.values())


def fits(parts: dict[str, float], gpu_gb: float, a: Arch | None = None, run: Run | None = None) -> bool:
    """Training fits, and (given the model) so does loading it, which no config shards."""
    load_ok = a is None or load_bytes(a, run) <= FIT * gpu_gb * GB
    return total(parts) <= FIT * gpu_gb * GB and load_ok


def choose(a: Arch, run: Run, gpu_gb: float, max_gpus: int = 64) -> tuple[str, int, dict[str, float]]:
    """The simplest config that fits, as (config, GPUs, parts); ("none", 0, ...) when nothing does."""
    single = estimate(a, run, "single_gpu", 1)
    if fits(single, gpu_gb, a, run):
        return "single_gpu", 1, single
    gpus = 2
    while gpus <= max_gpus:  # ZeRO-2 can't help: the base is replicated and the adapter state is small
        parts = estimate(a, run, "zero3", gpus)
        if fits(parts, gpu_gb, a, run):
            return "zero3", gpus, parts
        gpus *= 2
    return offload(a, run, gpu_gb) or ("none", 0, estimate(a, run, "zero3_offload", 8))


def offload(a: Arch, run: Run, gpu_gb: float):
    for gpus in (1, 2, 4, 8):
        parts = estimate(a, run, "zero3_offload", gpus)
        if fits(parts, gpu_gb, a, run):
            return "zero3_offload", gpus, parts
    return None


def gb(x: float) -> str:
    return f"{x / GB:.1f}"


def table(run: Run, sizes=("7B", "8B", "13B", "70B"), gpus_gb=(24, 40, 80)) -> str:
    gc_off = Run(**{**run.__dict__, "gradient_checkpointing": False})
    mb1 = Run(**{**run.__dict__, "micro_batch": 1})
    lines = [
        f"Estimated GPU memory per process for 4-bit QLoRA (NF4{', double quantization' if run.double_quant else ''}, "
        f"bf16 compute), LoRA r={run.lora_r} on {', '.join(run.targets)}"
        f"{' with dropout' if run.dropout else ''}, AdamW; sequence length {run.seq_len} (packed), micro batch "
        f"{run.micro_batch}, gradient checkpointing {'on' if run.gradient_checkpointing else 'off'} (the shipped "
        "recipes). Computed by `python bench/memory_estimate.py` (model and assumptions in its docstring; "
        "`--verify` checks the activation model against a real forward pass).",
        "",
        "| Model | GPU | Config (`--config_file accelerate_configs/...`) | GPUs (min) | Est. GB per GPU | At load | "
        "Base | Adapter + optimizer | Activations | Activations, no grad. checkpointing | `zero3.yaml` on 8 GPUs | "
        "Other options |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for size in sizes:
        a = MODELS[size]
        z8 = total(estimate(a, run, "zero3", 8))
        for mem in gpus_gb:
            config, gpus, parts = choose(a, run, mem)
            other = []
            if config == "single_gpu" and total(parts) > 0.75 * mem * GB:
                c2, g2, p2 = choose(a, run, 0.75 * mem / FIT)
                if c2 == "zero3":
                    other.append(f"tight: `zero3.yaml` on {g2} for headroom ({gb(total(p2))} GB per GPU)")
            if config == "zero3":
                c1, g1, _ = choose(a, mb1, mem)
                if c1 != "none" and g1 < gpus:
                    other.append(f"micro batch 1: `{c1}.yaml` on {g1}")
                off = offload(a, run, mem)
                if off:
                    other.append(f"`zero3_offload.yaml` on {off[1]} (CPU memory {gb(cpu_bytes(a, run, off[1]))} GB "
                                 f"per node, several times slower)")
            if config == "none":
                why = ("doesn't load: each GPU holds the whole 4-bit base while loading" if load_bytes(a, run) >
                       FIT * mem * GB else "doesn't fit: micro batch 1 / shorter sequences")
                lines.append(f"| {size} ({a.name}) | {mem} GB | {why} | | | {gb(load_bytes(a, run))} "
                             f"| | | | | {gb(z8)} | |")
                continue
            name = f"`{config}.yaml`" + (" or `multi_gpu.yaml`" if config == "single_gpu" else "")
            lines.append(
                f"| {size} ({a.name}) | {mem} GB | {name} | {gpus} | {gb(total(parts))} | {gb(load_bytes(a, run))} | "
                f"{gb(parts['base'])} | "
                f"{gb(parts['adapter'])} | {gb(parts['activations'])} | {gb(activation_bytes(a, gc_off))} | "
                f"{gb(z8)} | {'; '.join(other)} |")
    lines += [
        "",
        "Sizes: " + "; ".join(
            f"{s} = {m.name}: 4-bit base {gb(base_bytes(m, run))} GB (embeddings and lm_head in fp32 included), "
            f"LoRA {m.lora_params(run.lora_r, run.targets) / 1e6:.0f}M params"
            for s, m in MODELS.items() if s in sizes) + ".",
        "",
        "Reading the table: a config fits when the estimate, and the peak at load, are at most 90% of the GPU. "
        "\"At load\": no config shards loading a 4-bit model (transformers quantizes outside ZeRO-3's zero.Init "
        "and puts the whole 4-bit base on every GPU; DeepSpeed shards it afterwards; measured in "
        "bench/results/zero3_load.json), so every GPU must first hold the whole 4-bit base: ZeRO-3 lowers the "
        "training memory, not the load peak. `single_gpu.yaml` rows fit on "
        "one GPU; `multi_gpu.yaml` (DDP) needs the same memory per GPU and goes faster with more. ZeRO-2 "
        "(`zero2.yaml`) shards only the adapter's gradients and optimizer states (the column \"Adapter + "
        "optimizer\"), a small gain for QLoRA. `zero3.yaml` shards the 4-bit base and the adapter state, not the "
        "activations, which are per process: on small GPUs they decide, and micro batch 1 or a shorter "
        "`data.max_length` halves them. Without gradient checkpointing the activations grow 8-15x. Keep headroom: "
        "the estimate is a model, checked against real forward passes on CPU (`--verify`), not a GPU measurement.",
    ]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------
# --verify: the activation model against autograd's saved tensors of a real forward (CPU, small random Llamas)


def measure_saved_bytes(hidden: int, intermediate: int, kv_heads: int, layers: int, vocab: int, seq: int,
                        dropout: float, gc: bool, workdir: Path) -> int:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from ft.config import load_config
    from ft.model import add_lora, load_base_model

    folder = workdir / f"llama-{hidden}-{intermediate}-{kv_heads}-{layers}-{vocab}"
    if not (folder / "config.json").is_file():
        torch.manual_seed(0)
        cfg = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=intermediate,
                          num_hidden_layers=layers, num_attention_heads=hidden // 64, num_key_value_heads=kv_heads,
                          tie_word_embeddings=False)
        LlamaForCausalLM(cfg).save_pretrained(folder)
    cfg = load_config(None, {"model.name_or_path": str(folder), "model.gradient_checkpointing": str(gc).lower(),
                             "model.attn_implementation": "sdpa", "quantization.mode": "4bit", "lora.r": "16",
                             "lora.dropout": str(dropout),
                             "lora.target_modules": "q_proj,k_proj,v_proj,o_proj,lm_head"})
    model = add_lora(load_base_model(cfg, str(folder))[0], cfg)
    model.train()
    weights = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
    storages: dict[int, int] = {}

    def pack(t):  # tensors autograd keeps for the backward, each storage once; weights are not activations
        ptr = t.untyped_storage().data_ptr()
        if ptr not in weights:
            storages.setdefault(ptr, t.untyped_storage().nbytes())
        return t

    ids = torch.randint(0, vocab, (1, seq))
    labels = ids.clone()
    labels[:, : int(seq * 0.75)] = -100
    keep = torch.zeros_like(labels, dtype=torch.bool)
    keep[:, :-1] = labels[:, 1:] != -100
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        logits = model(input_ids=ids, use_cache=False, logits_to_keep=keep).logits
        torch.nn.functional.cross_entropy(logits.reshape(-1, vocab).float(), labels[:, 1:][keep[:, :-1]])
    return sum(storages.values())


def verify() -> int:
    import tempfile

    print("saved activations, real forward (4-bit + LoRA, CPU) vs this model:")
    worst = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for hidden, inter, kv_heads, layers, vocab, dropout, gc in [
            (512, 1024, 8, 2, 1024, 0.05, False), (768, 2048, 4, 3, 4096, 0.05, False),
            (1024, 2816, 4, 4, 2048, 0.0, False), (768, 2048, 4, 6, 4096, 0.05, True),
        ]:
            seq = 256
            measured = measure_saved_bytes(hidden, inter, kv_heads, layers, vocab, seq, dropout, gc, Path(tmp))
            a = Arch("probe", hidden, layers, inter, hidden // 64, kv_heads, vocab)
            run = Run(seq_len=seq, micro_batch=1, dropout=dropout > 0, gradient_checkpointing=gc)
            est = saved_activation_bytes(a, run)
            worst = max(worst, abs(est / measured - 1))
            print(f"  hidden {hidden:5d} inter {inter:5d} kv {a.kv_dim:4d} layers {layers} vocab {vocab:5d} dropout "
                  f"{dropout} checkpointing {gc!s:5}: measured {measured / 2**20:7.1f} MiB, estimated "
                  f"{est / 2**20:7.1f} MiB ({100 * (est / measured - 1):+.1f}%)")
    print(f"worst {100 * worst:.1f}%")
    return 0 if worst < 0.15 else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--micro-batch", type=int, default=2)
    ap.add_argument("--lora-r", type=int, default=128)
    ap.add_argument("--no-gradient-checkpointing", action="store_true")
    ap.add_argument("--no-double-quant", action="store_true")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--verify", action="store_true", help="check the activation model on CPU, write nothing")
    args = ap.parse_args(argv)
    if args.verify:
        return verify()
    run = Run(seq_len=args.seq_len, micro_batch=args.micro_batch, lora_r=args.lora_r,
              gradient_checkpointing=not args.no_gradient_checkpointing, double_quant=not args.no_double_quant)
    text = table(run)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
