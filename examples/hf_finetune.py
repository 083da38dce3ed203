"""Fine-tune a small Hugging Face BERT classifier with SAM, a FISH mask and the attention / information monitors.

The model is ``transformers.BertForSequenceClassification`` built from a small config (random init, nothing is
downloaded; ``pip install "lightning-info[hf]"``). The task is scikit-learn's 8x8 digits read as a sentence: each pixel
row is binarised at 0.5 and becomes one of 256 row tokens, after a ``[CLS]`` token (9 tokens, vocabulary 257). As FISH
is made for pretrained models, the model is first pretrained (plain AdamW, every parameter) on classes 0-4, then
fine-tuned on classes 5-9 with every part attached to the unmodified Hugging Face model:

- ``SAM`` around ``AdamW`` (``configure_optimizers``; Lightning's closure is evaluated twice per step);
- ``FisherMask(keep_ratio, always_train=["classifier"])``: only the ``keep_ratio`` fraction of entries with the largest
  empirical Fisher is trained, the classification head entirely (``"classifier"`` matches ``net.classifier`` by
  suffix);
- ``AttentionEntropyMonitor()``: per-head attention entropies ``attn_entropy/layer{i}/head{j}`` read from BERT's SDPA
  attention through transformers' attention interface;
- ``InformationMonitor(["net.bert.encoder"], token_reduction="first")``: matrix entropy, Vendi score and DSE of the
  encoder's ``[CLS]`` hidden state (``info/net.bert.encoder/...``, read from its ``ModelOutput``).

Run: ``python examples/hf_finetune.py --out runs/hf_finetune`` (``--fast`` for a seconds-long smoke run; logs to W&B
offline when wandb is importable, else CSV; ``--no-wandb`` for CSV). Prints the validation and test accuracy on classes
5-9 (last epoch, no selection on the test split) and writes ``pretrained.pt`` and
``results.json`` under ``--out``. With LightningCLI: ``python examples/hf_finetune.py fit --config
examples/configs/hf_finetune.yaml``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningDataModule, LightningModule, Trainer, seed_everything
from lightning.pytorch.loggers import CSVLogger, Logger
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_info.callbacks import AttentionEntropyMonitor, FisherMask, InformationMonitor
from lightning_info.demo.data import load_digits_tokens
from lightning_info.optim import SAM

CLS = 0
VOCAB_SIZE = 257  # [CLS] + 2**8 binarised pixel rows


def digits_to_token_ids(images: Tensor) -> Tensor:
    """``(N, 8, 8)`` images in [0, 1] -> ``(N, 9)`` token ids: ``[CLS]`` then one id in 1..256 per binarised row."""
    bits = (images > 0.5).long()
    rows = (bits * (2 ** torch.arange(8))).sum(-1) + 1
    return torch.cat([torch.full((len(images), 1), CLS, dtype=torch.long), rows], dim=1)


class DigitsTokens(LightningDataModule):
    """Digits of ``classes`` (default 5-9) as ``(9,)`` token sequences (:func:`digits_to_token_ids`), 70/15/15 split."""

    def __init__(self, classes: list[int] | None = None, seed: int = 0, batch_size: int = 64) -> None:
        super().__init__()
        self.classes = list(range(5, 10)) if classes is None else list(classes)
        self.seed, self.batch_size = seed, batch_size

    def setup(self, stage: str | None = None) -> None:
        split = load_digits_tokens(seed=self.seed)
        kept = torch.tensor(self.classes)
        self.train, self.val, self.test = (
            (digits_to_token_ids(x[torch.isin(y, kept)]), y[torch.isin(y, kept)])
            for x, y in (split.train, split.val, split.test)
        )

    def _loader(self, tensors: tuple[Tensor, Tensor], shuffle: bool = False) -> DataLoader:
        g = torch.Generator().manual_seed(self.seed)
        return DataLoader(TensorDataset(*tensors), batch_size=self.batch_size, shuffle=shuffle, generator=g)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test)


class HFClassifier(LightningModule):
    """``BertForSequenceClassification`` from a small config, fine-tuned with SAM(AdamW) and the callbacks above.

    ``pretrained``: a state-dict file to start from (pretrained on classes 0-4 first when it does not exist);
    ``finetune=False``: plain AdamW on every parameter, no callbacks (the pretraining).
    """

    def __init__(
        self,
        layers: int = 2,
        hidden_size: int = 64,
        heads: int = 4,
        lr: float = 3e-3,
        weight_decay: float = 0.01,
        rho: float = 0.05,
        keep_ratio: float = 0.05,
        fisher_samples: int = 512,
        monitor_every_n_steps: int = 20,
        pretrained: str | None = None,
        finetune: bool = True,
    ) -> None:
        super().__init__()
        import transformers

        self.save_hyperparameters()
        config = transformers.BertConfig(
            vocab_size=VOCAB_SIZE,
            hidden_size=hidden_size,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            intermediate_size=2 * hidden_size,
            max_position_embeddings=16,
        )
        config.num_labels = 10
        self.net = transformers.BertForSequenceClassification(config)
        if pretrained is not None:
            if not Path(pretrained).is_file():
                print(f"[hf_finetune] {pretrained} does not exist: pretraining on classes 0-4 first (seed 0)")
                pretrain(Path(pretrained), seed=0, layers=layers, hidden_size=hidden_size, heads=heads)
            self.load_state_dict(torch.load(pretrained, weights_only=True))

    def forward(self, ids: Tensor) -> Tensor:
        """Class logits of ``(B, T)`` token ids (a tensor, so that ``FisherMask``'s default loss applies)."""
        return self.net(input_ids=ids).logits

    def _step(self, batch: tuple[Tensor, Tensor], stage: str) -> Tensor:
        ids, y = batch
        logits = self(ids)
        loss = nn.functional.cross_entropy(logits, y)
        self.log(f"{stage}_loss", loss, on_step=stage == "train", on_epoch=True)
        self.log(f"{stage}_acc", (logits.argmax(-1) == y).float().mean(), on_step=False, on_epoch=True)
        return loss

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, "test")

    def configure_callbacks(self) -> list[Callback]:
        """FISH mask, attention entropies and the encoder's information metrics (also under LightningCLI)."""
        h = self.hparams
        if not h["finetune"]:
            return []
        every = h["monitor_every_n_steps"]
        return [
            FisherMask(keep_ratio=h["keep_ratio"], num_samples=h["fisher_samples"], always_train=["classifier"]),
            AttentionEntropyMonitor(every_n_steps=every),
            InformationMonitor(["net.bert.encoder"], every_n_steps=every, token_reduction="first", log_figures=False),
        ]

    def configure_optimizers(self) -> torch.optim.Optimizer:
        h = self.hparams
        if not h["finetune"]:
            return torch.optim.AdamW(self.parameters(), lr=h["lr"], weight_decay=h["weight_decay"])
        return SAM(self.parameters(), torch.optim.AdamW, rho=h["rho"], lr=h["lr"], weight_decay=h["weight_decay"])


