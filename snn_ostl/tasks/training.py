"""Training loops shared by the tasks: OSTL variants, BPTT and truncated BPTT, step by step.

Every model here is a *step model*: ``model.init_state(batch_size, device)`` gives the state at
the start of a sequence and ``model(x_t, state) -> (output_t, state)`` plays one time step. A
batch is a :class:`SeqBatch` (time-major inputs, per-step targets, a mask of the steps where the
loss counts); an *objective* turns one step's output into that step's loss and a whole
sequence of outputs into metrics (see :mod:`snn_ostl.tasks.objectives`).

How each learner uses a batch:

- ``ostl``, ``ostl-no-h``, ``eprop``: a :class:`snn_ostl.OSTL` learner is attached; each step's
  loss is back-propagated as soon as it exists, so memory does not grow with the sequence.
- ``bptt``: one backward on the loss of the whole sequence.
- ``tbptt``: the states are detached every ``horizon`` steps and each window's loss is
  back-propagated at the window's end.
- a learning rule of :func:`snn_ostl.rules.rule_names` (``eprop-random``, ``rflo``, ``snap-1``,
  ``decolle``, ``superspike``, ...): ``OSTL(model, rule=...)``, per-step backward as for
  ``ostl``. DECOLLE adds its local readouts' losses to the task's loss at the steps that have a
  target; SuperSpike backpropagates the van Rossum distance between the output spikes and a
  target spike train (:func:`target_spikes`) at every step instead of the task's loss.

The update schedule decides when the optimizer steps, counted in time steps, at the moments
where gradients are available (every step for OSTL, window ends for TBPTT, the sequence end for
BPTT): ``step`` (as soon as possible), ``every:K`` (when at least K steps have passed since the
last update) or ``sequence`` (once, at the end). A sequence always ends with an update.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import torch
from torch import Tensor, nn

from snn_ostl.tasks.parallel import active as parallel_active
from snn_ostl.tasks.parallel import unwrap

__all__ = [
    "LEARNERS",
    "ONLINE_LEARNERS",
    "RULE_MODELS",
    "UPDATES",
    "Method",
    "Objective",
    "RuleUnavailableError",
    "SeqBatch",
    "detach_tree",
    "evaluate",
    "is_rule",
    "masked_local_mse",
    "parse_update",
    "sequence_run",
    "target_spikes",
    "train_batch",
]

#: Every learner a task can be trained with.
LEARNERS = ("ostl", "ostl-no-h", "eprop", "bptt", "tbptt")
#: The learners that attach :class:`snn_ostl.OSTL` (the rest are autograd baselines).
ONLINE_LEARNERS = ("ostl", "ostl-no-h", "eprop")
#: Update schedules, as written on the command line (``every:K`` with an integer K >= 1).
UPDATES = ("step", "every:K", "sequence")
#: Rules that need a model of their own kind (see :func:`snn_ostl.tasks.models.rule_model`):
#: SuperSpike trains Linear synapses into spiking neurons up to a spiking output layer; RFLO is
#: defined for leaky rate units (:class:`snn_ostl.cells.LeakyRNNCell`).
RULE_MODELS = {"superspike": "spiking-output", "rflo": "leaky-rnn"}
#: Target spike train of SuperSpike: the correct class's output neuron spikes at every
#: ``SPIKE_EVERY``-th step of the steps with a target, counted from the first; the others never.
SPIKE_EVERY = 2


class RuleUnavailableError(ValueError):
    """A learning rule cannot train this model; found when the rule's own loss is first asked."""


def is_rule(learner: str) -> bool:
    """Whether ``learner`` names a learning rule of :mod:`snn_ostl.rules` beyond the variants."""
    from snn_ostl.rules import rule_names

    return learner not in LEARNERS and learner in rule_names()


class SeqBatch(NamedTuple):
    """One batch of sequences, time-major.

    Attributes:
        x: ``[T, B, F]`` inputs.
        target: Per-step targets: ``int64 [T, B]`` class indices (classification, next token)
            or ``float [T, B, K]`` (multi-label).
        mask: ``bool [T, B]``: the steps at which the loss counts.
        labels: ``int64 [B]`` sequence labels (classification), else None.
    """

    x: Tensor
    target: Tensor
    mask: Tensor
    labels: Tensor | None = None

    def to(self, device: torch.device | str) -> SeqBatch:
        """The same batch on ``device``."""
        return SeqBatch(*(None if t is None else t.to(device) for t in self))


class Objective(Protocol):
    """What a task's loss looks like to the loops (see :mod:`snn_ostl.tasks.objectives`)."""

    def step_loss(self, output: Tensor, batch: SeqBatch, t: int) -> Tensor:
        """Sum of the loss terms of step ``t`` over the batch."""

    def scale(self, batch: SeqBatch) -> float:
        """Divisor of the summed loss of a batch (1 for a plain sum)."""

    def accumulate(self, totals: dict[str, float], outputs: Tensor, batch: SeqBatch) -> None:
        """Add a batch's ``[T, B, K]`` outputs to running sums."""

    def summarise(self, totals: dict[str, float]) -> dict[str, float]:
        """Turn the running sums into metrics."""


