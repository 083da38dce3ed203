"""The demo's built-in parts, one module per part; each registers itself with :func:`register_part` on import.

Every module in this package is imported (in name order) when :mod:`lightning_info.demo` is imported, so a new part
is one new file here and nothing else.
"""

import importlib
import pkgutil

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    importlib.import_module(f"{__name__}.{_module}")

__all__: list[str] = []
