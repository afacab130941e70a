"""Loading a model for inference: a base model alone, or base + LoRA adapter (folder, checkpoint or run dir)."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from ft.config import Config
from ft.model import ModelError, load_base_model, load_tokenizer, local_model_dir


def resolve_adapter(path: str | Path) -> tuple[Path, Path | None]:
    """(adapter folder, config.yaml of the run that made it, if known) for an adapter, checkpoint or run folder."""
    p = Path(path)
    for cand in (p, p / "adapter"):
        if (cand / "adapter_config.json").is_file():
            for cfg in (cand.parent / "config.yaml", cand / "config.yaml"):
                if cfg.is_file():
                    return cand, cfg
            # a run dir's final adapter: the config lives in its newest checkpoint
            ckpts = sorted((cand.parent / "checkpoints").glob("step-*/config.yaml"))
            return cand, (ckpts[-1] if ckpts else None)
    raise ModelError(f"No LoRA adapter at '{p}' (expected adapter_config.json there or in {p / 'adapter'}).")


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


def load_for_inference(cfg: Config, adapter: str | None = None, device: str | None = None):
    """(model, tokenizer) ready for generation; the adapter stays separate so it can be switched off."""
    path = local_model_dir(cfg)
    tokenizer = load_tokenizer(path)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    device_map = {"": device} if device == "cuda" else None
    model, _ = load_base_model(cfg, path, device_map=device_map)
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(resolve_adapter(adapter)[0]))
    model.eval()
    model.config.use_cache = True
    return model, tokenizer
