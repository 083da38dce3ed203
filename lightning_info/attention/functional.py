"""The attention-entropy math, kept importable from here for 0.1 code (see :mod:`lightning_info.functional`)."""

from lightning_info.functional.attention import *  # noqa: F403  (a re-export shim: the same names, one source)
from lightning_info.functional.attention import __all__  # noqa: F401
