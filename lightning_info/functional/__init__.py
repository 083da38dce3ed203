"""Pure tensor math of every part: torch only — no Lightning, no torchmetrics, no state (torchmetrics' convention).

One module per family:

- :mod:`~lightning_info.functional.entropy`: Shannon and Rényi entropies of probability vectors.
- :mod:`~lightning_info.functional.spectral`: one Gram spectrum for the matrix entropy, the Vendi Score and the
  Matrix Nuclear-Norm; :mod:`~lightning_info.functional.diffusion_spectral`: DSE and DSMI.
- :mod:`~lightning_info.functional.kernels`: distances, kernel widths, log-Gram matrices, Cauchy–Schwarz divergence,
  QMI and conditional divergence, the CS-IB terms.
- :mod:`~lightning_info.functional.cmi`: the conditional mutual information of a classifier (MCMI).
- :mod:`~lightning_info.functional.attention`: attention entropy from maps or from q/k (one mask convention).
- :mod:`~lightning_info.functional.entropy_regularizer`: the entropy-guided attention penalty.
- :mod:`~lightning_info.functional.matrix_information`: matrix-based Rényi entropy and mutual information of Gram
  matrices (the information plane's deterministic estimator).
- :mod:`~lightning_info.functional.mi_bounds`: variational mutual-information bounds (InfoNCE, NWJ, MINE, SMILE).

Importing this package does not import Lightning.
"""

from lightning_info.functional.attention import attention_entropy, attention_entropy_from_qk
from lightning_info.functional.cmi import conditional_mutual_information
from lightning_info.functional.diffusion_spectral import (
    diffusion_spectral_entropy,
    diffusion_spectral_mutual_information,
)
from lightning_info.functional.entropy import shannon_entropy
from lightning_info.functional.entropy_regularizer import entropy_band_penalty, entropy_regularizer
from lightning_info.functional.kernels import (
    cs_conditional_divergence,
    cs_divergence,
    cs_qmi,
    median_width,
    silverman_width,
)
from lightning_info.functional.matrix_information import matrix_mutual_information
from lightning_info.functional.mi_bounds import infonce, mine, nwj, smile
from lightning_info.functional.spectral import matrix_entropy, matrix_nuclear_norm, vendi_score

__all__ = [
    "attention_entropy",
    "attention_entropy_from_qk",
    "conditional_mutual_information",
    "cs_conditional_divergence",
    "cs_divergence",
    "cs_qmi",
    "diffusion_spectral_entropy",
    "diffusion_spectral_mutual_information",
    "entropy_band_penalty",
    "entropy_regularizer",
    "infonce",
    "matrix_entropy",
    "matrix_mutual_information",
    "matrix_nuclear_norm",
    "median_width",
    "mine",
    "nwj",
    "shannon_entropy",
    "silverman_width",
    "smile",
    "vendi_score",
]
