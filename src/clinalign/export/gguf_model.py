"""A merged model as one GGUF file for llama.cpp and Ollama, written with the ``gguf`` package
(llama.cpp's own Python writer: no compiled toolchain), plus an Ollama ``Modelfile``.

The recipe is llama.cpp's ``convert_hf_to_gguf.py`` for the Llama architecture (SmolLM2, Llama 2/3,
Mistral): tensor names from ``gguf.get_tensor_name_map``, the Q/K rows permuted the way llama.cpp's
rotary embedding expects, 1-D tensors (norms) kept in float32, the byte-level BPE vocabulary,
merges, special tokens and chat template from the Hugging Face directory (``gguf.vocab``). Other
architectures, or rope scaling, need llama.cpp's full converter; they are refused, not half-written.
Transformers' GGUF loader reads the file back, which is how the tests check it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from clinalign.errors import ConfigError

QUANTS = ("f16", "q8_0")
ARCHITECTURES = ("llama", "mistral")  # the HF model types written as llama.cpp's "llama"
LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def write_gguf(hf_dir: Path, path: Path, quant: str = "f16", name: str = "model") -> Path:
    """Convert the Hugging Face model directory ``hf_dir`` (float weights, tokenizer) to ``path``."""
    import gguf
    import torch
    from safetensors.torch import load_file

    if quant not in QUANTS:
        raise ConfigError(f"unknown --quant {quant!r}: choose from {', '.join(QUANTS)}")
    cfg = json.loads((hf_dir / "config.json").read_text())
    if cfg.get("model_type") not in ARCHITECTURES:
        raise ConfigError(f"{hf_dir}: GGUF export supports {', '.join(ARCHITECTURES)} models, not "
                          f"{cfg.get('model_type')!r}; use llama.cpp's convert_hf_to_gguf.py on the merged export")
    rope = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
    if rope.get("rope_type", rope.get("type", "default")) != "default":
        raise ConfigError(f"{hf_dir}: rope scaling {rope.get('rope_type')!r} is not written by this exporter; "
                          "use llama.cpp's convert_hf_to_gguf.py on the merged export")
    n_layers, n_head = cfg["num_hidden_layers"], cfg["num_attention_heads"]
    n_kv = cfg.get("num_key_value_heads") or n_head
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // n_head
    tensors: dict[str, torch.Tensor] = {}
    for f in sorted(hf_dir.glob("*.safetensors")):
        tensors.update(load_file(f))
    vocab = _vocab(hf_dir, cfg["vocab_size"])

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name(name)
    writer.add_context_length(cfg["max_position_embeddings"])
    writer.add_embedding_length(cfg["hidden_size"])
    writer.add_block_count(n_layers)
    writer.add_feed_forward_length(cfg["intermediate_size"])
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_kv)
    writer.add_rope_dimension_count(head_dim)
    if head_dim != cfg["hidden_size"] // n_head:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    writer.add_rope_freq_base(float(rope.get("rope_theta", cfg.get("rope_theta", 10000.0))))
    writer.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    writer.add_vocab_size(cfg["vocab_size"])
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if quant == "f16" else gguf.LlamaFileType.MOSTLY_Q8_0)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    vocab.write(writer, hf_dir)

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, n_layers)
    for hf_name, t in tensors.items():
        if hf_name == "lm_head.weight" and cfg.get("tie_word_embeddings"):
            continue  # tied: llama.cpp reuses token_embd, and the loader re-ties when output is absent
        new = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if new is None:
            raise ConfigError(f"{hf_dir}: tensor {hf_name} has no GGUF name; not a plain Llama checkpoint")
        data = t.to(torch.float32).numpy()
        if hf_name.endswith("q_proj.weight"):
            data = _permute(data, n_head, n_head)
        elif hf_name.endswith("k_proj.weight"):
            data = _permute(data, n_head, n_kv)
        _add_tensor(writer, new, data, quant)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _permute(w: np.ndarray, n_head: int, n_kv: int) -> np.ndarray:
    """HF stores each head's rotary halves apart; llama.cpp interleaves them (its converter's permute)."""
    n = n_kv if n_kv != n_head else n_head
    return w.reshape(n, 2, w.shape[0] // n // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _add_tensor(writer: Any, name: str, data: np.ndarray, quant: str) -> None:
    import gguf

    if data.ndim < 2:  # norms: float32, as llama.cpp keeps them
        writer.add_tensor(name, data.astype(np.float32))
    elif quant == "q8_0" and data.shape[-1] % gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType.Q8_0][0] == 0:
        q = gguf.quants.quantize(data, gguf.GGMLQuantizationType.Q8_0)
        writer.add_tensor(name, q, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    else:
        writer.add_tensor(name, data.astype(np.float16))


class _Vocab:
    """The byte-level BPE vocabulary of a HF tokenizer, as llama.cpp's "gpt2" tokenizer model."""

    def __init__(self, tokens: list[bytes], types: list[int], pre: str):
        self.tokens, self.types, self.pre = tokens, types, pre

    def write(self, writer: Any, hf_dir: Path) -> None:
        import gguf

        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre(self.pre)
        writer.add_token_list(self.tokens)
        writer.add_token_types(self.types)
        # merges, bos/eos/pad ids, add_bos flag and the chat template, read as llama.cpp's converter does
        gguf.SpecialVocab(hf_dir, load_merges=True, n_vocab=len(self.tokens)).add_to_gguf(writer, quiet=True)


