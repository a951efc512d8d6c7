"""Run folders: ``metrics.json``, PNG plots (matplotlib with the Agg backend) and, for
``compare --rules``, the table of methods as text, CSV, Markdown and reStructuredText."""

from __future__ import annotations

import csv
import json
import math
import os
import re
import time
from pathlib import Path
from typing import Any

__all__ = [
    "clean_json",
    "curves_figure",
    "gradient_errors_figure",
    "make_run_dir",
    "plot_curves",
    "plot_gradient_errors",
    "plot_rules",
    "reference_run",
    "rules_figure",
    "rules_markdown",
    "rules_rst",
    "rules_text",
    "run_dir_problem",
    "write_metrics",
    "write_rules_csv",
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


#: Markers and dashes of the runs, in order: every run of a figure gets its own marker, so that
#: runs with equal values (OSTL and BPTT often coincide) stay told apart.
RUN_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p")
RUN_DASHES = ("-", "--", ":", "-.")


def run_style(index: int, label: str) -> dict[str, Any]:
    """Line style of the ``index``-th run: its own marker and dash; the first is drawn thicker,
    with hollow markers and underneath the others, so that a later run on the same values leaves
    it visible around its own line."""
    style: dict[str, Any] = {
        "linestyle": RUN_DASHES[index % len(RUN_DASHES)],
        "marker": RUN_MARKERS[index % len(RUN_MARKERS)],
        "label": label,
        "zorder": 2 + index,
    }
    if index == 0:
        style.update(
            linewidth=4.0, markersize=9, markerfacecolor="none", markeredgewidth=1.6, alpha=0.55
        )
    else:
        style.update(linewidth=1.5, markersize=4.5)
    return style


def reference_run(labels: list[str]) -> str | None:
    """The run the others are compared with: BPTT's when one of the runs is BPTT, else the first."""
    for label in labels:
        if re.match(r"bptt\b", label, re.IGNORECASE):  # "BPTT", "bptt (updates per ...)"
            return label
    return labels[0] if labels else None


def _points(hist: dict[str, list], key: str) -> dict[Any, float]:
    return {e: v for e, v in zip(hist["epoch"], hist.get(key, [])) if v is not None}


def curves_figure(histories: dict[str, dict[str, list]], metric: str, title: str):
    """The figure of :func:`plot_curves` (a ``matplotlib.figure.Figure``, left open).

    Top row: training loss and the test ``metric`` per epoch, one line per run. With two runs or
    more, a small panel under each holds every run's difference to the reference run
    (:func:`reference_run`: BPTT when present, else the first run), so that runs which coincide
    in the top panels are still seen to coincide, or not.
    """
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    labels = list(histories)
    compare = len(labels) >= 2
    if compare:
        fig, grid = plt.subplots(
            2, 2, figsize=(10, 5.4), sharex="col", gridspec_kw={"height_ratios": [3, 1.3]}
        )
        axes, diff_axes = grid[0], grid[1]
    else:
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
        diff_axes = None
    keys = ("train_loss", metric)
    colors = {}
    for i, label in enumerate(labels):
        style = run_style(i, label)
        for ax, key in zip(axes, keys):
            points = _points(histories[label], key)
            if points:
                (line,) = ax.plot(list(points), list(points.values()), **style)
                colors[label] = line.get_color()
    axes[0].set(ylabel="training loss", title="training loss")
    axes[1].set(ylabel=f"test {metric}", title=f"test {metric}")
    if diff_axes is not None:
        ref = reference_run(labels)
        for ax, key in zip(diff_axes, keys):
            base = _points(histories[ref], key)
            ax.axhline(0.0, color=colors.get(ref, "0.3"), linewidth=2.5, alpha=0.55, zorder=1)
            for i, label in enumerate(labels):
                if label == ref:
                    continue
                points = _points(histories[label], key)
                common = [e for e in points if e in base]
                if not common:
                    continue
                style = {**run_style(i, label), "color": colors.get(label)}
                style.pop("label")
                ax.plot(common, [points[e] - base[e] for e in common], **style)
            ax.set_label("difference")
            ax.set(xlabel="epoch", ylabel=f"minus {_short(ref)}")
            ax.set_title(f"difference to {_short(ref)}", fontsize=9)
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3), useOffset=False)
    else:
        for ax in axes:
            ax.set_xlabel("epoch")
    for ax in [*axes, *(diff_axes if diff_axes is not None else [])]:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    for ax in axes:
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def _short(label: str) -> str:
    """A run's name without the schedule in brackets: ``BPTT (updates ...)`` -> ``BPTT``."""
    return label.split(" (")[0]


def plot_curves(histories: dict[str, dict[str, list]], metric: str, path: Path, title: str) -> Path:
    """Save :func:`curves_figure` at ``path`` (PNG) and return ``path``."""
    plt = _pyplot()
    fig = curves_figure(histories, metric, title)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


