"""Per-sample Fisher: torch.func vmap (chunked) and ``mode="auto"`` vs the batch-size-1 loop FISH's public code uses.

Run ``python benchmarks/fisher.py`` (``--quick`` for a smoke run). CPU timings; noisy on shared machines. Prints the
seconds for N = 1024 samples on a small MLP, a small transformer (``nn.TransformerEncoderLayer``) and Hugging Face
GPT-2 and BERT classifiers built from small configs (2 layers, d=64, 16 tokens) with the three modes (``auto`` =
vmap plus the exact shortcut for ``nn.Linear``/``Conv1D``/``nn.Embedding`` layers, one row or one per token: every
layer of the MLP; the embedding, FFN and head of the small transformer, whose ``nn.MultiheadAttention`` keeps
vmap; every attention projection, FFN, head and embedding of GPT-2/BERT), the speed-ups over the loop, and the peak
extra resident memory of the estimate (above the process's peak before it) in fresh processes: for several chunk
sizes at N = 1024 (vmap and auto), and for a fixed chunk at a small and a large N (vmap: the memory must follow the
chunk, not N).
Memory is measured with glibc's mmap threshold fixed (``MALLOC_MMAP_THRESHOLD_`` = 128 KiB) so that RSS follows the
live tensors; the "default malloc" column shows the extra drift of glibc's heap with its default dynamic threshold.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import torch
from torch import Tensor, nn

from lightning_info.fisher import empirical_fisher


class SmallTransformer(nn.Module):
    """Linear embedding of 8 tokens -> 2 ``nn.TransformerEncoderLayer`` (d=64, 4 heads) -> mean -> 10 classes."""

    def __init__(self, in_dim: int = 8, d_model: int = 64, num_classes: int = 10) -> None:
        super().__init__()
        self.embed = nn.Linear(in_dim, d_model)
        layer = nn.TransformerEncoderLayer(d_model, 4, 2 * d_model, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(d_model, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.encoder(self.embed(x)).mean(1))


class HFClassifier(nn.Module):
    """A Hugging Face sequence classifier built from a small config (random init): token ids -> logits.

    ``gpt2``: 2 layers, d=64, 4 heads (``Conv1D`` projections); ``bert``: 2 layers, d=64, 4 heads, FFN 256 (``Linear``).
    Vocabulary of 1000 tokens, 10 classes; ``pad_token_id=None`` (no padding: transformers' padding checks read the
    ids, which ``vmap`` refuses).
    """

    def __init__(self, arch: str) -> None:
        super().__init__()
        import transformers  # optional extra "hf"

        self.model: nn.Module
        if arch == "gpt2":
            gpt2 = transformers.GPT2Config(
                vocab_size=1000, n_embd=64, n_layer=2, n_head=4, n_positions=64, pad_token_id=None
            )
            gpt2.num_labels = 10
            self.model = transformers.GPT2ForSequenceClassification(gpt2)
        else:
            bert = transformers.BertConfig(
                vocab_size=1000,
                hidden_size=64,
                num_hidden_layers=2,
                num_attention_heads=4,
                intermediate_size=256,
                pad_token_id=None,
            )
            bert.num_labels = 10
            self.model = transformers.BertForSequenceClassification(bert)

    def forward(self, ids: Tensor) -> Tensor:
        logits: Tensor = self.model(input_ids=ids).logits
        return logits


def models() -> dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]]:
    """Name -> (builder, shape of one input); an HF model's input is 16 token ids."""
    return {
        "mlp": (
            lambda: nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10)),
            (64,),
        ),
        "transformer": (SmallTransformer, (8, 8)),
        "gpt2": (lambda: HFClassifier("gpt2"), (16,)),
        "bert": (lambda: HFClassifier("bert"), (16,)),
    }


