"""Train a task with one learner, or with OSTL and its baselines side by side.

Used by the ``train``, ``compare`` and ``demo`` commands: builds the model from the seed, runs
the epochs with progress bars, evaluates after every epoch, measures OSTL's gradient on the
first batch against BPTT and against the exact OSTL reference of :mod:`snn_ostl.testing`.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from snn_ostl.tasks import parallel
from snn_ostl.tasks.base import Task, TaskData
from snn_ostl.tasks.training import Method, evaluate, sequence_run, train_batch

__all__ = ["RunSpec", "build_model", "fit", "format_metric", "gradient_agreement"]


@dataclass
class RunSpec:
    """Everything but the learner that decides a run.

    Attributes:
        task: The task.
        config: Its configuration (see :meth:`Task.config`).
        cell: The stateful cell (``snu``, ``leaky``, ...).
        seed: Seed of the split, the encoding, the shuffle and the initial weights.
        device: ``cpu`` or ``cuda``.
        progress: Show progress bars (on a terminal).
        verbose: Print one line per epoch.
        max_batches: Stop each epoch after this many batches (None: all).
        log: The progress lines said so far.
        summaries: The OSTL learner's summary table of each trained method, by label.
    """

    task: Task
    config: dict[str, Any]
    cell: str
    seed: int = 0
    device: str = "cpu"
    progress: bool = True
    verbose: bool = True
    max_batches: int | None = None
    log: list[str] = field(default_factory=list)
    summaries: dict[str, str] = field(default_factory=dict)

    def say(self, line: str) -> None:
        """Print a progress line (when verbose) and keep it."""
        self.log.append(line)
        if self.verbose:
            print(line, flush=True)


def format_metric(name: str, value: float | None) -> str:
    """``accuracy`` as a percentage, anything else with three decimals."""
    if value is None:
        return "n/a"
    return f"{100 * value:.1f}%" if name == "accuracy" else f"{value:.3f}"


def build_model(spec: RunSpec, data: TaskData, kind: str = "task") -> nn.Module:
    """The task's model (or a rule's own ``kind``, see :func:`~snn_ostl.tasks.models.rule_model`)
    with the initial weights that follow from the seed."""
    torch.manual_seed(spec.seed)
    if kind == "task":
        return spec.task.build(spec.config, data, spec.cell).to(spec.device)
    from snn_ostl.tasks.models import rule_model

    sizes = [data.inputs, *spec.config["hidden"]]
    options = spec.config.get("cell_options", {})
    return rule_model(kind, sizes, data.outputs, options).to(spec.device)


def _test(spec: RunSpec, model: nn.Module, data: TaskData) -> dict[str, float]:
    batches = (b.to(spec.device) for b in data.test())
    return evaluate(model, batches, spec.task.objective)


def fit(spec: RunSpec, data: TaskData, method: Method, meter: Any = None) -> dict[str, list]:
    """Train a fresh model from the seed; return its history (epoch 0 = before training).

    Args:
        spec: The run.
        data: The task's data.
        method: The learner and its schedule; a rule that needs a model of its own kind
            (:attr:`Method.model_kind`) gets that model.
        meter: A :class:`snn_ostl.tasks.measure.TrainMeter` to time the training loops and
            measure their memory (None: not measured).

    Raises:
        snn_ostl.UnsupportedModuleError: The learner cannot train the model.
        snn_ostl.tasks.training.RuleUnavailableError: The rule's own loss cannot be formed
            for this model or task.
    """
    from tqdm.auto import tqdm

    objective = spec.task.objective
    model = build_model(spec, data, method.model_kind)
    learner = method.attach(model)
    runner = parallel.wrap(model)  # DDP when several processes train (train --nproc)
    share, part = parallel.world(), parallel.rank()
    optimizer = spec.task.optimizer(model, spec.config)
    constrain = getattr(model, "constrain", None)
    metric = objective.main_metric
    epochs = int(spec.config["epochs"])
    first = _test(spec, model, data)
    history: dict[str, list] = {"epoch": [0], "train_loss": [None], "train_seconds": [0.0]}
    for key, value in first.items():
        history[key] = [value]
    total = data.train_batches
    if spec.max_batches:
        total = min(total, spec.max_batches)
    usable = total // share * share  # the same number of batches in every process
    try:
        for epoch in range(1, epochs + 1):
            if meter is not None:
                meter.start_epoch()
            start = time.perf_counter()
            losses: list[float] = []
            bar = tqdm(
                data.train(epoch - 1),
                total=total,
                desc=f"{method.label} {epoch}/{epochs}",
                leave=False,
                disable=not spec.progress or not sys.stderr.isatty(),
                file=sys.stderr,
            )
            for i, batch in enumerate(bar):
                if i >= usable:
                    break
                if i % share != part:  # every process takes its own batches
                    continue
                batch = batch.to(spec.device)
                losses.append(
                    train_batch(runner, batch, objective, method, optimizer, learner, constrain)
                )
                if meter is not None:
                    meter.batch(int(batch.x.shape[0]), learner)
                bar.set_postfix(loss=f"{losses[-1]:.4f}")
            bar.close()
            seconds = time.perf_counter() - start
            if meter is not None:
                meter.end_epoch()
            metrics = _test(spec, model, data)
            history["epoch"].append(epoch)
            history["train_loss"].append(sum(losses) / max(len(losses), 1))
            history["train_seconds"].append(seconds)
            for key, value in metrics.items():
                history[key].append(value)
            spec.say(
                f"  [{method.label}] epoch {epoch}/{epochs}: train loss "
                f"{history['train_loss'][-1]:.4f}, test {metric} "
                f"{format_metric(metric, metrics[metric])} ({seconds:.1f} s)"
            )
    finally:
        if learner is not None:
            spec.summaries[method.label] = learner.summary()
            learner.detach()
    return history


def _grads(model: nn.Module) -> dict[str, Tensor]:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def gradient_agreement(spec: RunSpec, data: TaskData, method: Method) -> dict[str, Any]:
    """OSTL's gradient on the first training batch against BPTT and the exact reference.

    Both use the untrained model of the seed. ``vs_bptt`` equals ``vs_oracle`` when the model
    has one stateful layer; with more, the lower layers' OSTL gradient leaves out the paths
    through the upper layers' memory, so only ``vs_oracle`` is an exactness check.

    Returns:
        ``{"vs_bptt": {param: error}, "vs_oracle": {...}, "max_vs_bptt": e, ...}`` (no oracle
        for random or direct learning signals, which are not meant to match it).
    """
    from snn_ostl.testing import compare, oracle_gradients, ostl_gradients

    model = build_model(spec, data)
    batch = next(iter(data.train(0))).to(spec.device)
    run = sequence_run(model, batch, spec.task.objective)
    grads, owners, order = ostl_gradients(
        model,
        run,
        variant=method.learner,
        learning_signal=method.learning_signal,
        seed=method.seed,
        flush_every=method.flush_every,
    )
    for p in model.parameters():
        p.grad = None
    torch.stack(list(run())).sum().backward()
    references = {"bptt": _grads(model)}
    for p in model.parameters():
        p.grad = None
    if method.learning_signal == "backprop":
        references["oracle"] = oracle_gradients(model, run, owners, order, variant=method.learner)
    out: dict[str, Any] = {"batch_size": int(batch.x.shape[1]), "steps": int(batch.x.shape[0])}
    for name, ref in references.items():
        common = sorted(set(ref) & set(grads))
        errors = compare({n: grads[n] for n in common}, {n: ref[n] for n in common})
        out[f"vs_{name}"] = errors
        worst = max(errors, key=errors.get) if errors else None
        out[f"max_vs_{name}"] = errors[worst] if worst else None
        out[f"worst_vs_{name}"] = worst
    out["owners"] = owners
    return out
