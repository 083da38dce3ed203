"""Benchmark the chunked attention entropy and EntropyGuidedAttention against their materialising baselines (CPU).

1. Row entropies of softmax(q k^T / sqrt(d)) at sequence length L (8 heads, head dim 64, batch 1):
   ``attention_entropy_from_qk`` (chunked over queries) vs materialising the probabilities
   (``p = softmax(s); H = -(p * log p).sum(-1)``). Peak memory is each variant's growth of the resident set size
   (``ru_maxrss``), measured in a fresh subprocess so earlier allocations do not hide it; time is the median of
   in-process repeats.
2. ``EntropyGuidedAttention`` forward + backward (entropy recorded) vs ``nn.MultiheadAttention`` at N=256.

Run ``python benchmarks/attention_entropy.py`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from lightning_info.attention import EntropyGuidedAttention, attention_entropy_from_qk


def materialised_entropy(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """The usual way: build the whole probability map, then -sum p log p."""
    probs = torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, dim=-1)
    return -(probs * torch.log(probs + 1e-9)).sum(-1)


def _inputs(length: int, heads: int = 8, head_dim: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(1, heads, length, head_dim, generator=g), torch.randn(1, heads, length, head_dim, generator=g)


def _median_time(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def peak_rss_growth(variant: str, length: int, chunk_size: int) -> float:
    """MiB by which ``variant`` raises the peak resident set size of a fresh process (inputs excluded)."""
    code = (
        "import resource, torch, sys\n"
        "sys.path.insert(0, '.')\n"
        "from benchmarks.attention_entropy import _inputs, materialised_entropy\n"
        "from lightning_info.attention import attention_entropy_from_qk\n"
        f"q, k = _inputs({length})\n"
        "with torch.no_grad():\n"
        "    attention_entropy_from_qk(q[..., :8, :], k[..., :8, :])\n"  # load kernels before the baseline
        "    materialised_entropy(q[..., :8, :], k[..., :8, :])\n"
        "    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        f"    out = materialised_entropy(q, k) if {variant!r} == 'full' else "
        f"attention_entropy_from_qk(q, k, chunk_size={chunk_size})\n"
        "    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "print((after - before) / 1024)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
        env={**os.environ, "OMP_NUM_THREADS": "2"},
    )
    return float(result.stdout.strip().splitlines()[-1])


def entropy_benchmark(length: int, chunk_size: int, repeats: int) -> dict[str, float]:
    # memory first: Linux keeps ru_maxrss across exec, so a child started after a big allocation here would
    # inherit this process's peak as its baseline
    m_full = peak_rss_growth("full", length, chunk_size)
    m_chunk = peak_rss_growth("chunked", length, chunk_size)
    q, k = _inputs(length)
    with torch.no_grad():
        full = materialised_entropy(q, k)
        chunked = attention_entropy_from_qk(q, k, chunk_size=chunk_size)
        max_err = (full - chunked).abs().max().item()
        t_full = _median_time(lambda: materialised_entropy(q, k), repeats)
        t_chunk = _median_time(lambda: attention_entropy_from_qk(q, k, chunk_size=chunk_size), repeats)
    analytic_full = 2 * 8 * length * length * 4 / 2**20  # logits + probabilities, float32
    return {"t_full": t_full, "t_chunk": t_chunk, "m_full": m_full, "m_chunk": m_chunk, "max_err": max_err,
            "analytic_full_mib": analytic_full}  # fmt: skip


def attention_benchmark(length: int, batch: int, embed_dim: int, heads: int, repeats: int) -> dict[str, float]:
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(embed_dim, heads, batch_first=True)
    ega = EntropyGuidedAttention(embed_dim, heads, batch_first=True)
    ega.load_state_dict(mha.state_dict())
    x = torch.randn(batch, length, embed_dim, requires_grad=True)
    mask = nn.Transformer.generate_square_subsequent_mask(length)

    def step(module: nn.Module, need_weights: bool) -> Callable[[], None]:
        def run() -> None:
            out, _ = module(x, x, x, attn_mask=mask, need_weights=need_weights)
            out.sum().backward()

        return run

    return {
        "mha_weights": _median_time(step(mha, True), repeats),
        "mha_fused": _median_time(step(mha, False), repeats),
        "ega": _median_time(step(ega, False), repeats),
    }


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, one repeat (smoke run, not a measurement)")
    parser.add_argument("--length", type=int, default=4096)
    parser.add_argument("--chunk-size", type=int, default=256)
    args = parser.parse_args(argv)
    length = 128 if args.quick else args.length
    repeats = 1 if args.quick else 5
    torch.set_num_threads(2)
    ent = entropy_benchmark(length, 32 if args.quick else args.chunk_size, repeats)
    att = attention_benchmark(32 if args.quick else 256, 2 if args.quick else 8, 64 if args.quick else 256, 8, repeats)
    print(f"{'variant':<42}{'time (s)':>12}{'peak RSS growth (MiB)':>24}")
    print(f"{f'materialised probabilities, L={length}':<42}{ent['t_full']:>12.4f}{ent['m_full']:>24.1f}")
    print(f"{f'chunked from q/k, L={length}':<42}{ent['t_chunk']:>12.4f}{ent['m_chunk']:>24.1f}")
    print(f"(max |difference| {ent['max_err']:.2e}; logits + probabilities alone: {ent['analytic_full_mib']:.0f} MiB)")
    print(f"{'nn.MultiheadAttention fwd+bwd (weights)':<42}{att['mha_weights']:>12.4f}")
    print(f"{'nn.MultiheadAttention fwd+bwd (fused)':<42}{att['mha_fused']:>12.4f}")
    print(f"{'EntropyGuidedAttention fwd+bwd':<42}{att['ega']:>12.4f}")
    results = {
        "memory_ratio": ent["m_full"] / max(ent["m_chunk"], 1e-3),
        "time_ratio": ent["t_chunk"] / ent["t_full"],
        "ega_vs_mha_weights": att["ega"] / att["mha_weights"],
        "ega_vs_mha_fused": att["ega"] / att["mha_fused"],
    }
    print(f"chunked entropy peak memory, materialised / chunked: {results['memory_ratio']:.1f}x (goal >= 8)")
    print(f"chunked entropy time, chunked / materialised: {results['time_ratio']:.2f}x (goal <= 1.5)")
    print(
        f"EntropyGuidedAttention fwd+bwd / MHA (need_weights=True): {results['ega_vs_mha_weights']:.2f}x (goal <= 1.3)"
    )
    print(f"EntropyGuidedAttention fwd+bwd / MHA (need_weights=False, fused): {results['ega_vs_mha_fused']:.2f}x "
          "(goal <= 1.3)")  # fmt: skip
    return results


if __name__ == "__main__":
    print(json.dumps(main(), indent=None))
