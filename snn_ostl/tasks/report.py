"""Run folders: ``metrics.json`` and PNG plots (matplotlib with the Agg backend)."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

__all__ = [
    "clean_json",
    "make_run_dir",
    "plot_curves",
    "plot_gradient_errors",
    "run_dir_problem",
    "write_metrics",
]

#: Where run folders go when ``--out`` is not given.
RUNS = Path("runs")


def run_dir_problem(out: str | Path | None) -> str | None:
    """Why a run folder cannot be written at ``out`` (``runs/`` when None), or None when it can.

    Checked before a run starts, so that a mistyped ``--out`` fails at once rather than after
    the training; nothing is created.
    """
    path = Path(out).expanduser() if out is not None else RUNS
    shown = str(out) if out is not None else "runs (the default run folder)"
    if path.exists():
        if not path.is_dir():
            return f"{shown} exists and is not a folder"
        if not os.access(path, os.W_OK | os.X_OK):
            return f"{shown} is a folder this user cannot write to"
        return None
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        return f"cannot create {shown}: {parent} is a file, not a folder"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"cannot create {shown}: this user cannot write to {parent}"
    return None


def make_run_dir(out: str | Path | None, *parts: str) -> Path:
    """``out`` if given, else ``runs/<part>-<part>-<timestamp>`` (created, unique)."""
    if out is not None:
        path = Path(out)
    else:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = RUNS / "-".join([*parts, stamp])
        suffix = 1
        while path.exists():
            suffix += 1
            path = RUNS / "-".join([*parts, stamp, str(suffix)])
    path.mkdir(parents=True, exist_ok=True)
    return path


def clean_json(value: Any) -> Any:
    """Make ``value`` valid JSON: non-finite floats become null, tuples lists."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): clean_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_json(v) for v in value]
    return value


def write_metrics(path: Path, metrics: dict[str, Any]) -> Path:
    """Write ``metrics.json`` in the run folder ``path``."""
    target = path / "metrics.json"
    target.write_text(json.dumps(clean_json(metrics), indent=2, allow_nan=False) + "\n")
    return target


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(histories: dict[str, dict[str, list]], metric: str, path: Path, title: str) -> Path:
    """Two panels: training loss and the test ``metric`` per epoch, one line per method."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    # Distinct dashes and markers: OSTL and BPTT often coincide, and both must stay visible.
    styles = [("-", "o"), ("--", "s"), (":", "^"), ("-.", "D")]
    for i, (label, hist) in enumerate(histories.items()):
        dash, marker = styles[i % len(styles)]
        style = {"linestyle": dash, "marker": marker, "markersize": 4, "label": label}
        epochs = hist["epoch"]
        loss = [(e, v) for e, v in zip(epochs, hist["train_loss"]) if v is not None]
        if loss:
            axes[0].plot(*zip(*loss), **style)
        values = [(e, v) for e, v in zip(epochs, hist[metric]) if v is not None]
        if values:
            axes[1].plot(*zip(*values), **style)
    axes[0].set(xlabel="epoch", ylabel="training loss", title="training loss")
    axes[1].set(xlabel="epoch", ylabel=f"test {metric}", title=f"test {metric}")
    from matplotlib.ticker import MaxNLocator

    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_gradient_errors(errors: dict[str, dict[str, float]], path: Path, title: str) -> Path:
    """Per-parameter relative gradient error (log scale), one bar group per reference."""
    plt = _pyplot()
    names = sorted({n for errs in errors.values() for n in errs})
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(names) + 2), 3.8))
    width = 0.8 / max(len(errors), 1)
    floor = 1e-12
    for i, (ref, errs) in enumerate(errors.items()):
        xs = [j + i * width for j in range(len(names))]
        ax.bar(xs, [max(errs.get(n, math.nan), floor) for n in names], width, label=f"vs {ref}")
    ax.set_yscale("log")
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(names))])
    ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("max relative error")
    ax.set_title(title)
    ax.grid(alpha=0.3, axis="y")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