@dataclass(frozen=True)
class Method:
    """How to train: the learner, its options and the update schedule.

    Attributes:
        learner: One of :data:`LEARNERS`.
        horizon: Window length of ``tbptt`` in steps.
        update_every: Steps between optimizer updates (None: once per sequence).
        learning_signal: The OSTL learning signal (``backprop``, ``random``, ``direct``).
        seed: Seed of the learner's random feedback matrices.
        clip_norm: Clip the gradient's total norm to this before each update (None: never).
        flush_every: The learner's ``flush_every`` (per-synapse history terms every W steps).
    """

    learner: str = "ostl"
    horizon: int = 10
    update_every: int | None = None
    learning_signal: str = "backprop"
    seed: int = 0
    clip_norm: float | None = None
    flush_every: int = 1

    @property
    def online(self) -> bool:
        """Whether an OSTL learner does the work (an OSTL variant or a learning rule)."""
        return self.learner in ONLINE_LEARNERS or is_rule(self.learner)

    @property
    def model_kind(self) -> str:
        """The model this method trains: ``task`` (the task's own) or a rule's own kind."""
        return RULE_MODELS.get(self.learner, "task")

    @property
    def label(self) -> str:
        """Short name for tables and plots, e.g. ``ostl`` or ``tbptt-h5``."""
        if self.learner == "tbptt":
            return f"tbptt-h{self.horizon}"
        if self.online and self.learning_signal != "backprop":
            return f"{self.learner}-{self.learning_signal}"
        return self.learner

    def attach(self, model: nn.Module) -> Any:
        """Attach an OSTL learner for the online learners (None for the baselines)."""
        if not self.online:
            return None
        import snn_ostl

        if is_rule(self.learner):
            return snn_ostl.OSTL(
                model, rule=self.make_rule(model), seed=self.seed, flush_every=self.flush_every
            )
        return snn_ostl.OSTL(
            model,
            variant=self.learner,
            learning_signal=self.learning_signal,
            seed=self.seed,
            flush_every=self.flush_every,
        )

    def make_rule(self, model: nn.Module) -> Any:
        """The rule object of a rule learner, with the options the tasks use.

        DECOLLE: one local readout of the classes per hidden layer (the readout size of the
        model), the paper's MSE to the one-hot class, only where the task has a target
        (:func:`masked_local_mse`). SuperSpike: its defaults (symmetric feedback, rise and decay
        of 5 and 10 steps). The others: the registered defaults.
        """
        from snn_ostl import rules

        if self.learner == "decolle":
            outputs = getattr(getattr(model, "readout", None), "out_features", None)
            return rules.DECOLLE(outputs=outputs, loss=masked_local_mse, seed=self.seed)
        if self.learner == "superspike":
            return rules.SuperSpike(seed=self.seed)
        return rules.make_rule(self.learner)


def parse_update(text: str) -> int | None:
    """Read an update schedule: ``step`` -> 1, ``every:K`` -> K, ``sequence`` -> None.

    Raises:
        ValueError: For anything else.
    """
    if text == "step":
        return 1
    if text == "sequence":
        return None
    head, _, count = text.partition(":")
    if head == "every" and count.isdigit() and int(count) >= 1:
        return int(count)
    raise ValueError(f"invalid update schedule {text!r}: use step, every:K (K >= 1) or sequence")


def masked_local_mse(readout: Tensor, target: Tensor) -> Tensor:
    """DECOLLE's local loss on a task's targets: squared error to the one-hot class, averaged
    over the classes and summed over the sequences that have a target at this step (class
    ``-100`` marks those that do not), the convention of the tasks' own step losses. Float
    targets (multi-label) are matched as they are."""
    from snn_ostl.tasks.objectives import IGNORE

    if target.is_floating_point():
        return (readout - target.to(readout.dtype)).pow(2).mean(-1).sum()
    valid = target != IGNORE
    if not bool(valid.any()):
        return readout.sum() * 0.0
    code = torch.nn.functional.one_hot(target[valid], readout.shape[-1]).to(readout.dtype)
    return (readout[valid] - code).pow(2).mean(-1).sum()


def target_spikes(batch: SeqBatch, t: int, outputs: int) -> Tensor:
    """SuperSpike's target spikes at step ``t``, ``[B, outputs]``.

    The neuron of the sequence's class spikes at every :data:`SPIKE_EVERY`-th step where the
    sequence has a target (from its first such step); no neuron spikes anywhere else.

    Raises:
        RuleUnavailableError: The batch has no sequence labels (not a classification task):
            the class could not be read from the output spike counts.
    """
    if batch.labels is None:
        raise RuleUnavailableError(
            "SuperSpike's output is spike counts, read as a class: it needs a classification "
            "task (one label per sequence)."
        )
    mask = batch.mask
    first = mask.to(torch.int64).argmax(0)  # the first step with a target, per sequence
    on = mask[t] & ((t - first) % SPIKE_EVERY == 0)
    code = torch.nn.functional.one_hot(batch.labels, outputs).to(batch.x.dtype)
    return code * on.unsqueeze(1).to(code.dtype)