def _setup(name: str, n: int) -> tuple[nn.Module, list[tuple[Tensor, Tensor]]]:
    build, shape = models()[name]
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    if name in ("gpt2", "bert"):
        x = torch.randint(0, 1000, (n, *shape), generator=g)
    else:
        x = torch.randn(n, *shape, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    return build(), [(x, y)]  # one batch: chunk_size alone decides how many samples vmap processes at once


def timed(name: str, n: int, mode: str, chunk: int | None) -> float:
    """Seconds for the Fisher over ``n`` samples (after a warm-up on 8)."""
    model, data = _setup(name, n)
    empirical_fisher(model, data, num_samples=min(n, 8), mode=mode, chunk_size=chunk)  # type: ignore[arg-type]
    start = time.perf_counter()
    empirical_fisher(model, data, num_samples=n, mode=mode, chunk_size=chunk)  # type: ignore[arg-type]
    return time.perf_counter() - start


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def extra_peak_mb(name: str, n: int, chunk: int, mode: str = "vmap") -> float:
    """In this process: peak RSS during the Fisher (``mode``) minus the RSS just before it, in MB (Linux).

    A thread samples ``/proc/self/statm`` every millisecond (``ru_maxrss`` would be dominated by the peak of
    ``import torch``); each chunk holds its gradients for far longer than that.
    """
    model, data = _setup(name, n)
    empirical_fisher(model, data, num_samples=min(n, 4), mode=mode, chunk_size=4)  # type: ignore[arg-type]  # warm-up
    before, peak, done = _rss_mb(), [0.0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss_mb())
            time.sleep(0.001)

    sampler = threading.Thread(target=sample)
    sampler.start()
    empirical_fisher(model, data, num_samples=n, mode=mode, chunk_size=chunk)  # type: ignore[arg-type]
    done.set()
    sampler.join()
    return max(peak[0], _rss_mb()) - before


def _fresh(name: str, n: int, chunk: int, steady_malloc: bool = True, mode: str = "vmap") -> float:
    """``extra_peak_mb`` in a fresh process; ``steady_malloc`` fixes glibc's mmap threshold (see ``main``)."""
    code = (
        "import sys; sys.path.insert(0, 'benchmarks'); from fisher import extra_peak_mb; "
        f"print(extra_peak_mb({name!r}, {n}, {chunk}, {mode!r}))"
    )
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(128 * 1024)} if steady_malloc else None
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    return float(out.stdout.split()[-1])


def main(quick: bool = False, memory: bool = True) -> dict[str, float]:
    """Prints the tables and goal lines; returns the vmap-vs-loop speed-up per model."""
    n = 16 if quick else 1024
    print(
        f"{'model':12s} {'params':>8s} {'auto s':>8s} {'vmap s':>8s} {'loop s':>8s} {'vmap/loop':>10s} "
        f"{'auto/loop':>10s} {'auto/vmap':>10s}   (N={n}, default chunk_size)"
    )
    ratios: dict[str, float] = {}
    auto_ratios: dict[str, float] = {}
    for name, (build, _) in models().items():
        params = sum(p.numel() for p in build().parameters())
        auto, fast, slow = (timed(name, n, mode, None) for mode in ("auto", "vmap", "loop"))
        ratios[name], auto_ratios[name] = slow / fast, slow / auto
        print(
            f"{name:12s} {params:8d} {auto:8.3f} {fast:8.3f} {slow:8.3f} {ratios[name]:9.1f}x "
            f"{auto_ratios[name]:9.1f}x {fast / auto:9.1f}x"
        )
    growth = None
    if memory:
        # glibc raises its mmap threshold after large frees and then serves big blocks from the heap, whose peak RSS
        # drifts with the number of chunks; a fixed threshold (MALLOC_MMAP_THRESHOLD_) makes RSS follow live tensors
        params = sum(p.numel() for p in models()["mlp"][0]().parameters())
        print(f"\npeak extra RSS of the vmap Fisher, mlp ({params} params), a fresh process per row")
        print(
            f"{'N':>6s} {'chunk':>6s} {'extra MB':>9s} {'chunk grads MB':>15s} {'default malloc MB':>18s} "
            f"{'auto extra MB':>14s}"
        )
        fixed = 16 if quick else 256
        rows = [(n, c, False) for c in ((4, 16) if quick else (16, 128, 1024))]
        rows += [(rows_n, fixed, True) for rows_n in ((16, 64) if quick else (256, 4096))]
        extra = {}
        for rows_n, c, both in rows:
            extra[rows_n, c] = _fresh("mlp", rows_n, c)
            default = f"{_fresh('mlp', rows_n, c, steady_malloc=False):18.1f}" if both else " " * 18
            auto_mb = "" if both else f"{_fresh('mlp', rows_n, c, mode='auto'):14.1f}"
            print(f"{rows_n:6d} {c:6d} {extra[rows_n, c]:9.1f} {c * params * 4 / 2**20:15.1f} {default} {auto_mb}")
        (small, _, _), (large, _, _) = rows[-2:]
        growth = extra[large, fixed] / max(extra[small, fixed], 1.0)
    for name, ratio in ratios.items():
        print(f"vmap vs batch-1 loop Fisher ({name}, {n} samples): {ratio:.1f}x (goal >= 5x)")
    for name, ratio in auto_ratios.items():
        goal = 5 if name == "mlp" else 10  # transformers: the token-wise shortcut (FISH's regime)
        print(
            f"auto (vmap + exact Linear shortcut) vs batch-1 loop Fisher ({name}, {n} samples): "
            f"{ratio:.1f}x (goal >= {goal})"
        )
    if growth is not None:
        print(f"peak extra memory, N={large} vs N={small} at chunk {fixed}: {growth:.2f}x (goal <= 1.2x)")
    return ratios


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="16 samples, small memory sweep (smoke run)")
    args = parser.parse_args()
    main(quick=args.quick)
