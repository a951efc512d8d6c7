"""Adapters of the snnTorch 1.0 neurons (imported only when snnTorch itself is imported).

Every neuron is presented to the engine as an elementwise cell whose state tensors are the
attributes snnTorch keeps on the module, in the order of the neuron's ``forward`` arguments:

=============  ==========================  ============================================
neuron         state                       trace form (SPEC §3)
=============  ==========================  ============================================
``Leaky``      ``(mem,)``                  presynaptic (fused) for reset "subtract" with
                                           the default ``reset_delay=True``, or "none",
                                           and a scalar beta; per-synapse otherwise
``Synaptic``   ``(syn, mem)``              same rule, alpha and beta scalar (not fused:
                                           two state tensors)
``Lapicque``   ``(mem,)``                  presynaptic (fused) for "subtract"/"none" with
                                           scalar R and C; per-synapse for "zero"
``Alpha``      ``(syn_exc, syn_inh, mem)`` presynaptic for reset "none" only
``RLeaky``     ``(spk, mem)``              full Jacobian (all-to-all ``recurrent``
                                           Linear), per-synapse (one-to-one ``V``)
``RSynaptic``  ``(spk, syn, mem)``         same as RLeaky
``SLSTM``      ``(syn, mem)``              full Jacobian of its LSTM cell (dense)
=============  ==========================  ============================================

The hand-written :meth:`derivatives` of ``Leaky``, ``Synaptic`` and ``Lapicque`` are the hot
path; every other neuron (and every configuration, in the tests) uses the autograd reference of
its :meth:`cell`, which restates snnTorch's ``forward`` operation by operation.

Variants: ``"ostl-no-h"`` detaches the previous spikes on their way into ``recurrent`` (it is
``"ostl"`` for the feed-forward neurons). ``"eprop"`` additionally leaves out the path through
the layer's own spikes in the reset of ``reset_delay=False`` (snnTorch detaches the delayed
reset itself, so there e-prop equals OSTL); like the SNU's ``y_{t-1}``, that path is cut only
where the membrane carries it to later steps, never in the step's own outputs.

What snnTorch does that the adapters guard against (SPEC §4):

- the state a caller passes with another shape than the input is silently replaced by zeros in
  snnTorch; here it raises :class:`snn_ostl.StateError` naming the module. An empty tensor
  (what ``init_leaky()``/``reset_mem()`` return before the first step) means "start from zero".
- ``reset`` clears only the module it is given, never every instance in the process.
- spikes are always float32 in snnTorch. While the learner (or :func:`spikes_like_input`)
  is active, the spike function returns spikes in the membrane's dtype with the surrogate's
  gradient in full precision, so a float64 model does not break at the next layer.
- known bugs are refused with the reason and a workaround: ``surrogate.LSO()`` (TypeError),
  ``RSynaptic(reset_delay=False)`` (crashes, and would not reset), ``Lapicque(beta=β)``
  (decays by 1 + ln β, not β), ``SLSTM`` with ``input_size != hidden_size`` (drops its state
  at every step), a ``reset_mechanism`` changed after construction (snnTorch keeps the old one).
  ``Alpha(learn_alpha=True)`` raises inside snnTorch's own constructor, before any of this.
  Also refused: the stochastic ``surrogate.SSO()``, ``inhibition=True``, ``state_quant``, a
  Conv2d recurrence, and the whole-sequence or unadapted modules (``LeakyParallel``,
  ``StateLeaky``, ``LinearLeaky``, ``SConv2dLSTM``, ``AssociativeLeaky``; the engine refuses
  subclasses such as ``DeltaLeaky`` by itself).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import snntorch as snn
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from snn_ostl.adapter import (
    CellAdapter,
    DenseAdapter,
    ElementwiseAdapter,
    InternalSynapse,
    StepRecord,
)
from snn_ostl.derivatives import ElementwiseDerivatives, Partial, elementwise_derivatives
from snn_ostl.errors import StateError
from snn_ostl.registry import register_adapter, register_refusal

__all__ = [
    "EXAMPLE_SIZE",
    "AlphaAdapter",
    "LapicqueAdapter",
    "LeakyAdapter",
    "RLeakyAdapter",
    "RSynapticAdapter",
    "SLSTMAdapter",
    "SynapticAdapter",
    "spikes_like_input",
]

#: Number of neurons of every registered example module (tests build their models around it).
EXAMPLE_SIZE = 6

SUBTRACT, ZERO, NONE = 0, 1, 2
_STATE_FUNCTIONS = {"_base_sub": SUBTRACT, "_base_zero": ZERO, "_base_int": NONE}
_MISSING = object()


# ----------------------------------------------------------------------------- helpers
def _mechanism(module: nn.Module) -> int:
    """0 subtract, 1 zero, 2 none: what the module's forward really does.

    That is the ``state_function`` snnTorch picked in the constructor, not the current
    ``reset_mechanism`` setting, which may have been changed since (refused by ``problems``).
    """
    function = getattr(module.state_function, "__func__", None)
    found = _STATE_FUNCTIONS.get(getattr(function, "__name__", ""))
    return int(module.reset_mechanism_val) if found is None else found


def _delayed(module: nn.Module) -> bool:
    """Whether the reset is applied at the next step (and so is detached by snnTorch)."""
    return bool(getattr(module, "reset_delay", True)) or _mechanism(module) == NONE


def _reset_factorises(module: nn.Module, variant: str) -> bool:
    """Whether the reset leaves J and ∂s/∂a constant: none, or a subtraction that is detached
    (``reset_delay=True``, or e-prop, which leaves out the path through the own spikes)."""
    mechanism = _mechanism(module)
    return mechanism == NONE or (mechanism == SUBTRACT and (_delayed(module) or variant == "eprop"))


def _value(module: nn.Module, params: dict[str, Tensor], name: str) -> Any:
    return params[name] if name in params else getattr(module, name)


def _is_scalar(value: Any) -> bool:
    return not isinstance(value, Tensor) or value.numel() == 1


class _SpikeInDtype(torch.autograd.Function):
    """A snnTorch spike function evaluated in the input's dtype, gradient in full precision."""

    @staticmethod
    def forward(ctx, x: Tensor, fn: Callable[[Tensor], Tensor]) -> Tensor:  # type: ignore[override]
        with torch.enable_grad():
            z = x.detach().requires_grad_(True)
            out = fn(z)
            slope = None
            if out.requires_grad:
                (slope,) = torch.autograd.grad(out, z, torch.ones_like(out), allow_unused=True)
        ctx.has_slope = slope is not None
        ctx.save_for_backward(slope if slope is not None else x.new_zeros(()))
        return out.detach().to(x.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        (slope,) = ctx.saved_tensors
        return (grad * slope if ctx.has_slope else None), None


class _SpikesLikeInput:
    """Wraps a module's ``spike_grad`` so that spikes come out in the membrane's dtype."""

    def __init__(self, fn: Callable[[Tensor], Tensor]) -> None:
        self.fn = fn

    def __call__(self, x: Tensor) -> Tensor:
        if x.dtype == torch.float32 or not x.is_floating_point():
            return self.fn(x)
        return _SpikeInDtype.apply(x, self.fn)


def _spike(module: nn.Module, x: Tensor) -> Tensor:
    """snnTorch's spike function at ``x`` (membrane minus threshold), in x's dtype."""
    fn = module.spike_grad
    if isinstance(fn, _SpikesLikeInput):
        return fn(x)
    return _SpikesLikeInput(fn)(x)


def _slope(module: nn.Module, x: Tensor) -> Tensor:
    """The surrogate derivative of the module's spike function at ``x``, per element."""
    with torch.enable_grad():
        z = x.detach().requires_grad_(True)
        out = _spike(module, z)
        if not out.requires_grad:
            return torch.zeros_like(x)
        (g,) = torch.autograd.grad(out, z, torch.ones_like(out), allow_unused=True)
    return torch.zeros_like(x) if g is None else g


def _reset_signal(mem: Tensor, threshold: Any) -> Tensor:
    """snnTorch's ``mem_reset``: the detached Heaviside of the previous membrane."""
    return ((mem - threshold).detach() > 0).to(mem.dtype)


@contextlib.contextmanager
def _instance_attribute(module: nn.Module, name: str, value: Any) -> Iterator[None]:
    """Set a plain instance attribute for the duration of the context, then restore it."""
    old = module.__dict__.get(name, _MISSING)
    object.__setattr__(module, name, value)
    try:
        yield
    finally:
        if old is _MISSING:
            object.__delattr__(module, name)
        else:
            object.__setattr__(module, name, old)


@contextlib.contextmanager
def _spikes_in_dtype(module: nn.Module) -> Iterator[None]:
    fn = getattr(module, "spike_grad", None)
    if (
        fn is None
        or isinstance(fn, (nn.Module, _SpikesLikeInput))
        or "spike_grad" in getattr(module, "_modules", {})
    ):
        yield
        return
    with _instance_attribute(module, "spike_grad", _SpikesLikeInput(fn)):
        yield


@contextlib.contextmanager
def spikes_like_input(model: nn.Module) -> Iterator[nn.Module]:
    """Make every snnTorch neuron of ``model`` emit spikes in its membrane's dtype.

    snnTorch's spike functions always return float32, so a float64 model fails at the first
    layer after a neuron. The learner does this by itself while it is attached; this context
    does the same without a learner (for a BPTT reference, or for inference)::

        with spikes_like_input(model.double()):
            out = model(x.double())

    The spike values (0 or 1) and the surrogate gradients are unchanged, the latter computed
    in the membrane's precision.
    """
    with contextlib.ExitStack() as stack:
        for m in model.modules():
            if isinstance(m, snn.SpikingNeuron):
                stack.enter_context(_spikes_in_dtype(m))
        yield model


@contextlib.contextmanager
def _own_reset_cut_in_time(module: nn.Module) -> Iterator[None]:
    """Cut the path through the layer's own spikes in the reset (``reset_delay=False``), but
    only where the membrane carries it to the next step: e-prop's oracle.

    snnTorch resets ``mem_t = m_t - (q_t - r_t) θ`` (or ``- (q_t - r_t) m_t``) with
    ``q_t = spk_t / graded_spikes_factor`` right after ``fire``. When the membrane this call
    returned comes back at the next call, ``(q_t - q_t.detach()) θ`` (exactly zero) is added to
    it, which leaves every value as it is and cancels the gradient through ``q_t`` on the way to
    later steps. The same step's outputs keep every path (a loss on ``mem_t`` sees the reset's
    surrogate gradient), just as the learner's instantaneous gradient does.
    """
    fire = type(module).fire.__get__(module)
    mem_reset = type(module).mem_reset.__get__(module)
    record: dict[str, Any] = {}

    def fire_and_record(mem: Tensor) -> Tensor:
        spk = fire(mem)
        record["pending"] = (mem, spk)
        return spk

    def cut_then_reset(mem: Tensor) -> Tensor:
        last = record.pop("last", None)
        if last is not None and module.mem is last[0]:
            _, m, spk = last
            q = spk / module.graded_spikes_factor
            scale = module.threshold if _mechanism(module) == SUBTRACT else m
            module.mem = module.mem + (q - q.detach()) * scale
            mem = module.mem
        return mem_reset(mem)

    def after(mod: nn.Module, args: Any, output: Any) -> None:
        pending = record.pop("pending", None)
        if pending is not None:
            record["last"] = (module.mem, *pending)

    handle = module.register_forward_hook(after)
    try:
        with (
            _instance_attribute(module, "fire", fire_and_record),
            _instance_attribute(module, "mem_reset", cut_then_reset),
        ):
            yield
    finally:
        handle.remove()


def _floats(d: ElementwiseDerivatives) -> ElementwiseDerivatives:
    """State and current partials as Python numbers (they are constant: factorised neurons)."""

    def num(p: Partial) -> Partial:
        if isinstance(p, Tensor):
            return float(p.reshape(-1)[0]) if p.numel() else 0.0
        return p

    d.state = [[num(p) for p in row] for row in d.state]
    d.current = [num(p) for p in d.current]
    return d


def _tidy(d: ElementwiseDerivatives) -> ElementwiseDerivatives:
    """Single-element tensor partials (a scalar decay) as Python numbers.

    The engine reads the neuron count off the last dimension of tensor partials, so a
    0-dim or one-element tensor must not reach it; a number means the same thing.
    """

    def num(p: Partial) -> Partial:
        return float(p) if isinstance(p, Tensor) and p.numel() == 1 else p

    d.state = [[num(p) for p in row] for row in d.state]
    d.current = [num(p) for p in d.current]
    return d


def _times(a: Partial, b: Partial) -> Partial:
    if a is None or b is None:
        return None
    return a * b


def _plus(a: Partial, b: Partial) -> Partial:
    if a is None:
        return b
    return a if b is None else a + b


# ----------------------------------------------------------------------------- base
class _SnnTorchState(CellAdapter):
    """State plumbing, reset, checks and variants shared by every snnTorch adapter."""

    framework = "snntorch"
    variants: ClassVar[tuple[str, ...]] = ("ostl", "ostl-no-h", "eprop")
    #: neuron settings that may be trained (nn.Parameter) and act elementwise
    param_names: ClassVar[tuple[str, ...]] = ("beta", "threshold", "graded_spikes_factor")

    # --- validation -------------------------------------------------------------------
    def problems(self, module: nn.Module, variant: str) -> list[tuple[str, str]]:
        out = list(super().problems(module, variant))
        fn = getattr(module, "spike_grad", None)
        qualname = getattr(fn, "__qualname__", "")
        if qualname.startswith("LSO."):
            out.append(
                (
                    "its spike_grad is snntorch.surrogate.LSO(), which raises a TypeError at its "
                    "first call in snnTorch 1.0.0 (it calls StochasticSpikeOperator with a "
                    "missing argument instead of LeakySpikeOperator).",
                    "use another surrogate, e.g. snntorch.surrogate.fast_sigmoid() or the default "
                    "atan().",
                )
            )
        elif qualname.startswith("SSO."):
            out.append(
                (
                    "its spike_grad is the stochastic surrogate snntorch.surrogate.SSO(): every "
                    "backward pass draws new noise, so no eligibility trace can reproduce it.",
                    "use a deterministic surrogate (fast_sigmoid(), atan(), sigmoid(), ...).",
                )
            )
        if getattr(module, "inhibition", False):
            out.append(
                (
                    "inhibition=True lets only the neuron with the largest membrane spike, which "
                    "couples all neurons of the layer; OSTL's elementwise traces cannot follow it.",
                    "use inhibition=False (e.g. a winner-take-all loss instead).",
                )
            )
        if getattr(module, "state_quant", False):
            out.append(
                (
                    "state_quant quantises the state in the forward pass; its gradient is not the "
                    "derivative of the step the traces follow.",
                    "train without state_quant and quantise afterwards.",
                )
            )
        if hasattr(module, "state_function") and _mechanism(module) != int(
            module.reset_mechanism_val
        ):
            out.append(
                (
                    f"reset_mechanism was changed to {module.reset_mechanism!r} after the neuron "
                    "was built; snnTorch 1.0 keeps running the mechanism chosen in the "
                    "constructor, so the setting and the dynamics disagree.",
                    "pass reset_mechanism=... to the constructor instead of changing it later.",
                )
            )
        return out

    # --- state plumbing ---------------------------------------------------------------
    def _input(self, args, kwargs) -> Tensor:
        return args[0] if args else kwargs["input_"]

    def current(self, module, args, kwargs):
        return self._input(args, kwargs)

    def _passed(self, args, kwargs) -> dict[str, Any]:
        passed = dict(zip(self.state_names, args[1:]))
        passed.update({k: v for k, v in kwargs.items() if k in self.state_names})
        return passed

    def _expected_shape(self, module: nn.Module, x: Tensor) -> torch.Size:
        return x.shape

    def read_state(self, module, args, kwargs):
        x = self._input(args, kwargs)
        shape = self._expected_shape(module, x)
        passed = self._passed(args, kwargs)
        found: list[Tensor | None] = []
        for name in self.state_names:
            s = passed.get(name)
            given = s is not None
            if s is None:
                s = getattr(module, name, None)
            if not isinstance(s, Tensor) or s.numel() == 0:
                found.append(None)
                continue
            if s.shape != shape:
                how = (
                    "was passed to it"
                    if given
                    else "is kept on the module from an earlier call (snnTorch stores it even "
                    "with init_hidden=False)"
                )
                raise StateError(
                    f"its state {name!r} of shape {tuple(s.shape)} {how}, but "
                    f"this input needs shape {tuple(shape)}. snnTorch would silently restart "
                    "from zeros. Pass the state the neuron returned at the previous step, or "
                    "call learner.reset() (or the neuron's reset_mem()) to start a new sequence."
                )
            found.append(s)
        if all(s is None for s in found):
            return None
        return tuple(
            torch.zeros(shape, dtype=x.dtype, device=x.device) if s is None else s for s in found
        )

    def write_state(self, module, args, kwargs, state):
        for name, s in zip(self.state_names, state):
            setattr(module, name, s)
        if module.init_hidden:
            return args, kwargs
        x = self._input(args, kwargs)
        rest = {k: v for k, v in kwargs.items() if k not in self.state_names and k != "input_"}
        return (x, *state), rest

    def initial_state(self, module, current):
        shape = self._expected_shape(module, current)
        return tuple(
            torch.zeros(shape, dtype=current.dtype, device=current.device) for _ in self.state_names
        )

    def new_state(self, module, args, kwargs, output):
        return tuple(getattr(module, name) for name in self.state_names)

    def reset(self, module):
        """Empty this module's hidden state (snnTorch then starts from zeros of the input's
        shape). Only this module: never ``snntorch.utils.reset`` or the class-level
        ``reset_hidden``, which clear every neuron instance of the process."""
        for name in self.state_names:
            old = getattr(module, name, None)
            like = old if isinstance(old, Tensor) else torch.zeros(0)
            setattr(module, name, torch.zeros(0, dtype=like.dtype, device=like.device))

    # --- parameters -------------------------------------------------------------------
    def neuron_parameters(self, module):
        out = {}
        for name in self.param_names:
            value = getattr(module, name, None)
            if isinstance(value, nn.Parameter):
                out[name] = value
        return out

    # --- variants ---------------------------------------------------------------------
    def _cuts_own_reset(self, module: nn.Module, variant: str) -> bool:
        return variant == "eprop" and not _delayed(module)

    def _cuts_recurrent(self, module: nn.Module, variant: str) -> bool:
        return variant in ("eprop", "ostl-no-h") and isinstance(
            getattr(module, "recurrent", None), nn.Module
        )

    @contextlib.contextmanager
    def variant_forward(self, module, variant):
        if variant not in self.variants:
            raise NotImplementedError(f"{type(self).__name__} does not implement {variant!r}")
        if not (self._cuts_own_reset(module, variant) or self._cuts_recurrent(module, variant)):
            with _spikes_in_dtype(module):  # every step of a feed-forward layer: keep it short
                yield
            return
        with contextlib.ExitStack() as stack:
            stack.enter_context(_spikes_in_dtype(module))
            if self._cuts_own_reset(module, variant):
                stack.enter_context(_own_reset_cut_in_time(module))
            if self._cuts_recurrent(module, variant):
                handle = module.recurrent.register_forward_pre_hook(
                    lambda m, args: (args[0].detach(), *args[1:])
                )
                stack.callback(handle.remove)
            yield


class _SnnTorchElementwise(_SnnTorchState, ElementwiseAdapter):
    """Common derivatives machinery of the elementwise snnTorch neurons."""

    def cell(self, module, current, state, params):
        return self._cell(module, current, state, params, cut_reset=False)

    def _cell(self, module, current, state, params, *, cut_reset: bool) -> tuple[Tensor, ...]:
        raise NotImplementedError

    def _delayed_reset(
        self, module, m: Tensor, r: Tensor, threshold: Any, params: dict, *, cut_reset: bool
    ) -> Tensor:
        """snnTorch's reset right after the spike (``reset_delay=False``), applied to ``m``."""
        mechanism = _mechanism(module)
        if _delayed(module):
            return m
        gsf = _value(module, params, "graded_spikes_factor")
        spk = _spike(module, m - threshold) * gsf
        q = spk / gsf
        if cut_reset:
            q = q.detach()
        do_reset = q - r
        if mechanism == SUBTRACT:
            return m - do_reset * threshold
        return m - do_reset * m

    def _generic(self, module, step: StepRecord, variant: str, current: Tensor):
        params = dict(self.neuron_parameters(module))
        cut = self._cuts_own_reset(module, variant)
        return elementwise_derivatives(
            lambda a, s, p: self._cell(module, a, s, p, cut_reset=cut), current, step.prev, params
        )

    def derivatives(self, module, step, variant, current):
        d = self._generic(module, step, variant, current())
        return _floats(d) if self.factorised(module, variant) else _tidy(d)

    def _after_spike(
        self, module, m: Tensor, r: Tensor, threshold: Tensor, variant: str
    ) -> tuple[Partial, Partial]:
        """(∂mem/∂m, ∂mem/∂threshold at fixed m) of the reset right after the spike."""
        if _delayed(module):
            return 1.0, None
        z = m - threshold
        h = (z > 0).to(m.dtype)
        cut = self._cuts_own_reset(module, variant)
        slope = None if cut else _slope(module, z)
        if _mechanism(module) == SUBTRACT:
            if cut:
                return 1.0, -(h - r)
            return 1.0 - threshold * slope, -(h - r) + threshold * slope
        if cut:
            return 1.0 - (h - r), None
        return 1.0 - (h - r) - m * slope, m * slope


def _clamp_mask(value: Tensor) -> Tensor:
    """Where ``value.clamp(0, 1)`` passes gradients (torch includes both ends)."""
    return ((value >= 0) & (value <= 1)).to(value.dtype)


# ----------------------------------------------------------------------------- examples
def _leaky_examples() -> dict[str, Callable[[], nn.Module]]:
    n = EXAMPLE_SIZE
    return {
        "subtract": lambda: snn.Leaky(beta=0.9),
        "subtract, init_hidden": lambda: snn.Leaky(beta=0.9, init_hidden=True),
        "subtract, init_hidden, output": lambda: snn.Leaky(
            beta=0.85, init_hidden=True, output=True
        ),
        "zero": lambda: snn.Leaky(beta=0.9, reset_mechanism="zero"),
        "none": lambda: snn.Leaky(beta=0.8, reset_mechanism="none", threshold=1.5),
        "subtract, reset_delay=False": lambda: snn.Leaky(beta=0.9, reset_delay=False),
        "zero, reset_delay=False, fast_sigmoid": lambda: snn.Leaky(
            beta=0.9,
            reset_mechanism="zero",
            reset_delay=False,
            spike_grad=snn.surrogate.fast_sigmoid(slope=5),
        ),
        "learn_beta, learn_threshold": lambda: snn.Leaky(
            beta=0.9, learn_beta=True, learn_threshold=True
        ),
        "per-neuron beta": lambda: snn.Leaky(beta=torch.linspace(0.7, 0.95, n)),
        "per-neuron beta and threshold, learned, zero": lambda: snn.Leaky(
            beta=torch.linspace(0.75, 0.95, n),
            threshold=torch.linspace(0.8, 1.2, n),
            learn_beta=True,
            learn_threshold=True,
            reset_mechanism="zero",
            init_hidden=True,
        ),
        "graded spikes, learned": lambda: snn.Leaky(
            beta=0.9, graded_spikes_factor=0.5, learn_graded_spikes_factor=True
        ),
        "learned, reset_delay=False": lambda: snn.Leaky(
            beta=0.9, learn_beta=True, learn_threshold=True, reset_delay=False
        ),
    }


def _synaptic_examples() -> dict[str, Callable[[], nn.Module]]:
    n = EXAMPLE_SIZE
    return {
        "subtract": lambda: snn.Synaptic(alpha=0.8, beta=0.9),
        "subtract, init_hidden": lambda: snn.Synaptic(alpha=0.8, beta=0.9, init_hidden=True),
        "zero": lambda: snn.Synaptic(alpha=0.8, beta=0.9, reset_mechanism="zero"),
        "none": lambda: snn.Synaptic(alpha=0.7, beta=0.8, reset_mechanism="none", threshold=2.0),
        "reset_delay=False": lambda: snn.Synaptic(alpha=0.8, beta=0.9, reset_delay=False),
        "learned alpha, beta, threshold": lambda: snn.Synaptic(
            alpha=0.8, beta=0.9, learn_alpha=True, learn_beta=True, learn_threshold=True
        ),
        "per-neuron alpha and beta": lambda: snn.Synaptic(
            alpha=torch.linspace(0.6, 0.85, n), beta=torch.linspace(0.8, 0.95, n)
        ),
    }


def _lapicque_examples() -> dict[str, Callable[[], nn.Module]]:
    return {
        "R and C, subtract": lambda: snn.Lapicque(R=5.0, C=1.0),
        "R and C, zero, init_hidden": lambda: snn.Lapicque(
            R=5.0, C=1.0, reset_mechanism="zero", init_hidden=True
        ),
        "R and C, learn_threshold": lambda: snn.Lapicque(R=4.0, C=0.8, learn_threshold=True),
    }


def _alpha_examples() -> dict[str, Callable[[], nn.Module]]:
    return {
        "zero": lambda: snn.Alpha(alpha=0.9, beta=0.8, threshold=0.5),
        "subtract": lambda: snn.Alpha(
            alpha=0.9, beta=0.8, threshold=0.5, reset_mechanism="subtract"
        ),
        "none": lambda: snn.Alpha(alpha=0.9, beta=0.8, reset_mechanism="none", threshold=1.5),
        "learn_beta, learn_threshold, init_hidden": lambda: snn.Alpha(
            alpha=0.9,
            beta=0.8,
            threshold=0.5,
            learn_beta=True,
            learn_threshold=True,
            init_hidden=True,
        ),
    }


def _rleaky_examples() -> dict[str, Callable[[], nn.Module]]:
    n = EXAMPLE_SIZE
    return {
        "all-to-all": lambda: snn.RLeaky(beta=0.9, linear_features=n),
        "all-to-all, init_hidden": lambda: snn.RLeaky(
            beta=0.9, linear_features=n, init_hidden=True
        ),
        "all-to-all, zero, learned": lambda: snn.RLeaky(
            beta=0.85,
            linear_features=n,
            reset_mechanism="zero",
            learn_beta=True,
            learn_threshold=True,
        ),
        "all-to-all, reset_delay=False": lambda: snn.RLeaky(
            beta=0.9, linear_features=n, reset_delay=False
        ),
        "one-to-one": lambda: snn.RLeaky(beta=0.9, all_to_all=False, V=0.5),
        "one-to-one, per-neuron V, learned": lambda: snn.RLeaky(
            beta=torch.linspace(0.8, 0.95, n),
            all_to_all=False,
            V=torch.linspace(-0.5, 0.5, n),
            learn_beta=True,
            learn_threshold=True,
        ),
    }


def _rsynaptic_examples() -> dict[str, Callable[[], nn.Module]]:
    n = EXAMPLE_SIZE
    return {
        "all-to-all": lambda: snn.RSynaptic(alpha=0.8, beta=0.9, linear_features=n),
        "all-to-all, zero, init_hidden": lambda: snn.RSynaptic(
            alpha=0.8, beta=0.9, linear_features=n, reset_mechanism="zero", init_hidden=True
        ),
        "one-to-one, learned": lambda: snn.RSynaptic(
            alpha=0.8,
            beta=0.9,
            all_to_all=False,
            V=0.3,
            learn_alpha=True,
            learn_beta=True,
            learn_threshold=True,
        ),
    }


def _slstm_examples() -> dict[str, Callable[[], nn.Module]]:
    n = EXAMPLE_SIZE
    return {
        "none": lambda: snn.SLSTM(n, n, threshold=0.1),
        "subtract, learn_threshold, init_hidden": lambda: snn.SLSTM(
            n, n, threshold=0.1, reset_mechanism="subtract", learn_threshold=True, init_hidden=True
        ),
    }


# ----------------------------------------------------------------------------- Leaky
@register_adapter(snn.Leaky, examples=_leaky_examples())
class LeakyAdapter(_SnnTorchElementwise):
    """``snn.Leaky``: ``mem_t = clamp(β) mem_{t-1} + a_t - r_t θ`` (r the detached reset)."""

    state_names = ("mem",)

    def factorised(self, module, variant):
        return _is_scalar(module.beta) and _reset_factorises(module, variant)

    def fusable(self, module, variant):
        # With the reset applied at the next step (detached), a_t and mem_{t-1} reach the
        # spikes and the returned membrane only through mem_t. Not with reset_delay=False:
        # the spikes are fired from the membrane before its reset.
        return self.factorised(module, variant) and _delayed(module)

    def _cell(self, module, current, state, params, *, cut_reset):
        (mem,) = state
        beta = _value(module, params, "beta")
        threshold = _value(module, params, "threshold")
        r = _reset_signal(mem, threshold)
        mechanism = _mechanism(module)
        if mechanism == ZERO:
            m = beta.clamp(0, 1) * ((1 - r) * mem) + current
        else:
            m = beta.clamp(0, 1) * mem + current
            if mechanism == SUBTRACT:
                m = m - r * threshold
        return (self._delayed_reset(module, m, r, threshold, params, cut_reset=cut_reset),)

    def derivatives(self, module, step, variant, current):
        (mem,) = step.prev
        beta, threshold = module.beta.detach(), module.threshold.detach()
        decay = beta.clamp(0, 1)
        learned = self.neuron_parameters(module)
        if not learned and _delayed(module) and self.factorised(module, variant):
            return ElementwiseDerivatives([[float(decay)]], [1.0], {})  # the hot path
        r = _reset_signal(mem, threshold)
        mechanism = _mechanism(module)
        if mechanism == ZERO:
            keep = 1 - r
            j_m: Partial = decay * keep
            d_beta = _clamp_mask(beta) * keep * mem
            d_thr: Partial = None
            m_prev = keep * mem
        else:
            j_m = decay
            d_beta = _clamp_mask(beta) * mem
            d_thr = -r if mechanism == SUBTRACT else None
            m_prev = mem
        if _delayed(module):
            if self.factorised(module, variant):
                j_m = float(decay)
            dm, dt = 1.0, None
        else:
            m = decay * m_prev + current()
            if mechanism == SUBTRACT:
                m = m - r * threshold
            dm, dt = self._after_spike(module, m, r, threshold, variant)
        params: dict[str, list[Partial]] = {}
        if "beta" in learned:
            params["beta"] = [_times(dm, d_beta)]
        if "threshold" in learned:
            params["threshold"] = [_plus(_times(dm, d_thr), dt)]
        if "graded_spikes_factor" in learned:
            params["graded_spikes_factor"] = [None]
        return _tidy(ElementwiseDerivatives([[_times(dm, j_m)]], [dm], params))


# ----------------------------------------------------------------------------- Synaptic
@register_adapter(snn.Synaptic, examples=_synaptic_examples())
class SynapticAdapter(_SnnTorchElementwise):
    """``snn.Synaptic``: ``syn_t = clamp(α) syn_{t-1} + a_t``, ``mem_t = clamp(β) mem_{t-1} +
    syn_t`` minus the reset."""

    state_names = ("syn", "mem")
    param_names = ("alpha", "beta", "threshold", "graded_spikes_factor")

    def factorised(self, module, variant):
        return (
            _is_scalar(module.alpha)
            and _is_scalar(module.beta)
            and _reset_factorises(module, variant)
        )

    def _cell(self, module, current, state, params, *, cut_reset):
        syn_prev, mem = state
        alpha = _value(module, params, "alpha")
        beta = _value(module, params, "beta")
        threshold = _value(module, params, "threshold")
        r = _reset_signal(mem, threshold)
        syn = alpha.clamp(0, 1) * syn_prev + current
        m = beta.clamp(0, 1) * mem + syn
        mechanism = _mechanism(module)
        if mechanism == SUBTRACT:
            m = m - r * threshold
        elif mechanism == ZERO:
            m = m - m * r
        return syn, self._delayed_reset(module, m, r, threshold, params, cut_reset=cut_reset)

    def derivatives(self, module, step, variant, current):
        syn_prev, mem = step.prev
        alpha, beta = module.alpha.detach(), module.beta.detach()
        threshold = module.threshold.detach()
        a_decay, b_decay = alpha.clamp(0, 1), beta.clamp(0, 1)
        r = _reset_signal(mem, threshold)
        mechanism = _mechanism(module)
        learned = self.neuron_parameters(module)
        keep: Partial = 1 - r if mechanism == ZERO else 1.0
        if _delayed(module):
            dm, dt = 1.0, None
        else:
            m = b_decay * mem + a_decay * syn_prev + current()
            m = m - r * threshold if mechanism == SUBTRACT else m - m * r
            dm, dt = self._after_spike(module, m, r, threshold, variant)
        dmk = _times(dm, keep)
        if self.factorised(module, variant):
            a_f, b_f = float(a_decay), float(b_decay)
            state: list[list[Partial]] = [[a_f, None], [a_f, b_f]]
            cur: list[Partial] = [1.0, 1.0]
        else:
            state = [[a_decay, None], [_times(dmk, a_decay), _times(dmk, b_decay)]]
            cur = [1.0, dmk]
        params: dict[str, list[Partial]] = {}
        if "alpha" in learned:
            d_syn = _clamp_mask(alpha) * syn_prev
            params["alpha"] = [d_syn, _times(dmk, d_syn)]
        if "beta" in learned:
            params["beta"] = [None, _times(dmk, _clamp_mask(beta) * mem)]
        if "threshold" in learned:
            d_thr = -r if mechanism == SUBTRACT else None
            params["threshold"] = [None, _plus(_times(dm, d_thr), dt)]
        if "graded_spikes_factor" in learned:
            params["graded_spikes_factor"] = [None, None]
        return _tidy(ElementwiseDerivatives(state, cur, params))


# ----------------------------------------------------------------------------- Lapicque
@register_adapter(snn.Lapicque, examples=_lapicque_examples())
class LapicqueAdapter(_SnnTorchElementwise):
    """``snn.Lapicque`` as snnTorch computes it (forward Euler of an RC circuit):
    ``mem_t = (1 - Δt/(RC)) mem_{t-1} + (Δt/C) a_t`` minus the reset."""

    state_names = ("mem",)
    param_names = ("threshold", "graded_spikes_factor")

    def problems(self, module, variant):
        out = super().problems(module, variant)
        beta = module.beta
        if isinstance(beta, nn.Parameter):
            out.append(
                (
                    "learn_beta=True: snnTorch's Lapicque never uses beta in its update (it uses "
                    "R and C), so beta would never train.",
                    "build it with R and C (Lapicque(R=..., C=...)) and learn_beta=False, or use "
                    "snn.Leaky(beta=..., learn_beta=True).",
                )
            )
        elif isinstance(beta, Tensor) and beta.dim() == 0:
            b = float(beta)
            out.append(
                (
                    f"it was built from beta={b:g}, but snnTorch 1.0 then decays the membrane by "
                    f"1 + ln(beta) = {1 - float(module.time_step / (module.R * module.C)):g} per "
                    f"step and scales the input by -ln(beta), not by beta (a known snnTorch bug): "
                    "it would train a different neuron from the one asked for.",
                    "use snn.Leaky(beta=...) for a decay of exactly beta, or build "
                    "Lapicque(R=..., C=..., time_step=...) whose decay 1 - time_step/(R*C) is "
                    "what it computes.",
                )
            )
        return out

    def _decay_gain(self, module) -> tuple[Tensor, Tensor]:
        r_, c_, dt = module.R, module.C, module.time_step
        return 1 - (dt / (r_ * c_)), r_ * (1 / (r_ * c_)) * dt

    def factorised(self, module, variant):
        decay, gain = self._decay_gain(module)
        return _is_scalar(decay) and _is_scalar(gain) and _mechanism(module) != ZERO

    def fusable(self, module, variant):
        # The reset is always delayed (detached): a_t and mem_{t-1} act only through mem_t.
        return self.factorised(module, variant)

    def _cell(self, module, current, state, params, *, cut_reset):
        (mem,) = state
        threshold = _value(module, params, "threshold")
        r = _reset_signal(mem, threshold)
        base = (
            current * module.R * (1 / (module.R * module.C)) * module.time_step
            + (1 - (module.time_step / (module.R * module.C))) * mem
        )
        mechanism = _mechanism(module)
        if mechanism == SUBTRACT:
            return (base - r * threshold,)
        if mechanism == ZERO:
            return (base - r * base,)
        return (base,)

    def derivatives(self, module, step, variant, current):
        (mem,) = step.prev
        threshold = module.threshold.detach()
        r = _reset_signal(mem, threshold)
        decay, gain = self._decay_gain(module)
        mechanism = _mechanism(module)
        if self.factorised(module, variant):
            j: Partial = float(decay)
            c: Partial = float(gain)
        else:
            keep = 1 - r if mechanism == ZERO else 1.0
            j, c = keep * decay.to(mem.dtype), keep * gain.to(mem.dtype)
        params: dict[str, list[Partial]] = {}
        learned = self.neuron_parameters(module)
        if "threshold" in learned:
            params["threshold"] = [-r if mechanism == SUBTRACT else None]
        if "graded_spikes_factor" in learned:
            params["graded_spikes_factor"] = [None]
        return _tidy(ElementwiseDerivatives([[j]], [c], params))


# ----------------------------------------------------------------------------- Alpha
@register_adapter(snn.Alpha, examples=_alpha_examples())
class AlphaAdapter(_SnnTorchElementwise):
    """``snn.Alpha``: excitatory and inhibitory currents, ``mem_t = τ (syn_exc + syn_inh)``
    with ``τ = ln α / (ln β − ln α) + 1``. Derivatives by autograd of :meth:`cell`."""

    state_names = ("syn_exc", "syn_inh", "mem")
    param_names = ("alpha", "beta", "threshold", "graded_spikes_factor")

    def factorised(self, module, variant):
        return _mechanism(module) == NONE and _is_scalar(module.alpha) and _is_scalar(module.beta)

    def _cell(self, module, current, state, params, *, cut_reset):
        exc_prev, inh_prev, mem = state
        alpha = _value(module, params, "alpha").clamp(0, 1)
        beta = _value(module, params, "beta").clamp(0, 1)
        threshold = _value(module, params, "threshold")
        r = _reset_signal(mem, threshold)
        exc = alpha * exc_prev + current
        inh = beta * inh_prev - current
        tau = torch.log(alpha) / (torch.log(beta) - torch.log(alpha)) + 1
        m = tau * (exc + inh)
        mechanism = _mechanism(module)
        if mechanism == SUBTRACT:
            return exc - threshold * r, inh - inh * r, m + inh_prev * r
        if mechanism == ZERO:
            return exc - exc * r, inh - inh * r, m - m * r
        return exc, inh, m


# ----------------------------------------------------------------------------- recurrent
class _RecurrentMixin(_SnnTorchElementwise):
    """RLeaky and RSynaptic: the previous spikes drive ``recurrent`` (a Linear, all-to-all, or
    an elementwise ``V``, one-to-one)."""

    spike_states = (0,)

    def problems(self, module, variant):
        out = super().problems(module, variant)
        if isinstance(getattr(module, "recurrent", None), nn.Conv2d):
            out.append(
                (
                    "its recurrent connection is a Conv2d; exact OSTL for convolutional "
                    "recurrence needs a full Jacobian over every pixel, which is not implemented.",
                    "use linear_features=... (all-to-all Linear) or all_to_all=False (one-to-one), "
                    "or an snn.Leaky after your own Conv2d.",
                )
            )
        return out

    def _all_to_all(self, module) -> bool:
        return isinstance(getattr(module, "recurrent", None), nn.Linear)

    def internal_synapses(self, module):
        if not self._all_to_all(module):
            return []
        bias = module.recurrent.bias
        return [InternalSynapse("recurrent.weight", 0, None if bias is None else "recurrent.bias")]

    def neuron_parameters(self, module):
        out = super().neuron_parameters(module)
        v = getattr(module, "V", None)
        if not self._all_to_all(module) and isinstance(v, nn.Parameter):
            out["V"] = v
        return out

    def _recurrent_in(self, module, spk: Tensor, params: dict, *, cut: bool) -> Tensor | float:
        """The one-to-one recurrent term ``V * spk_{t-1}`` (0 for all-to-all: outside the cell)."""
        if self._all_to_all(module):
            return 0.0
        spk = spk.detach() if cut else spk
        return spk * _value(module, params, "V")

    def _total_current(self, module, step: StepRecord) -> Tensor:
        if not self._all_to_all(module):
            return step.current
        rec = module.recurrent
        return step.current + F.linear(step.prev[0], rec.weight.detach(), _detached(rec.bias))

    def derivatives(self, module, step, variant, current):
        params = dict(self.neuron_parameters(module))
        cut_reset = self._cuts_own_reset(module, variant)
        cut_rec = self._cuts_recurrent(module, variant)
        return _tidy(
            elementwise_derivatives(
                lambda a, s, p: self._rcell(module, a, s, p, cut_reset=cut_reset, cut_rec=cut_rec),
                self._total_current(module, step),
                step.prev,
                params,
            )
        )

    def _cell(self, module, current, state, params, *, cut_reset):
        return self._rcell(module, current, state, params, cut_reset=cut_reset, cut_rec=False)

    def _rcell(self, module, current, state, params, *, cut_reset, cut_rec):
        raise NotImplementedError


def _detached(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.detach()


@register_adapter(snn.RLeaky, examples=_rleaky_examples())
class RLeakyAdapter(_RecurrentMixin):
    """``snn.RLeaky``: Leaky with ``recurrent(spk_{t-1})`` added to the current; state
    ``(spk, mem)`` where ``spk`` (state 0) is the layer's own spikes."""

    state_names = ("spk", "mem")

    def _rcell(self, module, current, state, params, *, cut_reset, cut_rec):
        spk_prev, mem = state
        beta = _value(module, params, "beta")
        threshold = _value(module, params, "threshold")
        r = _reset_signal(mem, threshold)
        base = (
            beta.clamp(0, 1) * mem
            + current
            + self._recurrent_in(module, spk_prev, params, cut=cut_rec)
        )
        mechanism = _mechanism(module)
        if mechanism == SUBTRACT:
            m = base - r * threshold
        elif mechanism == ZERO:
            m = base - r * base
        else:
            m = base
        gsf = _value(module, params, "graded_spikes_factor")
        spk = _spike(module, m - threshold) * gsf
        if not _delayed(module):
            q = spk / gsf
            do_reset = (q.detach() if cut_reset else q) - r
            m = m - do_reset * threshold if mechanism == SUBTRACT else m - do_reset * m
        return spk, m


@register_adapter(snn.RSynaptic, examples=_rsynaptic_examples())
class RSynapticAdapter(_RecurrentMixin):
    """``snn.RSynaptic``: Synaptic with ``recurrent(spk_{t-1})`` added to the synaptic current;
    state ``(spk, syn, mem)``."""

    state_names = ("spk", "syn", "mem")
    param_names = ("alpha", "beta", "threshold", "graded_spikes_factor")

    def problems(self, module, variant):
        out = super().problems(module, variant)
        if not module.reset_delay and _mechanism(module) != NONE:
            out.append(
                (
                    "reset_delay=False is broken in snnTorch 1.0.0's RSynaptic: it reads the spike "
                    "argument instead of the new spikes (a TypeError when the state lives on the "
                    "module) and never applies the reset to the membrane it keeps.",
                    "use reset_delay=True (the default), or snn.RLeaky(reset_delay=False).",
                )
            )
        return out

    def _rcell(self, module, current, state, params, *, cut_reset, cut_rec):
        spk_prev, syn_prev, mem = state
        alpha = _value(module, params, "alpha")
        beta = _value(module, params, "beta")
        threshold = _value(module, params, "threshold")
        r = _reset_signal(mem, threshold)
        syn = (
            alpha.clamp(0, 1) * syn_prev
            + current
            + self._recurrent_in(module, spk_prev, params, cut=cut_rec)
        )
        m = beta.clamp(0, 1) * mem + syn
        mechanism = _mechanism(module)
        if mechanism == SUBTRACT:
            m = m - r * threshold
        elif mechanism == ZERO:
            m = m - m * r
        gsf = _value(module, params, "graded_spikes_factor")
        spk = _spike(module, m - threshold) * gsf
        return spk, syn, m


# ----------------------------------------------------------------------------- SLSTM
@register_adapter(snn.SLSTM, examples=_slstm_examples())
class SLSTMAdapter(_SnnTorchState, DenseAdapter):
    """``snn.SLSTM``: an ``nn.LSTMCell`` whose hidden output is the membrane (``mem = h``,
    ``syn = c``), with spikes fired from ``mem``. Generic OSTL with the full cell Jacobian."""

    state_names = ("syn", "mem")
    variants = ("ostl",)

    def problems(self, module, variant):
        out = super().problems(module, variant)
        if module.input_size != module.hidden_size:
            out.append(
                (
                    f"input_size={module.input_size} differs from hidden_size="
                    f"{module.hidden_size}: snnTorch 1.0.0's SLSTM compares its state with the "
                    "input's shape and replaces it by zeros at every step, so it has no memory.",
                    "use input_size == hidden_size (put an nn.Linear in front to change the "
                    "width), or torch.nn.LSTMCell with your own spike function.",
                )
            )
        return out

    def trained_parameters(self, module):
        return {name: p for name, p in module.named_parameters() if p.requires_grad}

    def step(self, module, inputs, state, params):
        syn_prev, mem_prev = state
        cell = module.lstm_cell

        def get(name: str) -> Tensor | None:
            full = f"lstm_cell.{name}"
            return params[full] if full in params else getattr(cell, name)

        threshold = params.get("threshold", module.threshold)
        r = _reset_signal(mem_prev, threshold)
        gates = F.linear(inputs, get("weight_ih"), get("bias_ih")) + F.linear(
            mem_prev, get("weight_hh"), get("bias_hh")
        )
        i, f, g, o = gates.chunk(4, dim=1)
        syn = torch.sigmoid(f) * syn_prev + torch.sigmoid(i) * torch.tanh(g)
        mem = torch.sigmoid(o) * torch.tanh(syn)
        mechanism = _mechanism(module)
        if mechanism == SUBTRACT:
            mem = mem - r * threshold
        elif mechanism == ZERO:
            mem = mem - mem * r
        return syn, mem


# ----------------------------------------------------------------------------- refusals
_WHOLE_SEQUENCE_FIX = (
    "use snn.Leaky called once per time step (for example in a loop inside your forward)."
)
register_refusal(
    snn.LeakyParallel,
    "it runs the whole sequence in one call (an nn.RNN inside), so there is no step at which "
    "to carry eligibility traces forward.",
    _WHOLE_SEQUENCE_FIX,
)
register_refusal(
    snn.StateLeaky,
    "it computes the whole sequence at once with a causal convolution; there is no step at "
    "which to carry eligibility traces forward.",
    _WHOLE_SEQUENCE_FIX,
)
register_refusal(
    snn.LinearLeaky,
    "it computes the whole sequence at once (StateLeaky dynamics); there is no step at which "
    "to carry eligibility traces forward.",
    "use nn.Linear followed by snn.Leaky, called once per time step.",
)
register_refusal(
    snn.SConv2dLSTM,
    "its state is mixed by convolutions, so exact OSTL needs a full Jacobian over every pixel "
    "and channel, which is not implemented.",
    "use snn.SLSTM on flattened features, or a Conv2d followed by snn.Leaky.",
)
register_refusal(
    snn.AssociativeLeaky,
    "its associative state mixes neurons and no adapter exists for it.",
    "use snn.Leaky or snn.RLeaky, or register an adapter (see 'Writing an adapter').",
)
