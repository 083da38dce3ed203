r"""Variational lower bounds on mutual information from a matrix of critic scores.

All bounds take ``scores``, an :math:`N \times N` matrix :math:`S_{ij} = T(x_i, y_j)` of a critic :math:`T` evaluated
on every pairing of a batch :math:`\{(x_i, y_i)\}_{i=1}^N` drawn from the joint :math:`p(x, y)`. The diagonal holds the
:math:`N` positive (joint) pairs; the :math:`N(N-1)` off-diagonal entries pair :math:`x_i` with an independent
:math:`y_j`, i.e. samples of the product of marginals :math:`q = p(x)p(y)`. Writing
:math:`\mathbb{E}_p[T] = \frac1N\sum_i S_{ii}` and :math:`\mathbb{E}_q[g(T)] = \frac{1}{N(N-1)}\sum_{i\ne j} g(S_{ij})`:

- InfoNCE (van den Oord et al., 2018): :math:`\frac1N\sum_i [S_{ii} - \log\sum_j e^{S_{ij}}] + \log N \le \log N`.
- NWJ (Nguyen, Wainwright & Jordan, 2010): :math:`\mathbb{E}_p[T] - e^{-1}\,\mathbb{E}_q[e^{T}]`.
- MINE (Belghazi et al., 2018), the Donsker-Varadhan bound :math:`\mathbb{E}_p[T] - \log \mathbb{E}_q[e^{T}]`, whose
  gradient divides :math:`\nabla\mathbb{E}_q[e^T]` by a moving average of :math:`\mathbb{E}_q[e^T]` instead of the
  batch value (MINE's bias correction, their Eq. 12-13).
- SMILE (Song & Ermon, ICLR 2020, Eq. 17): :math:`\mathbb{E}_p[T] - \log\mathbb{E}_q[\mathrm{clip}(e^{T}, e^{-\tau},
  e^{\tau})]`; the clipping bounds the variance of the partition estimate, which for the unclipped DV/MINE estimators
  can grow exponentially with the true MI.

Values are in nats. Inputs in float16/bfloat16 are computed in float32.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.nn import functional as F

from lightning_info._internal.dtypes import upcast
from lightning_info._internal.validation import check_finite, check_range, check_tensor


def _check_scores(scores: object) -> Tensor:
    """Check a finite floating-point square score matrix with N >= 2 and return it (low precision upcast)."""
    scores = check_tensor("scores", scores, ndim=2, min_rows=2, finite=False)
    if scores.shape[0] != scores.shape[1]:
        raise ValueError(f"scores must be a square N x N matrix, got shape {tuple(scores.shape)}")
    return check_finite("scores", upcast(scores))


def _off_diagonal(scores: Tensor) -> Tensor:
    """The N(N-1) off-diagonal entries (product-of-marginals pairs) as a flat tensor."""
    n = scores.shape[0]
    mask = ~torch.eye(n, dtype=torch.bool, device=scores.device)
    return scores[mask]


def _log_mean_exp(values: Tensor) -> Tensor:
    return torch.logsumexp(values, dim=0) - math.log(values.numel())


def infonce(scores: Tensor) -> Tensor:
    r"""InfoNCE lower bound :math:`\frac1N\sum_i \big[S_{ii} - \log\sum_{j} e^{S_{ij}}\big] + \log N` (nats).

    The bound can never exceed :math:`\log N`, so it underestimates any MI above the log of the batch size.

    Args:
        scores: critic matrix :math:`S_{ij} = T(x_i, y_j)`, shape ``(N, N)``, positives on the diagonal.

    Returns:
        A scalar tensor, differentiable with respect to ``scores``.

    Raises:
        TypeError: if ``scores`` is not a floating-point tensor.
        ValueError: if ``scores`` is not square, has fewer than 2 rows, or holds NaN/Inf.

    Example:
        >>> import torch
        >>> from lightning_info.functional import infonce
        >>> round(float(infonce(torch.eye(4) * 100)), 4)  # a perfect critic reaches log(4)
        1.3863
    """
    scores = _check_scores(scores)
    n = scores.shape[0]
    return (scores.diagonal() - torch.logsumexp(scores, dim=1)).mean() + math.log(n)


def nwj(scores: Tensor) -> Tensor:
    r"""NWJ (f-divergence / "MINE-f") lower bound :math:`\mathbb{E}_p[T] - e^{-1}\mathbb{E}_q[e^{T}]` (nats).

    Unbiased in the batch (no log of a mean) but with a variance that grows with :math:`e^{T}`.

    Args:
        scores: critic matrix, shape ``(N, N)``, positives on the diagonal, off-diagonal entries as marginal pairs.

    Returns:
        A scalar tensor, differentiable with respect to ``scores``.

    Raises:
        TypeError: if ``scores`` is not a floating-point tensor.
        ValueError: if ``scores`` is not square, has fewer than 2 rows, holds NaN/Inf, or its exponentials overflow.

    Example:
        >>> import torch
        >>> from lightning_info.functional import nwj
        >>> round(float(nwj(torch.ones(3, 3))), 4)  # T = 1 everywhere: 1 - e^0 = 0
        0.0
    """
    scores = _check_scores(scores)
    value = scores.diagonal().mean() - torch.exp(_log_mean_exp(_off_diagonal(scores)) - 1.0)
    if not bool(torch.isfinite(value)):
        raise ValueError(
            f"scores are too large for the NWJ bound in {scores.dtype}: e^T of the off-diagonal scores overflows "
            "(the bound is -inf); scale the critic down or use infonce/smile"
        )
    return value


def mine(scores: Tensor, ema: Tensor | None = None, ema_rate: float = 0.01) -> tuple[Tensor, Tensor]:
    r"""MINE: the Donsker-Varadhan bound with the moving-average gradient correction of Belghazi et al. (2018).

    The value returned is the DV bound of the batch, :math:`\mathbb{E}_p[T] - \log\mathbb{E}_q[e^{T}]`. Its gradient is
    MINE's bias-corrected one,

    .. math:: \nabla\mathbb{E}_p[T] - \frac{\nabla\mathbb{E}_q[e^{T}]}{\bar m_t}, \qquad
        \bar m_t = (1 - \alpha)\,\bar m_{t-1} + \alpha\,\mathbb{E}_q[e^{T}],

    where the batch estimate of :math:`\mathbb{E}_q[e^T]` in the denominator (biased for a minibatch) is replaced by
    its exponential moving average :math:`\bar m` with rate :math:`\alpha`. The average is kept in log space, so large
    scores do not overflow.

    Args:
        scores: critic matrix, shape ``(N, N)``, positives on the diagonal, off-diagonal entries as marginal pairs.
        ema: :math:`\log\bar m_{t-1}` returned by the previous call (a scalar tensor), or ``None`` on the first step
            (the average starts at this batch's value, which gives the plain DV gradient).
        ema_rate: :math:`\alpha \in (0, 1]`; ``1`` disables the correction.

    Returns:
        ``(bound, new_ema)``: the scalar bound (with the corrected gradient) and :math:`\log\bar m_t` (detached), to
        pass back as ``ema`` on the next step.

    Raises:
        TypeError: if ``scores`` is not a floating-point tensor.
        ValueError: if ``scores`` is not square, has fewer than 2 rows or holds NaN/Inf, if ``ema`` is not a finite
            scalar, or if ``ema_rate`` is not in (0, 1].

    Example:
        >>> import torch
        >>> from lightning_info.functional import mine
        >>> bound, ema = mine(torch.zeros(3, 3))
        >>> float(bound), float(ema)
        (0.0, 0.0)
    """
    scores = _check_scores(scores)
    rate = check_range("ema_rate", ema_rate, 0.0, 1.0, low_inclusive=False)
    log_mean_exp = _log_mean_exp(_off_diagonal(scores))
    batch_log = log_mean_exp.detach()
    if ema is None:
        new_ema = batch_log
    else:
        ema = check_tensor("ema", ema, finite=True)
        if ema.numel() != 1:
            raise ValueError(f"ema must be a scalar tensor, got shape {tuple(ema.shape)}")
        previous = ema.detach().reshape(()).to(batch_log)
        if rate == 1.0:
            new_ema = batch_log
        else:
            new_ema = torch.logaddexp(previous + math.log1p(-rate), batch_log + math.log(rate))
    # ratio = E_q[e^T] / m (value 1 when m equals the batch mean); d ratio = (E_q[e^T] / m) d log E_q[e^T]
    ratio = torch.exp(log_mean_exp - new_ema)
    bound = scores.diagonal().mean() - batch_log - (ratio - ratio.detach())
    return bound, new_ema


def smile(scores: Tensor, clip: float | None = 5.0) -> Tensor:
    r"""SMILE estimate :math:`\mathbb{E}_p[T] - \log\mathbb{E}_q[\mathrm{clip}(e^{T}, e^{-\tau}, e^{\tau})]` (nats).

    Song & Ermon (2020), Eq. 17, with :math:`\tau` = ``clip``. The clipped estimate is not itself a lower bound, and its
    gradient (zero for clipped pairs) is a poor training signal, so, as in the paper's experiments, the critic is
    trained with the Jensen-Shannon (f-GAN) bound :math:`\mathbb{E}_p[-\mathrm{softplus}(-T)] -
    \mathbb{E}_q[\mathrm{softplus}(T)]`, whose optimum is the log density ratio :math:`T^* = \log p/q` that SMILE
    plugs in: the returned tensor has the SMILE value and the JS bound's gradient.

    Args:
        scores: critic matrix, shape ``(N, N)``, positives on the diagonal, off-diagonal entries as marginal pairs.
        clip: :math:`\tau > 0`; ``None`` disables clipping (the DV estimate on a JS-trained critic).

    Returns:
        A scalar tensor: SMILE's value, the JS bound's gradient.

    Raises:
        TypeError: if ``scores`` is not a floating-point tensor or ``clip`` is not a number.
        ValueError: if ``scores`` is not square, has fewer than 2 rows or holds NaN/Inf, or ``clip <= 0``.

    Example:
        >>> import torch
        >>> from lightning_info.functional import smile
        >>> scores = torch.full((4, 4), -20.0).fill_diagonal_(3.0)
        >>> round(float(smile(scores, clip=5.0)), 4)  # partition clipped at e^-5: 3 - (-5)
        8.0
    """
    scores = _check_scores(scores)
    marginal = _off_diagonal(scores)
    if clip is not None:
        tau = check_range("clip", clip, 0.0, low_inclusive=False)
        marginal = marginal.clamp(-tau, tau)
    value = scores.diagonal().mean() - _log_mean_exp(marginal)
    js = -F.softplus(-scores.diagonal()).mean() - F.softplus(_off_diagonal(scores)).mean()
    return js + (value - js).detach()
