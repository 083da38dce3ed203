r"""A trainable neural mutual-information estimator and a one-call offline estimate.

:class:`MutualInformationEstimator` holds a critic :math:`T_\theta(x, y)` and turns a batch of joint samples into the
:math:`N \times N` score matrix :math:`S_{ij} = T_\theta(x_i, y_j)` that the bounds of
:mod:`lightning_info.functional.mi_bounds` (InfoNCE, NWJ, MINE, SMILE) consume. Maximising the
returned bound over :math:`\theta` tightens it towards :math:`I(X; Y)`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from lightning_info._internal.dtypes import upcast
from lightning_info._internal.validation import check_choice, check_int, check_range, check_tensor
from lightning_info.functional.mi_bounds import infonce, mine, nwj, smile

ESTIMATORS = ("infonce", "nwj", "mine", "smile")
CRITICS = ("separable", "concat")


def _mlp(in_dim: int, hidden: int, layers: int, out_dim: int) -> nn.Sequential:
    modules: list[nn.Module] = []
    width = in_dim
    for _ in range(layers):
        modules += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    modules.append(nn.Linear(width, out_dim))
    return nn.Sequential(*modules)


class MutualInformationEstimator(nn.Module):
    r"""Neural estimator of :math:`I(X; Y)`: a critic plus one of the variational bounds.

    Critics (Poole et al., 2019; Song & Ermon, 2020):

    - ``"separable"``: :math:`T(x, y) = g(x)^\top h(y)`, two MLPs into an ``embed_dim`` space; the :math:`N \times N`
      matrix costs :math:`2N` MLP evaluations and one matrix product.
    - ``"concat"``: :math:`T(x, y) = f([x; y])`, one MLP on every pair; :math:`N^2` evaluations, more expressive.

    ``forward(x, y)`` returns the bound for the batch (maximise it to train the critic: ``loss = -estimator(x, y)``).
    For ``"mine"`` the moving average of :math:`\mathbb{E}_q[e^T]` is a buffer updated in training mode only; for
    ``"smile"`` the value is SMILE's and the gradient the Jensen-Shannon bound's (see
    :func:`~lightning_info.functional.smile`).

    Args:
        x_dim: features of ``x``.
        y_dim: features of ``y``.
        estimator: ``"smile"`` (default), ``"infonce"``, ``"nwj"`` or ``"mine"``.
        critic: ``"separable"`` or ``"concat"``.
        hidden: width of the critic's hidden layers.
        layers: number of hidden layers of each MLP.
        embed_dim: output size of ``g`` and ``h`` for the separable critic.
        clip: SMILE's :math:`\tau`.
        ema_rate: MINE's moving-average rate :math:`\alpha`.

    Raises:
        TypeError: an argument of the wrong type.
        ValueError: an unknown ``estimator``/``critic`` or a non-positive size, ``clip`` or ``ema_rate``.

    Example:
        >>> import torch
        >>> from lightning_info.metrics import MutualInformationEstimator
        >>> estimator = MutualInformationEstimator(3, 2, estimator="infonce", hidden=8)
        >>> estimator.scores(torch.randn(5, 3), torch.randn(5, 2)).shape
        torch.Size([5, 5])
        >>> bool(estimator(torch.randn(5, 3), torch.randn(5, 2)) <= torch.log(torch.tensor(5.0)))
        True
    """

    mine_log_ema: Tensor
    mine_ema_set: Tensor

    def __init__(
        self,
        x_dim: int,
        y_dim: int,
        estimator: str = "smile",
        critic: str = "separable",
        hidden: int = 256,
        layers: int = 2,
        embed_dim: int = 32,
        clip: float = 5.0,
        ema_rate: float = 0.01,
    ) -> None:
        super().__init__()
        self.x_dim = check_int("x_dim", x_dim, min_value=1)
        self.y_dim = check_int("y_dim", y_dim, min_value=1)
        self.estimator = check_choice("estimator", estimator, ESTIMATORS)
        self.critic = check_choice("critic", critic, CRITICS)
        check_int("hidden", hidden, min_value=1)
        check_int("layers", layers, min_value=0)
        check_int("embed_dim", embed_dim, min_value=1)
        self.clip = check_range("clip", clip, 0.0, low_inclusive=False)
        self.ema_rate = check_range("ema_rate", ema_rate, 0.0, 1.0, low_inclusive=False)
        if critic == "separable":
            self.g: nn.Module = _mlp(x_dim, hidden, layers, embed_dim)
            self.h: nn.Module = _mlp(y_dim, hidden, layers, embed_dim)
        else:
            self.f: nn.Module = _mlp(x_dim + y_dim, hidden, layers, 1)
        self.register_buffer("mine_log_ema", torch.zeros(()))
        self.register_buffer("mine_ema_set", torch.zeros((), dtype=torch.bool))

    def _check_inputs(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        x = check_tensor("x", x, ndim=2, min_rows=2)
        y = check_tensor("y", y, ndim=2, min_rows=2)
        if x.shape[1] != self.x_dim or y.shape[1] != self.y_dim:
            raise ValueError(
                f"x and y must have {self.x_dim} and {self.y_dim} features, got shapes {tuple(x.shape)} and "
                f"{tuple(y.shape)}"
            )
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"x and y must have the same number of rows, got {x.shape[0]} and {y.shape[0]}")
        dtype = next(self.parameters()).dtype
        return upcast(x, dtype), upcast(y, dtype)

    def scores(self, x: Tensor, y: Tensor) -> Tensor:
        """The critic matrix ``S[i, j] = T(x[i], y[j])`` of shape ``(N, N)``, positives on the diagonal."""
        x, y = self._check_inputs(x, y)
        if self.critic == "separable":
            return self.g(x) @ self.h(y).T
        n = x.shape[0]
        pairs = torch.cat([x.unsqueeze(1).expand(n, n, -1), y.unsqueeze(0).expand(n, n, -1)], dim=-1)
        return self.f(pairs).squeeze(-1)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """The estimator's bound on ``I(X; Y)`` (nats) for a batch of joint samples, differentiable in the critic."""
        scores = self.scores(x, y)
        if self.estimator == "infonce":
            return infonce(scores)
        if self.estimator == "nwj":
            return nwj(scores)
        if self.estimator == "smile":
            return smile(scores, clip=self.clip)
        bound, log_ema = mine(scores, self.mine_log_ema if bool(self.mine_ema_set) else None, self.ema_rate)
        if self.training:
            self.mine_log_ema.copy_(log_ema)
            self.mine_ema_set.fill_(True)
        return bound

    def fit(
        self,
        x: Tensor,
        y: Tensor,
        optimizer: torch.optim.Optimizer,
        steps: int,
        batch_size: int,
        generator: torch.Generator | None = None,
    ) -> None:
        """Train the critic for ``steps`` updates on minibatches of ``batch_size`` random rows of ``(x, y)``.

        Each update maximises the bound (``loss = -self(x_batch, y_batch)``); rows are drawn without replacement
        within a minibatch, with ``generator`` (CPU). Leaves the module in training mode. Only the critic's
        parameters get gradients: pass detached inputs.
        """
        self.train()
        n = x.shape[0]
        for _ in range(steps):
            index = torch.randperm(n, generator=generator)[:batch_size].to(x.device)
            loss = -self(x[index], y[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()


def estimate_mutual_information(
    x: Tensor,
    y: Tensor,
    estimator: str = "smile",
    steps: int = 1000,
    batch_size: int = 64,
    lr: float = 1e-3,
    critic: str = "separable",
    hidden: int = 256,
    eval_batches: int = 32,
    eval_fraction: float = 0.25,
    seed: int = 0,
) -> float:
    r"""Estimate :math:`I(X; Y)` in nats from paired samples by training a fresh :class:`MutualInformationEstimator`.

    A random ``eval_fraction`` of the rows is held out; the critic is trained with Adam for ``steps`` minibatches
    drawn from the other rows, then the mean bound over ``eval_batches`` minibatches of the held-out rows is returned
    (critic frozen). Held-out evaluation matters: a critic evaluated on rows it was trained on overfits them and
    overestimates (on 20-d Gaussians with 2 nats, 8192 rows, 500 steps: 2.19 on training rows vs. 1.34 held out).
    Give at least ``batch_size * steps`` rows to avoid reusing samples. The result is deterministic for a given
    ``seed`` (CPU) and the global RNG is left untouched. InfoNCE cannot exceed ``log(batch_size)``.

    Args:
        x: samples of :math:`X`, shape ``(N, d_x)``.
        y: the paired samples of :math:`Y`, shape ``(N, d_y)``.
        estimator: ``"smile"``, ``"infonce"``, ``"nwj"`` or ``"mine"``.
        steps: training steps (>= 1: an untrained critic bounds nothing useful).
        batch_size: minibatch size (at least 2, at most ``N``).
        lr: Adam learning rate.
        critic: ``"separable"`` or ``"concat"``.
        hidden: critic width.
        eval_batches: held-out minibatches averaged for the returned estimate.
        eval_fraction: fraction of the rows held out for the estimate, in (0, 1).
        seed: seeds the critic's initialisation and the minibatch draws.

    Returns:
        The estimate in nats.

    Raises:
        TypeError: if ``x``/``y`` are not floating-point tensors or an argument has the wrong type.
        ValueError: on mismatched rows, NaN/Inf inputs, a training or held-out part with fewer than ``batch_size``
            rows, or a bad option.

    Example:
        >>> import torch
        >>> x = torch.randn(1024, 2)
        >>> value = estimate_mutual_information(x, x + 0.1 * torch.randn(1024, 2), "infonce", steps=50, hidden=16)
        >>> 0.0 < value <= math.log(64)
        True
    """
    x = check_tensor("x", x, ndim=2, min_rows=2)
    y = check_tensor("y", y, ndim=2, min_rows=2)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y must have the same number of rows, got {x.shape[0]} and {y.shape[0]}")
    n = x.shape[0]
    steps = check_int("steps", steps, min_value=1)
    batch_size = check_int("batch_size", batch_size, min_value=2)
    lr = check_range("lr", lr, 0.0, low_inclusive=False)
    eval_batches = check_int("eval_batches", eval_batches, min_value=1)
    n_eval = round(n * check_range("eval_fraction", eval_fraction, 0.0, 1.0, low_inclusive=False, high_inclusive=False))
    if min(n_eval, n - n_eval) < batch_size:
        raise ValueError(
            f"batch_size must be <= the rows of the training ({n - n_eval}) and held-out ({n_eval}) parts, "
            f"got {batch_size}"
        )
    x, y = x.float(), y.float()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = MutualInformationEstimator(x.shape[1], y.shape[1], estimator=estimator, critic=critic, hidden=hidden)
    model.to(x.device)
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=generator).to(x.device)
    train, held_out = order[n_eval:], order[:n_eval]
    model.fit(x[train], y[train], torch.optim.Adam(model.parameters(), lr=lr), steps, batch_size, generator)
    model.eval()
    total = 0.0
    with torch.no_grad():
        for _ in range(eval_batches):
            index = held_out[torch.randperm(n_eval, generator=generator)[:batch_size].to(x.device)]
            total += float(model(x[index], y[index]))
    value = total / eval_batches
    if not math.isfinite(value):
        raise RuntimeError(f"the {estimator} estimate is not finite ({value}); lower lr or use estimator='smile'")
    return value
