"""Weight files checked against the config without reading the weights.

transformers fills a tensor missing from the files with random values (a warning, not an
error) and reports a mis-shaped one with a generic line; here every tensor the config
implies is looked up in the files' headers (safetensors headers; a .bin through the
weights-only unpickler onto the meta device, so no data is read), and a missing,
unexpected or mis-shaped tensor, a truncated or unreadable file, is a CheckpointError
naming the tensor and the file. Non-finite values can only be seen in the data: the
loader checks them once the weights are in memory (`check_finite`).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, LlamaForCausalLM

from softpick_bench.errors import CheckpointError
from softpick_bench.models import fla

INDEX_NAMES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")


def weight_files(folder: Path) -> list[Path]:
    """The weight files of a checkpoint: the shards its index lists, else every *.safetensors, else *.bin."""
    for index_name in INDEX_NAMES:
        index = folder / index_name
        if index.is_file():
            try:
                shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
                raise CheckpointError(f"{index}: not a valid weight index ({type(exc).__name__}: {exc})") from None
            missing = [s for s in shards if not (folder / s).is_file()]
            if missing:
                raise CheckpointError(f"{index}: lists shard {missing[0]!r}, which is not in {folder}")
            return [folder / s for s in shards]
    files = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
    if not files:
        raise CheckpointError(f"checkpoint {folder}: no *.safetensors or *.bin weight files")
    return files


def _bin_reason(exc: Exception) -> str:
    """The one informative line of torch's long weights-only refusal."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    reason = next((line for line in lines if "WeightsUnpickler error" in line), lines[0] if lines else "")
    return reason[:300]


def file_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape from one file's header (safetensors) or meta-device unpickling (.bin)."""
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                return {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}
        except Exception as exc:  # SafetensorError: header too small, incomplete metadata (truncated), ...
            raise CheckpointError(f"{path}: not a readable safetensors file: {exc}") from None
    try:
        state = torch.load(path, map_location="meta", weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"{path}: the weights-only loader refuses this file (a pickle that holds more than tensors is never "
            f"unpickled here; convert it to safetensors): {_bin_reason(exc)}"
        ) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: holds {type(state).__name__}, not a mapping of tensor names to tensors")
    return {name: tuple(t.shape) for name, t in state.items()}


def _expected(config: dict, folder: Path, where: str) -> tuple[dict[str, tuple[int, ...]], set[str]]:
    """(name -> shape the config implies, names that may be absent), from a model built on the meta device."""
    if fla.is_fla_config(config):
        llama = fla.fla_to_llama_config(config, where)
        with torch.device("meta"):
            model = LlamaForCausalLM(llama)
    else:
        try:
            cfg = AutoConfig.from_pretrained(str(folder))
            with torch.device("meta"):
                model = AutoModelForCausalLM.from_config(cfg)
        except Exception as exc:
            raise CheckpointError(f"checkpoint {where}: transformers cannot build a model from its config: {exc}") \
                from None
    shapes = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    optional = {"lm_head.weight"} if model.config.tie_word_embeddings else set()
    return shapes, optional


def check_weights(folder: Path, config: dict, where: str) -> dict[str, Path]:
    """Raise CheckpointError on any tensor missing, unexpected or mis-shaped; return tensor name -> file.

    Names are the loaded model's (an fla checkpoint's keys are converted first).
    """
    expected, optional = _expected(config, folder, where)
    found: dict[str, tuple[tuple[int, ...], Path, str]] = {}
    for path in weight_files(folder):
        for name, shape in file_shapes(path).items():
            model_name = fla.fla_to_llama_key(name, f"{path}") if fla.is_fla_config(config) else name
            if model_name in found:
                raise CheckpointError(f"{path}: tensor {name!r} is also in {found[model_name][1]}")
            found[model_name] = (shape, path, name)
    for model_name, (shape, path, name) in sorted(found.items()):
        if model_name not in expected:
            raise CheckpointError(
                f"{path}: unexpected tensor {name!r} {list(shape)}: the config ({folder / 'config.json'}) "
                "has no parameter of that name"
            )
        if shape != expected[model_name]:
            raise CheckpointError(
                f"{path}: tensor {name!r} has shape {list(shape)}, but the config ({folder / 'config.json'}) "
                f"implies {list(expected[model_name])}"
            )
    missing = sorted(set(expected) - set(found) - optional)
    if missing:
        files = ", ".join(str(p) for p in weight_files(folder))
        raise CheckpointError(
            f"{files}: tensor {missing[0]!r} is missing ({len(missing)} missing in all); a missing tensor "
            "would be randomly initialised, so the checkpoint is refused"
        )
    return {model_name: path for model_name, (_, path, _) in found.items()}


def check_finite(model: torch.nn.Module, files: dict[str, Path], where: str) -> None:
    """Raise CheckpointError naming the first parameter with NaN or inf values, and its file."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            bad = int((~torch.isfinite(param)).sum())
            if bad:
                file = files.get(name, where)
                raise CheckpointError(
                    f"{file}: tensor {name!r} has {bad} non-finite value(s) (NaN or inf) as loaded; a model with them "
                    "gives no meaningful number"
                )
