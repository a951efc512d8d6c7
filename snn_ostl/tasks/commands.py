"""What the ``train``, ``compare``, ``demo`` and ``tasks`` commands do, once arguments are read.

Each command writes a run folder (``metrics.json`` and PNG plots) and ends with a one-line
summary on standard output. The command line itself is :mod:`snn_ostl.cli`.
"""

from __future__ import annotations

import time
from typing import Any

from snn_ostl.tasks import parallel
from snn_ostl.tasks.base import Task
from snn_ostl.tasks.report import make_run_dir, plot_curves, plot_gradient_errors, write_metrics
from snn_ostl.tasks.runner import RunSpec, build_model, fit, format_metric, gradient_agreement
from snn_ostl.tasks.training import Method

__all__ = ["compare_command", "tasks_table", "train_command"]


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


def train_command(spec: RunSpec, method: Method, update: str, out: str | None) -> dict[str, Any]:
    """Train one model with one learner; write the run folder and print the summary line."""
    task, metric = spec.task, spec.task.objective.main_metric
    data = task.load(spec.config, spec.seed)
    model_line = _model_line(spec, data)
    _header(spec, data, model_line)
    spec.say(f"learner: {method.label}, update: {update}")
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
        "seed": spec.seed,
        "device": spec.device,
        "config": spec.config,
        "history": history,
        "final": _final(history),
        "seconds_per_epoch": _per_epoch(history),
        "learner_summary": spec.summaries.get(method.label),
    }
    if method.label in spec.summaries:
        spec.say(spec.summaries[method.label])
    write_metrics(run_dir, result)
    print(
        f"{task.name} {method.label}: test {metric} "
        f"{format_metric(metric, history[metric][-1])} after {spec.config['epochs']} epoch(s), "
        f"{result['seconds_per_epoch']:.2f} s/epoch -> {run_dir}",
        flush=True,
    )
    result["run_dir"] = str(run_dir)
    return result


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
    """Gradient agreement on the first batch, then OSTL and the baselines from the same seed."""
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
    histories = {}
    for method in [ostl, *baselines]:
        spec.say(f"training with {method.label} (update: {update})")
        histories[method.label] = fit(spec, data, method)
    run_dir = make_run_dir(out, task.name, name)
    title = f"{task.name}: {model_line}"
    plot_curves(histories, metric, run_dir / "curves.png", title)
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
        "seed": spec.seed,
        "device": spec.device,
        "config": spec.config,
        "gradient_agreement": agreement,
        "histories": histories,
        "final": final,
        "seconds_per_epoch": {label: _per_epoch(h) for label, h in histories.items()},
        "total_seconds": time.perf_counter() - start,
        "learner_summary": spec.summaries.get(ostl.label),
    }
    bptt = next((b.label for b in baselines if b.learner == "bptt"), None)
    if bptt is not None:
        gap = final[ostl.label][metric] - final[bptt][metric]
        result["gap"] = {"metric": metric, "value": gap, "ostl": ostl.label, "bptt": bptt}
    write_metrics(run_dir, result)
    result["run_dir"] = str(run_dir)
    parts = [f"{label} {format_metric(metric, f[metric])}" for label, f in final.items()]
    gap_text = ""
    if "gap" in result:
        gap = result["gap"]["value"]
        gap_text = f"; gap {100 * gap:+.1f} points" if metric == "accuracy" else f"; gap {gap:+.3f}"
    if not summary:
        return result
    print(
        f"{task.name} {name}: test {metric} " + " | ".join(parts) + gap_text + ", gradient "
        f"error vs BPTT {agreement['max_vs_bptt']:.1e} -> {run_dir}",
        flush=True,
    )
    return result


def tasks_table(tasks: dict[str, Task]) -> str:
    """The ``snn-ostl tasks`` listing: name, what it is, where its data come from, here or not."""
    lines = []
    for name, task in tasks.items():
        avail = task.availability()
        cells = ", ".join(f"{fw}: {'/'.join(c)}" for fw, c in task.cells.items())
        lines.append(f"{name:8s} {task.summary}")
        lines.append(
            f"{'':8s}   data: {avail.where}; available here: {'yes' if avail.ok else 'no'}"
        )
        lines.append(f"{'':8s}   models: {cells} (default framework: {task.default_framework})")
    return "\n".join(lines)
