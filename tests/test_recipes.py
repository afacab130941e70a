"""Every shipped recipe parses and builds (model + quantization + LoRA) on a tiny stand-in model."""
from pathlib import Path

import pytest
import torch
from conftest import REPO

from ft.config import load_config
from ft.model import add_lora, load_base_model

RECIPES = sorted((REPO / "configs").glob("*.yaml"))


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_recipe_builds_on_tiny_model(recipe: Path, tiny_model):
    cfg = load_config(recipe, {"model.name_or_path": str(tiny_model), "train.optimizer": "adamw"})
    model, attn = load_base_model(cfg, str(tiny_model))
    if cfg.quantization.mode == "4bit":
        import bitsandbytes as bnb

        assert any(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())
    model = add_lora(model, cfg)
    targets = {n.split(".")[-4] for n, p in model.named_parameters() if p.requires_grad and "lora_A" in n}
    assert targets == set(cfg.lora.target_modules)
    ids = torch.randint(0, 300, (1, 16))
    out = model(input_ids=ids, labels=ids, use_cache=False)
    out.loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_real_recipes_use_the_seed_hyperparameters():
    for name in ("qwen2.5-coder-7b", "llama3.1-8b"):
        cfg = load_config(REPO / "configs" / f"{name}.yaml")
        q, lo, t = cfg.quantization, cfg.lora, cfg.train
        assert (q.mode, q.quant_type, q.double_quant, q.compute_dtype) == ("4bit", "nf4", True, "bfloat16")
        assert (lo.r, lo.alpha, lo.dropout) == (128, 128, 0.05)
        assert set(lo.target_modules) == {"q_proj", "k_proj", "v_proj", "o_proj", "lm_head"}
        assert ((t.epochs, t.learning_rate, t.per_device_batch_size) == (4, 2e-5, 2)
                and t.gradient_accumulation_steps > 1)
