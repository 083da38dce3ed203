"""DiffusionSpectralMutualInformation: DSMI between representations and class labels."""

from __future__ import annotations

from typing import Any

from torch import Tensor
from torchmetrics.utilities.data import dim_zero_cat

from lightning_info._internal.validation import check_int, check_tensor
from lightning_info.metrics._samples import SampleMetric
from lightning_info.metrics.diffusion_spectral_entropy import DEFAULT_MAX_SAMPLES
from lightning_info.metrics.functional._utils import log_base
from lightning_info.metrics.functional.diffusion_spectral import (
    DEFAULT_SIGMA,
    DEFAULT_T,
    _check_dse_args,
    diffusion_spectral_mutual_information,
)


class DiffusionSpectralMutualInformation(SampleMetric):
    r"""Diffusion Spectral Mutual Information (Liao, Liu et al. 2023) between representations and labels.

    :math:`I_D(Z;Y) = S_D(P_Z,t) - \sum_c p(c)\,S_D(P_{Z|Y=c},t)` on all (representation, label) pairs seen; see
    :func:`~lightning_info.metrics.functional.diffusion_spectral_mutual_information` for the class-size-matched
    estimate of the first term (``matched_subsets``). Pairs are stored (``"cat"`` states, at most ``max_samples``
    per process).

    Args:
        sigma: Gaussian kernel bandwidth (paper default 10).
        t: diffusion time (paper default 1).
        base: logarithm base (2: bits, as the paper).
        matched_subsets: estimate :math:`S_D(P_Z)` on class-sized random subsets (the authors' release).
        num_repetitions: random subsets per class when ``matched_subsets``.
        seed: seed of the random subsets.
        max_samples: cap on the pairs kept per process (``None``: all).
        kwargs: forwarded to :class:`torchmetrics.Metric`.

    Raises:
        ValueError: on bad arguments; ``update``/``compute`` raise like the functional (labels must be >= 0).

    Example:
        >>> import torch
        >>> metric = DiffusionSpectralMutualInformation(matched_subsets=False)
        >>> metric.update(100.0 * torch.eye(4), torch.tensor([0, 0, 1, 1]))
        >>> round(float(metric.compute()), 4)  # log2(3) - 0
        1.585
    """

    higher_is_better = True

    def __init__(
        self,
        sigma: float = DEFAULT_SIGMA,
        t: float = DEFAULT_T,
        base: float | str = 2,
        matched_subsets: bool = True,
        num_repetitions: int = 5,
        seed: int = 0,
        max_samples: int | None = DEFAULT_MAX_SAMPLES,
        **kwargs: Any,
    ) -> None:
        super().__init__(max_samples=max_samples, **kwargs)
        self.sigma, self.t, _ = _check_dse_args(sigma, t, None, seed)
        log_base(base)
        if not isinstance(matched_subsets, bool):
            raise TypeError(f"matched_subsets must be a bool, got {type(matched_subsets).__name__}")
        self.base = base
        self.matched_subsets = matched_subsets
        self.num_repetitions = check_int("num_repetitions", num_repetitions, min_value=1)
        self.seed = seed
        self.add_state("labels", default=[], dist_reduce_fx="cat")

    def update(self, z: Tensor, labels: Tensor) -> None:
        """Add ``(N, d)`` representations and their ``(N,)`` integer labels."""
        check_tensor("labels", labels, ndim=1, floating=False)
        if labels.is_floating_point() or labels.shape[0] != z.shape[0]:
            raise ValueError(
                f"labels must be an integer tensor of shape ({z.shape[0]},), got {labels.dtype} {tuple(labels.shape)}"
            )
        if labels.numel() and int(labels.min()) < 0:
            raise ValueError(f"labels must be >= 0, got minimum {int(labels.min())}")
        self._store(z, labels)

    def compute(self) -> Tensor:
        return diffusion_spectral_mutual_information(
            self._gathered(),
            dim_zero_cat(self.labels),
            sigma=self.sigma,
            t=self.t,
            base=self.base,
            matched_subsets=self.matched_subsets,
            num_repetitions=self.num_repetitions,
            seed=self.seed,
        )
