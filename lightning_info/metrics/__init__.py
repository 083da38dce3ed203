"""lightning_info.metrics."""

from lightning_info.metrics.attention_entropy import AttentionEntropy
from lightning_info.metrics.diffusion_spectral_entropy import DiffusionSpectralEntropy
from lightning_info.metrics.diffusion_spectral_mutual_information import DiffusionSpectralMutualInformation
from lightning_info.metrics.matrix_entropy import MatrixEntropy
from lightning_info.metrics.matrix_nuclear_norm import MatrixNuclearNorm
from lightning_info.metrics.mutual_information import MutualInformationEstimator, estimate_mutual_information
from lightning_info.metrics.shannon_entropy import ShannonEntropy
from lightning_info.metrics.vendi_score import VendiScore

__all__: list[str] = [
    "AttentionEntropy",
    "DiffusionSpectralEntropy",
    "DiffusionSpectralMutualInformation",
    "MatrixEntropy",
    "MatrixNuclearNorm",
    "ShannonEntropy",
    "VendiScore",
]
__all__ += ["MutualInformationEstimator", "estimate_mutual_information"]
