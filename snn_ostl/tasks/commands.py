"""What the ``train``, ``compare``, ``demo`` and ``tasks`` commands do, once arguments are read.

Each command writes a run folder (``metrics.json`` and PNG plots) and ends with a one-line
summary on standard output. The command line itself is :mod:`snn_ostl.cli`.

When the weights are updated depends on the learner as well as on ``--update``: an OSTL learner
has a gradient at every time step, so it can update as often as asked; truncated BPTT has one
at the end of each window; BPTT only at the end of the sequence. Every run says when it actually
updated (:func:`update_moments`), and ``compare`` reports the OSTL - BPTT gap only between runs
that updated at the same moments: when ``--update`` makes OSTL update sooner than BPTT can, it
also trains OSTL with one update per sequence, BPTT's schedule, and reports both differences.
"""

from __future__ import annotations

import dataclasses
import os
import textwrap
import time
from pathlib import Path
from typing import Any

from snn_ostl.tasks import parallel
from snn_ostl.tasks.base import Task
from snn_ostl.tasks.report import make_run_dir, plot_curves, plot_gradient_errors, write_metrics
from snn_ostl.tasks.runner import RunSpec, build_model, fit, format_metric, gradient_agreement
from snn_ostl.tasks.training import Method

__all__ = [
    "RUN_FILES",
    "compare_command",
    "same_schedule",
    "tasks_table",
    "train_command",
    "update_moments",
]

#: The files of a run folder and what each holds.
RUN_FILES = {
    "curves.png": "training loss and test metric per epoch, one line per run",
    "gradients.png": "OSTL's gradient error per parameter on the first batch, vs BPTT",
    "metrics.json": "every number of the run, per epoch",
}


@dataclasses.dataclass(frozen=True)
class _Named(Method):
    """A :class:`Method` under another label (two runs of one learner in one comparison)."""

    name: str = ""

    @property
    def label(self) -> str:
        return self.name or super().label


