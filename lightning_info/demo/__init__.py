"""The ``lightning-info demo``: a small transformer on scikit-learn's digits, with the library's parts as flags.

Parts plug in through :mod:`lightning_info.demo.parts` (a registry): each adds callbacks, swaps the optimizer or
adds a stage, and names the logged keys to show in the summary.
"""

import lightning_info.demo.builtin  # noqa: F401  (registers the built-in parts)
from lightning_info.demo.parts import PARTS, DemoContext, Part, register_part
from lightning_info.demo.run import DemoConfig, run_demo

__all__ = ["PARTS", "DemoConfig", "DemoContext", "Part", "register_part", "run_demo"]
