r"""Cauchy–Schwarz divergence information bottleneck (CS-IB) loss for regression.

Yu, Yu, Løkse, Jenssen and Principe, "Cauchy-Schwarz Divergence Information Bottleneck for Regression", ICLR 2024.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor, nn

from lightning_info._internal.validation import check_choice, check_int, check_range
from lightning_info.losses.functional.cauchy_schwarz import (
    Estimator,
    KernelWidth,
    as_samples,
    check_width,
    conditional_from_kernel,
    cs_qmi_from_kernels,
    kernel_width,
    log_kernel,
    squared_distances,
)

_MIN_STD = 1e-8


class CSIBLoss(nn.Module):
    r"""CS-IB objective: conditional CS divergence prediction term plus :math:`\beta` times the CS-QMI compression.

    .. math::
        \mathcal{L} = \hat D_{CS}\big(p(y|x) \,\|\, q_\theta(\hat y|x)\big) + \beta \, \hat I_{CS}(x; t)

    Both terms are Gaussian-kernel estimates on the mini-batch (Propositions 1 and 2 of the paper, see
    :func:`~lightning_info.losses.functional.cs_conditional_divergence` and
    :func:`~lightning_info.losses.functional.cs_qmi`), computed in log space; the kernel matrix on ``x`` is built
    once and shared by both terms. No variational bound and no noise layer are needed.

    Targets and predictions are standardised with the same affine map built from *running* statistics of the
    training targets (buffers ``target_mean``, ``target_var``, ``target_count``, saved in checkpoints): the
    cumulative mean and variance of every target seen in training mode, so ``sigma_y`` is in units of the target
    standard deviation and does not change from batch to batch. Under ``torch.distributed`` the statistics of each
    batch are summed over the processes (identical buffers on every rank); the kernel terms use the local batch.

    After each call, :attr:`last_prediction` and :attr:`last_compression` hold the detached terms for logging
    (``csib/prediction``, ``csib/compression``).

    Args:
        beta: :math:`\beta \ge 0`, weight of the compression term.
        sigma_x: kernel width on the (flattened) inputs ``x``: a float > 0, ``"median"`` or ``"silverman"``.
        sigma_t: kernel width on the (flattened) representation ``t``.
        sigma_y: kernel width on the (standardised) targets and predictions.
        standardize_targets: standardise ``y`` and ``y_pred`` with the running statistics.
        estimator: ``"proposition"`` (Proposition 1) or ``"official"`` (the released script's weighting, see
            :func:`~lightning_info.losses.functional.cs_conditional_divergence`).
        num_targets: number of target features ``k`` (``y`` of shape ``(N,)`` counts as ``k = 1``).
        sync_stats: sum the batch statistics over processes when ``torch.distributed`` is initialised.

    Raises:
        TypeError: an argument of the wrong type.
        ValueError: ``beta < 0``, a width <= 0 or an unknown rule, an unknown estimator, ``num_targets < 1``;
            at call time: fewer than 2 samples, mismatched batch sizes or target shapes, NaN/Inf inputs.

    Example:
        >>> import torch
        >>> loss_fn = CSIBLoss(beta=0.01)
        >>> x, t = torch.randn(32, 5), torch.randn(32, 8, requires_grad=True)
        >>> y, y_pred = torch.randn(32), torch.randn(32, requires_grad=True)
        >>> loss = loss_fn(x, t, y_pred, y)
        >>> loss.backward()
        >>> torch.allclose(loss.detach(), loss_fn.last_prediction + 0.01 * loss_fn.last_compression)
        True
        >>> int(loss_fn.target_count)
        32
    """

    target_mean: Tensor
    target_var: Tensor
    target_count: Tensor

    def __init__(
        self,
        beta: float = 0.01,
        sigma_x: KernelWidth = "median",
        sigma_t: KernelWidth = "median",
        sigma_y: KernelWidth = 1.0,
        standardize_targets: bool = True,
        estimator: Estimator = "proposition",
        num_targets: int = 1,
        sync_stats: bool = True,
    ) -> None:
        super().__init__()
        self.beta = check_range("beta", beta, 0.0)
        self.sigma_x = check_width("sigma_x", sigma_x)
        self.sigma_t = check_width("sigma_t", sigma_t)
        self.sigma_y = check_width("sigma_y", sigma_y)
        for name, flag in (("standardize_targets", standardize_targets), ("sync_stats", sync_stats)):
            if not isinstance(flag, bool):
                raise TypeError(f"{name} must be a bool, got {type(flag).__name__} ({flag!r})")
        self.standardize_targets = standardize_targets
        self.sync_stats = sync_stats
        self.estimator: Estimator = check_choice("estimator", estimator, ("proposition", "official"))  # type: ignore[assignment]
        self.num_targets = check_int("num_targets", num_targets, min_value=1)
        self.register_buffer("target_mean", torch.zeros(self.num_targets))
        self.register_buffer("target_var", torch.ones(self.num_targets))
        self.register_buffer("target_count", torch.zeros((), dtype=torch.long))
        self.last_prediction: Tensor | None = None
        self.last_compression: Tensor | None = None

    def extra_repr(self) -> str:
        return (
            f"beta={self.beta}, sigma_x={self.sigma_x!r}, sigma_t={self.sigma_t!r}, sigma_y={self.sigma_y!r}, "
            f"standardize_targets={self.standardize_targets}, estimator={self.estimator!r}"
        )

    def forward(self, x: Tensor, t: Tensor, y_pred: Tensor, y: Tensor) -> Tensor:
        """Return ``prediction + beta * compression`` for a batch.

        Args:
            x: inputs, ``(N, ...)`` (flattened to ``(N, -1)``).
            t: representation, ``(N, ...)`` (flattened), differentiable.
            y_pred: predictions, ``(N,)`` or ``(N, k)``, differentiable.
            y: targets, same number of samples and features as ``y_pred``.
        """
        x2, t2 = as_samples("x", x), as_samples("t", t)
        p2, y2 = as_samples("y_pred", y_pred), as_samples("y", y)
        sizes = {"x": x2.shape[0], "t": t2.shape[0], "y_pred": p2.shape[0], "y": y2.shape[0]}
        if len(set(sizes.values())) > 1:
            raise ValueError(f"x, t, y_pred and y must have the same number of samples, got {sizes}")
        for name, tensor, original in (("y", y2, y), ("y_pred", p2, y_pred)):
            if tensor.shape[1] != self.num_targets:
                raise ValueError(
                    f"{name} must have num_targets={self.num_targets} feature(s), got shape {tuple(original.shape)}"
                )
        with torch.autocast(device_type=x2.device.type, enabled=False):
            if self.standardize_targets:
                if self.training:
                    self._update_stats(y2.detach())
                y2, p2 = self._standardize(y2), self._standardize(p2)
            d_x = squared_distances(x2)
            log_k = log_kernel(d_x, kernel_width(self.sigma_x, x2, d_x))
            k = log_k.exp()
            prediction = conditional_from_kernel(k, log_k, y2, p2, self.sigma_y, self.estimator)
            d_t = squared_distances(t2)
            compression = cs_qmi_from_kernels(k, log_kernel(d_t, kernel_width(self.sigma_t, t2, d_t)).exp())
        self.last_prediction = prediction.detach()
        self.last_compression = compression.detach()
        return prediction + self.beta * compression

    def _standardize(self, values: Tensor) -> Tensor:
        if int(self.target_count) == 0:  # evaluation before any training batch: use nothing but the batch
            mean, var = values.detach().mean(dim=0), values.detach().var(dim=0, unbiased=False)
        else:
            mean, var = self.target_mean, self.target_var
        return (values - mean.to(values.dtype)) / var.to(values.dtype).sqrt().clamp_min(_MIN_STD)

    @torch.no_grad()
    def _update_stats(self, y: Tensor) -> None:
        # batch count, sum and sum of squares in float64, summed over processes so every rank holds the same buffers
        y64 = y.double()
        stats = torch.cat([y64.new_tensor([y64.shape[0]]), y64.sum(dim=0), y64.square().sum(dim=0)])
        if self.sync_stats and dist.is_available() and dist.is_initialized():
            dist.all_reduce(stats)
        k = self.num_targets
        n_b, sum_b, sumsq_b = stats[0], stats[1 : 1 + k], stats[1 + k :]
        mean_b = sum_b / n_b
        m2_b = (sumsq_b - n_b * mean_b.square()).clamp_min(0.0)
        n = self.target_count.double()
        mean, var = self.target_mean.double(), self.target_var.double()
        total = n + n_b
        delta = mean_b - mean
        new_mean = mean + delta * n_b / total
        new_m2 = var * n + m2_b + delta.square() * n * n_b / total
        self.target_mean.copy_(new_mean)
        self.target_var.copy_(new_m2 / total)
        self.target_count.add_(int(n_b.item()))
