"""Training recipes: one YAML file per pair under configs/train/ (micro.yaml, demo.yaml)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import yaml

ROW_LAYOUTS = ("stream", "bos_first")


@dataclass
class ModelShape:
    hidden: int = 128
    layers: int = 4
    heads: int = 4
    kv_heads: int | None = None  # None = full multi-head attention, as the paper
    intermediate: int = 352
    max_positions: int = 1024


@dataclass
class TrainConfig:
    name: str = "micro"
    kinds: tuple[str, ...] = ("softmax", "softpick")  # both sides, trained step by step together
    model: ModelShape = field(default_factory=ModelShape)
    seq_len: int = 256
    rows: str = "stream"  # stream | bos_first (see softpick_bench/train/data.py)
    batch_size: int = 32
    steps: int = 1000
    lr: float = 2e-3
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    warmup_steps: int = 100
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    seed: int = 1234
    eval_every: int = 250
    val_rows: int = 256  # validation rows of seq_len tokens (fixed, from the held-out file)
    log_every: int = 25
    track_analysis_samples: int = 32  # analysis metrics at every evaluation (0 = off): sinks over training
    track_analysis_seq_len: int = 64
    autocast: str = "bf16"  # bf16 on CUDA; CPU always runs float32
    attention_backend: str = "auto"  # auto | kernel | reference | sdpa: one path for every kind (train/attention.py)
    save_dtype: str = "bfloat16"
    time_limit_s: float | None = None  # safety stop (logged as truncated), not part of the recipe
    data: str = ".carry/corpus"

    @classmethod
    def from_yaml(cls, path: Path, settings: list[str] = (), **overrides) -> TrainConfig:
        """The recipe in `path`, then `settings` ("key=value", "model.key=value"), then `overrides`."""
        raw = yaml.safe_load(Path(path).read_text()) or {}
        for setting in settings:
            apply_setting(raw, setting, where=f"{path}: --set {setting!r}")
        raw.update({k: v for k, v in overrides.items() if v is not None})
        known = {f.name for f in fields(cls)}
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f"{path}: unknown training option(s) {sorted(unknown)}; valid: {sorted(known)}")
        model = raw.pop("model", {}) or {}
        shape_known = {f.name for f in fields(ModelShape)}
        if set(model) - shape_known:
            raise ValueError(f"{path}: unknown model option(s) {sorted(set(model) - shape_known)}")
        if "kinds" in raw:
            raw["kinds"] = tuple(raw["kinds"])
        if raw.get("rows", "stream") not in ROW_LAYOUTS:
            raise ValueError(f"{path}: rows {raw['rows']!r} is not one of {list(ROW_LAYOUTS)}")
        return cls(model=ModelShape(**model), **raw)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["kinds"] = list(self.kinds)
        return d

    def recipe_dict(self) -> dict:
        """What defines the checkpoints (saved beside them): the run's safety stop is not part of it."""
        return {k: v for k, v in self.to_dict().items() if k != "time_limit_s"}


def apply_setting(raw: dict, setting: str, where: str) -> None:
    """Set one "key=value" (value parsed as YAML; "model.hidden=512" reaches the model shape)."""
    key, sep, value = setting.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"{where}: expected KEY=VALUE, e.g. weight_decay=0.5 or model.layers=8")
    *parents, leaf = key.strip().split(".")
    target = raw
    for name in parents:
        if name != "model":
            raise ValueError(f"{where}: only model.* options are nested, not {name!r}")
        target = target.setdefault(name, {}) or {}
        raw[name] = target
    target[leaf] = yaml.safe_load(value)
