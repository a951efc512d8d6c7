"""Random sequences of API calls and misuse: the exact gradient, or a typed error. Never a
wrong gradient without an error.

Hypothesis writes a *script*: the actions one user takes on one attached learner over a few
sequences (steps with a per-step or a summed backward, steps without a loss, steps under
``torch.no_grad()``, fresh or detached states, new batch sizes, ``learner.reset()`` with or
without a fresh state, (un)freezing weights, ``learner.flush()``, ``optimizer.step()`` and
``zero_grad()``, calls of a neuron with a state of another batch size, states changed by the
model). The same script is played twice: under the learner, and without it by the oracle of
:mod:`snn_ostl.testing` (plain BPTT in which every stateful layer above a parameter's layer has
its state detached at every step). Each run must end in one of two ways:

- no error, and every ``.grad`` equals the oracle's (relative error 1e-10 in float64 for Norse,
  1e-4 in float32 for snnTorch);
- a :class:`snn_ostl.StateError` where the script made the reference meaningless: at exactly
  the step that receives a state passed through an operation with a gradient, a state carried
  on with its graph after its layer started a new sequence (``learner.reset()``, or snnTorch's
  call with a constant state of another batch size), or weights (un)frozen within a sequence;
  and, after ``optimizer.zero_grad()`` while terms of a flush window still wait
  (``flush_every > 1``), at one of the actions that flush them, at the latest at the first
  one that must (``learner.flush()``, ``optimizer.step()``, ``learner.reset()``, the next
  sequence's first step, the script's final flush).

Any other exception fails the test. The scripts are cut into *chains*: stretches over which
the states carry a graph. A chain ends where every state becomes a constant
(``learner.reset()``, a fresh, zero or detached state, a step under ``no_grad``); BPTT's
gradient never crosses such a point, so the reference of a script is the sum of the references
of its chains, each loss counted if it is backpropagated after the last ``zero_grad()``.

The tests at the end pin cases the properties once found, each with its shortest script.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from conftest import assert_spiking, seeded
from hypothesis import HealthCheck, currently_in_test_context, event, given, reject, settings
from hypothesis import strategies as st
from nets import add_norse_pair
from torch import nn

pytest.importorskip("snntorch")
pytest.importorskip("norse")

import norse.torch as nt
import snntorch as snn

import snn_ostl
from snn_ostl.errors import SnnOstlError
from snn_ostl.testing import compare, oracle_gradients

B, FRAMES = 4, 16
TOL = {torch.float32: 1e-4, torch.float64: 1e-10}
PROPERTY = settings(
    max_examples=400,
    deadline=None,
    derandomize=True,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.function_scoped_fixture,
    ],
)

#: Parameter -> the stateful layer whose traces it lives in, and each module's first call.
OWNERS = {"fc1.weight": "lif1", "fc1.bias": "lif1", "fc2.weight": "lif2", "fc2.bias": "lif2"}
ORDER = {"fc1": 0, "lif1": 1, "fc2": 2, "lif2": 3}
#: The weights a script may (un)freeze. The biases stay trained, so that each layer always
#: holds a trace and a change within a sequence is always one the learner must see.
FREEZABLE = ("fc1.weight", "fc2.weight")
#: Seeds of the models' initial weights; test_the_scripted_models_spike checks each.
SEEDS = (0, 1, 2, 5)
#: The words of the StateError for a ``.grad`` changed before its flush.
GRAD_CHANGED = "after the last backward pass"


# ------------------------------------------------------------------------ models
class NorseNet(nn.Module):
    """Linear -> LIFCell -> Linear -> LIFCell in float64, states passed explicitly."""

    dtype = torch.float64
    #: Two states per neuron: the weights' per-synapse traces wait in flush windows when
    #: ``flush_every > 1``, so a ``.grad`` zeroed before their flush is refused.
    windows = True
    #: A call of lif1 with a state of another batch size raises inside the neuron (Norse
    #: itself refuses it) and changes nothing.
    bad_calls_run = False

    def __init__(self) -> None:
        super().__init__()
        add_norse_pair(self)

    @staticmethod
    def start(lif: nn.Module) -> Any:
        """The state a sequence starts from: Norse's None."""
        return None

    @staticmethod
    def fresh(state: Any) -> Any:
        """Explicit zeros shaped like ``state`` (a new sequence, no learner.reset())."""
        return type(state)(*(torch.zeros_like(t) for t in state))

    @staticmethod
    def mapped(state: Any, fn) -> Any:
        return type(state)(*(fn(t) for t in state))

    @staticmethod
    def output(state: Any) -> torch.Tensor:
        return state.v


class SnnNet(nn.Module):
    """Linear -> Leaky -> Linear -> Leaky in float32, membranes passed explicitly."""

    dtype = torch.float32
    #: One state per neuron: the weights' traces are the (fused) filtered inputs, which no
    #: flush window holds back.
    windows = False
    #: A call of lif1 with a constant state of another batch size runs, as in plain snnTorch:
    #: lif1 starts a new sequence from zeros of the input's shape (see :func:`read_script`).
    bad_calls_run = True

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(5, 7), nn.Linear(7, 3)
        self.lif1 = snn.Leaky(beta=0.9)
        self.lif2 = snn.Leaky(beta=0.8)
        with torch.no_grad():
            self.fc1.weight.mul_(3.0)
            self.fc2.weight.mul_(3.0)

    @staticmethod
    def start(lif: nn.Module) -> Any:
        """snnTorch's own fresh membrane (None would continue the one the module keeps); on a
        module that has run, zeros of the batch size it last saw, which a step of another
        batch size takes, as snnTorch does, for a start from zeros of its own size."""
        return lif.init_leaky()

    @staticmethod
    def fresh(state: Any) -> Any:
        return torch.zeros_like(state)

    @staticmethod
    def mapped(state: Any, fn) -> Any:
        return fn(state)

    @staticmethod
    def output(state: Any) -> torch.Tensor:
        return state


