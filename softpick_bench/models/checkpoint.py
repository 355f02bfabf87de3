"""Load a checkpoint (local folder or hub id) into a transformers causal LM, kind resolved once.

Two formats:
- the project's format: a transformers Llama-style folder whose config.json carries
  `"attention_kind"` (softmax | softpick | rectified | softmax1);
- the paper's flash-linear-attention "transformer" folders (model_type "transformer"),
  whose `attn_impl` string decides the kind and whose keys are renamed exactly.

A plain transformers checkpoint without `attention_kind` is softmax, which is what it
was trained with; an explicit `attention=` override wins over both and is recorded.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM, PreTrainedTokenizerBase

from softpick_bench.errors import CheckpointError
from softpick_bench.models import fla, weights
from softpick_bench.models.attention import ATTENTION_KINDS, register_attention_kinds
from softpick_bench.models.names import DTYPE_NAMES, HUB_ID as _HUB_ID

log = logging.getLogger(__name__)

KIND_FIELD = "attention_kind"
DTYPES = {name: getattr(torch, name) for name in DTYPE_NAMES}
_FINGERPRINT_SUFFIXES = (".json", ".safetensors", ".bin", ".model", ".txt")


@dataclass
class LoadedModel:
    """A model ready to evaluate, with everything a result row must say about it."""

    model: torch.nn.Module
    tokenizer: PreTrainedTokenizerBase
    kind: str
    source: str
    format: str  # "llama" | "fla"
    fingerprint: str
    kind_source: str  # where the kind came from: config field, attn_impl, default, override
    info: dict = field(default_factory=dict)


def resolve_folder(source: str | Path) -> Path:
    """A local folder as is; a hub id downloaded (or read from the local hub cache)."""
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise CheckpointError(f"checkpoint {source!r} is a file; give the folder that holds config.json")
    if not _HUB_ID.match(str(source)):
        raise CheckpointError(
            f"checkpoint {source!r} is neither an existing folder nor a hub id of the form 'owner/name'"
        )
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(str(source), allow_patterns=[f"*{s}" for s in _FINGERPRINT_SUFFIXES]))
    except Exception as exc:  # network, auth, missing repo: say which checkpoint and why
        raise CheckpointError(f"checkpoint {source!r}: could not fetch it from the hub: {exc}") from exc


def read_config(folder: Path) -> dict:
    cfg = folder / "config.json"
    if not cfg.is_file():
        raise CheckpointError(f"checkpoint {folder}: no config.json in the folder")
    try:
        return json.loads(cfg.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"checkpoint {folder}: config.json is not valid JSON: {exc}") from exc


def fingerprint(folder: Path, extra: str = "") -> str:
    """sha256 over the names and bytes of the files that define the model and tokenizer."""
    h = hashlib.sha256(extra.encode())
    for f in sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(_FINGERPRINT_SUFFIXES)):
        h.update(f.name.encode())
        with f.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


def resolve_kind(config: dict, where: str, override: str | None) -> tuple[str, str]:
    """(kind, where it came from). The one place an attention kind is decided."""
    if override is not None:
        if override not in ATTENTION_KINDS:
            raise CheckpointError(f"{where}: attention {override!r} unknown; valid: {', '.join(ATTENTION_KINDS)}")
        return override, "override"
    if fla.is_fla_config(config):
        return fla.fla_attention_kind(config, where), f"attn_impl={config.get('attn_impl')}"
    kind = config.get(KIND_FIELD)
    if kind is None:
        return "softmax", f"default (no {KIND_FIELD!r} in config.json)"
    if kind not in ATTENTION_KINDS:
        raise CheckpointError(
            f"{where}: config.json {KIND_FIELD}={kind!r} unknown; valid: {', '.join(ATTENTION_KINDS)}"
        )
    return kind, f"config.json {KIND_FIELD}"


def architecture(folder: Path, where: str) -> dict:
    """The transformers config of a checkpoint as a dict (fla configs converted), no weights read."""
    config = read_config(folder)
    if fla.is_fla_config(config):
        return fla.fla_to_llama_config(config, where).to_dict()
    try:
        return AutoConfig.from_pretrained(str(folder)).to_dict()
    except Exception as exc:
        raise CheckpointError(f"checkpoint {where}: transformers cannot read its config: {exc}") from exc


def _load_state_dict(folder: Path) -> dict:
    from safetensors.torch import load_file

    state = {}
    for f in weights.weight_files(folder):
        try:
            if f.suffix == ".safetensors":
                state.update(load_file(str(f)))
            else:
                state.update(torch.load(f, map_location="cpu", weights_only=True))
        except Exception as exc:  # the header check passed, so this is damage inside the data
            raise CheckpointError(f"{f}: weights do not load: {type(exc).__name__}: {str(exc)[:300]}") from None
    return state


def _load_fla(folder: Path, config: dict, kind: str, dtype: torch.dtype) -> torch.nn.Module:
    where = str(folder)
    llama_config = fla.fla_to_llama_config(config, where)
    llama_config._attn_implementation = kind
    model = LlamaForCausalLM(llama_config)
    state = fla.convert_state_dict(_load_state_dict(folder), where)
    if llama_config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not (llama_config.tie_word_embeddings and k == "lm_head.weight")]
    if missing or unexpected:
        raise CheckpointError(f"{where}: converted weights do not fit: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return model.to(dtype)


def vocab_digest(tokenizer) -> str:
    """sha256 (16 hex) of a tokenizer's vocabulary: token ids only compare under the same digest."""
    return hashlib.sha256(repr(sorted(tokenizer.get_vocab().items())).encode()).hexdigest()[:16]


