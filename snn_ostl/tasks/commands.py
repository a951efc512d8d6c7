"""What the ``train``, ``compare``, ``demo`` and ``tasks`` commands do, once arguments are read.

Each command writes a run folder (``metrics.json`` and PNG plots) and ends with a one-line
summary on standard output. The command line itself is :mod:`snn_ostl.cli`.

When the weights are updated depends on the learner as well as on ``--update``: an OSTL learner
has a gradient at every time step, so it can update as often as asked; truncated BPTT has one
at the end of each window; BPTT only at the end of the sequence. Every run says when it actually
updated (:func:`update_moments`), and ``compare`` reports the OSTL - BPTT gap only between runs
that updated at the same moments: when ``--update`` makes OSTL update sooner than BPTT can, it
also trains OSTL with one update per sequence, BPTT's schedule, and reports both differences.

``compare --rules`` (:func:`rules_command`) trains several learning rules and the baselines on
the same data from the same seed and tabulates, per method, the final test metric, the time
per training step, the peak memory and the eligibility-trace memory
(:mod:`snn_ostl.tasks.measure`). A rule the model cannot use is a row with its reason.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import textwrap
import time
from pathlib import Path
from typing import Any

from snn_ostl.tasks import parallel
from snn_ostl.tasks.base import Task
from snn_ostl.tasks.report import (
    make_run_dir,
    plot_curves,
    plot_gradient_errors,
    plot_rules,
    rules_markdown,
    rules_rst,
    rules_text,
    write_metrics,
    write_rules_csv,
)
from snn_ostl.tasks.runner import RunSpec, build_model, fit, format_metric, gradient_agreement
from snn_ostl.tasks.training import Method, RuleUnavailableError, train_batch

__all__ = [
    "RUN_FILES",
    "compare_command",
    "machine_line",
    "rules_command",
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
    "rules.png": "final test metric against time per step, and memory, per method",
    "rules.csv": "the table of methods: test metric, time per step, peak and trace memory",
    "rules.md": "the same table in Markdown, with the command, machine and seed",
    "rules.rst": "the same table as a reStructuredText list-table",
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


def machine_line(device: str = "cpu") -> str:
    """The machine in a few words: cores, architecture, CPU model, torch version, threads."""
    import torch

    try:
        cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        cpuinfo = ""
    names = [line.split(":", 1)[1].strip() for line in cpuinfo.splitlines()
             if line.startswith("model name")]  # fmt: skip
    model = names[0] if names else platform.processor()
    text = f"{os.cpu_count()}-core {platform.machine()} CPU" + (f" ({model})" if model else "")
    if str(device).startswith("cuda") and torch.cuda.is_available():
        text += f", GPU {torch.cuda.get_device_name(device)}"
    return f"{text}, torch {torch.__version__}, {torch.get_num_threads()} torch thread(s)"


def _unavailable(exc: BaseException) -> str:
    """The first line of an error that says why a rule cannot train the model."""
    problems = getattr(exc, "problems", None)
    if problems:
        first = problems[0]
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        return f"{first.path or '<root>'} ({first.module_type}): {first.why}{more}"
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def _probe(spec: RunSpec, data: Any, method: Method) -> str | None:
    """Train one batch on a throwaway model: None when the method works, else the reason.

    It also warms up what the method runs (lazy initialisation, allocator), so that its
    measured run does not pay for it.
    """
    from snn_ostl.errors import UnsupportedModuleError

    model = build_model(spec, data, method.model_kind)
    learner = None
    try:
        learner = method.attach(model)
        optimizer = spec.task.optimizer(model, spec.config)
        batch = next(iter(data.train(0))).to(spec.device)
        train_batch(model, batch, spec.task.objective, method, optimizer, learner)
    except (UnsupportedModuleError, RuleUnavailableError) as exc:
        return _unavailable(exc)
    finally:
        if learner is not None:
            learner.detach()
    return None


def _warm_up(spec: RunSpec, data: Any) -> None:
    """One unmeasured pass of the training loop (one batch, BPTT): the process's one-time
    allocations then land on no method's peak memory."""
    quiet = dataclasses.replace(
        spec,
        config={**spec.config, "epochs": 1},
        max_batches=1,
        progress=False,
        verbose=False,
        log=[],
        summaries={},
    )
    fit(quiet, data, Method("bptt", seed=spec.seed))


#: What a rule row trains on besides the task's own loss, for the table's note column.
RULE_NOTES = {
    "decolle": "hidden layers: local random-readout losses only",
    "superspike": "van Rossum loss to target spikes; class = most output spikes",
    "rflo": "rate units, not spiking",
}


