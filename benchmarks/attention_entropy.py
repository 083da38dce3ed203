"""Benchmark the chunked attention entropy and EntropyGuidedAttention against their materialising baselines (CPU).

1. Row entropies of softmax(q k^T / sqrt(d)) at sequence length L (8 heads, head dim 64, batch 1):
   ``attention_entropy_from_qk`` (chunked over queries) vs materialising the probabilities as the paper's released
   code does (``p = softmax(s); H = -(p * log(p + 1e-9)).sum(-1)``). Peak memory is each variant's growth of the
   peak resident set size (``VmHWM``, reset before each variant; Linux).
2. ``EntropyGuidedAttention`` forward + backward (entropy recorded, causal mask) vs ``nn.MultiheadAttention`` with
   ``need_weights=True`` (its default: the probabilities are materialised too) and ``need_weights=False`` (the fused
   scaled-dot-product kernel ``nn.TransformerEncoderLayer`` uses) at N=256.
2b. The Hugging Face / SDPA path's entropies (``sdpa_attention_entropy``, causal) at length L: peak memory of the
   monitor's forward and of the regularizer's forward + backward against the same on materialised causal maps.
3. With ``transformers`` installed, the Hugging Face path on a ``GPT2LMHeadModel`` config (4 layers, d=128, 4 heads,
   T=512, batch 2; SDPA attention): ``Trainer.fit`` time for a fixed number of AdamW steps (no logger) plain, with
   ``AttentionEntropyMonitor(every_n_steps=50)``, and with ``EntropyGuidedAttentionCallback()`` (the regularizer and
   the temperatures every step). Runs alternate; the best of ``repeats`` is kept for each.

Times are interleaved (one call of every variant per round) and each ratio is the median of the per-round ratios,
which keeps a busy machine from favouring one side. Run ``python benchmarks/attention_entropy.py`` (``--quick`` for
a smoke run).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_info.attention import EntropyGuidedAttention, attention_entropy_from_qk
from lightning_info.attention.sdpa import sdpa_attention_entropy
from lightning_info.callbacks import AttentionEntropyMonitor, EntropyGuidedAttentionCallback


def materialised_entropy(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """The usual way: build the whole probability map, then -sum p log p."""
    probs = torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, dim=-1)
    return -(probs * torch.log(probs + 1e-9)).sum(-1)


def _inputs(length: int, heads: int = 8, head_dim: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(1, heads, length, head_dim, generator=g), torch.randn(1, heads, length, head_dim, generator=g)


def _interleaved(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, list[float]]:
    """Seconds of ``repeats`` rounds, each calling every function once (after one warm-up round)."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def _ratio(times: dict[str, list[float]], num: str, den: str) -> float:
    return statistics.median(a / b for a, b in zip(times[num], times[den], strict=True))


def _peak_rss_kib() -> int:
    """``VmHWM``: the peak resident set size of this process (Linux)."""
    status = Path("/proc/self/status").read_text().splitlines()
    return next(int(line.split()[1]) for line in status if line.startswith("VmHWM"))


def peak_rss_growth(fn: Callable[[], object]) -> float:
    """MiB by which ``fn()`` raises the peak resident set size above the current one (Linux; NaN elsewhere).

    Writing 5 to ``/proc/self/clear_refs`` resets the peak to the current resident size (Linux >= 4.0), so earlier,
    freed allocations do not hide this one (``ru_maxrss`` cannot be reset).
    """
    try:
        Path("/proc/self/clear_refs").write_text("5")
        before = _peak_rss_kib()
    except (OSError, StopIteration):
        return math.nan
    result = fn()
    growth = (_peak_rss_kib() - before) / 1024
    del result
    return growth


def entropy_benchmark(length: int, chunk_size: int, repeats: int) -> dict[str, float]:
    q, k = _inputs(length)
    with torch.no_grad():
        attention_entropy_from_qk(q[..., :8, :], k[..., :8, :])  # load kernels before measuring
        materialised_entropy(q[..., :8, :], k[..., :8, :])
        m_full = peak_rss_growth(lambda: materialised_entropy(q, k))
        m_chunk = peak_rss_growth(lambda: attention_entropy_from_qk(q, k, chunk_size=chunk_size))
        full = materialised_entropy(q, k)
        chunked = attention_entropy_from_qk(q, k, chunk_size=chunk_size)
        max_err = (full - chunked).abs().max().item()
        del full, chunked
        times = _interleaved(
            {
                "full": lambda: materialised_entropy(q, k),
                "chunk": lambda: attention_entropy_from_qk(q, k, chunk_size=chunk_size),
            },
            repeats,
        )
    analytic_full = 2 * 8 * length * length * 4 / 2**20  # logits + probabilities, float32
    return {"t_full": statistics.median(times["full"]), "t_chunk": statistics.median(times["chunk"]),
            "time_ratio": _ratio(times, "chunk", "full"), "m_full": m_full, "m_chunk": m_chunk, "max_err": max_err,
            "analytic_full_mib": analytic_full}  # fmt: skip