def _initial(net: nn.Module, layer: int, frame: torch.Tensor) -> Any:
    """A constant zero state of ``layer`` for a batch of ``frame``'s size (for bad calls)."""
    width = 7 if layer == 1 else 3
    zeros = torch.zeros(frame.shape[0], width, dtype=net.dtype)
    if isinstance(net, NorseNet):
        return nt.LIFFeedForwardState(v=zeros, i=zeros.clone())
    return zeros


def _batch(state: Any) -> int | None:
    """The batch size of a state, None before the first step."""
    if state is None:
        return None
    t = state if isinstance(state, torch.Tensor) else state[0]
    return t.shape[0] if t.dim() > 1 else None


def _has_graph(state: Any) -> bool:
    if state is None:
        return False
    tensors = (state,) if isinstance(state, torch.Tensor) else tuple(state)
    return any(t.grad_fn is not None for t in tensors)


def _data(dtype: torch.dtype, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.rand(FRAMES, B, 5, generator=seeded(seed), dtype=dtype) * 2.0
    y = torch.randn(FRAMES, B, 3, generator=seeded(seed + 1), dtype=dtype)
    return x, y


# ------------------------------------------------------------------------ the script
#: Actions inside a sequence.
STEP_ACTIONS = (
    "step",  # forward with grad; loss.backward() at once
    "step_summed",  # forward with grad; the loss waits for the next "backward"
    "silent_step",  # forward with grad and no loss (later losses reach it through the state)
    "no_grad_step",  # a whole step under torch.no_grad(), no loss: every state a constant
    "probe",  # fc1 called on a frame for a look, output dropped (the synapse runs twice)
    "bad_call",  # lif1 called with a batch of 2 and its state cut to 3 rows; caught
    "bad_call_zeros",  # lif1 called with a batch of 2 and fresh zeros of 3 rows; caught
    "alter_state",  # the model halves lif1's state with an op that has a gradient
    "clone_state",  # the model clones lif2's state (same values, a gradient path of its own)
    "detach_state",  # both states passed on detached (truncated BPTT: same values, no graph)
)
#: Actions on the learner, the optimizer, the parameters or the data.
CONTROL_ACTIONS = (
    "backward",  # backward of the summed waiting losses
    "fresh_state",  # the next step starts from the framework's fresh state, no learner.reset()
    "zero_state",  # the next step starts from explicit zeros, no learner.reset()
    "new_batch",  # a fresh state and a batch of the other size (4 <-> 2), no learner.reset()
    "learner_reset",  # learner.reset() and a fresh state (waiting losses stay waiting)
    "reset_keep_state",  # learner.reset() while the model goes on passing its states
    "flush",  # learner.flush()
    "optimizer_step",  # waiting losses backward, optimizer.step() with lr=0 (flushes windows)
    "zero_grad",  # waiting losses backward, optimizer.step() (lr 0), optimizer.zero_grad()
    "zero_grad_only",  # waiting losses backward, optimizer.zero_grad(): no flush, no step
    "toggle:fc1.weight",  # waiting losses backward, flip requires_grad (no flush)
    "toggle:fc2.weight",
)
#: Forward steps are the common case: drawn more often.
VOCABULARY = ("step",) * 6 + ("step_summed",) * 3 + STEP_ACTIONS[2:] + CONTROL_ACTIONS
#: Where every state becomes a constant: BPTT's gradient stops, a new chain starts.
CUTS = ("no_grad_step", "detach_state", "fresh_state", "zero_state", "new_batch", "learner_reset")
GRAD_STEPS = ("step", "step_summed", "silent_step")
#: Actions that flush every window holding terms, checking .grad first.
FLUSHES = ("flush", "optimizer_step", "zero_grad", "learner_reset", "reset_keep_state")


@dataclasses.dataclass
class StepInfo:
    """What the static reading of a script says about one forward step with a graph."""

    chain: int
    loss: bool  # the step has a loss
    counted: bool  # its loss is backpropagated after the last zero_grad()
    frozen: frozenset[str]  # the weights frozen while it ran


@dataclasses.dataclass
class Exposure:
    """``optimizer.zero_grad()`` while terms of a flush window may wait (``flush_every > 1``).

    The StateError for the changed ``.grad`` may come at any action in ``[start, by]`` (a step
    whose forward flushes a due window, or ``by``: the first action that flushes every window
    and checks ``.grad``, or the end of the script). ``sure``: the terms surely wait (a
    backward reached the open windows after their last possible flush), so it must come.
    ``gap_at``: the first backward from ``start`` on (see
    test_a_backward_between_zero_grad_and_the_flush_hides_it).
    """

    start: int
    sure: bool
    by: int | None = None
    gap_at: int | None = None


@dataclasses.dataclass
class Plan:
    """The static reading of a script: the steps' chains and where an error must come."""

    steps: dict[int, StepInfo]
    error_at: int | None = None  # index of the action that must raise a StateError
    why: str = ""
    exposures: list[Exposure] = dataclasses.field(default_factory=list)
    #: snnTorch: the first step of a new sequence of a lif1 whose current was planned from a
    #: call with a constant state of another batch size (its current sliced): the learner
    #: refuses it (test_learner_reset_lets_the_next_sequence_feed_a_neuron_anew).
    replan_gap: int | None = None


def read_script(
    script: list[str], frozen: frozenset[str], *, windows: bool = False, bad_calls_run: bool = False
) -> Plan:
    """Cut ``script`` into chains and find where the learner must refuse it.

    ``windows``: flush windows hold the weights' terms (Norse, ``flush_every > 1``).
    ``bad_calls_run``: a call of lif1 with a constant state of another batch size runs
    (snnTorch): lif1 starts a new sequence there. If lif1 had no plan yet (or a weight of it
    was (un)frozen since), that call plans it, from a sliced current; otherwise the learner
    refuses the slice, after restarting lif1. Either way lif1 has started anew: a state that
    goes on with its graph is then refused at the next step.
    """
    plan = Plan({})
    chain, zero_grads = 0, 0
    chain_frozen: frozenset[str] | None = None  # the frozen weights of the chain's steps
    has_graph = False  # the states carry this chain's graph
    changed = ""  # a state passed through an op with a gradient, not yet fed back
    restarted = ""  # a layer started anew while the states carry this chain's graph on
    at_zero_grads: dict[int, int] = {}
    #: The summed losses not backpropagated yet: (chain, whether a step of it came before)
    waiting: list[tuple[int, bool]] = []
    window_chain: int | None = None  # the chain whose windows are open
    window_steps = 0  # the steps with a graph the open windows have seen
    window_trained = False  # they hold a trained weight's terms
    terms = "none"  # terms in the open windows: "none", "maybe" (a due flush may have run), "yes"
    exposure: Exposure | None = None  # the one whose StateError has not surely come yet
    planned1: bool | None = None  # snnTorch: fc1.weight trained when lif1 was planned
    misplanned = False  # snnTorch: lif1 planned from a bad call's sliced current

    def flushed(i: int) -> None:
        """Every window flushed, .grad checked."""
        nonlocal exposure, terms
        if exposure is not None:
            exposure.by, exposure = i, None
        terms = "none"

    def backprop(i: int, losses: list[tuple[int, bool]]) -> None:
        """A backward pass; the windows hold terms of the steps it reaches after the first of
        a sequence (the trace before that one is zero)."""
        nonlocal terms
        if not losses:
            return
        if exposure is not None and exposure.gap_at is None:
            exposure.gap_at = i
        if window_trained and (window_chain, True) in losses:
            terms = "yes"

    for i, action in enumerate(script):
        if action in GRAD_STEPS:
            why = changed
            if not why and chain_frozen is not None and chain_frozen != frozen:
                why = "weights (un)frozen within a sequence"
            if not why and restarted and has_graph:
                why = restarted
            if why:
                plan.error_at, plan.why = i, why
                break
            if window_chain is not None and window_chain != chain:
                flushed(i)  # the new sequence closes the last one's windows
            elif terms == "yes":
                terms = "maybe"  # the forward flushes the windows when they are due
            if bad_calls_run:
                if misplanned:  # (has_graph is False here: `restarted` refused it above)
                    plan.replan_gap = i if plan.replan_gap is None else plan.replan_gap
                    misplanned = False  # what the learner should do: plan lif1 anew
                if planned1 is None or not has_graph:
                    planned1 = "fc1.weight" not in frozen
            window_steps = window_steps + 1 if window_chain == chain else 1
            window_chain = chain
            window_trained = windows and bool(set(FREEZABLE) - frozen)
            chain_frozen = frozen
            plan.steps[i] = StepInfo(chain, action != "silent_step", False, frozen)
            at_zero_grads[i] = zero_grads
            has_graph = True
            if action == "step":
                backprop(i, [(chain, window_steps > 1)])
            elif action == "step_summed":
                waiting.append((chain, window_steps > 1))
        elif action in CUTS:
            if action == "learner_reset":
                flushed(i)
                window_chain = None
            chain += 1
            chain_frozen, has_graph, changed, restarted = None, False, "", ""
        elif action == "reset_keep_state":
            flushed(i)
            window_chain = None
            if has_graph:
                restarted = "a state carried on with its graph after learner.reset()"
        elif action in ("alter_state", "clone_state") and has_graph:
            changed = f"a state changed by an op with a gradient ({action})"
        elif action in ("bad_call", "bad_call_zeros") and bad_calls_run:
            if action == "bad_call_zeros" or not has_graph:  # a constant state: the call runs
                trained1 = "fc1.weight" not in frozen
                if planned1 is None or planned1 != trained1:
                    misplanned, planned1 = True, trained1
                if has_graph:
                    restarted = "a state carried on with its graph after its layer restarted"
        elif action == "backward":
            backprop(i, waiting)
            waiting = []
        elif action in ("optimizer_step", "zero_grad", "zero_grad_only"):
            backprop(i, waiting)
            waiting = []
            if action != "zero_grad_only":
                flushed(i)
            if action != "optimizer_step":
                zero_grads += 1
            if action == "zero_grad_only" and terms != "none" and exposure is None:
                exposure = Exposure(i + 1, sure=terms == "yes")
                plan.exposures.append(exposure)
        elif action == "flush":
            flushed(i)
        elif action.startswith("toggle:"):
            backprop(i, waiting)
            waiting = []
            frozen = frozen ^ {action.split(":", 1)[1]}
    else:  # the end: the waiting losses backward, learner.flush()
        backprop(len(script), waiting)
        flushed(len(script))
    if exposure is not None:  # the script stopped at error_at
        exposure.by = plan.error_at
    for i, info in plan.steps.items():
        info.counted = info.loss and at_zero_grads[i] == zero_grads
    return plan


def play(
    net: nn.Module,
    script: list[str],
    x: torch.Tensor,
    y: torch.Tensor,
    live: set[int] | None = None,
    at: list[int] | None = None,
    bad_calls: list[tuple[int, bool, BaseException | None]] | None = None,
) -> Iterator[tuple[str, int, Any]]:
    """Play the forward half of ``script``.

    Yields ``("loss", i, loss)`` for each step with a loss and ``("act", i, action)`` for each
    action the caller carries out (backward, learner, optimizer, parameters). Steps whose index
    is not in ``live`` run under ``no_grad`` (same values, no graph). ``at[0]`` follows the
    index of the action being played; ``bad_calls`` collects, per bad call, its index, whether
    the state it passed carried a graph, and what it raised.
    """
    at = [0] if at is None else at
    s1, s2 = net.start(net.lif1), net.start(net.lif2)
    frame, batch = 0, B
    for i, action in enumerate(script):
        at[0] = i
        xt, yt = x[frame % FRAMES, :batch], y[frame % FRAMES, :batch]
        if action in (*GRAD_STEPS, "no_grad_step"):
            grad = action != "no_grad_step" and (live is None or i in live)
            frame += 1
            if action == "no_grad_step" and _batch(s1) not in (None, batch):
                # plain snnTorch restarts a membrane of another batch size from zeros (and
                # the learner lets a no_grad step through); the oracle's replay reads the
                # state first, so the script passes those zeros itself
                s1, s2 = _initial(net, 1, xt), _initial(net, 2, xt)
            with torch.set_grad_enabled(grad):
                z1, s1 = net.lif1(net.fc1(xt), s1)
                _, s2 = net.lif2(net.fc2(z1), s2)
                loss = (net.output(s2) - yt).pow(2).sum()
            if grad and action != "silent_step":
                yield "loss", i, loss
        elif action == "probe":
            net.fc1(xt * 0.5).detach()
        elif action in ("bad_call", "bad_call_zeros"):
            if action == "bad_call" and _batch(s1) is not None:
                bad = net.mapped(s1, lambda t: t[[0, 1, 0]])  # keeps the graph, if any
            else:
                bad = _initial(net, 1, xt[[0, 1, 0]])
            # A batch of 2 against a state of 3: Norse raises with or without the learner;
            # snnTorch starts from zeros of the input's shape when the state is a constant (its
            # output is dropped here), and the learner refuses a state with a graph (a new
            # batch size within a sequence) or the sliced current of a planned lif1. The user
            # catches the error and goes on.
            raised = None
            try:
                net.lif1(net.fc1(xt)[:2], bad)
            except Exception as err:
                raised = err
            if bad_calls is not None:
                bad_calls.append((i, _has_graph(bad), raised))
        elif action == "alter_state":
            if _batch(s1) is not None:
                s1 = net.mapped(s1, lambda t: t * 0.5)
        elif action == "clone_state":
            if _batch(s2) is not None:
                s2 = net.mapped(s2, torch.clone)
        elif action == "detach_state":
            if _batch(s1) is not None:
                s1, s2 = net.mapped(s1, torch.detach), net.mapped(s2, torch.detach)
        elif action == "zero_state":
            if _batch(s1) is not None:
                s1, s2 = net.fresh(s1), net.fresh(s2)
        elif action == "reset_keep_state":
            yield "act", i, "learner_reset"  # and the states carry on
        elif action in ("fresh_state", "new_batch", "learner_reset"):
            if action == "learner_reset":
                yield "act", i, action  # learner.reset(), then the fresh state
            if action == "new_batch":
                batch = 2 if batch == B else B
            s1, s2 = net.start(net.lif1), net.start(net.lif2)
        else:
            yield "act", i, action


def _note(what: str) -> None:
    """A hypothesis event (the outcome statistics), when run by hypothesis."""
    if currently_in_test_context():
        event(what)


def _set_frozen(net: nn.Module, frozen: frozenset[str]) -> None:
    params = dict(net.named_parameters())
    for name in FREEZABLE:
        params[name].requires_grad_(name not in frozen)


@dataclasses.dataclass
class Run:
    """What :func:`learner_run` saw."""

    grads: dict[str, torch.Tensor]
    error: SnnOstlError | None  # the first SnnOstlError raised (None if none)
    at: int  # the index of the action that raised it (len(script): the final flush)
    #: A StateError of learner.detach() after that error, at the end of the ``with`` block
    #: (test_a_refused_flush_is_refused_once).
    exit_error: SnnOstlError | None
    bad_calls: list[tuple[int, bool, BaseException | None]]


def learner_run(
    net: nn.Module,
    script: list[str],
    x: torch.Tensor,
    y: torch.Tensor,
    frozen: frozenset[str],
    **options,
) -> Run:
    """``script`` under an attached learner; the user catches the first error and stops."""
    _set_frozen(net, frozen)
    net.zero_grad(set_to_none=True)
    params = dict(net.named_parameters())
    optimizer = torch.optim.SGD(net.parameters(), lr=0.0)
    waiting: list[torch.Tensor] = []
    at: list[int] = [0]
    bad_calls: list[tuple[int, bool, BaseException | None]] = []

    def backward() -> None:
        if waiting:
            torch.stack(waiting).sum().backward()
            waiting.clear()

    error = exit_error = None
    learner = snn_ostl.OSTL(net, **options)
    try:
        try:
            for kind, i, what in play(net, script, x, y, at=at, bad_calls=bad_calls):
                if kind == "loss":
                    if script[i] == "step":
                        what.backward()
                    else:
                        waiting.append(what)
                elif what == "backward":
                    backward()
                elif what == "learner_reset":
                    learner.reset()  # (the waiting losses are backpropagated later)
                elif what == "flush":
                    learner.flush()
                elif what == "optimizer_step":
                    backward()  # (an in-place step between a forward and its backward
                    optimizer.step()  # breaks the graph, learner or not)
                elif what == "zero_grad":
                    backward()
                    optimizer.step()
                    optimizer.zero_grad()
                elif what == "zero_grad_only":
                    backward()
                    optimizer.zero_grad()
                elif what.startswith("toggle:"):
                    backward()
                    p = params[what.split(":", 1)[1]]
                    p.requires_grad_(not p.requires_grad)
            at[0] = len(script)
            backward()
            learner.flush()
        except SnnOstlError as err:
            error = err
        grads = {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}
    finally:
        try:
            learner.detach()  # (what leaving a ``with`` block does)
        except SnnOstlError as err:
            exit_error = err
    net.zero_grad(set_to_none=True)
    return Run(grads, error, at[0], exit_error, bad_calls)


def reference(
    net: nn.Module, script: list[str], x: torch.Tensor, y: torch.Tensor, plan: Plan
) -> dict[str, torch.Tensor]:
    """The oracle's gradient of ``script``: per group of chains trained with the same frozen
    weights, the oracle on a replay in which only those chains' steps build a graph."""
    groups: dict[frozenset[str], set[int]] = {}
    for info in plan.steps.values():
        groups.setdefault(info.frozen, set()).add(info.chain)
    total: dict[str, torch.Tensor] = {}
    for frozen, chains in groups.items():
        live = {i for i, info in plan.steps.items() if info.chain in chains}
        counted = {i for i in live if plan.steps[i].counted}
        if not counted:
            continue

        def run(live=live, counted=counted):
            for kind, i, what in play(net, script, x, y, live):
                if kind == "loss" and i in counted:
                    yield what

        _set_frozen(net, frozen)
        for name, g in oracle_gradients(net, run, OWNERS, ORDER).items():
            total[name] = total[name] + g if name in total else g
    return total


def plan_for(net: nn.Module, script: list[str], frozen: frozenset[str], options: dict) -> Plan:
    windows = net.windows and options.get("flush_every", 1) > 1
    return read_script(script, frozen, windows=windows, bad_calls_run=net.bad_calls_run)


def check_script(
    make: type[nn.Module],
    script: list[str],
    frozen: frozenset[str] = frozenset(),
    options: dict | None = None,
    seed: int = 0,
    *,
    steer: bool = False,
) -> Run:
    """The property on one script: the exact gradient, or a StateError where one is due.

    ``steer``: reject (hypothesis) a script that meets a known gap of the learner: a backward
    between ``zero_grad()`` and the flush that should refuse it
    (test_a_backward_between_zero_grad_and_the_flush_hides_it), or lif1 planned from a sliced
    current and refused at the next sequence
    (test_learner_reset_lets_the_next_sequence_feed_a_neuron_anew). Without ``steer`` they
    are held to the property like any other script.
    """
    options = options or {}
    torch.manual_seed(seed)
    net = make()
    x, y = _data(net.dtype)
    plan = plan_for(net, script, frozen, options)
    run = learner_run(net, script, x, y, frozen, **options)
    error, where = run.error, run.at
    if steer:
        if any(
            e.gap_at is not None and (error is None or where > e.gap_at) for e in plan.exposures
        ):
            _note("rejected: a backward between zero_grad() and the flush")
            reject()
        if plan.replan_gap is not None and error is not None and where == plan.replan_gap:
            _note("rejected: lif1 planned from a sliced current, refused at a new sequence")
            reject()
    for i, graph, raised in run.bad_calls:
        if error is None or i < where:
            # Norse raises in the neuron; snnTorch's learner refuses a state with a graph
            assert raised is not None or (net.bad_calls_run and not graph), (i, raised)
            if net.bad_calls_run and graph:
                assert isinstance(raised, snn_ostl.StateError), (i, raised)
    exposed = [e for e in plan.exposures if e.start <= where <= e.by]
    if error is not None:
        assert isinstance(error, snn_ostl.StateError), repr(error)
        if where != plan.error_at:
            assert exposed, f"{error!r} at action {where}; due: {plan.error_at} ({plan.why})"
            assert GRAD_CHANGED in str(error), repr(error)
        _note(f"outcome: StateError where due: {plan.why if where == plan.error_at else '.grad'}")
        # every window was checked at the refusal: detaching raises nothing more
        assert run.exit_error is None, repr(run.exit_error)
        return run
    assert run.exit_error is None, repr(run.exit_error)
    assert plan.error_at is None, f"no error, yet {plan.why} at action {plan.error_at}"
    for e in plan.exposures:
        assert not e.sure, f"no error, yet .grad zeroed at action {e.start - 1} before its flush"
    expected = reference(net, script, x, y, plan)
    chains = {info.chain for info in plan.steps.values() if info.counted}
    _note(f"outcome: exact, {min(len(chains), 3)}{'+' * (len(chains) > 3)} chain(s) compared")
    assert set(run.grads) == set(expected), (sorted(run.grads), sorted(expected))
    if expected:
        errors = compare(run.grads, expected)
        assert max(errors.values()) <= TOL[net.dtype], errors
    return run


scripts = st.lists(st.sampled_from(VOCABULARY), min_size=1, max_size=24)
frozen_sets = st.sampled_from([frozenset(), *(frozenset({name}) for name in FREEZABLE)])
learner_options = st.fixed_dictionaries(
    {"flush_every": st.sampled_from([1, 3]), "advance_in_backward": st.booleans()}
)
seeds = st.sampled_from(SEEDS)


@PROPERTY
@given(script=scripts, frozen=frozen_sets, options=learner_options, seed=seeds)
def test_norse_scripts_end_exact_or_in_a_typed_error(script, frozen, options, seed):
    """Norse LIFCell (float64): every script of calls and misuse yields the oracle's gradient
    to 1e-10, or a StateError at the action that broke the sequence."""
    check_script(NorseNet, script, frozen, options, seed)


@PROPERTY
@given(script=scripts, frozen=frozen_sets, options=learner_options, seed=seeds)
def test_snntorch_scripts_end_exact_or_in_a_typed_error(script, frozen, options, seed):
    """snnTorch Leaky (float32): the same property, to 1e-4."""
    check_script(SnnNet, script, frozen, options, seed)


# ------------------------------------------------------------------------ the models spike
@pytest.mark.parametrize("make", [NorseNet, SnnNet], ids=["norse", "snntorch"])
@pytest.mark.parametrize("seed", SEEDS)
def test_the_scripted_models_spike(make, seed):
    """Both layers of both models fire at a mean rate in [0.02, 0.9] on the scripts' data for
    every seed the properties draw, so no comparison there is vacuous; and the learner reports
    the parameter owners and call order that the oracle is given."""
    torch.manual_seed(seed)
    net = make()
    x, y = _data(net.dtype)
    rates: list[list[float]] = [[], []]
    s1, s2 = net.start(net.lif1), net.start(net.lif2)
    with snn_ostl.OSTL(net) as learner:
        for xt, yt in zip(x, y):
            z1, s1 = net.lif1(net.fc1(xt), s1)
            z2, s2 = net.lif2(net.fc2(z1), s2)
            (net.output(s2) - yt).pow(2).sum().backward()
            rates[0].append(float(z1.detach().mean()))
            rates[1].append(float(z2.detach().mean()))
        assert learner.trained_parameters() == OWNERS
        assert {k: v for k, v in learner.execution_order().items() if k in ORDER} == ORDER
    assert_spiking([sum(r) / len(r) for r in rates], f"{make.__name__} seed {seed}")


def test_the_script_reader_cuts_chains_and_places_errors():
    """The static reading the properties rely on, on hand-made scripts."""
    plan = read_script(
        ["step", "no_grad_step", "step", "zero_grad", "silent_step", "step"], frozenset()
    )
    assert [(i, s.chain, s.loss, s.counted) for i, s in plan.steps.items()] == [
        (0, 0, True, False),
        (2, 1, True, False),
        (4, 1, False, False),
        (5, 1, True, True),
    ]
    assert plan.error_at is None

    def error_at(*script: str, snntorch: bool = False) -> int | None:
        return read_script(list(script), frozenset(), bad_calls_run=snntorch).error_at

    assert error_at("step", "toggle:fc1.weight", "probe", "step") == 3
    assert error_at("step", "toggle:fc1.weight", "learner_reset", "step") is None
    assert error_at("step", "toggle:fc2.weight", "no_grad_step", "step") is None
    assert error_at("step", "clone_state", "bad_call", "silent_step") == 3
    assert error_at("alter_state", "step", "no_grad_step", "alter_state", "step") is None
    assert error_at("step", "detach_state", "alter_state", "step") is None
    assert error_at("step", "reset_keep_state", "probe", "step") == 3
    assert error_at("reset_keep_state", "step", "detach_state", "reset_keep_state", "step") is None
    assert error_at("step", "new_batch", "step") is None
    # snnTorch: a call with a constant state restarts lif1; the graph that goes on is refused
    assert error_at("step", "bad_call_zeros", "step", snntorch=True) == 2
    assert error_at("step", "bad_call", "step", snntorch=True) is None
    assert error_at("step", "no_grad_step", "bad_call", "step", snntorch=True) is None
    assert error_at("step", "bad_call_zeros", "step") is None  # (Norse refuses the call)
    plan = read_script(["bad_call", "learner_reset", "step"], frozenset(), bad_calls_run=True)
    assert (plan.error_at, plan.replan_gap) == (None, 2)

    def exposures(*script: str) -> list[tuple[int, int | None, bool, int | None]]:
        plan = read_script(list(script), frozenset(), windows=True)
        return [(e.start, e.by, e.sure, e.gap_at) for e in plan.exposures]

    assert exposures("step", "step", "zero_grad_only", "silent_step", "flush") == [
        (3, 4, True, None)
    ]
    assert exposures("step", "step", "zero_grad_only", "step") == [(3, 4, True, 3)]
    assert exposures("step", "step", "silent_step", "zero_grad_only", "fresh_state", "step") == [
        (4, 5, False, None)
    ]
    assert exposures("step", "step_summed", "zero_grad_only", "alter_state", "step") == [
        (3, 4, True, None)
    ]
    assert exposures("step", "step", "flush", "zero_grad_only", "step_summed") == []
    assert exposures("step", "zero_grad_only", "step") == []  # (no term before a second step)
    assert read_script(["step", "step", "zero_grad_only"], frozenset()).exposures == []


# ------------------------------------------------------------------------ fixed cases
def test_a_constant_state_equal_to_the_returned_one_is_a_cut():
    """After a fresh state, a step under no_grad and a step with a graph, the second step's
    state is a constant: BPTT stops there. A first step from rest gives lif2 the same state
    (v = 0, i = fc2.bias: no spike can reach it yet) whatever the input, so that constant
    equals what lif2 returned at the script's first step; the learner restarts the traces all
    the same, and the gradient is exact."""
    torch.manual_seed(0)
    net = NorseNet()
    x, _ = _data(net.dtype)
    with torch.no_grad():
        first, second = (net.lif2(net.fc2(net.lif1(net.fc1(x[t]))[0]))[1] for t in (0, 1))
    assert all(torch.equal(a, b) for a, b in zip(first, second))  # the premise
    check_script(NorseNet, ["step", "fresh_state", "no_grad_step", "step"])


@pytest.mark.parametrize("make", [NorseNet, SnnNet], ids=["norse", "snntorch"])
@pytest.mark.parametrize(
    "script",
    [
        ["step", "step", "detach_state", "step"],
        ["step_summed", "step_summed", "detach_state", "step_summed", "step_summed"],
    ],
    ids=["per-step", "summed"],
)
def test_a_detached_state_is_a_cut(make, script):
    """``state = state.detach()`` between two steps is truncated BPTT: no gradient crosses it.
    The detached tensors share the returned ones' storage and values; the learner restarts
    the traces there all the same, and the gradient is exact (the losses of both sides
    backpropagated at once included)."""
    check_script(make, script)


@pytest.mark.parametrize("then", [[], ["learner_reset", "step"], ["fresh_state", "step"]])
def test_freezing_a_weight_with_terms_in_its_window(then):
    """Two steps, then fc1.weight frozen between sequences (the user's backward done, no
    flush): the terms of those steps still waiting in its flush window are added to .grad at
    the next flush, exactly as ``flush_every=1`` adds them at once."""
    check_script(NorseNet, ["step", "step", "toggle:fc1.weight", *then], options={"flush_every": 3})


@pytest.mark.parametrize("make", [NorseNet, SnnNet], ids=["norse", "snntorch"])
@pytest.mark.parametrize(
    "script",
    [
        ["step_summed", "learner_reset", "step", "backward"],
        ["step", "step_summed", "learner_reset", "step", "step_summed", "backward"],
    ],
    ids=["first-step", "later-step"],
)
def test_a_backward_waiting_across_learner_reset(make, script):
    """A summed loss backpropagated after learner.reset() and a step of the next sequence
    adds the old sequence's gradient exactly (snnTorch's fused restart leaves alone the input
    that the waiting backward saved)."""
    check_script(make, script)


@pytest.mark.parametrize("make", [NorseNet, SnnNet], ids=["norse", "snntorch"])
def test_learner_reset_while_the_state_carries_on_is_refused(make):
    """learner.reset() called but the old state passed on with its graph: BPTT's gradient goes
    on through that state while the traces started again, so the next step raises StateError
    naming the layer and the ways out (a fresh state, ``state.detach()``, or no reset). With
    the state detached after the reset, the new sequence trains exactly."""
    run = check_script(make, ["step", "step", "reset_keep_state", "step"])
    assert run.at == 3, run.error
    message = str(run.error)
    assert "lif1" in message and "detach()" in message and "reset()" in message, message
    assert (
        check_script(make, ["step", "step", "reset_keep_state", "detach_state", "step"]).error
        is None
    )


#: Two steps (the second one's history terms wait in the windows), then optimizer.zero_grad()
#: with neither learner.flush() nor optimizer.step() before it.
ZEROED = ["step", "step", "zero_grad_only"]


@pytest.mark.parametrize(
    "then, at",
    [
        ([], 3),  # the script's final learner.flush()
        (["flush"], 3),
        (["optimizer_step"], 3),
        (["zero_grad"], 3),  # optimizer.step() flushes first
        (["learner_reset"], 3),
        (["fresh_state", "silent_step"], 4),  # the next sequence closes the windows
        (["no_grad_step", "silent_step"], 4),
    ],
    ids=["end", "flush", "optimizer-step", "zero-grad", "reset", "fresh-state", "no-grad"],
)
def test_zero_grad_before_the_flush_is_refused_at_the_flush(then, at):
    """``optimizer.zero_grad()`` after a backward and before the flush, with
    ``flush_every > 1`` and terms waiting: those terms belong to the gradient that was
    zeroed, so the next flush raises StateError naming the weight, whichever action flushes
    (learner.flush(), optimizer.step(), learner.reset(), the next sequence's first step)."""
    run = check_script(NorseNet, [*ZEROED, *then], options={"flush_every": 3})
    assert run.at == at, (run.at, run.error)
    assert GRAD_CHANGED in str(run.error) and "fc1.weight" in str(run.error), run.error


def test_zero_grad_before_the_flush_is_refused_by_the_windows_own_flush():
    """Steps after that ``zero_grad()`` whose forward flushes the window when it is due raise
    the StateError there, before the script's end."""
    script = [*ZEROED, *["silent_step"] * 6]
    run = check_script(NorseNet, script, options={"flush_every": 3})
    assert len(ZEROED) < run.at < len(script), (run.at, run.error)
    assert GRAD_CHANGED in str(run.error), run.error


def _losses(net: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int):
    """The losses of ``steps`` steps of one sequence from rest."""
    s1, s2 = net.start(net.lif1), net.start(net.lif2)
    for t in range(steps):
        z1, s1 = net.lif1(net.fc1(x[t]), s1)
        _, s2 = net.lif2(net.fc2(z1), s2)
        yield (net.output(s2) - y[t]).pow(2).sum()


def test_clipping_before_the_flush_is_refused_and_after_it_is_exact():
    """Gradient clipping changes ``.grad`` in place: before the flush, the flush raises
    StateError (every weight is checked before any term is added, so leaving the learner
    raises nothing more); after ``learner.flush()``, it clips the full gradient, exactly
    that of clipping the oracle's."""
    torch.manual_seed(0)
    net = NorseNet()
    x, y = _data(net.dtype)

    grads = {}
    for flush_first in (False, True):
        net.zero_grad(set_to_none=True)
        with snn_ostl.OSTL(net, flush_every=3) as learner:
            for loss in _losses(net, x, y, 2):
                loss.backward()
            if flush_first:
                learner.flush()
            nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            if flush_first:
                grads = {n: p.grad.clone() for n, p in net.named_parameters()}
            else:
                with pytest.raises(snn_ostl.StateError, match=GRAD_CHANGED):
                    learner.flush()
    net.zero_grad(set_to_none=True)
    expected = oracle_gradients(net, lambda: _losses(net, x, y, 2), OWNERS, ORDER)
    total = torch.cat([g.flatten() for g in expected.values()]).norm()
    scale = 1.0 / (float(total) + 1e-6)  # clip_grad_norm_'s own coefficient
    assert scale < 1.0  # the premise: clipping changes the gradient
    expected = {n: g * scale for n, g in expected.items()}
    assert max(compare(grads, expected).values()) <= TOL[net.dtype]


def test_zero_grad_after_a_flush_is_exact():
    """``learner.flush()`` and then ``optimizer.zero_grad()``: nothing waits, the gradient read
    afterwards is that of the later losses alone."""
    script = ["step", "step", "flush", "zero_grad_only", "step", "step"]
    assert check_script(NorseNet, script, options={"flush_every": 3}).error is None


@pytest.mark.parametrize(
    "script, error_at",
    [
        (["step", "new_batch", "step", "step"], None),  # init_leaky() of the first batch size
        (["step", "no_grad_step", "bad_call", "step"], None),  # zeros of 4 rows, a new sequence
        (["step", "learner_reset", "bad_call_zeros", "step"], None),
        (["step", "bad_call", "step"], None),  # the state's graph: refused, nothing changed
        (["step", "bad_call_zeros", "step"], 2),  # lif1 restarted; the graph goes on into it
        # a loss waiting across that restart, backpropagated in the next sequence: exact
        (["step", "step_summed", "bad_call_zeros", "fresh_state", "step", "backward"], None),
    ],
)
def test_snntorch_a_constant_state_of_another_batch_size_starts_afresh(script, error_at):
    """snnTorch starts a step whose constant state has another batch size (``init_leaky()``
    of an earlier batch size, zeros of 3 rows against an input of 2) from zeros of the
    input's shape, and so does the learner: no error there, and the next sequence trains
    exactly. lif1 has then started a new sequence, so a state that carries the old one's
    graph on into the next step is refused there."""
    assert read_script(script, frozenset(), bad_calls_run=True).error_at == error_at
    run = check_script(SnnNet, script)
    assert (run.at if run.error else None) == error_at


# ------------------------------------------------------------------------ more fixed cases
def test_a_backward_between_zero_grad_and_the_flush_hides_it():
    """With ``flush_every=3``, two steps, ``optimizer.zero_grad()`` with no flush before it,
    and one more step (its backward at once): the terms of the first steps still wait, and
    belong to the gradient that was zeroed, and the flush raises StateError."""
    check_script(NorseNet, [*ZEROED, "step"], options={"flush_every": 3})


def test_a_refused_flush_is_refused_once():
    """Terms of both layers waiting, ``optimizer.zero_grad()``, then ``learner.reset()``: the
    StateError names fc1.weight. Like ``learner.flush()``, which checks every weight before
    adding any term, the refusal must let every window's terms go, so that the user's second
    ``learner.reset()`` starts the new sequence and leaving the ``with`` block raises nothing."""
    torch.manual_seed(0)
    net = NorseNet()
    x, y = _data(net.dtype)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.0)
    with snn_ostl.OSTL(net, flush_every=3) as learner:
        for loss in _losses(net, x, y, 2):
            loss.backward()
        optimizer.zero_grad()
        with pytest.raises(snn_ostl.StateError, match=r"fc1\.weight"):
            learner.reset()
        learner.reset()


