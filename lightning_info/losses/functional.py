"""The losses' math, kept importable from here for 0.1 code: it lives in :mod:`lightning_info.functional`."""

from lightning_info.functional import (
    conditional_mutual_information,
    cs_conditional_divergence,
    cs_divergence,
    cs_qmi,
    entropy_band_penalty,
    entropy_regularizer,
    median_width,
    silverman_width,
)

__all__ = [
    "conditional_mutual_information",
    "cs_conditional_divergence",
    "cs_divergence",
    "cs_qmi",
    "entropy_band_penalty",
    "entropy_regularizer",
    "median_width",
    "silverman_width",
]
