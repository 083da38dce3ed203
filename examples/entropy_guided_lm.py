"""Entropy-guided attention on a small character-level language model trained on Python's own source files.

Three decoder-only transformers (pre-LN blocks, GELU feed-forward) are trained on standard-library source text (no
download), with the same seed, data and steps:

1. ``baseline``: with LayerNorm;
2. ``ln_free``: without any LayerNorm (the paper's "SM + G" setting, Jha & Reagen 2025, where entropic overload in
   early layers and entropy collapse in deep layers appear);
3. ``ln_free_entropy``: LayerNorm-free + :class:`~lightning_info.callbacks.EntropyGuidedAttentionCallback`
   (the paper's learnable temperature per head and query position, plus its entropy regularizer).

Runs 1-2 log ``attn_entropy/...`` keys with :class:`~lightning_info.callbacks.AttentionEntropyMonitor`, run 3 with
the callback itself, and all ``val_loss``, to W&B offline under ``--out`` (CSV when wandb is missing). At the end the
script measures every head's mean normalised entropy :math:`H / \\log(i + 1)` on validation text, writes the figure
``entropy_per_layer.png`` (entropy per layer for the three runs, the paper's overload/collapse picture),
``results.json`` and ``results.md``.

Run: ``python examples/entropy_guided_lm.py --out runs/entropy_guided_lm`` (a few minutes on 2 cores; on a busy
machine ``OMP_NUM_THREADS=1`` is much faster; ``--fast`` for seconds). With LightningCLI (run 3):
``python examples/entropy_guided_lm.py fit --config examples/configs/entropy_guided_lm.yaml``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningDataModule, LightningModule, Trainer, seed_everything
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import CSVLogger, Logger
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_info.callbacks import AttentionEntropyMonitor, EntropyGuidedAttentionCallback
from lightning_info.callbacks.attention_entropy_monitor import measure_attention_entropy

CONFIGS = ("baseline", "ln_free", "ln_free_entropy")
ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU}
SOURCES = ("argparse.py", "textwrap.py", "inspect.py", "typing.py", "dataclasses.py", "functools.py", "pathlib.py")


def stdlib_text(num_chars: int) -> bytes:
    """The first ``num_chars`` bytes of a fixed list of standard-library modules (the interpreter's own source)."""
    root = Path(os.__file__).parent
    text = b"".join((root / name).read_bytes() for name in SOURCES if (root / name).exists())
    if len(text) < 4 * 1024:
        raise RuntimeError(f"found only {len(text)} bytes of standard-library source under {root}")
    return text[:num_chars]


def windows(text: bytes, length: int, stride: int) -> TensorDataset:
    """(input, next-byte target) windows of ``length`` bytes every ``stride`` bytes."""
    data = torch.tensor(list(text), dtype=torch.long)
    starts = torch.arange(0, len(data) - length - 1, stride)
    chunks = data[starts[:, None] + torch.arange(length + 1)]
    return TensorDataset(chunks[:, :-1], chunks[:, 1:])


class StdlibText(LightningDataModule):
    """Byte windows of standard-library source: the first 90% for training (half-overlapping), the rest validation."""

    def __init__(self, num_chars: int = 400_000, context: int = 64, batch_size: int = 32, seed: int = 0) -> None:
        super().__init__()
        self.num_chars, self.context, self.batch_size, self.seed = num_chars, context, batch_size, seed
        self.train: TensorDataset | None = None
        self.val: TensorDataset | None = None

    def setup(self, stage: str | None = None) -> None:
        text = stdlib_text(self.num_chars)
        split = int(0.9 * len(text))
        self.train = windows(text[:split], self.context, self.context // 2)
        self.val = windows(text[split:], self.context, self.context)

    def train_dataloader(self) -> DataLoader:
        assert self.train is not None, "call setup() first"
        generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(self.train, batch_size=self.batch_size, shuffle=True, generator=generator)

    def val_dataloader(self) -> DataLoader:
        assert self.val is not None, "call setup() first"
        return DataLoader(self.val, batch_size=256)


class Block(nn.Module):
    """Pre-LN decoder block (Eq. 1 of the paper); ``layer_norm=False`` replaces both LayerNorms by the identity."""

    def __init__(self, d_model: int, heads: int, layer_norm: bool, activation: str = "gelu") -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        self.norm1 = nn.LayerNorm(d_model) if layer_norm else nn.Identity()
        self.attn = nn.MultiheadAttention(d_model, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(d_model) if layer_norm else nn.Identity()
        self.ffn = nn.Sequential(
            nn.Linear(d_model, 4 * d_model), ACTIVATIONS[activation](), nn.Linear(4 * d_model, d_model)
        )

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, h, h, attn_mask=mask, need_weights=False, is_causal=True)[0]
        return x + self.ffn(self.norm2(x))


class CharLM(LightningModule):
    """Byte-level decoder-only transformer; ``layer_norm=False`` removes every LayerNorm (the final one too),
    ``activation`` is the feed-forward non-linearity (``"gelu"`` or ``"relu"``)."""

    def __init__(
        self,
        d_model: int = 64,
        heads: int = 4,
        layers: int = 4,
        context: int = 64,
        layer_norm: bool = True,
        lr: float = 2e-3,
        activation: str = "gelu",
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.embed = nn.Embedding(256, d_model)
        self.pos = nn.Parameter(torch.randn(context, d_model) * 0.02)
        self.blocks = nn.ModuleList(Block(d_model, heads, layer_norm, activation) for _ in range(layers))
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
    """Mean normalised entropy of every head of every layer on ``tokens`` (layer x head), chunked, no N x N map."""
    model.eval()
    names = [f"blocks.{i}.attn" for i in range(len(model.blocks))]
    summaries = measure_attention_entropy(model, lambda: model(tokens), names, chunk_size=64)
    return [summaries[name][1].tolist() for name in names]


def make_logger(out: Path, name: str, kind: str) -> Logger:
    if kind == "wandb":
        try:
            import wandb  # noqa: F401
            from lightning.pytorch.loggers import WandbLogger

            return WandbLogger(name=name, save_dir=str(out), project="entropy-guided-lm", offline=True)
        except ImportError:
            pass
    return CSVLogger(str(out), name=name)


def run(config: str, args: argparse.Namespace, data: StdlibText, out: Path) -> dict[str, Any]:
    """Train one configuration; return its validation loss and per-layer normalised entropies."""
    seed_everything(args.seed, workers=True, verbose=False)
    size: dict[str, Any] = (
        {"d_model": 32, "heads": 2, "layers": 2} if args.fast else {"d_model": 64, "heads": 4, "layers": 4}
    )
    model = CharLM(**size, context=args.context, layer_norm=config == "baseline")
    every = max(1, args.steps // 20)
    callbacks: list[Any] = []
    if config == "ln_free_entropy":  # the paper's lambda = 1e-5 on the summed penalty = 1e-5 * B * T on the mean
        weight = args.entropy_weight if args.entropy_weight is not None else 1e-5 * args.batch_size * args.context
        callbacks.append(
            EntropyGuidedAttentionCallback(weight=weight, temperature_positions=args.context, log_every_n_steps=every)
        )
    else:
        callbacks.append(AttentionEntropyMonitor(every_n_steps=every, max_samples=8))
    logger = make_logger(out, config, args.logger)
    trainer = Trainer(
        accelerator="cpu", devices=1, max_steps=args.steps, logger=logger, callbacks=callbacks,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=every,
        num_sanity_val_steps=0, gradient_clip_val=1.0, default_root_dir=str(out),
    )  # fmt: skip
    trainer.fit(model, datamodule=data)
    val_loss = trainer.validate(model, data.val_dataloader(), verbose=False)[0]["val_loss"]
    assert data.val is not None
    entropy = normalized_entropy_per_layer(model, data.val.tensors[0][:64])
    logger.log_metrics(
        {f"attn_entropy/val/layer{i}/normalized_mean": sum(h) / len(h) for i, h in enumerate(entropy)},
        step=trainer.global_step,
    )
    experiment = getattr(logger, "experiment", None)
    if hasattr(experiment, "finish"):
        experiment.finish()
    return {"val_loss": float(val_loss), "normalized_entropy": entropy}


def plot(results: dict[str, dict[str, Any]], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 4), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for config, result in results.items():
        per_layer = torch.tensor(result["normalized_entropy"])
        layers = torch.arange(per_layer.shape[0])
        axes.plot(layers, per_layer.mean(1), marker="o", label=f"{config} (val loss {result['val_loss']:.3f})")
        for head in range(per_layer.shape[1]):
            axes.scatter(layers, per_layer[:, head], s=8, alpha=0.4, color=axes.lines[-1].get_color())
    axes.axhspan(0.75, 1.0, color="red", alpha=0.06, label="overload (> 3/4)")
    axes.axhspan(0.0, 0.25, color="blue", alpha=0.06, label="collapse (< 1/4)")
    axes.set_xticks(range(len(next(iter(results.values()))["normalized_entropy"])))
    axes.set_xlabel("layer")
    axes.set_ylabel("mean normalised attention entropy  H / log(i+1)")
    axes.set_ylim(0, 1)
    axes.legend(fontsize=7)
    axes.set_title("attention entropy per layer on validation text (dots: heads)")
    figure.tight_layout()
    figure.savefig(path)


def results_table(results: dict[str, dict[str, Any]], steps: int) -> str:
    lines = [
        f"Character-level LM on standard-library source, {steps} steps (validation loss in nats/byte; "
        "mean normalised attention entropy per layer, overload/collapse = fraction of heads > 3/4 / < 1/4)",
        "",
        "| configuration | val loss | entropy per layer | overload frac | collapse frac |",
        "|---|---|---|---|---|",
    ]
    for config, result in results.items():
        heads = [h for layer in result["normalized_entropy"] for h in layer]
        per_layer = ", ".join(f"{sum(h) / len(h):.2f}" for h in result["normalized_entropy"])
        overload = sum(h > 0.75 for h in heads) / len(heads)
        collapse = sum(h < 0.25 for h in heads) / len(heads)
        lines.append(f"| {config} | {result['val_loss']:.3f} | {per_layer} | {overload:.2f} | {collapse:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/entropy_guided_lm"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fast", action="store_true", help="tiny model, a few steps (seconds)")
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps per configuration (default 500)")
    parser.add_argument("--logger", choices=("wandb", "csv"), default="wandb", help="wandb falls back to CSV")
    parser.add_argument(
        "--entropy-weight", type=float, default=None, help="lambda of the mean-reduced regularizer (1e-5 * B * T)"
    )
    args = parser.parse_args(argv)
    args.context = 32 if args.fast else 64
    args.batch_size = 16 if args.fast else 32
    args.steps = args.steps or (10 if args.fast else 500)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    data = StdlibText(40_000 if args.fast else 400_000, args.context, args.batch_size, args.seed)
    data.setup("fit")
    args.out.mkdir(parents=True, exist_ok=True)
    results = {config: run(config, args, data, args.out) for config in CONFIGS}
    plot(results, args.out / "entropy_per_layer.png")
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    table = results_table(results, args.steps)
    (args.out / "results.md").write_text(table + "\n")
    print(table)
    print(f"(uniform prediction: {math.log(256):.2f} nats/byte)")
    return results


class CharLMCLI(LightningCLI):
    """``LightningCLI`` whose model takes its context length from the data module."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.context", "model.context")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in ("fit", "validate"):
        CharLMCLI(CharLM, StdlibText)
    else:
        main()