def _vocab(hf_dir: Path, n_vocab: int) -> _Vocab:
    import gguf

    tok_json = json.loads((hf_dir / "tokenizer.json").read_text(encoding="utf-8"))
    try:
        bpe = gguf.vocab.BpeVocab(hf_dir)
    except FileNotFoundError:
        raise ConfigError(f"{hf_dir}: GGUF export needs a byte-level BPE tokenizer (tokenizer.json)") from None
    special = {t["id"] for t in tok_json.get("added_tokens", []) if t.get("special")}
    tokens, types = [], []
    for i, (text, _score, kind) in enumerate(bpe.all_tokens()):
        tokens.append(text if isinstance(text, bytes) else text.encode("utf-8"))
        types.append(int(gguf.TokenType.CONTROL if i in special else kind))
    for i in range(len(tokens), n_vocab):  # embedding rows past the tokenizer: llama.cpp's padding tokens
        tokens.append(f"[PAD{i}]".encode())
        types.append(int(gguf.TokenType.UNUSED))
    return _Vocab(tokens, types, _pre_tokenizer(hf_dir, tok_json.get("pre_tokenizer") or {}))


def _pre_tokenizer(hf_dir: Path, pre: dict[str, Any]) -> str:
    """llama.cpp's name for how text is split before BPE (``tokenizer.ggml.pre``)."""
    steps = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    kinds = [s.get("type") for s in steps]
    if kinds == ["ByteLevel"] and steps[0].get("use_regex", True):
        return "gpt-2"
    if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits"):
        return "smollm"
    if kinds == ["Split", "ByteLevel"] and steps[0].get("pattern", {}).get("Regex") == LLAMA3_SPLIT:
        return "llama-bpe"
    raise ConfigError(f"{hf_dir}: tokenizer pre-tokenizer {kinds} is not one this exporter knows; "
                      "use llama.cpp's convert_hf_to_gguf.py on the merged export")


def modelfile(gguf_file: str, tokenizer: Any) -> str:
    """An Ollama Modelfile: the GGUF, the chat template as Ollama's Go template, the stop token.

    Ollama cannot run Jinja; ChatML (SmolLM2, Qwen) is rewritten as its Go-template twin, with the
    default system prompt the Jinja template inserts when a chat has none. Other templates are left to
    Ollama's own detection from the GGUF's ``tokenizer.chat_template``.
    """
    lines = [f"FROM ./{gguf_file}", ""]
    template = getattr(tokenizer, "chat_template", None) or ""
    if "<|im_start|>" in template:
        lines += ['TEMPLATE """{{- range .Messages }}<|im_start|>{{ .Role }}',
                  "{{ .Content }}<|im_end|>", '{{ end }}<|im_start|>assistant', '"""']
        rendered = tokenizer.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False,
                                                 add_generation_prompt=True)
        head = "<|im_start|>system\n"
        if rendered.startswith(head):
            lines.append('SYSTEM """' + rendered[len(head):rendered.index("<|im_end|>")] + '"""')
    if tokenizer.eos_token:
        lines.append(f'PARAMETER stop "{tokenizer.eos_token}"')
    lines.append("PARAMETER temperature 0")  # the study evaluates greedy decoding
    return "\n".join(lines) + "\n"