def load_tokenizer(folder: Path) -> PreTrainedTokenizerBase:
    try:
        return AutoTokenizer.from_pretrained(str(folder))
    except Exception as exc:
        raise CheckpointError(f"checkpoint {folder}: tokenizer does not load: {exc}") from exc


def load_checkpoint(
    source: str | Path,
    dtype: str = "float32",
    device: str = "cpu",
    attention: str | None = None,
) -> LoadedModel:
    """Load model and tokenizer with the checkpoint's attention kind in force."""
    register_attention_kinds()
    if dtype not in DTYPES:
        raise CheckpointError(f"dtype {dtype!r} unknown; valid: {', '.join(DTYPES)}")
    folder = resolve_folder(source)
    config = read_config(folder)
    where = str(source)
    kind, kind_source = resolve_kind(config, where, attention)
    torch_dtype = DTYPES[dtype]
    files = weights.check_weights(folder, config, where)  # never a random initialisation of a missing tensor
    if fla.is_fla_config(config):
        model, fmt = _load_fla(folder, config, kind, torch_dtype), "fla"
    else:
        try:
            model = AutoModelForCausalLM.from_pretrained(str(folder), attn_implementation=kind, dtype=torch_dtype)
        except Exception as exc:
            raise CheckpointError(f"checkpoint {where}: transformers could not load it: {exc}") from exc
        fmt = "llama"
    weights.check_finite(model, files, where)
    if model.config._attn_implementation != kind:
        raise CheckpointError(f"{where}: model runs {model.config._attn_implementation!r}, expected {kind!r}")
    model.eval().to(device)
    tok = load_tokenizer(folder)
    info = {
        "params": sum(p.numel() for p in model.parameters()),
        "layers": model.config.num_hidden_layers,
        "hidden": model.config.hidden_size,
        "heads": model.config.num_attention_heads,
        "kv_heads": model.config.num_key_value_heads,
    }
    log.info("loaded %s (%s format, %s attention from %s)", where, fmt, kind, kind_source)
    return LoadedModel(
        model=model,
        tokenizer=tok,
        kind=kind,
        source=where,
        format=fmt,
        fingerprint=fingerprint(folder, extra=f"attention={kind}"),
        kind_source=kind_source,
        info=info,
    )


def save_checkpoint(
    model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, folder: Path, kind: str, extra: dict | None = None
) -> None:
    """Write the project's format: a transformers folder with `attention_kind` in config.json."""
    if kind not in ATTENTION_KINDS:
        raise CheckpointError(f"attention kind {kind!r} unknown; valid: {', '.join(ATTENTION_KINDS)}")
    folder.mkdir(parents=True, exist_ok=True)
    setattr(model.config, KIND_FIELD, kind)
    for key, value in (extra or {}).items():
        setattr(model.config, key, value)
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
