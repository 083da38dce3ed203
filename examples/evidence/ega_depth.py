"""Evidence: does depth expose entropy collapse / overload in a LayerNorm-free transformer (Jha & Reagen, 2025)?

Jha & Reagen report that removing LayerNorm (and using a ReLU feed-forward, the "SM + ReLU" setting of private
inference) makes the attention entropy of early layers overload (near-uniform heads) and of deep layers collapse
(near one-hot heads), and that entropy-guided attention -- a learnable temperature per head and query position plus
an entropy regularizer -- recovers perplexity. ``examples/entropy_guided_lm.py`` runs 4 layers / 500 steps; this
script asks whether 8 layers make the effect visible at CPU scale.

Protocol: the byte-level decoder of ``examples/entropy_guided_lm.py`` (``CharLM``: d_model 64, 4 heads, context 64)
with ``--layers`` (8) blocks, **no LayerNorm** and a **ReLU** feed-forward, trained ``--steps`` (600) AdamW steps
(lr 2e-3, batch 16, gradient clipping 1) with ``Trainer.fit`` on the first 400,000 bytes of a fixed list of
standard-library module sources (the interpreter's own files, no download; 90% train / 10% validation), with the same
seeds, data order and initialisation for

1. ``ln_free``: no regularizer (``AttentionEntropyMonitor`` logs the entropies);
2. ``ln_free_entropy``: ``EntropyGuidedAttentionCallback`` (learnable temperature per head and query position,
   regularizer weight ``1e-5 * B * T``, the paper's lambda = 1e-5 for its summed penalty; library defaults otherwise).

No hyper-parameter is tuned (the paper's lambda; the same lr for both). Reported per configuration, mean ± std over
``--seeds`` seeds and the paired difference: validation loss (nats/byte) and perplexity, every head's mean normalised
entropy ``H / log(i + 1)`` on validation text, and the fractions of heads overloaded (> 3/4) and collapsed (< 1/4),
in all layers and in the first / last two layers.

Run: ``python examples/evidence/ega_depth.py --out runs/evidence/ega_depth`` (``--fast`` for a seconds-long smoke
run). Writes ``results.md``, ``results.json`` and ``entropy_depth.png`` under ``--out``; each training run logs
``train_loss``, ``val_loss`` and the ``attn_entropy/*`` keys to W&B offline when wandb is importable (else CSV).
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import statistics
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from lightning.pytorch import Callback, Trainer, seed_everything
from lightning.pytorch.loggers import CSVLogger, Logger

from lightning_info.callbacks import AttentionEntropyMonitor, EntropyGuidedAttentionCallback

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # examples/: the shared _report module
from _report import mean_std, paired, write_results

CONFIGS = ("ln_free", "ln_free_entropy")
OVERLOAD, COLLAPSE = 0.75, 0.25


def _load_lm_example() -> ModuleType:
    """``examples/entropy_guided_lm.py`` (model, data and entropy measurement), imported by path."""
    name = "examples_entropy_guided_lm"
    if name not in sys.modules:
        path = Path(__file__).resolve().parents[1] / "entropy_guided_lm.py"
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


lm = _load_lm_example()


def _logger(out: Path, name: str, group: str, wandb: bool) -> Logger:
    if wandb:
        try:
            from lightning.pytorch.loggers import WandbLogger

            project = "lightning-info-evidence"
            return WandbLogger(offline=True, save_dir=str(out), project=project, name=name, group=group)
        except (ImportError, ModuleNotFoundError):
            pass
    return CSVLogger(str(out), name=name)


def run_one(config: str, seed: int, data: Any, args: argparse.Namespace) -> dict[str, Any]:
    """Train one configuration from ``seed``; return its validation loss and per-layer, per-head normalised entropy."""
    data.seed = seed  # the training data order
    seed_everything(seed, workers=True, verbose=False)
    model = lm.CharLM(
        d_model=args.d_model, heads=args.heads, layers=args.layers, context=args.context, layer_norm=False,
        activation="relu",
    )  # fmt: skip
    every = max(1, args.steps // 20)
    callbacks: list[Callback]
    if config == "ln_free_entropy":  # the paper's lambda = 1e-5 on the summed penalty = 1e-5 * B * T on the mean
        weight = 1e-5 * args.batch_size * args.context
        callbacks = [
            EntropyGuidedAttentionCallback(weight=weight, temperature_positions=args.context, log_every_n_steps=every)
        ]
    else:
        callbacks = [AttentionEntropyMonitor(every_n_steps=every, max_samples=8)]
    logger = _logger(args.out, f"{config}-seed{seed}", "ega-depth", not args.no_wandb)
    trainer = Trainer(
        accelerator="cpu", devices=1, max_steps=args.steps, logger=logger, callbacks=callbacks,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=every,
        num_sanity_val_steps=0, gradient_clip_val=1.0, default_root_dir=str(args.out),
        deterministic=True,
    )  # fmt: skip
    trainer.fit(model, datamodule=data)
    val_loss = float(trainer.validate(model, data.val_dataloader(), verbose=False)[0]["val_loss"])
    entropy = lm.normalized_entropy_per_layer(model, data.val.tensors[0][: args.entropy_samples])
    logger.log_metrics(
        {f"attn_entropy/val/layer{i}/normalized_mean": sum(h) / len(h) for i, h in enumerate(entropy)},
        step=trainer.global_step,
    )
    finish = getattr(getattr(logger, "experiment", None), "finish", None)  # close the W&B run before the next one
    if finish is not None:
        finish()
    return {"val_loss": val_loss, "normalized_entropy": entropy}


def head_fractions(entropy: list[list[float]]) -> dict[str, float]:
    """Fractions of heads overloaded (> 3/4) / collapsed (< 1/4): all layers, the first two, the last two."""
    parts = {"all": entropy, "first2": entropy[:2], "last2": entropy[-2:]}
    fractions = {}
    for part, layers in parts.items():
        heads = [h for layer in layers for h in layer]
        fractions[f"overload_{part}"] = sum(h > OVERLOAD for h in heads) / len(heads)
        fractions[f"collapse_{part}"] = sum(h < COLLAPSE for h in heads) / len(heads)
    return fractions


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Train both configurations for every seed; print and save the table, the JSON and the figure."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/evidence/ega_depth"))
    parser.add_argument("--seed", type=int, default=0, help="first seed; seeds are seed, seed+1, ...")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--no-wandb", action="store_true", help="log to CSV instead of W&B offline")
    parser.add_argument("--fast", action="store_true", help="2 seeds, a 3-layer tiny model, a few steps (seconds)")
    args = parser.parse_args(argv)
    args.d_model, args.heads, args.context, args.batch_size, num_chars = 64, 4, 64, 16, 400_000
    args.entropy_samples = 64
    if args.fast:
        args.seeds, args.layers, args.steps = 2, 3, 4
        args.d_model, args.heads, args.context, args.batch_size, num_chars = 16, 2, 16, 8, 20_000
        args.entropy_samples = 8
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)  # a small model on a shared machine: more threads only add contention
    start, wall_start = time.process_time(), time.perf_counter()
    data = lm.StdlibText(num_chars, args.context, args.batch_size, args.seed)
    data.setup("fit")
    seeds = [args.seed + s for s in range(args.seeds)]
    results: dict[str, Any] = {}
    for config in CONFIGS:
        runs = [run_one(config, seed, data, args) for seed in seeds]
        results[config] = {
            "val_loss": [r["val_loss"] for r in runs],
            "normalized_entropy": [r["normalized_entropy"] for r in runs],
            **{k: [head_fractions(r["normalized_entropy"])[k] for r in runs] for k in head_fractions([[0.5]])},
        }
    cpu_minutes = (time.process_time() - start) / 60
    wall_minutes = (time.perf_counter() - wall_start) / 60
    table = _table(results, args, cpu_minutes, wall_minutes)
    write_results(args.out, table, {"cpu_minutes": cpu_minutes, "wall_minutes": wall_minutes, "results": results})
    _figure(results, args.out / "entropy_depth.png")
    return results


def _table(results: dict[str, Any], args: argparse.Namespace, cpu_minutes: float, wall_minutes: float) -> str:
    base = results["ln_free"]
    lines = [
        f"LayerNorm-free byte-level decoder, {args.layers} layers x {args.heads} heads, d_model {args.d_model}, ReLU "
        f"FFN, {args.steps} steps, batch {args.batch_size} x {args.context} bytes, {args.seeds} seeds. Validation "
        f"loss in nats/byte (uniform: {math.log(256):.2f}); heads overloaded (> {OVERLOAD}) / collapsed "
        f"(< {COLLAPSE}) by mean normalised entropy on validation text. Mean ± std over seeds; Δ = paired "
        f"difference to ln_free. Process CPU time {cpu_minutes:.1f} min (wall {wall_minutes:.1f} min).",
        "",
        "| configuration | val loss | Δ val loss | val perplexity | overload (all / first 2 / last 2 layers) "
        "| collapse (all / first 2 / last 2 layers) | mean entropy per layer |",
        "|---|---|---|---|---|---|---|",
    ]
    for config, res in results.items():
        delta = "—" if config == "ln_free" else paired(res["val_loss"], base["val_loss"])
        ppl = mean_std([math.exp(v) for v in res["val_loss"]], digits=2)
        over = " / ".join(mean_std(res[f"overload_{p}"], digits=2) for p in ("all", "first2", "last2"))
        coll = " / ".join(mean_std(res[f"collapse_{p}"], digits=2) for p in ("all", "first2", "last2"))
        per_layer = torch.tensor(res["normalized_entropy"]).mean(dim=(0, 2))
        layers = ", ".join(f"{v:.2f}" for v in per_layer.tolist())
        lines.append(f"| {config} | {mean_std(res['val_loss'])} | {delta} | {ppl} | {over} | {coll} | {layers} |")
    return "\n".join(lines)


def _figure(results: dict[str, Any], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for i, (config, res) in enumerate(results.items()):
        entropy = torch.tensor(res["normalized_entropy"])  # seeds x layers x heads
        layers = torch.arange(entropy.shape[1]).float()
        loss = statistics.mean(res["val_loss"])
        ax.plot(layers, entropy.mean(dim=(0, 2)), marker="o", color=f"C{i}", label=f"{config} (val loss {loss:.3f})")
        jitter = (i - 0.5) * 0.15
        for seed_entropy in entropy:
            for head in range(entropy.shape[2]):
                ax.scatter(layers + jitter, seed_entropy[:, head], s=6, alpha=0.35, color=f"C{i}")
    ax.axhspan(OVERLOAD, 1.0, color="red", alpha=0.06, label=f"overload (> {OVERLOAD})")
    ax.axhspan(0.0, COLLAPSE, color="blue", alpha=0.06, label=f"collapse (< {COLLAPSE})")
    ax.set_xlabel("layer")
    ax.set_ylabel("normalised attention entropy H / log(i+1)")
    ax.set_ylim(0, 1)
    ax.set_title("LN-free ReLU decoder: per-head entropy on validation text (dots: heads x seeds)", fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
