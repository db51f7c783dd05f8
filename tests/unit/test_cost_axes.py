"""Issue 23: the score-vs-cost plot starts its axes at zero, or says that it does not."""

from __future__ import annotations

from typing import Any

import pytest

from skillmix.report import plots
from skillmix.report.figures import cost_figure
from skillmix.report.view import CostPoint


@pytest.fixture
def axes(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The axes of every figure the plots module turns into an image."""
    seen: list[Any] = []
    real = plots._image

    def keep(name: str, title: str, fig: Any, caption: str) -> Any:
        seen.append(fig.axes[0])
        return real(name, title, fig, caption)

    monkeypatch.setattr(plots, "_image", keep)
    return seen


def test_both_axes_start_at_zero(axes: list[Any]) -> None:
    points = [CostPoint("a", 0.6, 3000, None), CostPoint("b", 0.4, 9000, None)]
    image = cost_figure(points, "full_marks", "mean over k = 2", 50)
    assert image is not None
    (ax,) = axes
    assert ax.get_xlim()[0] == 0 and ax.get_ylim()[0] == 0
    assert ax.get_xscale() == "linear" and ax.get_xlim()[1] >= 9000
    assert "Both axes start at zero." in image.caption


def test_a_log_cost_axis_says_it_does_not_start_at_zero(axes: list[Any]) -> None:
    points = [CostPoint("a", 0.6, 100, None), CostPoint("b", 0.4, 90_000, None)]
    image = cost_figure(points, "full_marks", "mean over k = 2", 50)
    assert image is not None
    (ax,) = axes
    assert ax.get_xscale() == "log" and ax.get_ylim()[0] == 0
    assert "so it does not start at zero" in image.caption
