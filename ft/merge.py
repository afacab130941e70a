"""`sqlft merge` (`python -m ft.merge`): fold the LoRA weights into the base model.

    sqlft merge --adapter runs/demo/adapter --out merged/ [--dtype bfloat16]

The base is loaded in 16-bit (never from 4-bit: merging into quantized weights would bake the quantization error
into the result), merged, and saved as safetensors plus tokenizer: a plain transformers checkpoint that serving
engines such as vLLM load directly. `quantization.dtype` (`--dtype`) is the dtype of the merged weights; its
`auto` means bfloat16 here, whatever the machine computes in, since the output is for serving.
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

from ft.cli import Alias, Command, adapter_run_config, run
from ft.files import check_writable, share
from ft.model import ModelError
from ft.system import set_process_defaults


def merge(cfg, adapter: str, out: str) -> Path:
    from peft import PeftModel

    from ft.inference import resolve_adapter
    from ft.model import load_base_model, load_tokenizer, local_model_dir, peft_wrapping

    path = local_model_dir(cfg)
    base, _ = load_base_model(cfg, path)
    with peft_wrapping():
        merged = PeftModel.from_pretrained(base, str(resolve_adapter(adapter)[0])).merge_and_unload()
    merged.config.use_cache = True
    dest = Path(out)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}-"))
    try:  # written aside and renamed: an interrupted merge never leaves a half model at `out`
        merged.save_pretrained(tmp, safe_serialization=True)
        load_tokenizer(path).save_pretrained(tmp)
        share(tmp)  # readable by others (vLLM on shared storage), as a plain folder would be
        if dest.exists():
            shutil.rmtree(dest)
        os.rename(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def _own(p) -> None:
    p.add_argument("--adapter", required=True, help="adapter, checkpoint or run folder")
    p.add_argument("--out", required=True, help="folder for the merged model")


COMMAND = Command(
    name="merge",
    description=__doc__,
    add_arguments=_own,
    default_config=adapter_run_config,
    overrides={"quantization.mode": "none"},
    aliases=[
        Alias("--model", "model.name_or_path", "base model [the one the adapter was trained on]"),
        Alias("--dtype", "quantization.dtype", "dtype of the merged weights [auto: bfloat16]"),
    ],
)


def merge_command(cfg, args) -> int:
    from ft.config import resolve

    check_writable(Path(args.out).resolve().parent, "--out (its folder)")
    if cfg.quantization.dtype == "auto":
        cfg.quantization.dtype = "bfloat16"  # a checkpoint for serving, not for computing here
    dest = merge(resolve(cfg), args.adapter, args.out)
    print(f"merged model: {dest}")
    return 0


def main(argv: list[str] | None = None) -> int:
    set_process_defaults()
    return run(COMMAND, merge_command, argv, errors=(ModelError, FileNotFoundError))


if __name__ == "__main__":
    sys.exit(main())