#: Hatches of the bar groups of :func:`gradient_errors_figure`, one per reference.
BAR_HATCHES = ("", "//", "..", "xx", "\\\\", "++")


def gradient_errors_figure(errors: dict[str, dict[str, float]], title: str):
    """The figure of :func:`plot_gradient_errors` (a ``matplotlib.figure.Figure``, left open).

    One bar group per reference, side by side (never on top of each other), each with its own
    hatch, and the value written over each bar.
    """
    plt = _pyplot()
    names = sorted({n for errs in errors.values() for n in errs})
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(names) + 2), 3.8))
    width = 0.8 / max(len(errors), 1)
    floor = 1e-12
    for i, (ref, errs) in enumerate(errors.items()):
        xs = [j + i * width for j in range(len(names))]
        values = [errs.get(n, math.nan) for n in names]
        bars = ax.bar(
            xs,
            [max(v, floor) for v in values],
            width,
            label=f"vs {ref}",
            hatch=BAR_HATCHES[i % len(BAR_HATCHES)],
            edgecolor="black",
            linewidth=0.6,
        )
        ax.bar_label(
            bars, labels=[f"{v:.1e}" if math.isfinite(v) else "" for v in values], fontsize=6
        )
    ax.set_yscale("log")
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(names))])
    ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("max relative error")
    ax.set_title(title)
    ax.grid(alpha=0.3, axis="y")
    ax.legend()
    fig.tight_layout()
    return fig


def plot_gradient_errors(errors: dict[str, dict[str, float]], path: Path, title: str) -> Path:
    """Save :func:`gradient_errors_figure` at ``path`` (PNG) and return ``path``."""
    plt = _pyplot()
    fig = gradient_errors_figure(errors, title)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------- compare --rules

#: Columns of the rules table: (key of a row, header); the metric's header is filled in.
RULE_COLUMNS = (
    ("method", "method"),
    ("model", "model"),
    ("updates", "updates"),
    ("final", "test {metric}"),
    ("ms_per_step", "ms/step"),
    ("peak_mib", "peak MiB"),
    ("trace_kib", "traces KiB"),
    ("note", "note"),
)