def _trainer(epochs: int, fast: bool, logger: Logger | bool = False) -> Trainer:
    return Trainer(
        max_epochs=1 if fast else epochs,
        accelerator="cpu",
        devices=1,
        logger=logger,
        log_every_n_steps=1 if fast else 10,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_train_batches=3 if fast else None,
        limit_val_batches=1 if fast else None,
        limit_test_batches=1 if fast else None,
    )


def pretrain(path: Path, seed: int, fast: bool = False, epochs: int = 20, **hparams: Any) -> HFClassifier:
    """Train an :class:`HFClassifier` (``hparams``: its arguments) on classes 0-4; save its state dict to ``path``."""
    seed_everything(seed, workers=True, verbose=False)
    model = HFClassifier(finetune=False, **hparams)
    _trainer(epochs, fast).fit(model, datamodule=DigitsTokens(classes=list(range(5)), seed=seed))
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return model


def _logger(out: Path, wandb: bool) -> Logger:
    if wandb:
        try:
            from lightning.pytorch.loggers import WandbLogger

            return WandbLogger(offline=True, save_dir=str(out), project="lightning-info-hf", name="hf_finetune")
        except (ImportError, ModuleNotFoundError):
            pass
    return CSVLogger(str(out), name="hf_finetune")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Fine-tune once; print and save the validation and test accuracy (the monitors' values go to the logger)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/hf_finetune"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pretrain-epochs", type=int, default=20, help="on classes 0-4, plain AdamW")
    parser.add_argument("--epochs", type=int, default=15, help="fine-tuning on classes 5-9")
    parser.add_argument("--keep-ratio", type=float, default=0.05, help="fraction of entries FisherMask trains")
    parser.add_argument("--no-wandb", action="store_true", help="log to CSV instead of W&B offline")
    parser.add_argument("--fast", action="store_true", help="1 epoch of 3 batches per phase, monitors every step")
    args = parser.parse_args(argv)
    fast = args.fast
    args.out.mkdir(parents=True, exist_ok=True)
    pretrained = args.out / "pretrained.pt"  # the LightningCLI config starts from this one
    pretrain(pretrained, args.seed, fast, epochs=args.pretrain_epochs)
    seed_everything(args.seed, workers=True, verbose=False)
    model = HFClassifier(keep_ratio=args.keep_ratio, fisher_samples=64 if fast else 512,
                         monitor_every_n_steps=1 if fast else 20, pretrained=str(pretrained))  # fmt: skip
    logger = _logger(args.out, not args.no_wandb)
    trainer = _trainer(args.epochs, fast, logger)
    data = DigitsTokens(seed=args.seed)
    trainer.fit(model, datamodule=data)
    val_acc = float(trainer.callback_metrics["val_acc"])
    tested = trainer.test(model, datamodule=data, verbose=False)[0]
    finish = getattr(getattr(logger, "experiment", None), "finish", None)
    if callable(finish):
        finish()
    results = {"val_acc": val_acc, "test_acc": float(tested["test_acc"])}
    print(f"validation accuracy {val_acc:.3f}, test accuracy {results['test_acc']:.3f}")
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    return results


def cli_main() -> None:
    """``LightningCLI`` entry point (``fit``/``test`` with ``--config examples/configs/hf_finetune.yaml``)."""
    from lightning.pytorch.cli import LightningCLI

    LightningCLI(HFClassifier, DigitsTokens)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in ("fit", "validate", "test", "predict"):
        cli_main()
    else:
        main()
