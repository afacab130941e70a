"""A merged model -> one GGUF file (llama.cpp, Ollama, LM Studio), written with the `gguf` package's GGUFWriter.

    write_gguf(model, tokenizer, "model-q8_0.gguf", "q8_0", chat_template=..., source_gguf=None)

What goes in is what transformers' own GGUF reader (`modeling_gguf_pytorch_utils.load_gguf_checkpoint`, config keys
from `integrations/ggml.py` GGUF_CONFIG_MAPPING, tokenizer from `integrations/gguf/gguf_tokenizer_mapping.py`) and
llama.cpp read for the llama and qwen2 architectures: the `<arch>.*` shape keys, the tensors under llama.cpp's names
(gguf's own tensor map), the query / key rows of llama permuted to llama.cpp's rotary layout (the reader permutes
them back), the tokenizer as `tokenizer.ggml.*` and our prompt as `tokenizer.chat_template`. Types: `f16` (every
matrix in float16) and `q8_0` (every matrix whose rows are a multiple of 32 in 8-bit blocks with a float16 scale,
the rest float16); norms stay float32, as llama.cpp's converter leaves them.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

# --gguf TYPE -> (GGMLQuantizationType name of the matrices, LlamaFileType name written as general.file_type)
GGUF_TYPES = {"f16": ("F16", "MOSTLY_F16"), "q8_0": ("Q8_0", "MOSTLY_Q8_0")}

# transformers model_type -> (gguf architecture, whether q/k rows are permuted to llama.cpp's rotary layout)
ARCHS = {"llama": ("llama", True), "mistral": ("llama", True), "qwen2": ("qwen2", False)}


class GGUFExportError(ValueError):
    """A model or tokenizer this writer can't put in a GGUF file (the message says which and why)."""


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """HF's rotate-half q/k rows -> llama.cpp's interleaved pairs (convert_hf_to_gguf.py's permute; the transformers
    reader's LlamaTensorProcessor._reverse_permute_weights undoes it)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def check_exportable(config) -> None:
    """Raise GGUFExportError for a model this writer would get wrong, before anything is written."""
    if config.model_type not in ARCHS:
        raise GGUFExportError(f"GGUF export supports {', '.join(sorted(ARCHS))} models; this one is "
                              f"'{config.model_type}'. Export without --gguf and convert with llama.cpp's "
                              "convert_hf_to_gguf.py.")
    rope = getattr(config, "rope_parameters", None) or {}
    if rope.get("rope_type", "default") != "default":
        raise GGUFExportError(f"GGUF export of rope scaling '{rope.get('rope_type')}' is not supported (its "
                              "frequencies would need llama.cpp's rope_freqs tensor); export without --gguf.")


def _rope_theta(config) -> float:
    rope = getattr(config, "rope_parameters", None) or {}
    return float(rope.get("rope_theta") or getattr(config, "rope_theta", None) or 10000.0)


def _tokenizer_from_source(writer, source_gguf: Path) -> None:
    """Copy `tokenizer.ggml.*` from the GGUF file the base model came from: the tokenizer it was trained with is
    the one transformers built from exactly these fields."""
    from gguf import GGUFReader, GGUFValueType

    reader = GGUFReader(str(source_gguf))
    for key, field in reader.fields.items():
        if not key.startswith("tokenizer.ggml."):
            continue
        value = field.contents()
        vtype = field.types[0]
        sub = field.types[1] if vtype == GGUFValueType.ARRAY else None
        writer.add_key_value(key, value, vtype, sub_type=sub)


def _tokenizer_from_hf(writer, tokenizer, vocab_size: int) -> None:
    """A byte-level BPE tokenizer (GPT-2, Llama 3, Qwen 2 style) from its tokenizer.json, as llama.cpp's converter
    writes it: tokens by id (rows of the embedding past the vocabulary as unused [PADn]), merges, token types."""
    from gguf import TokenType

    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    model = spec.get("model", {})
    if model.get("type") != "BPE" or "ByteLevel" not in json.dumps([spec.get("pre_tokenizer"), spec.get("decoder")]):
        raise GGUFExportError(f"GGUF export writes byte-level BPE tokenizers; this model's is "
                              f"{model.get('type', 'unknown')} without a ByteLevel step. Export without --gguf.")
    vocab = tokenizer.get_vocab()
    by_id = {i: t for t, i in vocab.items()}
    added = {t.content: t for t in tokenizer.backend_tokenizer.get_added_tokens_decoder().values()}
    size = max(vocab_size, len(vocab))
    tokens, types = [], []
    for i in range(size):
        tok = by_id.get(i)
        if tok is None:
            tokens.append(f"[PAD{i}]")
            types.append(TokenType.UNUSED)
        elif tok in added:
            tokens.append(tok)
            types.append(TokenType.CONTROL if added[tok].special else TokenType.USER_DEFINED)
        else:
            tokens.append(tok)
            types.append(TokenType.NORMAL)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    pre = json.dumps(spec.get("pre_tokenizer"))
    # llama.cpp picks its split regex by this name; transformers' reader too (GGUF_PRE_TOKENIZER_SPLITS)
    name = "qwen2" if "\\\\p{N}" in pre and "(?i:'s|'t" in pre and "{1,3}" not in pre else (
        "llama-bpe" if "\\\\p{N}{1,3}" in pre else "gpt-2")
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(name)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    for attr, add in (("bos_token_id", writer.add_bos_token_id), ("eos_token_id", writer.add_eos_token_id),
                      ("unk_token_id", writer.add_unk_token_id), ("pad_token_id", writer.add_pad_token_id)):
        value = getattr(tokenizer, attr, None)
        if value is not None:
            add(int(value))
    probe = tokenizer("a", add_special_tokens=True)["input_ids"]
    writer.add_add_bos_token(bool(probe) and tokenizer.bos_token_id is not None and probe[0] == tokenizer.bos_token_id)
    writer.add_add_space_prefix(False)


def write_gguf(model, tokenizer, path: str | Path, gguf_type: str, *, chat_template: str | None = None,
               source_gguf: Path | None = None, name: str = "sqlft") -> Path:
    """Write `model` (a transformers causal LM, LoRA already merged) with `tokenizer` to `path`."""
    import torch
    from gguf import MODEL_ARCH, MODEL_ARCH_NAMES, GGMLQuantizationType, GGUFWriter, LlamaFileType, get_tensor_name_map
    from gguf.quants import quantize

    if gguf_type not in GGUF_TYPES:
        raise GGUFExportError(f"Unknown GGUF type '{gguf_type}' (--gguf): use {' or '.join(GGUF_TYPES)}.")
    config = model.config
    check_exportable(config)
    arch_name, permute = ARCHS[config.model_type]
    arch = next(a for a, n in MODEL_ARCH_NAMES.items() if n == arch_name)
    matrix_type = GGMLQuantizationType[GGUF_TYPES[gguf_type][0]]
    n_layers, n_head = config.num_hidden_layers, config.num_attention_heads
    n_kv = getattr(config, "num_key_value_heads", None) or n_head
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // n_head
    names = get_tensor_name_map(arch if arch_name != "llama" else MODEL_ARCH.LLAMA, n_layers)

    path = Path(path)
    writer = GGUFWriter(str(path), arch_name)
    writer.add_name(name)
    writer.add_file_type(int(LlamaFileType[GGUF_TYPES[gguf_type][1]]))
    writer.add_quantization_version(2)
    writer.add_context_length(int(config.max_position_embeddings))
    writer.add_embedding_length(int(config.hidden_size))
    writer.add_block_count(int(n_layers))
    writer.add_feed_forward_length(int(config.intermediate_size))
    writer.add_head_count(int(n_head))
    writer.add_head_count_kv(int(n_kv))
    writer.add_rope_dimension_count(int(head_dim))
    writer.add_rope_freq_base(_rope_theta(config))
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    writer.add_vocab_size(int(config.vocab_size))
    if source_gguf is not None:
        _tokenizer_from_source(writer, source_gguf)
    else:
        _tokenizer_from_hf(writer, tokenizer, int(config.vocab_size))
    if chat_template:
        writer.add_chat_template(chat_template)

    tied = bool(getattr(config, "tie_word_embeddings", False))
    for hf_name, tensor in model.state_dict().items():
        if tied and hf_name == "lm_head.weight":
            continue  # llama.cpp (and transformers' reader) tie the output to token_embd when output.weight is absent
        base, _, suffix = hf_name.rpartition(".")
        gguf_name = names.get_name(base)
        if gguf_name is None:
            if "rotary_emb" in hf_name:
                continue  # computed, not stored
            raise GGUFExportError(f"No GGUF name for the tensor '{hf_name}' ({arch_name}).")
        data = tensor.detach().to(torch.float32).cpu().numpy()
        if permute and base.endswith("self_attn.q_proj"):
            data = _permute(data, n_head)
        elif permute and base.endswith("self_attn.k_proj"):
            data = _permute(data, n_kv)
        if data.ndim == 1:
            out, kind = data.astype(np.float32), GGMLQuantizationType.F32
        elif matrix_type == GGMLQuantizationType.Q8_0 and data.shape[-1] % 32 == 0:
            out, kind = quantize(data, GGMLQuantizationType.Q8_0), GGMLQuantizationType.Q8_0
        else:
            out, kind = data.astype(np.float16), GGMLQuantizationType.F16
        writer.add_tensor(f"{gguf_name}.{suffix}", out, raw_dtype=kind)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
