"""The training-curve figures keep every run visible when runs coincide."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pytest

from snn_ostl.tasks.report import (
    curves_figure,
    gradient_errors_figure,
    plot_curves,
    plot_gradient_errors,
    reference_run,
)


def _history(loss, acc):
    return {"epoch": list(range(1, len(loss) + 1)), "train_loss": loss, "accuracy": acc}


def _run_lines(ax):
    return [line for line in ax.get_lines() if not line.get_label().startswith("_")]


@pytest.fixture
def equal_runs():
    # OSTL and BPTT with the same values: the case where one line used to hide the other.
    same = _history([1.0, 0.5, 0.25], [0.5, 0.8, 0.9])
    return {
        "OSTL (updates per sequence)": same,
        "BPTT (updates per sequence)": {k: list(v) for k, v in same.items()},
        "TBPTT(5)": _history([1.1, 0.7, 0.6], [0.4, 0.6, 0.7]),
    }


def test_each_run_has_its_own_marker_and_the_first_is_drawn_underneath(equal_runs):
    fig = curves_figure(equal_runs, "accuracy", "t")
    try:
        top = [ax for ax in fig.axes if ax.get_label() != "difference"]
        assert len(top) == 2
        for ax in top:
            lines = _run_lines(ax)
            assert [line.get_label() for line in lines] == list(equal_runs)
            markers = [line.get_marker() for line in lines]
            assert len(set(markers)) == len(markers), markers
            styles = [line.get_linestyle() for line in lines]
            assert len(set(styles)) == len(styles), styles
            first, *rest = lines
            assert all(first.get_linewidth() > line.get_linewidth() for line in rest)
            assert all(first.get_zorder() < line.get_zorder() for line in rest)
    finally:
        plt.close(fig)


def test_two_or_more_runs_get_a_difference_panel_against_bptt(equal_runs):
    fig = curves_figure(equal_runs, "accuracy", "t")
    try:
        diff = [ax for ax in fig.axes if ax.get_label() == "difference"]
        assert len(diff) == 2
        for ax in diff:
            assert "BPTT" in ax.get_title()
            lines = [line for line in ax.get_lines() if len(line.get_xdata()) == 3]
            # one line per run other than BPTT, each with that run's marker
            assert sorted(line.get_marker() for line in lines) == sorted(["o", "^"])
        ostl = next(line for line in diff[1].get_lines() if line.get_marker() == "o")
        assert list(ostl.get_ydata()) == [0.0, 0.0, 0.0]
        tbptt = next(line for line in diff[1].get_lines() if line.get_marker() == "^")
        assert list(tbptt.get_ydata()) == pytest.approx([-0.1, -0.2, -0.2])
    finally:
        plt.close(fig)


def test_a_single_run_has_no_difference_panel():
    fig = curves_figure({"OSTL": _history([1.0, 0.5], [0.5, 0.8])}, "accuracy", "t")
    try:
        assert len(fig.axes) == 2
        assert all(ax.get_label() != "difference" for ax in fig.axes)
    finally:
        plt.close(fig)


def test_reference_is_bptt_when_present_else_the_first_run():
    assert reference_run(["OSTL", "TBPTT(5)", "BPTT (updates per sequence)"]).startswith("BPTT")
    assert reference_run(["OSTL", "TBPTT(5)"]) == "OSTL"


def test_the_saving_functions_still_write_a_png_and_return_its_path(equal_runs, tmp_path):
    assert plot_curves(equal_runs, "accuracy", tmp_path / "c.png", "t") == tmp_path / "c.png"
    errors = {"BPTT": {"w0": 0.8, "w1": 1e-7}, "exact OSTL": {"w0": 1e-7, "w1": 2e-7}}
    out = plot_gradient_errors(errors, tmp_path / "g.png", "t")
    assert out == tmp_path / "g.png"
    for name in ("c.png", "g.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plt.get_fignums() == []  # closed after saving


def test_gradient_error_groups_have_distinct_hatches():
    errors = {"BPTT": {"w0": 0.8, "w1": 1e-7}, "exact OSTL": {"w0": 1e-7, "w1": 2e-7}}
    fig = gradient_errors_figure(errors, "t")
    try:
        (ax,) = fig.axes
        hatches = {patch.get_hatch() or "" for patch in ax.patches}
        assert len(hatches) == 2
    finally:
        plt.close(fig)
