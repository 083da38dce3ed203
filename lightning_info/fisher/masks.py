r"""Global top-k sparse masks from per-parameter scores (FISH's fixed sparse masks).

With :math:`n` parameters in total and budget :math:`k = \lfloor \text{keep\_ratio} \cdot n \rfloor` (at least 1),
the mask keeps every entry of the ``always_train`` parameters, then the :math:`k - |\text{always\_train}|` largest
scores among the candidates (``include`` minus ``exclude``), with **one global threshold** across all candidate
tensors (not a per-layer quota). Ties at the threshold are broken by position: earlier parameters (in the order of
the ``fisher`` mapping), then lower flat index, win. Exactly :math:`k` entries are kept.

Name patterns are matched against a parameter's full name *and* the name of every module that contains it:

- a pattern with glob characters (``*``, ``?``, ``[``) is matched with ``fnmatch`` against the whole name:
  ``"encoder.layers.*.self_attn"`` selects the attention parameters of every layer, ``"*.bias"`` all biases;
- a plain pattern matches a name equal to it or **ending with** ``"." + pattern`` (a suffix of whole dotted
  components), so it reads as the user wrote the module: ``"classifier"`` selects ``classifier.weight``, and also
  ``net.classifier.weight`` when the model is wrapped as ``self.net`` in a LightningModule; ``"head"`` selects
  ``head.weight`` and ``head.bias`` but not ``lm_head.weight`` (``"*head"`` does).
"""

from __future__ import annotations

import difflib
import fnmatch
import math
from collections.abc import Iterable, Mapping, Sequence

import torch
from torch import Tensor

from lightning_info._internal.validation import check_range


def _prefixes(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def _matches(name: str, pattern: str) -> bool:
    if any(char in pattern for char in "*?["):
        return fnmatch.fnmatchcase(name, pattern)
    return name == pattern or name.endswith("." + pattern)


def match_parameter_names(names: Sequence[str], patterns: Iterable[str] | None, argument: str) -> set[str]:
    """Names selected by ``patterns`` (globs on whole names, plain names also as dotted suffixes).

    A name is selected when the pattern matches the parameter's name or the name of a module containing it: a glob
    with ``fnmatch``, a plain pattern when equal to it or to a suffix of whole dotted components.

    Raises:
        TypeError: if ``patterns`` is a plain string or holds a non-string.
        ValueError: if a pattern selects nothing; the message lists the closest names.
    """
    if patterns is None:
        return set()
    if isinstance(patterns, str):
        raise TypeError(f"{argument} must be a list of names or globs, got the string {patterns!r}; wrap it in a list")
    selected: set[str] = set()
    for pattern in patterns:
        if not isinstance(pattern, str):
            raise TypeError(f"{argument} must hold str patterns, got {type(pattern).__name__} ({pattern!r})")
        hits = {n for n in names if any(_matches(p, pattern) for p in _prefixes(n))}
        if not hits:
            close = difflib.get_close_matches(pattern, list(names), n=5, cutoff=0.4)
            hint = f"; closest parameter names: {close}" if close else ""
            raise ValueError(f"{argument} pattern {pattern!r} matches no parameter{hint}")
        selected |= hits
    return selected


def topk_masks(
    fisher: Mapping[str, Tensor],
    keep_ratio: float,
    include: Iterable[str] | None = None,
    exclude: Iterable[str] | None = None,
    always_train: Iterable[str] | None = None,
) -> dict[str, Tensor]:
    r"""Boolean masks keeping the global top-:math:`k` scores, :math:`k = \lfloor \text{keep\_ratio} \cdot n \rfloor`.

    Args:
        fisher: ``{parameter name: scores}`` (e.g. from :func:`empirical_fisher`); :math:`n` counts all entries.
        keep_ratio: fraction of all entries kept, in (0, 1] (FISH uses 0.005).
        include: names/globs of the candidate parameters (default: all).
        exclude: names/globs removed from the candidates (their masks are all ``False``).
        always_train: names/globs kept entirely (e.g. a new classification head); they count inside the budget
            :math:`k` and win over ``exclude``.

    Returns:
        ``{name: bool tensor of the same shape}``, ``True`` = trainable; exactly :math:`k` ``True`` entries in all.

    Raises:
        ValueError: for ``keep_ratio`` outside (0, 1], an empty or non-finite ``fisher``, a pattern matching nothing,
            ``always_train`` larger than the budget, or a budget larger than the candidates plus ``always_train``.
        TypeError: if a score is not a floating-point tensor.

    Example:
        >>> import torch
        >>> masks = topk_masks({"a": torch.tensor([3.0, 1.0]), "b": torch.tensor([2.0, 5.0, 0.0, 4.0])}, 0.5)
        >>> {name: m.tolist() for name, m in masks.items()}
        {'a': [True, False], 'b': [False, True, False, True]}
    """
    keep_ratio = check_range("keep_ratio", keep_ratio, 0.0, 1.0, low_inclusive=False)
    if not isinstance(fisher, Mapping) or not fisher:
        raise ValueError("fisher must be a non-empty mapping {parameter name: scores}")
    for name, scores in fisher.items():
        if not isinstance(scores, Tensor) or not scores.is_floating_point():
            raise TypeError(f"fisher[{name!r}] must be a floating-point tensor, got {type(scores).__name__}")
        if not bool(torch.isfinite(scores).all()):
            raise ValueError(f"fisher[{name!r}] contains NaN or Inf values")
    names = list(fisher)
    total = sum(fisher[n].numel() for n in names)
    budget = max(1, math.floor(keep_ratio * total + 1e-6))  # + 1e-6: 0.29 * 100 is 28.999999999999996 in floats
    always = match_parameter_names(names, always_train, "always_train")
    candidates = match_parameter_names(names, include, "include") if include is not None else set(names)
    candidates -= match_parameter_names(names, exclude, "exclude") | always
    n_always = sum(fisher[n].numel() for n in always)
    if n_always > budget:
        raise ValueError(
            f"always_train selects {n_always} entries, more than the budget k={budget} "
            f"(keep_ratio={keep_ratio:g} of {total}); raise keep_ratio or train fewer parameters fully"
        )
    order = [n for n in names if n in candidates]
    remaining = budget - n_always
    n_candidates = sum(fisher[n].numel() for n in order)
    if remaining > n_candidates:
        raise ValueError(
            f"keep_ratio={keep_ratio:g} asks for k={budget} entries but include/exclude/always_train leave only "
            f"{n_candidates + n_always}; lower keep_ratio"
        )
    masks = {n: torch.full_like(fisher[n], n in always, dtype=torch.bool) for n in names}
    if remaining == 0:
        return masks
    flat = torch.cat([fisher[n].detach().reshape(-1).to(torch.float64) for n in order])
    threshold = torch.kthvalue(flat, flat.numel() - remaining + 1).values  # the remaining-th largest score
    keep = flat > threshold
    ties = torch.nonzero(flat == threshold).squeeze(1)[: remaining - int(keep.sum())]  # lowest indices first
    keep[ties] = True
    start = 0
    for name in order:
        size = fisher[name].numel()
        masks[name] = keep[start : start + size].reshape(fisher[name].shape).to(fisher[name].device)
        start += size
    return masks