def rules_command(
    spec: RunSpec,
    methods: list[Method],
    update: str,
    out: str | None,
    *,
    command_line: str = "",
) -> dict[str, Any]:
    """Train every method on the same data from the same seed; tabulate what each costs.

    Each method trains a fresh model of the seed: the task's model, or the model its rule
    needs (:attr:`Method.model_kind`). One batch on a throwaway model first tells whether the
    rule can train that model (a row "n/a" with the reason if not) and warms up its code paths;
    then the method trains with a :class:`~snn_ostl.tasks.measure.TrainMeter`. Writes
    ``metrics.json``, ``curves.png``, ``rules.png``, ``rules.csv``, ``rules.md`` and
    ``rules.rst``, and prints the table.
    """
    from snn_ostl.errors import UnsupportedModuleError
    from snn_ostl.tasks.measure import MEMORY_MEASURES, TrainMeter

    task, metric = spec.task, spec.task.objective.main_metric
    start = time.perf_counter()
    data = task.load(spec.config, spec.seed)
    machine = machine_line(spec.device)
    spec.say(f"task {task.name}: {data.source}")
    spec.say(f"seed {spec.seed}; device {spec.device}; {machine}")
    rows: list[dict[str, Any]] = []
    histories: dict[str, dict[str, list]] = {}
    how = None
    # every method's first batch before any is measured: the n/a rows, and a warm process
    reasons = {method.label: _probe(spec, data, method) for method in methods}
    _warm_up(spec, data)
    for method in methods:
        label = method.label
        model_line = _describe(build_model(spec, data, method.model_kind))
        row: dict[str, Any] = {
            "method": label,
            "kind": "rule" if method.online else "baseline",
            "model": model_line,
            "model_kind": method.model_kind,
            "updates": update_moments(method, short=True),
            "metric": metric,
            "note": RULE_NOTES.get(method.learner, ""),
        }
        reason = reasons[label]
        if reason is None:
            spec.say(f"training {label} on {model_line}: weights updated {update_moments(method)}")
            meter = TrainMeter(spec.device)
            try:
                history = fit(spec, data, method, meter)
            except (UnsupportedModuleError, RuleUnavailableError) as exc:
                reason = _unavailable(exc)
            else:
                histories[label] = history
                how = meter.how
                row.update(
                    status="ok",
                    final=history[metric][-1],
                    final_metrics=_final(history),
                    **meter.result(method.online),
                    learner_summary=spec.summaries.get(label),
                )
        if reason is not None:
            spec.say(f"{label}: n/a on {model_line}: {reason}")
            row.update(status="n/a", reason=reason, final=None)
        rows.append(row)
    run_dir = make_run_dir(out, task.name, "rules")
    memory = MEMORY_MEASURES.get(how or "", "")
    header = [
        f"# {task.name}: learning rules side by side",
        "",
        f"- command: `{command_line}`" if command_line else "- command: snn-ostl compare --rules",
        f"- machine: {machine}",
        f"- seed: {spec.seed}; epochs: {spec.config['epochs']}; data: {data.source}",
        f"- ms/step: training time per time step (batch of {spec.config.get('batch_size')});"
        f" peak MiB: {memory}; traces KiB: eligibility traces held (learner.trace_bytes())",
    ]
    title = f"{task.name}: learning rules, seed {spec.seed}"
    if histories:
        plot_curves(histories, metric, run_dir / "curves.png", f"{title} (training loss: each "
                    "method's own)")  # fmt: skip
    plot_rules(rows, metric, run_dir / "rules.png", title, memory)
    write_rules_csv(run_dir / "rules.csv", rows, metric)
    (run_dir / "rules.md").write_text(rules_markdown(rows, metric, header))
    rst_title = f"{task.name}, seed {spec.seed}, {machine.split(',')[0]}"
    (run_dir / "rules.rst").write_text(rules_rst(rows, metric, rst_title))
    names = ["rules.png", "rules.csv", "rules.md", "rules.rst", "metrics.json"]
    if histories:
        names.insert(1, "curves.png")
    result = {
        "command": "compare --rules",
        "command_line": command_line,
        "task": task.name,
        "source": data.source,
        "machine": machine,
        "seed": spec.seed,
        "device": spec.device,
        "update": update,
        "config": spec.config,
        "metric": metric,
        "memory_measure": memory,
        "methods": [r["method"] for r in rows],
        "rules_table": rows,
        "histories": histories,
        "final": {r["method"]: r["final_metrics"] for r in rows if r["status"] == "ok"},
        "total_seconds": time.perf_counter() - start,
        "files": _files(run_dir, names),
    }
    write_metrics(run_dir, result)
    result["run_dir"] = str(run_dir)
    print(f"{task.name}: {len(rows)} methods, seed {spec.seed}, {machine}", flush=True)
    print(rules_text(rows, metric), flush=True)
    print(f"peak MiB: {memory}", flush=True)
    print(f"-> {run_dir} ({', '.join(names)})", flush=True)
    return result


def _describe(model: Any) -> str:
    return model.describe() if hasattr(model, "describe") else type(model).__name__


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
