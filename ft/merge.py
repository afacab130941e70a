"""`sqlft merge` (`python -m ft.merge`): fold the LoRA weights into the base model.

    sqlft merge --adapter runs/demo/adapter --out merged/ [--dtype bfloat16]

The base is loaded in 16-bit (never from 4-bit: merging into quantized weights would bake the quantization error
into the result), merged, and saved as safetensors plus tokenizer: a plain transformers checkpoint that serving
engines such as vLLM load directly. `quantization.dtype` (`--dtype`) is the dtype of the merged weights; its
`auto` means the base checkpoint's own 16-bit dtype (bfloat16 when the base is stored in float32), whatever the
machine computes in, since the output is for serving. The folder also carries the prompt the model was trained on,
as its chat template (ft.export.prompt), and a generation config that stops at the answer's closing fence, so every
consumer builds the same prompt; `sqlft export` adds a model card, GGUF files and an Ollama Modelfile.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Callable

from ft.cli import Alias, Command, adapter_run_config, run
from ft.files import check_writable, share
from ft.model import ModelError
from ft.system import set_process_defaults


def merged_dtype(cfg, model_dir: str) -> str:
    """The merged weights' dtype: quantization.dtype when set, else the base checkpoint's 16-bit dtype."""
    if cfg.quantization.dtype != "auto":
        return cfg.quantization.dtype
    try:
        stored = json.loads((Path(model_dir) / "config.json").read_text())
        stored = stored.get("dtype") or stored.get("torch_dtype")
    except (OSError, ValueError):
        stored = None
    return stored if stored in ("bfloat16", "float16") else "bfloat16"


def load_merged(cfg, adapter: str | Path):
    """(merged model, tokenizer, base model folder or Hub id): the one place an adapter is read for merge and
    export. cfg is resolved, quantization.mode none, quantization.dtype the merged dtype."""
    from peft import PeftModel

    from ft.inference import resolve_adapter
    from ft.model import load_base_model, load_tokenizer, local_model_dir, peft_wrapping

    path = local_model_dir(cfg)
    base, _ = load_base_model(cfg, path)
    with peft_wrapping():
        merged = PeftModel.from_pretrained(base, str(resolve_adapter(adapter)[0])).merge_and_unload()
    merged.config.use_cache = True
    return merged, load_tokenizer(path), path


def save_model_folder(model, tokenizer, cfg, folder: Path) -> None:
    """Weights, tokenizer with the training prompt as its chat template, and a generation config that stops at the
    answer's closing fence (ft.data.prompt.STOP) and greedy, as evaluation decodes."""
    from ft.export.prompt import generation_config, training_chat_template

    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.chat_template = training_chat_template(cfg.data.template, tokenizer)
    tokenizer.save_pretrained(folder)
    generation_config(model, tokenizer, cfg).save_pretrained(folder)


def publish(dest: Path, write: Callable[[Path], None], marker: str | None = None) -> Path:
    """`write(tmp)` fills a temporary folder beside `dest`, which is renamed into place only when it is complete:
    an interrupted or failed write leaves nothing at `dest`, and a folder there is replaced only once the new one is
    whole. A non-empty `dest` without `marker` (a file every such folder holds) is refused: it isn't ours to
    replace."""
    dest = Path(dest)
    if marker and dest.exists() and any(dest.iterdir()) and not (dest / marker).exists():
        raise FileExistsError(f"'{dest}' (--out) exists and holds other files; give a new folder (nothing was "
                              "written).")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}-"))
    try:
        write(tmp)
        share(tmp)  # readable by others (vLLM on shared storage), as a plain folder would be
        old = None
        if dest.exists():
            old = dest.with_name(f".{dest.name}-old-{os.getpid()}")
            os.rename(dest, old)
        os.rename(tmp, dest)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def merge(cfg, adapter: str, out: str) -> Path:
    model, tokenizer, _ = load_merged(cfg, adapter)
    return publish(Path(out), lambda tmp: save_model_folder(model, tokenizer, cfg, tmp))


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
        Alias("--dtype", "quantization.dtype", "dtype of the merged weights [auto: the base's 16-bit dtype]"),
    ],
)


def merge_command(cfg, args) -> int:
    from ft.config import resolve
    from ft.model import local_model_dir

    check_writable(Path(args.out).resolve().parent, "--out (its folder)")
    cfg.quantization.dtype = merged_dtype(cfg, local_model_dir(cfg))  # a checkpoint for serving, not computing here
    dest = merge(resolve(cfg), args.adapter, args.out)
    print(f"merged model: {dest}")
    return 0


def main(argv: list[str] | None = None) -> int:
    set_process_defaults()
    return run(COMMAND, merge_command, argv, errors=(ModelError, FileNotFoundError))


if __name__ == "__main__":
    sys.exit(main())
