"""Train a softmax/softpick pair step by step on identical batches.

Both models start from the same seed (identical initial weights: attention kind has no
parameters), see the same batch at every step (a pure function of seed and step) and use
the same optimiser and schedule; the attention normalisation is the only difference.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import AutoTokenizer

from softpick_bench.models.checkpoint import save_checkpoint
from softpick_bench.models.tiny import build_model, tiny_llama_config
from softpick_bench.train.attention import choose_backend, implementation, train_attention_name
from softpick_bench.train.config import TrainConfig
from softpick_bench.train.determinism import deterministic, weights_sha256
from softpick_bench.train.data import TokenShards, tokenizer_hash, train_batch, val_batches

TOKENIZER_DIR = Path(__file__).resolve().parents[1] / "assets" / "tokenizer"
SAVE_DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up to lr, then cosine to lr * min_lr_ratio at the last step."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(1, cfg.steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    floor = cfg.lr * cfg.min_lr_ratio
    return floor + 0.5 * (cfg.lr - floor) * (1 + math.cos(math.pi * progress))


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig, fused: bool) -> torch.optim.AdamW:
    """AdamW; weight decay on matrices (projections, embeddings), none on norm gains."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), fused=fused)


def lm_loss(model: torch.nn.Module, rows: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy of (B, T + 1) rows, computed in float32."""
    logits = model(input_ids=rows[:, :-1]).logits
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), rows[:, 1:].reshape(-1))


@torch.no_grad()
def validation_loss(model, shards: TokenShards, cfg: TrainConfig, device: str) -> float:
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for rows in val_batches(shards.val, cfg.seq_len, cfg.batch_size, cfg.val_rows, first_token(cfg, shards)):
        rows = rows.to(device)
        with _autocast(cfg, device):
            loss = lm_loss(model, rows)
        total += float(loss) * rows.shape[0]
        count += rows.shape[0]
    model.train(was_training)
    return total / count


def first_token(cfg: TrainConfig, shards: TokenShards) -> int | None:
    """The token every row starts with (bos for `rows: bos_first`), or None for stream windows."""
    return shards.meta["bos_id"] if cfg.rows == "bos_first" else None


def _autocast(cfg: TrainConfig, device: str):
    enabled = device == "cuda" and cfg.autocast == "bf16"
    return torch.autocast(device_type="cuda" if device == "cuda" else "cpu", dtype=torch.bfloat16, enabled=enabled)


@dataclass
class SideState:
    kind: str
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    backend: str
    backend_why: str
    seconds: float = 0.0
    recent: list[float] = field(default_factory=list)  # train losses of the last steps
    val_losses: list[tuple[int, float]] = field(default_factory=list)


class JsonlLog:
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.fh = path.open("w")

    def write(self, **record) -> None:
        self.fh.write(json.dumps(record) + "\n")
        self.fh.flush()


def train_pair(cfg: TrainConfig, out_dir: Path, device: str = "cpu", data_dir: Path | None = None) -> dict:
    """Train every kind of `cfg` on the same batches; save checkpoints; return the summary."""
    with deterministic(device) as settings:
        return _train_pair(cfg, Path(out_dir), device, data_dir, settings)


def _train_pair(cfg: TrainConfig, out_dir: Path, device: str, data_dir: Path | None, settings: dict) -> dict:
    shards = TokenShards.open(Path(data_dir or cfg.data))
    tok_hash = tokenizer_hash(TOKENIZER_DIR / "tokenizer.json")
    if shards.meta.get("tokenizer_sha256_16") != tok_hash:
        raise ValueError(f"shards were built with tokenizer {shards.meta.get('tokenizer_sha256_16')}, not {tok_hash}")
    tokenizer = AutoTokenizer.from_pretrained(str(TOKENIZER_DIR))
    if shards.meta.get("documents_joined_with") != "bos doc eos":
        raise ValueError(f"{data_dir or cfg.data}: shards of an older format; rebuild with scripts/prepare_corpus.py")
    shape = cfg.model
    model_config = tiny_llama_config(
        vocab_size=shards.meta["vocab_size"], hidden=shape.hidden, layers=shape.layers, heads=shape.heads,
        kv_heads=shape.kv_heads or shape.heads, intermediate=shape.intermediate,
        max_positions=max(shape.max_positions, cfg.seq_len),
    )
    log = JsonlLog(out_dir / "train_log.jsonl")
    sides: list[SideState] = []
    backend, why = choose_backend(cfg.kinds, device, cfg.attention_backend)
    attention = implementation(backend, shape.hidden // shape.heads, cfg.seq_len)
    log.write(event="determinism", attention=attention, **settings)
    for kind in cfg.kinds:
        model = build_model(model_config, kind, seed=cfg.seed).to(device).train()
        model.config._attn_implementation = train_attention_name(kind, backend)
        opt = make_optimizer(model, cfg, fused=device == "cuda")
        sides.append(SideState(kind, model, opt, backend, why))
        log.write(event="setup", kind=kind, backend=backend, why=why,
                  params=sum(p.numel() for p in model.parameters()))
        print(f"[{kind}] attention backend: {backend} ({why})", flush=True)
    track_rows = None
    if cfg.track_analysis_samples:
        from softpick_bench.eval.analysis import analyse, sample_sequences, source_documents

        docs, _ = source_documents("corpus-heldout")
        track_rows = sample_sequences(tokenizer, docs, cfg.track_analysis_samples, cfg.track_analysis_seq_len, seed=0)
    tokens_per_step = cfg.batch_size * cfg.seq_len
    window = max(1, min(50, cfg.steps // 20))
    first = first_token(cfg, shards)
    start, steps_done, truncated = time.time(), 0, False
    for step in range(cfg.steps):
        rows = train_batch(shards.train, step, cfg.batch_size, cfg.seq_len, cfg.seed, first).to(device)
        lr = lr_at(step, cfg)
        for side in sides:
            t0 = time.perf_counter()
            for group in side.optimizer.param_groups:
                group["lr"] = lr
            with _autocast(cfg, device):
                loss = lm_loss(side.model, rows)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(side.model.parameters(), cfg.grad_clip)
            side.optimizer.step()
            side.optimizer.zero_grad(set_to_none=True)
            value = float(loss.detach())  # syncs, so the timing below is the step's
            side.seconds += time.perf_counter() - t0
            if not math.isfinite(value):
                raise FloatingPointError(f"[{side.kind}] loss is {value} at step {step}")
            side.recent = (side.recent + [value])[-window:]
            if step % cfg.log_every == 0 or step == cfg.steps - 1:
                log.write(event="train", kind=side.kind, step=step, loss=value, lr=lr, grad_norm=float(grad_norm),
                          tokens=(step + 1) * tokens_per_step, tok_per_s=(step + 1) * tokens_per_step / side.seconds)
        steps_done = step + 1
        if step % cfg.log_every == 0:
            print(f"step {step} lr {lr:.2e} " + " ".join(f"{s.kind} {s.recent[-1]:.4f}" for s in sides)
                  + f" ({time.time() - start:.0f} s)", flush=True)
        last = step == cfg.steps - 1
        if cfg.time_limit_s is not None and time.time() - start > cfg.time_limit_s and not last:
            truncated, last = True, True
        if (cfg.eval_every and (step + 1) % cfg.eval_every == 0) or last:
            for side in sides:
                val = validation_loss(side.model, shards, cfg, device)
                side.val_losses.append((step + 1, val))
                log.write(event="val", kind=side.kind, step=step + 1, val_loss=val)
                if track_rows is not None:
                    side.model.eval()
                    values, _ = analyse(side.model, side.kind, track_rows, device)
                    side.model.train()
                    log.write(event="analysis", kind=side.kind, step=step + 1, seq_len=cfg.track_analysis_seq_len,
                              n_samples=cfg.track_analysis_samples, **values)
                    print(f"step {step + 1} {side.kind} analysis: "
                          + " ".join(f"{k}={v:.4g}" for k, v in values.items()), flush=True)
            print(f"step {step + 1} val " + " ".join(f"{s.kind} {s.val_losses[-1][1]:.4f}" for s in sides), flush=True)
        if truncated:
            print(f"time limit {cfg.time_limit_s} s reached: stopped after {steps_done} steps", flush=True)
            break
    summary = {"config": cfg.to_dict(), "attention": attention, "determinism": settings,
               "steps_done": steps_done, "truncated": truncated,
               "tokens_seen": steps_done * tokens_per_step, "wall_s": time.time() - start, "device": device,
               "gpu": torch.cuda.get_device_name() if device == "cuda" else None, "data": shards.meta, "sides": {}}
    for side in sides:
        side.model.config._attn_implementation = side.kind  # the registered kind: evaluates like any checkpoint
        side.model.to(SAVE_DTYPES[cfg.save_dtype]).eval()
        info = {
            "final_train_loss": sum(side.recent) / len(side.recent),
            "final_train_loss_window": len(side.recent),
            "final_val_loss": side.val_losses[-1][1],
            "val_curve": side.val_losses,
            "train_backend": side.backend,
            "train_backend_why": side.backend_why,
            "train_seconds": side.seconds,
            "tok_per_s": steps_done * tokens_per_step / side.seconds,
            "params": sum(p.numel() for p in side.model.parameters()),
        }
        summary["sides"][side.kind] = info
        save_checkpoint(side.model, tokenizer, out_dir / side.kind, side.kind, extra={"training": {
            "recipe": cfg.name, "seed": cfg.seed, "steps": steps_done, "tokens": steps_done * tokens_per_step,
            "train_attention_backend": side.backend, "train_attention": attention, "determinism": settings,
            "final_train_loss": info["final_train_loss"],
            "final_val_loss": info["final_val_loss"], "data": shards.meta.get("train_files"),
        }})
        (out_dir / side.kind / "train_config.json").write_text(json.dumps(cfg.recipe_dict(), indent=2) + "\n")
        info["weights_sha256"] = weights_sha256(out_dir / side.kind)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
