"""DiffusionSpectralMutualInformation: DSMI between representations and class labels."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from lightning_info._internal.validation import check_bool, check_int, check_labels
from lightning_info.functional.diffusion_spectral import (
    DEFAULT_REPETITIONS,
    DEFAULT_SIGMA,
    DEFAULT_T,
    check_dse_args,
    diffusion_spectral_mutual_information,
)
from lightning_info.metrics._samples import SampleMetric
from lightning_info.metrics.diffusion_spectral_entropy import DEFAULT_STORED_SAMPLES


class DiffusionSpectralMutualInformation(SampleMetric):
    r"""Diffusion Spectral Mutual Information (Liao, Liu et al. 2023) between representations and labels (bits).

    .. math:: I_D(Z;Y) = S_D(P_Z,t) - \sum_c p(c)\,S_D(P_{Z|Y=c},t),\qquad p(c) = N_c/N,

    on all (representation, label) pairs seen; see
    :func:`~lightning_info.functional.diffusion_spectral_mutual_information` for the class-size-matched
    estimate of the first term (``matched_subsets``, the paper's). Pairs are stored (``"cat"`` states, at most
    ``max_samples`` per process: shuffle data sorted by class, as the first pairs are the ones kept).

    Args:
        sigma: Gaussian kernel bandwidth (paper default 10).
        t: diffusion time (paper default 1).
        base: logarithm base (2: bits, as the paper).
        matched_subsets: estimate :math:`S_D(P_Z)` on class-sized random subsets (the paper's estimator).
        num_repetitions: random subsets per class when ``matched_subsets`` (paper default 5).
        seed: seed of the random subsets.
        max_samples: cap on the pairs kept per process (``None``: all).
        kwargs: forwarded to :class:`torchmetrics.Metric`.

    Raises:
        TypeError / ValueError: on bad arguments; ``update`` raises on a wrong rank, NaN/Inf, labels that are not
            ``(N,)`` integers >= 0, or a change in the number of features; ``compute`` with fewer than 2 pairs.

    Example:
        >>> import torch
        >>> metric = DiffusionSpectralMutualInformation(matched_subsets=False)
        >>> metric.update(100.0 * torch.eye(4), torch.tensor([0, 0, 1, 1]))
        >>> float(metric.compute())  # log2(4) - log2(2)
        1.0
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(
        self,
        sigma: float = DEFAULT_SIGMA,
        t: float = DEFAULT_T,
        base: float | str = 2,
        matched_subsets: bool = True,
        num_repetitions: int = DEFAULT_REPETITIONS,
        seed: int = 0,
        max_samples: int | None = DEFAULT_STORED_SAMPLES,
        **kwargs: Any,
    ) -> None:
        super().__init__(max_samples=max_samples, states=("samples", "labels"), **kwargs)
        self.sigma, self.t, _ = check_dse_args(sigma, t, base)
        self.base = base
        self.seed = check_int("seed", seed)
        self.matched_subsets = check_bool("matched_subsets", matched_subsets)
        self.num_repetitions = check_int("num_repetitions", num_repetitions, min_value=1)

    def update(self, z: Tensor, labels: Tensor) -> None:
        """Add ``(N, d)`` representations and their ``(N,)`` integer labels."""
        z = self._features("z", z)
        self._store(samples=z, labels=check_labels("labels", labels, z.shape[0]).detach())

    def compute(self) -> Tensor:
        return diffusion_spectral_mutual_information(
            self._gathered(),
            self._gathered("labels"),
            sigma=self.sigma,
            t=self.t,
            base=self.base,
            matched_subsets=self.matched_subsets,
            num_repetitions=self.num_repetitions,
            seed=self.seed,
        )
