"""`python -m ft.merge --adapter PATH --out DIR`: fold the LoRA weights into the base model.

The base is loaded in 16-bit (never from 4-bit: merging into quantized weights would bake the quantization error
into the result), merged, and saved as safetensors plus tokenizer: a plain transformers checkpoint that serving
engines such as vLLM load directly.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

from ft.config import ConfigError
from ft.model import ModelError


def merge(adapter: str, out: str, model: str | None = None, dtype: str = "bfloat16", config: str | None = None) -> Path:
    from peft import PeftModel

    from ft.inference import inference_config, resolve_adapter
    from ft.model import load_base_model, load_tokenizer, local_model_dir

    cfg = inference_config(adapter, config, {"model.name_or_path": model, "quantization.mode": "none",
                                             "quantization.dtype": dtype})
    path = local_model_dir(cfg)
    base, _ = load_base_model(cfg, path)
    merged = PeftModel.from_pretrained(base, str(resolve_adapter(adapter)[0])).merge_and_unload()
    merged.config.use_cache = True
    dest = Path(out)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}-"))
    try:  # written aside and renamed: an interrupted merge never leaves a half model at `out`
        merged.save_pretrained(tmp, safe_serialization=True)
        load_tokenizer(path).save_pretrained(tmp)
        if dest.exists():
            shutil.rmtree(dest)
        os.rename(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ft.merge", description=__doc__)
    ap.add_argument("--adapter", required=True, help="adapter, checkpoint or run folder")
    ap.add_argument("--out", required=True, help="folder for the merged model")
    ap.add_argument("--model", help="base model (default: the one the adapter was trained on)")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    ap.add_argument("--config", help="config YAML (default: the adapter's run config)")
    args = ap.parse_args(argv)
    try:
        dest = merge(args.adapter, args.out, args.model, args.dtype, args.config)
    except (ConfigError, ModelError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"merged model: {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
