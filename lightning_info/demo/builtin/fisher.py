"""Demo part ``fisher``: train only the top 10% of the transformer's parameters by empirical Fisher (FISH).

Off by default: the demo trains from scratch, where a mask chosen at the random initialisation costs accuracy; FISH
is meant for fine-tuning (see ``examples/fish_finetune.py``). The head is always trained, inside the budget.
"""

from __future__ import annotations

from lightning_info.callbacks import FisherMask
from lightning_info.demo.parts import DemoContext, register_part


@register_part(
    "fisher",
    help="FISH sparse masks: train only the top keep_ratio=0.1 of parameters by empirical Fisher",
    default=False,
)
def configure(ctx: DemoContext) -> None:
    """Add a :class:`FisherMask` (``keep_ratio=0.1``, head always trained) and show its kept fraction."""
    ctx.callbacks.append(FisherMask(keep_ratio=0.1, num_samples=256 if ctx.fast else 1024, always_train=["head"]))
    ctx.summary_keys.append("fisher/kept_frac")
