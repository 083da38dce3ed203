"""Readability of the heatmaps (issue 17): per-metric colour ranges, labelled; readable text; integer ticks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lightning_info.callbacks.information_figures import column_ranges, heatmap_figure

pytest.importorskip("matplotlib")


def test_a_column_of_tiny_values_is_not_stretched_to_full_colour() -> None:
    """Regression: each column was divided by its own max, so a DSMI of 1e-5 showed full yellow."""
    grid = [[1e-5, 2.0], [0.5e-5, 3.5]]
    assert column_ranges(grid) == [(0.0, 1.0), (0.0, 3.5)]
    figure = heatmap_figure(["a", "b"], ["dsmi", "matrix_entropy"], grid, step=3)
    image = figure.axes[0].images[0].get_array()
    assert float(image[0, 0]) == pytest.approx(1e-5) and float(image[1, 1]) == pytest.approx(1.0)
    labels = [t.get_text() for t in figure.axes[0].get_xticklabels()]
    assert labels == ["dsmi\n[0, 1]", "matrix_entropy\n[0, 3.5]"]  # the normalisation is written on the figure


def test_negative_and_nan_values_have_a_range_and_a_label() -> None:
    grid = [[-0.2, math.nan], [0.3, math.nan]]
    assert column_ranges(grid) == [(-0.2, 0.8), (0.0, 1.0)]
    figure = heatmap_figure(["a", "b"], ["dsmi", "cmi"], grid, step=0)
    texts = {t.get_text(): t.get_color() for t in figure.axes[0].texts}
    assert texts["-0.2"] == "white" and texts["n/a"] == "black"


def test_value_text_is_black_on_light_cells_and_white_on_dark_ones() -> None:
    figure = heatmap_figure(["a", "b"], ["vendi"], [[10.0], [1.0]], step=0)
    colours = {t.get_text(): t.get_color() for t in figure.axes[0].texts}
    assert colours == {"10": "black", "1": "white"}


def test_attention_heatmap_has_one_integer_tick_per_head_and_layer() -> None:
    from lightning_info.callbacks.entropy_guided_attention import _heatmap

    figure = _heatmap(torch.rand(3, 8), epoch=1)
    axes = figure.axes[0]
    assert list(axes.get_xticks()) == list(range(8)) and list(axes.get_yticks()) == list(range(3))
    assert [t.get_text() for t in axes.get_xticklabels()] == [str(h) for h in range(8)]
    width, height = figure.get_size_inches()
    assert width >= 4.0 and height >= 2.5
    assert np.isfinite(axes.images[0].get_array()).all()