@pytest.mark.parametrize("make", [NorseNet, SnnNet], ids=["norse", "snntorch"])
def test_learner_reset_lets_the_next_sequence_feed_a_neuron_anew(make):
    """A first sequence feeds lif1 ``fc1(x) * 0.5``; after ``learner.reset()`` the next one
    feeds it ``fc1(x)``. The StateError for a current computed another way within a sequence
    says to call learner.reset() before changing the model: after it, the new sequence must
    train, with the gradient of a learner attached for it alone (the layer is planned again).
    """
    torch.manual_seed(0)
    net = make()
    x, y = _data(net.dtype)

    def sequence(scale: float, frames: range) -> None:
        s1, s2 = net.start(net.lif1), net.start(net.lif2)
        for t in frames:
            current = net.fc1(x[t]) * scale if scale != 1.0 else net.fc1(x[t])
            z1, s1 = net.lif1(current, s1)
            _, s2 = net.lif2(net.fc2(z1), s2)
            (net.output(s2) - y[t]).pow(2).sum().backward()

    with snn_ostl.OSTL(net) as learner:
        sequence(0.5, range(3))
        learner.reset()
        net.zero_grad(set_to_none=True)
        sequence(1.0, range(3, 6))
        grads = {n: p.grad.clone() for n, p in net.named_parameters()}
    net.zero_grad(set_to_none=True)
    with snn_ostl.OSTL(net):
        sequence(1.0, range(3, 6))
        expected = {n: p.grad.clone() for n, p in net.named_parameters()}
    assert max(compare(grads, expected).values()) <= TOL[net.dtype]
