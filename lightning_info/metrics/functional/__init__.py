"""Pure tensor math of the information metrics (no Lightning, no state)."""

from lightning_info.losses.functional.conditional_mutual_information import conditional_mutual_information
from lightning_info.metrics.functional.attention_entropy import attention_entropy
from lightning_info.metrics.functional.diffusion_spectral import (
    diffusion_spectral_entropy,
    diffusion_spectral_mutual_information,
)
from lightning_info.metrics.functional.entropy import shannon_entropy
from lightning_info.metrics.functional.matrix_entropy import matrix_entropy
from lightning_info.metrics.functional.mutual_information import infonce, mine, nwj, smile
from lightning_info.metrics.functional.nuclear_norm import matrix_nuclear_norm
from lightning_info.metrics.functional.vendi import vendi_score

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
