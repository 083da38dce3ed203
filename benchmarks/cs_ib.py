"""CS-IB loss cost: ours vs a straightforward broadcast implementation, and relative to an MSE training step.

Run: ``python benchmarks/cs_ib.py`` (``--quick`` for a smoke run). CPU timings, best of several runs; noisy on
shared machines (the header prints the load average). The MSE step is the same MLP step with
``nn.functional.mse_loss``; the CS-IB step uses ``CSIBLoss`` with its default widths (Silverman on ``x``, median on
``t``), so it includes the median of the ``N(N-1)/2`` pairwise distances of ``t``.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import torch
from torch import Tensor, nn

from lightning_info.losses import CSIBLoss


def broadcast_csib(
    x: Tensor, t: Tensor, y_pred: Tensor, y: Tensor, beta: float, sigma: float, sigma_y: float = 1.0
) -> Tensor:
    """The formulas written directly: (N, N, d) differences, kernels, then logs of plain sums."""

    def gram(a: Tensor, b: Tensor, s: float = sigma) -> Tensor:
        return torch.exp(-((a[:, None, :] - b[None, :, :]) ** 2).sum(-1) / (2 * s**2))

    y, y_pred = y.reshape(len(y), -1), y_pred.reshape(len(y_pred), -1)
    k, l1, l2, l21 = gram(x, x), gram(y, y, sigma_y), gram(y_pred, y_pred, sigma_y), gram(y_pred, y, sigma_y)
    norm = k.sum(1) ** 2
    prediction = (
        torch.log(((k * l1).sum(1) / norm).sum())
        + torch.log(((k * l2).sum(1) / norm).sum())
        - 2 * torch.log(((k * l21).sum(1) / norm).sum())
    )
    lt = gram(t, t)
    n = len(x)
    compression = (
        torch.log((k * lt).sum() / n**2)
        + torch.log(k.sum() * lt.sum() / n**4)
        - 2 * torch.log((k.sum(1) * lt.sum(1)).sum() / n**3)
    )
    return prediction + beta * compression


def _time(fn: Callable[[], None], repeats: int, min_seconds: float = 0.5) -> float:
    """Best of at least ``repeats`` runs, and of as many as fit in ``min_seconds`` (short calls get more tries)."""
    fn()  # warm-up
    best, runs, started = float("inf"), 0, time.perf_counter()
    while runs < repeats or time.perf_counter() - started < min_seconds:
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
        runs += 1
    return best


def _inputs(n: int, d: int, seed: int = 0) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    t = (x @ torch.randn(d, d, generator=g) / d**0.5).tanh().requires_grad_()
    y = x[:, 0].sin()
    y_pred = (y + 0.3 * torch.randn(n, generator=g)).requires_grad_()
    return x, t, y_pred, y


def speedup_vs_broadcast(n: int, d: int, repeats: int, min_seconds: float = 0.5) -> tuple[float, float, float]:
    """Seconds of fwd+bwd (ours, broadcast) at ``n`` samples of ``d`` features, and the relative difference."""
    x, t, y_pred, y = _inputs(n, d)
    sigma = float(d) ** 0.5  # a width at which both versions stay finite (the broadcast one underflows otherwise)
    ours = CSIBLoss(beta=0.1, sigma_x=sigma, sigma_t=sigma, sigma_y=1.0, standardize_targets=False)

    def run_ours() -> None:
        ours(x, t, y_pred, y).backward()

    def run_broadcast() -> None:
        broadcast_csib(x, t, y_pred, y, beta=0.1, sigma=sigma).backward()

    with torch.no_grad():
        a = ours(x, t, y_pred, y)
        b = broadcast_csib(x, t, y_pred, y, beta=0.1, sigma=sigma)
    rel_diff = abs(float(a - b)) / max(abs(float(b)), 1e-12)
    return _time(run_ours, repeats, min_seconds), _time(run_broadcast, repeats, min_seconds), rel_diff


def relative_to_mse(n: int, d: int, repeats: int, min_seconds: float = 0.5) -> tuple[float, float]:
    """Seconds of one MLP training step (fwd+bwd+SGD) with MSE and with CSIBLoss (median widths) at ``n``."""
    torch.manual_seed(0)
    encoder, head = nn.Sequential(nn.Linear(d, 64), nn.ReLU()), nn.Linear(64, 1)
    params = [*encoder.parameters(), *head.parameters()]
    opt = torch.optim.SGD(params, lr=1e-3)
    x, _, _, y = _inputs(n, d)
    loss_fn = CSIBLoss(beta=0.01)

    def mse_step() -> None:
        opt.zero_grad()
        nn.functional.mse_loss(head(encoder(x)).squeeze(-1), y).backward()
        opt.step()

    def csib_step() -> None:
        opt.zero_grad()
        rep = encoder(x)
        loss_fn(x, rep, head(rep).squeeze(-1), y).backward()
        opt.step()

    return _time(mse_step, repeats, min_seconds), _time(csib_step, repeats, min_seconds)


def main(
    sizes: tuple[int, ...] = (128, 512, 1024, 2048),
    d: int = 64,
    target_n: int = 1024,
    repeats: int = 5,
    min_seconds: float = 0.5,
) -> float:
    """Print the tables; return the speed-up over the broadcast version at ``target_n``."""
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    threads = torch.get_num_threads()
    print(f"CS-IB loss, fwd+bwd, d={d}, CPU threads={threads}, load average {load} (best of >= {repeats} runs)")
    ours_s, broadcast_s, rel = speedup_vs_broadcast(target_n, d, repeats, min_seconds)
    print(f"{'N':>6} {'ours ms':>9} {'broadcast ms':>13} {'speed-up':>9} {'rel diff':>9}")
    print(f"{target_n:>6} {1e3 * ours_s:>9.2f} {1e3 * broadcast_s:>13.2f} {broadcast_s / ours_s:>8.1f}x {rel:>9.1e}")
    print()
    print(f"{'N':>6} {'MSE step ms':>12} {'CS-IB step ms':>14} {'ratio':>7}")
    for n in sizes:
        mse_s, csib_s = relative_to_mse(n, d, repeats, min_seconds)
        print(f"{n:>6} {1e3 * mse_s:>12.2f} {1e3 * csib_s:>14.2f} {csib_s / mse_s:>6.1f}x")
    speedup = broadcast_s / ours_s
    print(f"fwd+bwd speed-up over broadcast at N={target_n}, d={d}: {speedup:.1f}x (goal >= 3)")
    return speedup


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, one repeat (smoke run)")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (1 is steadier on a loaded machine)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.quick:
        main(sizes=(64, 128), d=16, target_n=128, repeats=1, min_seconds=0.0)
    else:
        main()
