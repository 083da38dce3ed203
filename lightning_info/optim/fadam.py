"""FAdam (Hwang, 2024) from pytorch-optimizer, through the ``fadam`` extra.

``tests/optim/test_fadam.py`` checks pytorch-optimizer's ``FAdam`` step by step (float64) against an independent
reference written from the paper's Algorithm 1, so this library exposes it instead of re-implementing it.
"""

from __future__ import annotations

from torch.optim import Optimizer


def fadam_class() -> type[Optimizer]:
    """``pytorch_optimizer.FAdam``, imported on first use (``lightning_info.optim.FAdam`` calls this).

    Raises:
        ImportError: pytorch-optimizer is not installed (``pip install 'lightning-info[fadam]'``).
    """
    try:
        from pytorch_optimizer import FAdam
    except ImportError as error:
        raise ImportError(
            "FAdam comes from pytorch-optimizer, an optional dependency: pip install 'lightning-info[fadam]'"
        ) from error
    return FAdam
