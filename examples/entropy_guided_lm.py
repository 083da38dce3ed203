"""Entropy-guided attention on a small character-level language model trained on Python's own source files.

Three decoder-only transformers are trained on the standard library's source text (no download):

1. ``baseline``: pre-LayerNorm blocks;
2. ``ln_free``: the same without any LayerNorm (the setting of Jha & Reagen, 2025, where entropy collapse in deep
   layers and entropic overload in early layers appear);
3. ``ln_free_entropy``: LayerNorm-free + :class:`~lightning_info.callbacks.EntropyGuidedAttentionCallback`
   (learnable per-head temperature + entropy regularizer).

Each run logs ``attn_entropy/...`` keys (``AttentionEntropyMonitor``) and ``val_loss`` to W&B offline under ``--out``
(CSV when wandb is missing). At the end the script writes ``entropy_per_layer.png`` (mean normalised entropy
:math:`H / \\log(i + 1)` per layer, the paper's overload/collapse picture) and ``results.json``.

Run: ``python examples/entropy_guided_lm.py --out runs/entropy_guided_lm`` (a few minutes on 2 cores) or ``--fast``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer, seed_everything
from lightning.pytorch.loggers import CSVLogger, Logger
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_info.attention.functional import head_entropy_summary
from lightning_info.callbacks import AttentionEntropyMonitor, EntropyGuidedAttentionCallback
from lightning_info.callbacks.attention_entropy_monitor import _extract_attention_inputs, attention_entropy_of_call
from lightning_info.utils import ActivationCapture

CONFIGS = ("baseline", "ln_free", "ln_free_entropy")
SOURCES = ("argparse.py", "textwrap.py", "inspect.py", "typing.py", "dataclasses.py", "functools.py", "pathlib.py")


def stdlib_text(num_chars: int) -> bytes:
    """The first ``num_chars`` bytes of a fixed list of standard-library modules (ASCII-only source)."""
    root = Path(os.__file__).parent
    text = b"".join((root / name).read_bytes() for name in SOURCES if (root / name).exists())
    return text[:num_chars]


def windows(text: bytes, length: int, stride: int) -> TensorDataset:
    data = torch.tensor(list(text), dtype=torch.long)
    starts = torch.arange(0, len(data) - length - 1, stride)
    idx = starts[:, None] + torch.arange(length + 1)
    chunks = data[idx]
    return TensorDataset(chunks[:, :-1], chunks[:, 1:])


class Block(nn.Module):
    def __init__(self, d_model: int, heads: int, layer_norm: bool) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model) if layer_norm else nn.Identity()
        self.attn = nn.MultiheadAttention(d_model, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(d_model) if layer_norm else nn.Identity()
        self.ffn = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model))

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, h, h, attn_mask=mask, need_weights=False, is_causal=True)[0]
        return x + self.ffn(self.norm2(x))


class CharLM(LightningModule):
    """Byte-level decoder-only transformer; ``layer_norm=False`` removes every LayerNorm."""

    def __init__(self, d_model: int = 128, heads: int = 4, layers: int = 4, context: int = 64, layer_norm: bool = True,
                 lr: float = 2e-3) -> None:  # fmt: skip
        super().__init__()
        self.save_hyperparameters()
        self.embed = nn.Embedding(256, d_model)
        self.pos = nn.Parameter(torch.randn(context, d_model) * 0.02)
        self.blocks = nn.ModuleList(Block(d_model, heads, layer_norm) for _ in range(layers))
        self.norm = nn.LayerNorm(d_model) if layer_norm else nn.Identity()
        self.head = nn.Linear(d_model, 256)
        self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(context), persistent=False)

    def forward(self, tokens: Tensor) -> Tensor:
        n = tokens.shape[1]
        x = self.embed(tokens) + self.pos[:n]
        for block in self.blocks:
            x = block(x, self.mask[:n, :n])
        return self.head(self.norm(x))

    def _loss(self, batch: tuple[Tensor, Tensor]) -> Tensor:
        x, y = batch
        return nn.functional.cross_entropy(self(x).flatten(0, 1), y.flatten())

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        loss = self._loss(batch)
        self.log("train_loss", loss, on_step=True, on_epoch=False)
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self.log("val_loss", self._loss(batch), on_epoch=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=self.hparams["lr"], weight_decay=0.01)


@torch.no_grad()
def normalized_entropy_per_layer(model: CharLM, tokens: Tensor) -> list[list[float]]:
    """Mean normalised entropy of every head of every layer on ``tokens`` (layer x head)."""
    names = [f"blocks.{i}.attn" for i in range(len(model.blocks))]
    model.eval()
    with ActivationCapture(model, names, extract=_extract_attention_inputs) as capture:
        model(tokens)
    modules = dict(model.named_modules())
    result = []
    for name in names:
        entropy, max_entropy, rows = attention_entropy_of_call(modules[name], capture.captured[name], 64, None)
        result.append(head_entropy_summary(entropy, max_entropy, rows)[1].tolist())
    return result


def make_logger(out: Path, name: str, kind: str) -> Logger:
    if kind == "wandb":
        try:
            import wandb  # noqa: F401
            from lightning.pytorch.loggers import WandbLogger

            return WandbLogger(name=name, save_dir=str(out), project="entropy-guided-lm", offline=True)
        except ImportError:
            pass
    return CSVLogger(str(out), name=name)


def run(config: str, args: argparse.Namespace, train: TensorDataset, val: TensorDataset, out: Path) -> dict[str, Any]:
    seed_everything(args.seed, workers=True)
    size = {"d_model": 32, "heads": 2, "layers": 2} if args.fast else {"d_model": 128, "heads": 4, "layers": 4}
    model = CharLM(**size, context=args.context, layer_norm=config == "baseline")
    callbacks: list[Any] = [AttentionEntropyMonitor(every_n_steps=max(1, args.steps // 10), max_samples=8)]
    if config == "ln_free_entropy":
        callbacks.append(EntropyGuidedAttentionCallback(weight=args.entropy_weight, target_fraction=0.5, tolerance=0.2))
    logger = make_logger(out, config, args.logger)
    trainer = Trainer(
        accelerator="cpu", devices=1, max_steps=args.steps, logger=logger, callbacks=callbacks,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        log_every_n_steps=max(1, args.steps // 20), val_check_interval=None, check_val_every_n_epoch=None,
        num_sanity_val_steps=0, gradient_clip_val=1.0, default_root_dir=str(out),
    )  # fmt: skip
    train_loader = DataLoader(train, batch_size=args.batch_size, shuffle=True)
    val_loader = DataLoader(val, batch_size=256)
    trainer.fit(model, train_loader)
    val_loss = trainer.validate(model, val_loader, verbose=False)[0]["val_loss"]
    if type(logger).__name__ == "WandbLogger":
        logger.experiment.finish()
    entropy = normalized_entropy_per_layer(model, val.tensors[0][:64])
    return {"val_loss": float(val_loss), "normalized_entropy": entropy}


def plot(results: dict[str, dict[str, Any]], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 4), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for config, result in results.items():
        per_layer = torch.tensor(result["normalized_entropy"])
        layers = torch.arange(1, per_layer.shape[0] + 1)
        axes.plot(layers, per_layer.mean(1), marker="o", label=f"{config} (val loss {result['val_loss']:.3f})")
        for head in range(per_layer.shape[1]):
            axes.scatter(layers, per_layer[:, head], s=8, alpha=0.4, color=axes.lines[-1].get_color())
    axes.set_xlabel("layer")
    axes.set_ylabel("mean normalised attention entropy  H / log(i+1)")
    axes.set_ylim(0, 1)
    axes.legend(fontsize=7)
    axes.set_title("attention entropy per layer (dots: heads)")
    figure.tight_layout()
    figure.savefig(path)


def main(argv: list[str] | None = None) -> dict[str, dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/entropy_guided_lm"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fast", action="store_true", help="tiny model, a few steps (seconds)")
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps per configuration")
    parser.add_argument("--logger", choices=("wandb", "csv"), default="wandb", help="wandb falls back to CSV")
    parser.add_argument("--entropy-weight", type=float, default=0.1, help="lambda of the entropy regularizer")
    args = parser.parse_args(argv)
    args.context = 32 if args.fast else 64
    args.batch_size = 16 if args.fast else 32
    args.steps = args.steps or (10 if args.fast else 200)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    text = stdlib_text(40_000 if args.fast else 400_000)
    split = int(0.9 * len(text))
    train = windows(text[:split], args.context, args.context // 2)
    val = windows(text[split:], args.context, args.context)
    args.out.mkdir(parents=True, exist_ok=True)
    results = {config: run(config, args, train, val, args.out) for config in CONFIGS}
    plot(results, args.out / "entropy_per_layer.png")
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    for config, result in results.items():
        per_layer = [round(sum(h) / len(h), 3) for h in result["normalized_entropy"]]
        print(f"{config:<16} val_loss {result['val_loss']:.4f}  (nats/char; uniform {math.log(256):.2f})  "
              f"normalised entropy per layer {per_layer}")  # fmt: skip
    return results


if __name__ == "__main__":
    main()