def _metric_cell(metric: str, value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{100 * value:.1f}" if metric == "accuracy" else f"{value:.3f}"


def _cells(row: dict[str, Any], metric: str) -> list[str]:
    """A row of the rules table as strings ("n/a" where a rule could not run)."""
    ok = row["status"] == "ok"
    out = []
    for key, _ in RULE_COLUMNS:
        value = row.get(key)
        if key == "final":
            out.append(_metric_cell(metric, value) if ok else "n/a")
        elif key == "ms_per_step":
            out.append(f"{value:.2f}" if ok and value is not None else "n/a")
        elif key == "peak_mib":
            out.append(f"{value:.1f}" if ok and value is not None else "n/a")
        elif key == "trace_kib":
            out.append(f"{value:.1f}" if ok and value is not None else ("—" if ok else "n/a"))
        elif key == "note":
            out.append((row.get("note") if ok else row.get("reason")) or "")
        else:
            out.append(str(value if value is not None else ""))
    return out


def _headers(metric: str) -> list[str]:
    shown = f"{metric} (%)" if metric == "accuracy" else metric
    return [h.format(metric=shown) for _, h in RULE_COLUMNS]


def rules_text(rows: list[dict[str, Any]], metric: str) -> str:
    """The rules table as aligned plain text (the last column, the note, is not padded)."""
    table = [_headers(metric), *(_cells(r, metric) for r in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(RULE_COLUMNS) - 1)]
    lines = []
    for n, line in enumerate(table):
        text = "  ".join(c.ljust(w) for c, w in zip(line, widths)) + "  " + line[-1]
        lines.append(text.rstrip())
        if n == 0:
            lines.append("-" * max(len(t) for t in lines))
    return "\n".join(lines)


def rules_markdown(rows: list[dict[str, Any]], metric: str, header: list[str]) -> str:
    """The rules table as a Markdown pipe table, after ``header`` lines (command, machine...)."""

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    out = [*header, ""] if header else []
    out.append(line(_headers(metric)))
    out.append("|" + "|".join("---" for _ in RULE_COLUMNS) + "|")
    out += [line(_cells(r, metric)) for r in rows]
    return "\n".join(out) + "\n"


def rules_rst(rows: list[dict[str, Any]], metric: str, title: str, name: str = "") -> str:
    """The rules table as a reStructuredText ``list-table`` (for a documentation page)."""
    out = [f".. list-table:: {title}"]
    if name:
        out.append(f"   :name: {name}")
    out += ["   :header-rows: 1", ""]
    for cells in [_headers(metric), *(_cells(r, metric) for r in rows)]:
        for i, cell in enumerate(cells):
            out.append(f"   {'* -' if i == 0 else '  -'} {cell or '—'}")
    return "\n".join(out) + "\n"


def write_rules_csv(path: Path, rows: list[dict[str, Any]], metric: str) -> Path:
    """``rules.csv``: one line per method, numbers unformatted, empty where not measured."""
    keys = ["method", "status", "model", "updates", metric, "ms_per_step", "peak_mib",
            "trace_kib", "train_seconds", "reason"]  # fmt: skip
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(keys)
        for row in rows:
            values = {**row, metric: row.get("final")}
            writer.writerow(["" if values.get(k) is None else values.get(k) for k in keys])
    return path


def rules_figure(rows: list[dict[str, Any]], metric: str, title: str, memory_label: str = ""):
    """The figure of :func:`plot_rules` (a ``matplotlib.figure.Figure``, left open).

    Left: each method's final test metric against its time per training step (log scale), the
    marker's area growing with its peak memory. Middle: peak memory during training. Right:
    eligibility-trace memory (none for the baselines). Methods that could not run are listed
    under the panels with their reason.
    """
    plt = _pyplot()
    ran = [r for r in rows if r["status"] == "ok"]
    skipped = [r for r in rows if r["status"] != "ok"]
    notes = [f"{r['method']}: n/a, {r.get('reason') or ''}" for r in skipped]
    if memory_label:
        notes.append(f"peak memory: {memory_label}")
    fig, (ax, ax_m, ax_t) = plt.subplots(
        1, 3, figsize=(13, 4.8 + 0.22 * len(notes)), gridspec_kw={"width_ratios": [3, 1.6, 1.6]}
    )
    scale = 100.0 if metric == "accuracy" else 1.0
    peaks = [r["peak_mib"] or 0.0 for r in ran]
    top = max(peaks, default=0.0) or 1.0
    colors = [f"C{i % 10}" for i in range(len(ran))]
    for i, row in enumerate(ran):
        ax.scatter(
            row["ms_per_step"],
            scale * row["final"],
            s=30 + 370 * (row["peak_mib"] or 0.0) / top,
            marker=RUN_MARKERS[i % len(RUN_MARKERS)],
            color=colors[i],
            alpha=0.65,
            edgecolor="black",
            linewidth=0.6,
            label=row["method"],
            zorder=3 + i,
        )
    if ran:
        from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        legend = ax.legend(fontsize=8, loc="best", markerscale=1.0)
        for handle in legend.legend_handles:
            handle.set_sizes([40])
    ax.set(
        xlabel="training time per step (ms, log scale)",
        ylabel=f"final test {metric}" + (" (%)" if metric == "accuracy" else ""),
    )
    ax.set_title("test metric against time (marker area: peak memory)", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    names = [r["method"] for r in ran]
    ys = list(range(len(ran)))
    traces = [r["trace_kib"] for r in ran]
    bars = ax_m.barh(ys, peaks, color=colors, edgecolor="black", linewidth=0.5)
    ax_m.bar_label(bars, labels=[f"{v:.1f}" for v in peaks], fontsize=7, padding=2)
    bars = ax_t.barh(ys, [t or 0.0 for t in traces], color=colors, hatch="//",
                     edgecolor="black", linewidth=0.5)  # fmt: skip
    ax_t.bar_label(
        bars,
        labels=["—" if t is None else f"{t:.0f}" if t >= 100 else f"{t:.1f}" for t in traces],
        fontsize=7,
        padding=2,
    )
    for axis, label, head in (
        (ax_m, "MiB", "peak memory during training"),
        (ax_t, "KiB", "eligibility traces"),
    ):
        axis.set_yticks(ys)
        axis.set_yticklabels(names, fontsize=8)
        axis.invert_yaxis()
        axis.set_xlabel(label)
        axis.set_title(head, fontsize=10)
        axis.margins(x=0.25)
        axis.grid(alpha=0.3, axis="x")
    for i, note in enumerate(notes):
        y = 0.01 + 0.03 * (len(notes) - 1 - i) * 4.8 / (4.8 + 0.22 * len(notes))
        fig.text(0.01, y, note[:200], fontsize=7, ha="left")
    fig.suptitle(title)
    bottom = 0.035 * len(notes) * 4.8 / (4.8 + 0.22 * len(notes)) + (0.01 if notes else 0)
    fig.tight_layout(rect=(0, bottom, 1, 1))
    return fig


def plot_rules(
    rows: list[dict[str, Any]], metric: str, path: Path, title: str, memory_label: str = ""
) -> Path:
    """Save :func:`rules_figure` at ``path`` (PNG) and return ``path``."""
    plt = _pyplot()
    fig = rules_figure(rows, metric, title, memory_label)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
