"""Pure tensor math of the information metrics (no Lightning, no state)."""

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

__all__: list[str] = [
    "attention_entropy",
    "diffusion_spectral_entropy",
    "diffusion_spectral_mutual_information",
    "matrix_entropy",
    "matrix_nuclear_norm",
    "shannon_entropy",
    "vendi_score",
]
__all__ += ["infonce", "mine", "nwj", "smile"]
