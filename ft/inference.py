"""Loading a model for inference: a base model alone, or base + LoRA adapter (folder, checkpoint or run dir)."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from ft.config import Config
from ft.model import ModelError, load_base_model, load_tokenizer, local_model_dir, peft_wrapping


def resolve_adapter(path: str | Path) -> tuple[Path, Path | None]:
    """(adapter folder, config.yaml of the run that made it, if known) for an adapter, checkpoint or run folder.

    Every command that loads an adapter finds it here, so here it is checked (once a process): weights that don't
    read back, or hold NaN / Inf (a run that diverged), are refused with a ModelError (one line, exit 2)."""
    p = Path(path)
    for cand in (p, p / "adapter"):
        if (cand / "adapter_config.json").is_file():
            check_adapter(cand)
            for cfg in (cand.parent / "config.yaml", cand / "config.yaml"):
                if cfg.is_file():
                    return cand, cfg
            # a run dir's final adapter: the config lives in its newest checkpoint
            ckpts = sorted((cand.parent / "checkpoints").glob("step-*/config.yaml"))
            return cand, (ckpts[-1] if ckpts else None)
    raise ModelError(f"No LoRA adapter at '{p}' (expected adapter_config.json there or in {p / 'adapter'}).")


_CHECKED: set[tuple] = set()


def check_adapter(folder: Path) -> None:
    """ModelError unless every tensor of the adapter's weights reads back and is finite."""
    from safetensors import safe_open

    files = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("adapter_model.bin"))
    for f in files:
        stat = f.stat()
        key = (str(f.resolve()), stat.st_size, stat.st_mtime_ns)
        if key in _CHECKED:
            continue
        try:
            if f.suffix == ".bin":
                tensors = torch.load(f, weights_only=True, map_location="cpu").items()
            else:
                with safe_open(f, "pt") as st:
                    tensors = [(k, st.get_tensor(k)) for k in st.keys()]
        except Exception as e:  # noqa: BLE001 - SafetensorError, UnpicklingError, EOFError...: all a damaged file
            first = str(e).splitlines()[0] if str(e) else ""
            raise ModelError(f"adapter weights {f} can't be read ({type(e).__name__}: {first}): the file is damaged "
                             "or truncated; an earlier checkpoint of its run may be intact") from None
        for name, t in tensors:
            bad = int((~torch.isfinite(t)).sum()) if t.is_floating_point() else 0
            if bad:
                raise ModelError(f"adapter weights {f} hold NaN or Inf ({bad} of {t.numel()} values of {name}): "
                                 "refusing to use them; the run diverged, and an earlier checkpoint of it "
                                 "(checkpoints/step-*/adapter) may be intact")
        _CHECKED.add(key)


def run_of(adapter: str | Path) -> tuple[Path | None, dict]:
    """(the run folder an adapter belongs to, its newest checkpoint's state.json) for one of our runs' adapters;
    (None, {}) for an adapter from elsewhere."""
    folder, config = resolve_adapter(adapter)
    if config is None:
        return None, {}
    ckpt = config.parent
    run = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else None
    try:
        state = json.loads((ckpt / "state.json").read_text())
    except (OSError, ValueError):
        state = {}
    return run, state


# bench/results/cpu_inference_quantization.json (a 2-core CPU, SmolLM2-135M, 32 questions): the unquantized model
# generated 1.19x as fast as the 4-bit one without schema KV reuse, and 1.00x (no faster) with it.
UNQUANTIZED_SPEEDUP = {"no_reuse": 1.19, "reuse": 1.00}


def prefer_unquantized_on_cpu(cfg: Config, explicit: bool) -> str | None:
    """On a machine without CUDA, unless the mode was asked for, inference uses the unquantized model when it fits
    in memory: no quantization error, and never slower where measured (UNQUANTIZED_SPEEDUP; several times faster
    on an AVX2-only CPU, README). Changes `cfg` before it is resolved; returns the note to print (the measured
    speed-up for this setting), or None."""
    from ft.model import local_model_dir
    from ft.system import available_memory_bytes, has_cuda

    q = cfg.quantization
    if explicit or has_cuda() or q.mode != "4bit":
        return None
    folder = Path(local_model_dir(cfg))
    if not folder.is_dir():
        return None  # a Hub id: its size is unknown here
    files = [*folder.glob("*.safetensors"), *folder.glob("*.bin")]
    on_disk = sum(f.stat().st_size for f in files)
    try:  # weights stored in 16 bits take twice as much memory in float32
        stored = json.loads((folder / "config.json").read_text()).get("dtype", "float32")
    except (OSError, ValueError):
        stored = "float32"
    need = on_disk * (2 if stored in ("bfloat16", "float16") else 1)
    free = available_memory_bytes()
    if not files or free is None or need > 0.6 * free:
        return None
    q.mode = "none"
    reuse = cfg.eval.reuse_schema_cache
    speedup = UNQUANTIZED_SPEEDUP["reuse" if reuse else "no_reuse"]
    return (f"no GPU: generating with the unquantized model ({need / 2**30:.1f} GiB; measured {speedup:.2f}x the "
            f"4-bit speed {'with' if reuse else 'without'} schema KV reuse on a 2-core CPU, "
            "bench/results/cpu_inference_quantization.json); --quantization 4bit keeps 4-bit")


def load_for_inference(cfg: Config, adapter: str | None = None, device: str | None = None):
    """(model, tokenizer) ready for generation; the adapter stays separate so it can be switched off."""
    path = local_model_dir(cfg)
    tokenizer = load_tokenizer(path)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    device_map = {"": device} if device == "cuda" else None
    model, _ = load_base_model(cfg, path, device_map=device_map)
    if adapter:
        from peft import PeftModel

        with peft_wrapping():
            model = PeftModel.from_pretrained(model, str(resolve_adapter(adapter)[0]))
    model.eval()
    model.config.use_cache = True
    return model, tokenizer