def _period(method: Method) -> int | None:
    """Time steps between the updates inside a sequence (None: once per sequence, at its end).

    The loop updates at the first moment a gradient exists once ``update_every`` steps have
    passed: every step for OSTL, window ends for truncated BPTT, never before the end for BPTT.
    """
    every = method.update_every
    if every is None or method.learner == "bptt":
        return None
    if method.learner == "tbptt":
        return -(-every // method.horizon) * method.horizon
    return every


def same_schedule(a: Method, b: Method) -> bool:
    """Whether two methods update the weights at the same moments of a sequence."""
    return _period(a) == _period(b)


def update_moments(method: Method, *, short: bool = False) -> str:
    """When the optimizer steps in a run of ``method``, in words.

    Args:
        method: The learner and its schedule.
        short: A few words for tables (``every step``, ``per sequence``, ...).
    """
    period = _period(method)
    window = method.learner == "tbptt" and period is not None
    if short:
        if period is None:
            return "per sequence"
        if period == 1:
            return "every step"
        return f"every {period} steps" + (", at window ends" if window else "")
    if period is None:
        text = "once per sequence, at its end"
    elif period == 1:
        text = "after every time step that has a loss, while the sequence runs (online)"
    elif window:
        text = f"every {period} time steps, at window ends, and at the end of each sequence"
    else:
        text = f"every {period} time steps and at the end of each sequence"
    asked = method.update_every
    if method.learner == "bptt" and asked is not None:
        text += (
            " (BPTT has its gradient only when the sequence is over, so it cannot update sooner)"
        )
    elif window and asked != period:
        text += (
            f" (truncated BPTT has a gradient only at the end of each {method.horizon}-step window)"
        )
    return text


def _header(spec: RunSpec, data: Any, model_line: str) -> None:
    spec.say(f"task {spec.task.name}: {data.source}")
    spec.say(f"model: {model_line}; seed {spec.seed}; device {spec.device}")


def _model_line(spec: RunSpec, data: Any) -> str:
    model = build_model(spec, data)
    return model.describe() if hasattr(model, "describe") else type(model).__name__


def _per_epoch(history: dict[str, list]) -> float:
    seconds = history["train_seconds"][1:]
    return sum(seconds) / max(len(seconds), 1)


def _final(history: dict[str, list]) -> dict[str, float]:
    skip = {"epoch", "train_seconds"}
    return {k: v[-1] for k, v in history.items() if k not in skip}


def _files(run_dir: Path, names: list[str]) -> dict[str, str]:
    return {str(run_dir / name): RUN_FILES[name] for name in names}


def train_command(spec: RunSpec, method: Method, update: str, out: str | None) -> dict[str, Any]:
    """Train one model with one learner; write the run folder and print the summary line."""
    task, metric = spec.task, spec.task.objective.main_metric
    data = task.load(spec.config, spec.seed)
    model_line = _model_line(spec, data)
    _header(spec, data, model_line)
    spec.say(f"learner: {method.label}; weights updated {update_moments(method)}")
    history = fit(spec, data, method)
    if not parallel.is_main():  # process 0 writes the run folder
        return {"history": history}
    run_dir = make_run_dir(out, task.name, method.label)
    title = f"{task.name}: {model_line}"
    plot_curves({method.label: history}, metric, run_dir / "curves.png", title)
    result = {
        "command": "train",
        "task": task.name,
        "source": data.source,
        "model": model_line,
        "cell": spec.cell,
        "learner": method.learner,
        "label": method.label,
        "horizon": method.horizon if method.learner == "tbptt" else None,
        "learning_signal": method.learning_signal,
        "update": update,
        "updates": update_moments(method),
        "seed": spec.seed,
        "device": spec.device,
        "config": spec.config,
        "history": history,
        "final": _final(history),
        "seconds_per_epoch": _per_epoch(history),
        "learner_summary": spec.summaries.get(method.label),
        "files": _files(run_dir, ["curves.png", "metrics.json"]),
    }
    if method.label in spec.summaries:
        spec.say(spec.summaries[method.label])
    write_metrics(run_dir, result)
    print(
        f"{task.name} {method.label} (updates {update_moments(method, short=True)}): test "
        f"{metric} {format_metric(metric, history[metric][-1])} after {spec.config['epochs']} "
        f"epoch(s), {result['seconds_per_epoch']:.2f} s/epoch -> {run_dir}",
        flush=True,
    )
    result["run_dir"] = str(run_dir)
    return result


def _equal(agreement: dict[str, Any]) -> bool:
    """Whether OSTL's first-batch gradient equals BPTT's (one stateful layer, exact rule)."""
    error = agreement.get("max_vs_bptt")
    return error is not None and error < 1e-4


def _difference(metric: str, value: float) -> str:
    return f"{100 * value:+.1f} points" if metric == "accuracy" else f"{value:+.3f}"


def compare_command(
    spec: RunSpec,
    ostl: Method,
    baselines: list[Method],
    update: str,
    out: str | None,
    *,
    name: str = "compare",
    summary: bool = True,
) -> dict[str, Any]:
    """Gradient agreement on the first batch, then OSTL and the baselines from the same seed.

    When ``ostl`` updates at other moments than the BPTT baseline can (``--update step`` or
    ``every:K``), OSTL is trained a second time with one update per sequence, labelled
    ``<learner>@sequence`` (the first run is then ``<learner>@<update>``): the gap reported is
    the one between runs on the same schedule, and the other difference is reported as what
    the schedule adds.
    """
    task, metric = spec.task, spec.task.objective.main_metric
    start = time.perf_counter()
    data = task.load(spec.config, spec.seed)
    model_line = _model_line(spec, data)
    _header(spec, data, model_line)
    agreement = gradient_agreement(spec, data, ostl)
    spec.say(
        f"gradient on the first batch ({agreement['batch_size']} sequences x "
        f"{agreement['steps']} steps), {ostl.label} vs BPTT: max relative error "
        f"{agreement['max_vs_bptt']:.2e} (worst: {agreement['worst_vs_bptt']})"
    )
    if agreement.get("max_vs_oracle") is not None:
        spec.say(f"  vs the exact OSTL reference: {agreement['max_vs_oracle']:.2e}")
    layers = len(set(agreement["owners"].values()))
    if layers > 1:
        spec.say(
            f"  ({layers} stateful layers: below the top one, OSTL leaves out the paths through "
            "the upper layers' memory, so it differs from BPTT by design)"
        )
    bptt = next((b for b in baselines if b.learner == "bptt"), None)
    online, reference = ostl, None
    if bptt is not None and not same_schedule(ostl, bptt):
        fields = {f.name: getattr(ostl, f.name) for f in dataclasses.fields(Method)}
        online = _Named(**fields, name=f"{ostl.label}@{update}")
        reference = _Named(**{**fields, "update_every": None}, name=f"{ostl.label}@sequence")
    methods = [online, *([reference] if reference else []), *baselines]
    histories, updates = {}, {}
    for method in methods:
        updates[method.label] = update_moments(method)
        why = ""
        if method is reference:
            why = f": BPTT's schedule, for a like-for-like comparison with {bptt.label}"
        spec.say(f"training {method.label}: weights updated {updates[method.label]}{why}")
        histories[method.label] = fit(spec, data, method)
    run_dir = make_run_dir(out, task.name, name)
    title = f"{task.name}: {model_line}"
    legend = {
        f"{m.label} (updates {update_moments(m, short=True)})": histories[m.label] for m in methods
    }
    plot_curves(legend, metric, run_dir / "curves.png", title)
    errors = {k[3:]: v for k, v in agreement.items() if k in ("vs_bptt", "vs_oracle")}
    plot_gradient_errors(errors, run_dir / "gradients.png", f"{ostl.label} gradient, first batch")
    final = {label: _final(h) for label, h in histories.items()}
    result = {
        "command": name,
        "task": task.name,
        "source": data.source,
        "model": model_line,
        "cell": spec.cell,
        "methods": list(histories),
        "update": update,
        "updates": updates,
        "seed": spec.seed,
        "device": spec.device,
        "config": spec.config,
        "gradient_agreement": agreement,
        "histories": histories,
        "final": final,
        "seconds_per_epoch": {label: _per_epoch(h) for label, h in histories.items()},
        "total_seconds": time.perf_counter() - start,
        "learner_summary": spec.summaries.get(online.label),
        "files": _files(run_dir, ["curves.png", "gradients.png", "metrics.json"]),
    }
    if bptt is not None:
        like = reference or online
        result["gap"] = {
            "metric": metric,
            "value": final[like.label][metric] - final[bptt.label][metric],
            "ostl": like.label,
            "bptt": bptt.label,
            "same_schedule": True,
        }
        if reference is not None:
            result["schedule_gap"] = {
                "metric": metric,
                "value": final[online.label][metric] - final[bptt.label][metric],
                "ostl": online.label,
                "bptt": bptt.label,
                "same_schedule": False,
                "note": f"{online.label} updated {updates[online.label]}; {bptt.label} "
                f"{updates[bptt.label]}: the difference comes from the schedules"
                + (", not from the gradients" if _equal(agreement) else " and the gradients"),
            }
    write_metrics(run_dir, result)
    result["run_dir"] = str(run_dir)
    if not summary:
        return result
    print(_summary_line(task.name, name, metric, methods, final, result), flush=True)
    return result


def _summary_line(
    task: str, name: str, metric: str, methods: list[Method], final: dict, result: dict
) -> str:
    shorts = {m.label: update_moments(m, short=True) for m in methods}
    one_schedule = len(set(shorts.values())) == 1
    if one_schedule:
        parts = [f"{m.label} {format_metric(metric, final[m.label][metric])}" for m in methods]
        text = f"{task} {name}: test {metric} " + " | ".join(parts)
        text += f" (every run updates {shorts[methods[0].label]})"
    else:
        parts = [
            f"{m.label} {format_metric(metric, final[m.label][metric])} (updates {shorts[m.label]})"
            for m in methods
        ]
        text = f"{task} {name}: test {metric} " + " | ".join(parts)
    if "gap" in result:
        gap = result["gap"]
        text += (
            f"; gap {gap['ostl']} - {gap['bptt']} (same schedule) "
            f"{_difference(metric, gap['value'])}"
        )
    if "schedule_gap" in result:
        other = result["schedule_gap"]
        cause = (
            "the update schedule, not the gradient"
            if _equal(result["gradient_agreement"])
            else "the update schedule and OSTL's gradient together"
        )
        text += (
            f"; {other['ostl']} - {other['bptt']}: {_difference(metric, other['value'])}, "
            f"from {cause}"
        )
    elif not one_schedule:
        text += "; the runs update at different moments: their differences are not like for like"
    agreement = result["gradient_agreement"]
    return f"{text}; gradient error vs BPTT {agreement['max_vs_bptt']:.1e} -> {result['run_dir']}"


def _defaults(task: Task) -> str:
    config = task.defaults
    hidden = ",".join(str(h) for h in config.get("hidden", []))
    optimizer = "SGD" if config.get("optimizer") == "sgd" else "Adam"
    parts = [
        f"{config['epochs']} epoch(s)",
        f"batch {config['batch_size']}",
        f"{optimizer} lr {config['lr']:g}",
        f"hidden {hidden}",
        f"TBPTT horizon {config.get('horizon', 10)}",
        f"compare baselines {', '.join(task.baselines)}",
    ]
    return "; ".join(parts)


def tasks_table(tasks: dict[str, Task], width: int | None = None) -> str:
    """The ``snn-ostl tasks`` listing: what each task is, where its data come from, whether they
    are here, and, when they are not, how to get them."""
    if width is None:
        try:
            width = min(max(os.get_terminal_size().columns, 60), 120)
        except OSError:
            width = 100
    lines = []

    def field(label: str, text: str) -> None:
        lines.extend(
            textwrap.wrap(
                f"{label}: {text}",
                width=width,
                initial_indent=" " * 11,
                subsequent_indent=" " * 13,
                break_on_hyphens=False,
                break_long_words=False,
            )
        )

    for name, task in tasks.items():
        avail = task.availability()
        cells = ", ".join(f"{fw}: {'/'.join(c)}" for fw, c in task.cells.items())
        lines.extend(textwrap.wrap(f"{name:8s} {task.summary}", width, subsequent_indent=" " * 13))
        field("data", f"{avail.where}; available here: {'yes' if avail.ok else 'no'}")
        if not avail.ok and avail.how:
            field("to get them", avail.how)
        field("models", f"{cells} (default framework: {task.default_framework})")
        field("defaults", _defaults(task))
    return "\n".join(lines)