def _step_loss(
    method: Method,
    objective: Objective,
    learner: Any,
    out: Tensor,
    batch: SeqBatch,
    t: int,
    has_loss: bool,
) -> Tensor | None:
    """The loss of step ``t`` that the method backpropagates, before scaling (None: none)."""
    if method.learner == "superspike" and learner is not None:
        return learner.rule.van_rossum(out, target_spikes(batch, t, out.shape[-1]))
    if not has_loss:
        return None
    loss = objective.step_loss(out, batch, t)
    if method.learner == "decolle" and learner is not None:
        try:
            loss = loss + learner.rule.local_loss(batch.target[t])
        except ValueError as exc:  # e.g. a single stateful layer: no layer below the top
            raise RuleUnavailableError(str(exc)) from exc
    return loss


def detach_tree(state: Any) -> Any:
    """Detach every tensor in a state made of tensors, (named) tuples, lists and None."""
    if isinstance(state, Tensor):
        return state.detach()
    if isinstance(state, tuple) and hasattr(state, "_fields"):
        return type(state)(*(detach_tree(s) for s in state))
    if isinstance(state, (tuple, list)):
        return type(state)(detach_tree(s) for s in state)
    return state


def train_batch(
    model: nn.Module,
    batch: SeqBatch,
    objective: Objective,
    method: Method,
    optimizer: torch.optim.Optimizer,
    learner: Any = None,
    after_update: Callable[[], None] | None = None,
) -> float:
    """Play one batch of sequences and update the model as ``method`` says.

    Args:
        model: The step model.
        batch: The sequences.
        objective: The task's loss.
        method: Learner and update schedule.
        optimizer: Steps the parameters.
        learner: The attached :class:`snn_ostl.OSTL` learner for the online methods.
        after_update: Called after every optimizer step (e.g. to keep decays in [0, 1]).

    Returns:
        The batch's loss (sum of the step losses divided by the objective's scale).
    """
    steps, size = batch.x.shape[:2]
    scale = objective.scale(batch)
    has_loss = batch.mask.any(dim=1).tolist()
    state = unwrap(model).init_state(size, batch.x.device)
    in_step = parallel_active()  # every process backpropagates at every step (see parallel)
    online = method.online
    if learner is not None:
        learner.reset()
    optimizer.zero_grad(set_to_none=True)
    pending: list[Tensor] = []
    total, since, dirty = 0.0, 0, False

    def update() -> None:
        if learner is not None:
            learner.flush()  # clipping reads .grad: it must be whole (OSTL(flush_every=...))
        if method.clip_norm is not None:
            nn.utils.clip_grad_norm_(model.parameters(), method.clip_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if after_update is not None:
            after_update()

    for t in range(steps):
        out, state = model(batch.x[t], state)
        loss = _step_loss(method, objective, learner, out, batch, t, has_loss[t])
        if loss is not None:
            loss = loss / scale
            total += float(loss.detach())
        elif in_step and online:
            loss = out.sum() * 0.0
        since += 1
        if online:
            if loss is not None:
                loss.backward()
                dirty = True
            ready = True
        else:
            if loss is not None:
                pending.append(loss)
            window_end = method.learner == "tbptt" and (t + 1) % method.horizon == 0
            ready = window_end or t == steps - 1
            if ready and pending:
                torch.stack(pending).sum().backward()
                pending.clear()
                dirty = True
            if window_end:
                state = detach_tree(state)
        every = method.update_every
        if ready and dirty and every is not None and since >= every and t < steps - 1:
            update()
            since, dirty = 0, False
    if dirty:
        update()
    return total


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable[SeqBatch], objective: Objective) -> dict:
    """Metrics of ``model`` on ``batches`` (no gradients; an attached learner stays idle)."""
    totals: dict[str, float] = {}
    for batch in batches:
        steps, size = batch.x.shape[:2]
        state = model.init_state(size, batch.x.device)
        outs = []
        for t in range(steps):
            out, state = model(batch.x[t], state)
            outs.append(out)
        objective.accumulate(totals, torch.stack(outs), batch)
    return objective.summarise(totals)


def sequence_run(
    model: nn.Module, batch: SeqBatch, objective: Objective
) -> Callable[[], Iterator[Tensor]]:
    """A *run* for :mod:`snn_ostl.testing`: one batch from a fresh state, yielding step losses.

    Steps without a loss yield a zero that still depends on the output, so a per-step backward
    is always possible.
    """
    scale = objective.scale(batch)

    def run() -> Iterator[Tensor]:
        steps, size = batch.x.shape[:2]
        state = model.init_state(size, batch.x.device)
        for t in range(steps):
            out, state = model(batch.x[t], state)
            if bool(batch.mask[t].any()):
                yield objective.step_loss(out, batch, t) / scale
            else:
                yield out.sum() * 0.0

    return run
