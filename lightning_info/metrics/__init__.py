"""Information metrics as torchmetrics ``Metric``s (their math is in :mod:`lightning_info.functional`)."""

from lightning_info.metrics.attention_entropy import AttentionEntropy
from lightning_info.metrics.cauchy_schwarz_divergence import CauchySchwarzDivergence
from lightning_info.metrics.cauchy_schwarz_qmi import CauchySchwarzQMI
from lightning_info.metrics.conditional_mutual_information import ConditionalMutualInformation
from lightning_info.metrics.diffusion_spectral_entropy import DiffusionSpectralEntropy
from lightning_info.metrics.diffusion_spectral_mutual_information import DiffusionSpectralMutualInformation
from lightning_info.metrics.matrix_entropy import MatrixEntropy
from lightning_info.metrics.matrix_nuclear_norm import MatrixNuclearNorm
from lightning_info.metrics.mutual_information import MutualInformationEstimator, estimate_mutual_information
from lightning_info.metrics.shannon_entropy import ShannonEntropy
from lightning_info.metrics.vendi_score import VendiScore

__all__ = [
    "AttentionEntropy",
    "CauchySchwarzDivergence",
    "CauchySchwarzQMI",
    "ConditionalMutualInformation",
    "DiffusionSpectralEntropy",
    "DiffusionSpectralMutualInformation",
    "MatrixEntropy",
    "MatrixNuclearNorm",
    "MutualInformationEstimator",
    "ShannonEntropy",
    "VendiScore",
    "estimate_mutual_information",
]
