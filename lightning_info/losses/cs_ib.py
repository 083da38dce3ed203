r"""Cauchy–Schwarz divergence information bottleneck (CS-IB) loss for regression.

Yu, Yu, Løkse, Jenssen and Principe, "Cauchy-Schwarz Divergence Information Bottleneck for Regression", ICLR 2024.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lightning_info._internal.passes import in_auxiliary_pass
from lightning_info._internal.validation import check_int, check_range
from lightning_info.functional.kernels import (
    Estimator,
    KernelWidth,
    as_samples,
    check_estimator,
    check_paired,
    check_width,
    cs_qmi,
    ib_terms,
)
from lightning_info.losses.running_standardizer import RunningStandardizer


class CSIBLoss(nn.Module):
    r"""CS-IB objective: conditional CS divergence prediction term plus :math:`\beta` times the CS-QMI compression.

    .. math::
        \mathcal{L} = \hat D_{CS}\big(p(y|x) \,\|\, q_\theta(\hat y|x)\big) + \beta \, \hat I_{CS}(x; t)

    Both terms are Gaussian-kernel estimates on the mini-batch (Propositions 1 and 2 of the paper, see
    :func:`~lightning_info.functional.cs_conditional_divergence` and
    :func:`~lightning_info.functional.cs_qmi`), computed in log space; the kernel matrix on ``x`` is built
    once and shared by both terms. No variational bound and no noise layer are needed.

    Targets and predictions are standardised with the same affine map built from *running* statistics of the
    training targets (:class:`~lightning_info.losses.running_standardizer.RunningStandardizer` in ``target_stats``:
    buffers ``target_stats.mean``/``var``/``count``, saved in checkpoints): the cumulative mean and variance of every
    target seen in training mode, so ``sigma_y`` is in units of the target standard deviation and the map does not
    change from batch to batch. In ``eval()`` mode the statistics are used but not updated; nor are they in the
    extra passes of a sharpness-aware optimizer step (SAM/GAM), which see each batch a second time.

    Distributed training: the kernel terms use each process's *local* batch (the per-rank loss is the single-process
    loss at the local batch size, and DDP averages the gradients); the target statistics are summed over the
    processes (``sync_stats``), so every rank standardises identically.

    Kernel widths (defaults): ``sigma_x="silverman"`` -- the kernel on ``x`` is the density-estimation kernel of
    both terms, and the width matters most for the prediction term: a wide kernel (e.g. the median distance) lets
    every query ``j`` average over far-away inputs, pushing the estimate towards the unconditional divergence between
    the distributions of ``y`` and ``y_pred`` (which ignores which prediction belongs to which target), while a narrow
    one tends to the correntropy loss :math:`-2\log\frac1N\sum_j \kappa(\hat y_j, y_j)`. Silverman's rule is narrow
    and adapts to the scale, dimension and batch size of ``x`` (about 0.7 for 10 standardised features and 64
    samples; the authors' script uses 1 on standardised inputs). ``sigma_t="median"`` follows the representation's
    scale as it changes in training. ``sigma_y=1.0`` is one target standard deviation (with
    ``standardize_targets``).

    After each call, :attr:`last_prediction` and :attr:`last_compression` hold the detached terms, and
    :attr:`terms` maps them to the logging keys ``csib/prediction`` and ``csib/compression``.

    Args:
        beta: :math:`\beta \ge 0`, weight of the compression term.
        sigma_x: kernel width on the (flattened) inputs ``x``: a float > 0, ``"median"`` or ``"silverman"``.
        sigma_t: kernel width on the (flattened) representation ``t``.
        sigma_y: kernel width on the (standardised) targets and predictions.
        standardize_targets: standardise ``y`` and ``y_pred`` with the running statistics.
        estimator: ``"proposition"`` (Proposition 1) or ``"official"`` (the simplified weighting of the authors'
            training script, see :func:`~lightning_info.functional.cs_conditional_divergence`).
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
        >>> sorted(loss_fn.terms), int(loss_fn.target_stats.count)
        (['csib/compression', 'csib/prediction'], 32)
    """

    def __init__(
        self,
        beta: float = 0.01,
        sigma_x: KernelWidth = "silverman",
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
        if not isinstance(standardize_targets, bool):
            kind = type(standardize_targets).__name__
            raise TypeError(f"standardize_targets must be a bool, got {kind} ({standardize_targets!r})")
        self.standardize_targets = standardize_targets
        self.estimator = check_estimator(estimator)
        self.num_targets = check_int("num_targets", num_targets, min_value=1)
        self.target_stats = RunningStandardizer(self.num_targets, sync=sync_stats)
        self.last_prediction: Tensor | None = None
        self.last_compression: Tensor | None = None

    @property
    def terms(self) -> dict[str, Tensor]:
        """The detached terms of the last call under their logging keys (empty before the first call)."""
        if self.last_prediction is None or self.last_compression is None:
            return {}
        return {"csib/prediction": self.last_prediction, "csib/compression": self.last_compression}

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
        prediction, compression = self.ib_terms(x, t, y_pred, y)
        return prediction + self.beta * compression

    def ib_terms(self, x: Tensor, t: Tensor, y_pred: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        r"""The two terms ``(prediction, compression)`` of :meth:`forward`, each differentiable, before :math:`\beta`.

        Same inputs, checks, target statistics and ``last_*`` attributes as :meth:`forward` (which returns
        ``prediction + beta * compression`` of them); for callers that weight or log the terms themselves
        (:class:`~lightning_info.callbacks.CSIBCallback`).
        """
        x2, t2 = as_samples("x", x), as_samples("t", t)
        p2, y2 = as_samples("y_pred", y_pred), as_samples("y", y)
        check_paired(("x", x2), ("t", t2), ("y_pred", p2), ("y", y2))
        for name, tensor, original in (("y", y2, y), ("y_pred", p2, y_pred)):
            if tensor.shape[1] != self.num_targets:
                raise ValueError(
                    f"{name} must have num_targets={self.num_targets} feature(s), got shape {tuple(original.shape)}"
                )
        with torch.autocast(device_type=x2.device.type, enabled=False):
            if self.standardize_targets:
                if self.training and not in_auxiliary_pass():  # once per step under SAM/GAM (their clean pass)
                    self.target_stats.update(y2)
                y2, p2 = self.target_stats(y2), self.target_stats(p2)
            prediction, compression = ib_terms(x2, t2, p2, y2, self.sigma_x, self.sigma_t, self.sigma_y, self.estimator)
        self.last_prediction = prediction.detach()
        self.last_compression = compression.detach()
        return prediction, compression

    def compression(self, x: Tensor, t: Tensor) -> Tensor:
        r"""The compression term :math:`\hat I_{CS}(x; t)` alone (differentiable), for a batch without targets.

        :func:`~lightning_info.functional.cs_qmi` with this loss's ``sigma_x`` and ``sigma_t``; it sets
        :attr:`last_compression` and leaves the target statistics and :attr:`last_prediction` alone.
        """
        x2, t2 = as_samples("x", x), as_samples("t", t)
        check_paired(("x", x2), ("t", t2))
        with torch.autocast(device_type=x2.device.type, enabled=False):
            compression = cs_qmi(x2, t2, self.sigma_x, self.sigma_t)
        self.last_compression = compression.detach()
        return compression
