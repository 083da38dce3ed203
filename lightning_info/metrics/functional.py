"""The metrics' math, kept importable from here for 0.1 code: it lives in :mod:`lightning_info.functional`."""

from lightning_info.functional import (
    attention_entropy,
    conditional_mutual_information,
    diffusion_spectral_entropy,
    diffusion_spectral_mutual_information,
    infonce,
    matrix_entropy,
    matrix_nuclear_norm,
    mine,
    nwj,
    shannon_entropy,
    smile,
    vendi_score,
)

__all__ = [
    "attention_entropy",
    "conditional_mutual_information",
    "diffusion_spectral_entropy",
    "diffusion_spectral_mutual_information",
    "infonce",
    "matrix_entropy",
    "matrix_nuclear_norm",
    "mine",
    "nwj",
    "shannon_entropy",
    "smile",
    "vendi_score",
]
