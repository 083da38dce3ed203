"""Shared table cells and result files of the example and evidence scripts.

The scripts are run by path (``python examples/x.py``, ``python examples/evidence/x.py``) and loaded by path in
the tests, so they import this module after putting ``examples/`` on ``sys.path``::

    sys.path.insert(0, str(Path(__file__).resolve().parent))  # parents[1] from examples/evidence/
    from _report import mean_std  # noqa: E402
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def mean_std(values: Sequence[float], scale: float = 1.0, digits: int = 3) -> str:
    """Format ``values`` as ``"mean ± std"`` (sample standard deviation; 0 for a single value).

    Args:
        values: The per-seed numbers (at least one).
        scale: Factor applied to the mean and the std before formatting (``100.0`` for percent).
        digits: Decimals printed for both numbers.

    Returns:
        The cell text, e.g. ``mean_std([0.1, 0.3]) == "0.200 ± 0.141"``.
    """
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{scale * statistics.mean(values):.{digits}f} ± {scale * std:.{digits}f}"


def paired(values: Sequence[float], reference: Sequence[float], scale: float = 1.0, digits: int = 3) -> str:
    """Format the per-seed differences ``values[i] - reference[i]`` as ``"mean ± std"`` (see :func:`mean_std`).

    Args:
        values: The per-seed numbers of a method.
        reference: The per-seed numbers of the reference method, same seeds in the same order.
        scale: Factor applied to the mean and the std of the differences.
        digits: Decimals printed for both numbers.

    Returns:
        The cell text of the paired difference.

    Raises:
        ValueError: If ``values`` and ``reference`` have different lengths.
    """
    return mean_std([v - r for v, r in zip(values, reference, strict=True)], scale, digits)


def write_results(out: Path, table: str, summary: Any) -> None:
    """Print ``table`` and write it to ``out/results.md``, and ``summary`` as JSON to ``out/results.json``.

    Args:
        out: Existing output folder of the script.
        table: The Markdown table (``results.md`` gets it plus a final newline).
        summary: JSON-serializable results (written with ``indent=2``).
    """
    print(table)
    (out / "results.md").write_text(table + "\n")
    (out / "results.json").write_text(json.dumps(summary, indent=2))
