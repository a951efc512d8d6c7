"""Charts of the benchmarks and results pages, drawn at build time from the pages' own tables.

A page holds its numbers once, in ``list-table`` directives with a ``:name:``; a ``.. plot::``
block (``matplotlib.sphinxext.plot_directive``) calls one of the functions below with the page
and the table's name, so that a chart can never disagree with the table beside it. Everything
runs offline.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

HERE = Path(__file__).resolve().parent
DOCS = HERE.parent

MARKERS = ("o", "s", "^", "D", "v", "P", "X")
DASHES = ("-", "--", ":", "-.")


def read_table(page: str, name: str) -> list[dict[str, str]]:
    """The rows of the ``list-table`` named ``name`` in ``docs/<page>``, as header -> cell."""
    lines = (DOCS / page).read_text(encoding="utf-8").splitlines()
    start = None
    for i, line in enumerate(lines):
        if line.strip() == f":name: {name}":
            start = i
            break
    if start is None:
        raise ValueError(f"no list-table named {name!r} in {page}")
    rows: list[list[str]] = []
    for line in lines[start + 1 :]:
        stripped = line.strip()
        if not stripped or stripped.startswith(":"):
            if rows and not stripped:
                continue
            continue
        if not line.startswith("   "):
            break
        if stripped.startswith("* - "):
            rows.append([stripped[4:]])
        elif stripped.startswith("- "):
            rows[-1].append(stripped[2:])
        else:
            rows[-1][-1] += " " + stripped
    header, *body = rows
    return [dict(zip(header, (_plain(c) for c in row))) for row in body]


def _plain(cell: str) -> str:
    return re.sub(r"\*\*|``", "", cell).strip()


def number(cell: str) -> float:
    """The first number of a cell (``97.5 %`` -> 97.5); NaN when it has none."""
    match = re.search(r"-?\d+(?:\.\d+)?(?:e-?\d+)?", cell.replace(",", ""))
    return float(match.group(0)) if match else math.nan


def bench_chart(page: str, name: str, targets: dict[str, float], memory_label: str) -> None:
    """Time ratio and memory growth against T for every network and run of a bench table.

    ``targets``: the time target (ratio to BPTT) of each network, drawn as a dotted line.
    """
    rows = read_table(page, name)
    series: dict[tuple[str, str], list[dict[str, str]]] = {}
    for row in rows:
        series.setdefault((row["network"], row["run"]), []).append(row)
    networks = list(dict.fromkeys(row["network"] for row in rows))
    runs = list(dict.fromkeys(row["run"] for row in rows))
    colors = {net: f"C{i}" for i, net in enumerate(networks)}
    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(8.5, 5.2))
    for (net, run), cells in series.items():
        steps = [number(c["T"]) for c in cells]
        style = {
            "color": colors[net],
            "marker": MARKERS[runs.index(run) % len(MARKERS)],
            "linestyle": DASHES[runs.index(run) % len(DASHES)],
        }
        ax_t.plot(steps, [number(c["time ratio"]) for c in cells], **style, label=f"{net}: {run}")
        if run != "no learner (floor)":
            ax_m.plot(steps, [number(c["memory ratio"]) for c in cells], **style)
    for net in networks:
        cells = series[(net, runs[0])]
        steps = [number(c["T"]) for c in cells]
        bptt = [number(c["BPTT MiB"]) for c in cells]
        ax_m.plot(
            steps,
            [b / bptt[0] for b in bptt],
            color=colors[net],
            linestyle="-",
            linewidth=3,
            alpha=0.45,
            label=f"{net}: BPTT",
        )
    ax_t.axhline(1.0, color="0.3", linewidth=0.8)
    by_value: dict[float, list[str]] = {}
    for net, value in targets.items():
        by_value.setdefault(value, []).append(net)
    for value, nets in by_value.items():
        ax_t.axhline(value, color="0.25", linestyle=":", linewidth=1.2)
        ax_t.annotate(
            f"target: {', '.join(nets)}",
            (1.0, value),
            xycoords=("axes fraction", "data"),
            xytext=(-3, 2),
            textcoords="offset points",
            ha="right",
            va="bottom",
            fontsize=7,
            color="0.25",
        )
    for ax in (ax_t, ax_m):
        ax.set_xscale("log")
        ax.set_xticks(sorted({number(r["T"]) for r in rows}))
        ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.minorticks_off()
        ax.set_xlabel("T (steps per sequence)")
        ax.grid(alpha=0.3)
    ax_t.set(ylabel="time per step / BPTT's", title="time ratio")
    ax_m.set_yscale("log")
    ax_m.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    ax_m.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax_m.set(ylabel=f"peak / peak at the shortest T ({memory_label})")
    ax_m.set_title("memory ratio (thick: BPTT; OSTL's runs at about 1)", fontsize=10)
    handles, labels = ax_t.get_legend_handles_labels()
    more, more_labels = ax_m.get_legend_handles_labels()
    ncol = 3 if len(networks) == 3 else 2
    fig.legend(
        handles + more,
        labels + more_labels,
        loc="lower center",
        ncol=ncol,
        fontsize=8,
        frameon=False,
    )
    rows_of_legend = math.ceil((len(labels) + len(more_labels)) / ncol)
    fig.tight_layout(rect=(0, 0.045 * rows_of_legend + 0.01, 1, 1))


def bars_chart(
    page: str,
    name: str,
    label_column: str,
    columns: list[str],
    ylabel: str,
    log: bool = False,
    reference: float | None = None,
) -> None:
    """Grouped bars: one group per row (``label_column``), one bar per column."""
    rows = read_table(page, name)
    fig, ax = plt.subplots(figsize=(10, 3.8))
    width = 0.8 / len(columns)
    hatches = ("", "//", "..", "xx")
    for i, column in enumerate(columns):
        values = [number(row.get(column, "")) for row in rows]
        xs = [j + (i - (len(columns) - 1) / 2) * width for j in range(len(rows))]
        bars = ax.bar(
            xs, values, width, label=column, hatch=hatches[i % 4], edgecolor="black", lw=0.5
        )
        fmt = "{:.1e}" if log else "{:g}"
        ax.bar_label(
            bars, labels=["" if math.isnan(v) else fmt.format(v) for v in values], fontsize=7
        )
    if reference is not None:
        ax.axhline(reference, color="0.3", linewidth=0.8)
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels([row[label_column] for row in rows], fontsize=8)
    if log:
        ax.set_yscale("log")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3, axis="y")
    ax.margins(y=0.12)
    ax.legend(fontsize=8)
    fig.tight_layout()