def sdpa_memory_benchmark(length: int, chunk_size: int) -> dict[str, float]:
    """Peak-RSS growth of the Hugging Face / SDPA path's entropies against materialised causal maps at ``length``.

    The monitor's path (:func:`sdpa_attention_entropy` without gradient) and the regularizer's (forward + backward of
    the summed entropies through its analytic chunk backward), each against the same work on the materialised
    ``softmax(q k^T / sqrt(d) + causal mask)``.
    """
    q, k = _inputs(length)
    causal = torch.ones(length, length, dtype=torch.bool).tril()

    def materialised(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        logits = (q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5).masked_fill(~causal, -torch.inf)
        probs = torch.softmax(logits, dim=-1)
        return -(probs * torch.log(probs + 1e-9)).sum(-1)

    def backward(entropy_of: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
        qg, kg = q.clone().requires_grad_(), k.clone().requires_grad_()
        entropy_of(qg, kg).sum().backward()

    def chunked(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        return sdpa_attention_entropy(q, k, is_causal=True, chunk_size=chunk_size)[0]

    backward(lambda a, b: chunked(a[..., :8, :], b[..., :8, :]))  # load kernels before measuring
    backward(lambda a, b: materialised(a, b)[..., :8])
    with torch.no_grad():
        m_monitor_full = peak_rss_growth(lambda: materialised(q, k))
        m_monitor = peak_rss_growth(lambda: chunked(q, k))
    m_reg_full = peak_rss_growth(lambda: backward(materialised))
    m_reg = peak_rss_growth(lambda: backward(chunked))
    return {"m_monitor_full": m_monitor_full, "m_monitor": m_monitor, "m_reg_full": m_reg_full, "m_reg": m_reg}


def attention_benchmark(length: int, batch: int, embed_dim: int, heads: int, repeats: int) -> dict[str, float]:
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(embed_dim, heads, batch_first=True)
    ega = EntropyGuidedAttention(embed_dim, heads, batch_first=True)
    ega.load_state_dict(mha.state_dict())
    x = torch.randn(batch, length, embed_dim, requires_grad=True)
    mask = nn.Transformer.generate_square_subsequent_mask(length)

    def step(module: nn.Module, need_weights: bool) -> Callable[[], None]:
        def run() -> None:
            out, _ = module(x, x, x, attn_mask=mask, need_weights=need_weights, is_causal=not need_weights)
            out.sum().backward()

        return run

    times = _interleaved(
        {"mha_weights": step(mha, True), "mha_fused": step(mha, False), "ega": step(ega, False)}, repeats
    )
    result = {name: statistics.median(values) for name, values in times.items()}
    result["ega_vs_mha_weights"] = _ratio(times, "ega", "mha_weights")
    result["ega_vs_mha_fused"] = _ratio(times, "ega", "mha_fused")
    return result


class _GPT2LM(LightningModule):
    def __init__(self, layers: int, d_model: int, heads: int, length: int) -> None:
        super().__init__()
        import transformers

        config = transformers.GPT2Config(vocab_size=1000, n_positions=length, n_embd=d_model, n_layer=layers,
                                         n_head=heads, bos_token_id=0, eos_token_id=0)  # fmt: skip
        self.net = transformers.GPT2LMHeadModel(config)
        self.net.set_attn_implementation("sdpa")

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        (ids,) = batch
        return self.net(input_ids=ids, labels=ids).loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=1e-4)


def hf_benchmark(
    steps: int, every_n_steps: int, repeats: int, layers: int, d_model: int, length: int, batch: int
) -> dict[str, float]:
    """Seconds of ``Trainer.fit`` on a GPT-2 config: plain, with the monitor, with the regularizer callback."""
    ids = torch.randint(0, 1000, (steps * batch, length), generator=torch.Generator().manual_seed(0))
    loader = DataLoader(TensorDataset(ids), batch_size=batch)

    def fit(callbacks: list[Callback]) -> float:
        torch.manual_seed(0)
        trainer = Trainer(accelerator="cpu", max_steps=steps, logger=False, enable_checkpointing=False,
                          enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks)  # fmt: skip
        model = _GPT2LM(layers, d_model, 4, length)
        start = time.perf_counter()
        trainer.fit(model, loader)
        return time.perf_counter() - start

    runs: dict[str, list[float]] = {"plain": [], "monitor": [], "regularizer": []}
    for _ in range(repeats):
        runs["plain"].append(fit([]))
        runs["monitor"].append(fit([AttentionEntropyMonitor(every_n_steps=every_n_steps)]))
        runs["regularizer"].append(fit([EntropyGuidedAttentionCallback()]))
    return {name: min(times) for name, times in runs.items()}


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, one repeat (smoke run, not a measurement)")
    parser.add_argument("--length", type=int, default=4096)
    parser.add_argument("--chunk-size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (the targets are for 2)")
    parser.add_argument("--repeats", type=int, default=5, help="rounds of the entropy timing (x3 for attention)")
    parser.add_argument("--hf-steps", type=int, default=150, help="training steps per GPT-2 run")
    args = parser.parse_args(argv)
    length = 128 if args.quick else args.length
    repeats = 1 if args.quick else args.repeats
    torch.set_num_threads(args.threads)
    chunk = 32 if args.quick else args.chunk_size
    ent = entropy_benchmark(length, chunk, repeats)
    att = attention_benchmark(32 if args.quick else 256, 2 if args.quick else 8, 64 if args.quick else 256, 8,
                              1 if args.quick else 3 * repeats)  # fmt: skip
    print(f"{'variant (median of rounds)':<48}{'time (s)':>10}{'peak RSS growth (MiB)':>24}")
    print(f"{f'materialised probabilities, L={length}':<48}{ent['t_full']:>10.4f}{ent['m_full']:>24.1f}")
    print(f"{f'chunked from q/k (chunk {chunk}), L={length}':<48}{ent['t_chunk']:>10.4f}{ent['m_chunk']:>24.1f}")
    print(f"(max |difference| {ent['max_err']:.2e}; logits + probabilities alone: {ent['analytic_full_mib']:.0f} MiB)")
    sdpa = sdpa_memory_benchmark(length, chunk)
    print(f"{f'SDPA path, monitor (no grad), causal, L={length}':<48}{'':>10}{sdpa['m_monitor']:>24.1f}")
    print(f"{'  materialised causal maps':<48}{'':>10}{sdpa['m_monitor_full']:>24.1f}")
    print(f"{'SDPA path, regularizer fwd+bwd, causal':<48}{'':>10}{sdpa['m_reg']:>24.1f}")
    print(f"{'  materialised causal maps, fwd+bwd':<48}{'':>10}{sdpa['m_reg_full']:>24.1f}")
    print(f"{'nn.MultiheadAttention fwd+bwd, need_weights=True':<48}{att['mha_weights']:>10.4f}")
    print(f"{'nn.MultiheadAttention fwd+bwd, fused (False)':<48}{att['mha_fused']:>10.4f}")
    print(f"{'EntropyGuidedAttention fwd+bwd (entropy kept)':<48}{att['ega']:>10.4f}")
    results = {
        "memory_ratio": ent["m_full"] / max(ent["m_chunk"], 1e-3),
        "time_ratio": ent["time_ratio"],
        "ega_vs_mha_weights": att["ega_vs_mha_weights"],
        "ega_vs_mha_fused": att["ega_vs_mha_fused"],
    }
    print(f"chunked entropy peak memory, materialised / chunked: {results['memory_ratio']:.1f}x (goal >= 8)")
    results["sdpa_monitor_memory_ratio"] = sdpa["m_monitor_full"] / max(sdpa["m_monitor"], 1e-3)
    results["sdpa_regularizer_memory_ratio"] = sdpa["m_reg_full"] / max(sdpa["m_reg"], 1e-3)
    print(f"SDPA-path entropy peak memory at L={length}, materialised / chunked: monitor "
          f"{results['sdpa_monitor_memory_ratio']:.1f}x, regularizer fwd+bwd "
          f"{results['sdpa_regularizer_memory_ratio']:.1f}x (goal >= 8)")  # fmt: skip
    print(f"chunked entropy time, chunked / materialised: {results['time_ratio']:.2f}x (goal <= 1.5)")
    print(
        f"EntropyGuidedAttention fwd+bwd / MHA (need_weights=True): {results['ega_vs_mha_weights']:.2f}x (goal <= 1.3)"
    )
    print(f"EntropyGuidedAttention fwd+bwd / MHA (need_weights=False, fused): {results['ega_vs_mha_fused']:.2f}x "
          "(goal <= 1.3)")  # fmt: skip
    if importlib.util.find_spec("transformers") is not None:
        every = 1 if args.quick else 50
        hf = hf_benchmark(steps=3 if args.quick else args.hf_steps, every_n_steps=every,
                          repeats=1 if args.quick else 3, layers=2 if args.quick else 4,
                          d_model=32 if args.quick else 128, length=32 if args.quick else 512, batch=2)  # fmt: skip
        print(f"GPT-2 config training, seconds (best of runs): {', '.join(f'{k} {v:.2f}' for k, v in hf.items())}")
        results["hf_monitor_overhead"] = hf["monitor"] / hf["plain"]
        results["hf_regularizer_overhead"] = hf["regularizer"] / hf["plain"]
        print(f"GPT-2 train step with AttentionEntropyMonitor(every_n_steps={every}) / without: "
              f"{results['hf_monitor_overhead']:.3f}x (goal <= 1.05)")  # fmt: skip
        print(f"GPT-2 train step with EntropyGuidedAttentionCallback() / SDPA alone: "
              f"{results['hf_regularizer_overhead']:.2f}x (goal <= 1.5)")  # fmt: skip
    return results


if __name__ == "__main__":
    print(json.dumps(main(), indent=None))
