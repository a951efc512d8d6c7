"""Adapters of Norse 1.1 cells (imported only when Norse is).

Norse cells are called once per step with an explicit state, ``z, s = cell(x, s)`` (``s=None``
at the start), either by the user's own module or by ``norse.torch.SequentialState``. Each
adapter reads that state argument, swaps in the learner's state and reads the new state from the
returned ``(output, state)`` pair. What the engine sees:

============================  =====================  ==============================  ============
cell                          state                  synapses                        trace form
============================  =====================  ==============================  ============
``LIFCell``                   (v, i)                 Linear before it                per-synapse
``LIFBoxCell``                (v,)                   Linear before it                per-synapse
``IAFCell``                   (v,)                   Linear before it                per-synapse
``LSNNCell``                  (v, i, b)              Linear before it                per-synapse
``LIFAdExCell``               (v, i, a)              Linear before it                per-synapse
``LICell``                    (v, i)                 Linear/Conv before it           presynaptic
``LILinearCell``              (v, i)                 ``input_weights``               presynaptic
``LIFRecurrentCell``          (z, v, i)              ``input_weights``,              full Jacobian
                                                     ``recurrent_weights`` (by z)
``LSNNRecurrentCell``         (z, v, i, b)           same                            full Jacobian
============================  =====================  ==============================  ============

Why these forms (SPEC §3, §4): in every feed-forward spiking cell Norse's reset
``v = (1 - z) v + z v_reset`` is a differentiable gate on the step's own spike, so ``J_t`` depends
on the neuron and the step and the synapses need per-synapse traces. The leaky integrator has no
reset and scalar decays, so its traces factorise (two presynaptic traces, one per state). The
recurrent cells keep the previous spikes ``z`` as state tensor 0; their ``recurrent_weights`` are
an internal synapse driven by it, which makes ``J_t`` a full matrix (their reset is detached, as
in Norse). Their variants ``"ostl-no-h"`` and ``"eprop"`` both cut ``z_{t-1}`` inside the cell
(the only place it acts), which leaves per-synapse traces. For the feed-forward cells
``"ostl-no-h"`` is ``"ostl"`` (no recurrent weights) and ``"eprop"`` detaches the step's own spike
wherever the state update uses it (the reset gate; the threshold adaptation of ``LSNNCell`` and
``LIFAdExCell``), the analogue of the SNU's detached ``y_{t-1}``.

``LSNNCell`` lets its current in *after* the spike decision (``z_t`` depends on ``s_{t-1}`` only),
so an error at step t never reaches a layer below an LSNN layer within the step: OSTL (exactly
like its SPEC §2 oracle) gives such lower layers no gradient. Put LSNN layers at the bottom.

Norse's neuron parameters are named tuples (``p``), not module parameters: the synapses are what
gets trained. An ``nn.Parameter`` placed in a field of ``p`` (``LIFParameters(tau_mem_inv=
nn.Parameter(...))``) is trained too, as an elementwise neuron parameter named ``p.<field>``
(scalar or one value per neuron); remember to give it to the optimizer, since Norse does not
register it on the module. The surrogate's ``alpha`` is a setting, not a trained parameter.

Facts of Norse 1.1.0 that the adapters rely on, pinned by the tests: current jumps first, then
the voltage integrates (``dt=1e-3`` gives decays 0.9 and 0.8); ``SuperSpike`` ignores its
``alpha`` (surrogate gradient ``1 / (|x| + 1)^2``); ``method="adjoint"`` cannot be trained (it
raises in ``LIFCell`` and replaces autograd by a custom backward in ``LSNNCell(adjoint=True)``),
so it is refused. Norse's sequence modules (``LIF``, ``LSNN``, ... over ``[T, B, ...]``) are
refused with the name of the cell to call per step instead, and so are Norse's stateful cells
without an adapter (``LIFExCell``, ``IzhikevichCell``, ...): they hold no parameters, so the
generic validation would otherwise let them through untraced.

The learner starts a sequence from a ``[B, *N]`` state in the input's dtype. Norse itself starts
from scalars of ``p`` (float32 unless ``p`` holds float64 tensors); for a float64 model with the
default float32 ``p`` this changes nothing except ``LIFAdExCell``'s exponential on the first step
(about 1e-10 relative in the gradients against BPTT from ``state=None``).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import norse.torch as nt
import torch
from norse.torch.functional.iaf import IAFFeedForwardState, iaf_feed_forward_step
from norse.torch.functional.leaky_integrator import LIState, li_feed_forward_step
from norse.torch.functional.lif import (
    LIFFeedForwardState,
    LIFParameters,
    LIFState,
    lif_feed_forward_step,
    lif_step,
)
from norse.torch.functional.lif_adex import (
    LIFAdExFeedForwardState,
    LIFAdExParameters,
    lif_adex_feed_forward_step,
)
from norse.torch.functional.lif_box import (
    LIFBoxFeedForwardState,
    LIFBoxParameters,
    lif_box_feed_forward_step,
)
from norse.torch.functional.lsnn import (
    LSNNFeedForwardState,
    LSNNParameters,
    LSNNState,
    lsnn_feed_forward_step,
    lsnn_step,
)
from norse.torch.functional.reset import reset_subtract
from norse.torch.functional.threshold import threshold
from norse.torch.module.snn import SNN, SNNCell, SNNRecurrent, SNNRecurrentCell
from torch import Tensor, nn

from snn_ostl.adapter import ElementwiseAdapter, InternalSynapse, StepRecord
from snn_ostl.derivatives import ElementwiseDerivatives, Partial, elementwise_derivatives
from snn_ostl.registry import register_adapter, register_refusal, registered

__all__ = [
    "IAFCellAdapter",
    "LICellAdapter",
    "LIFAdExCellAdapter",
    "LIFBoxCellAdapter",
    "LIFCellAdapter",
    "LIFRecurrentCellAdapter",
    "LILinearCellAdapter",
    "LSNNCellAdapter",
    "LSNNRecurrentCellAdapter",
    "surrogate_derivative",
]

_DT = torch.float64

#: Fields of Norse parameter tuples that are settings, never trained.
_SETTINGS = ("method", "alpha", "reset_method")

#: Threshold methods whose surrogate derivative :func:`surrogate_derivative` writes out.
_SURROGATES = ("super", "heaviside", "triangle", "tanh", "circ", "heavi_erfc")


def surrogate_derivative(x: Tensor, method: str, alpha: Any) -> Tensor | None:
    """The derivative Norse 1.1.0's ``threshold(x, method, alpha)`` backpropagates.

    Args:
        x: The argument of the threshold (voltage minus threshold).
        method: ``p.method``.
        alpha: ``p.alpha``.

    Returns:
        The derivative, shaped like ``x``; None for ``"heaviside"`` (no gradient at all).

    Note:
        ``"super"`` (SuperSpike) ignores ``alpha`` in Norse 1.1.0: its gradient is
        ``1 / (|x| + 1)^2`` whatever ``alpha`` says (Norse's main branch changes this).
    """
    if method == "super":
        return 1.0 / (torch.abs(x) + 1.0).pow(2)
    if method == "heaviside":
        return None
    if method == "triangle":
        return alpha * torch.relu(1 - x.abs())
    if method == "tanh":
        return 1 - (x * alpha).tanh().pow(2)
    if method == "circ":
        root = (alpha**2 + x.pow(2)).sqrt()
        return (-(x.pow(2) / (2 * root.pow(3))) + 1 / (2 * root)) * 2 * alpha
    if method == "heavi_erfc":
        # Norse divides by sqrt(pi) computed in the default dtype (float32): replicate it
        return 2 * torch.exp(-(alpha * x).pow(2)) / torch.as_tensor(math.pi).sqrt()
    raise ValueError(f"unknown Norse threshold method {method!r}")


def _scalar(value: Any) -> bool:
    return not isinstance(value, Tensor) or value.numel() == 1


def _detached(value: Any) -> Any:
    return value.detach() if isinstance(value, Tensor) else value


def _coef(value: Any, like: Tensor) -> Tensor | float:
    """A coefficient Norse computed in the precision of ``p``, in the state's dtype."""
    if isinstance(value, Tensor):
        return float(value) if value.numel() == 1 else value.detach().to(like.dtype)
    return float(value)


# ---------------------------------------------------------------------------- e-prop steps
# Norse's feed-forward steps with every in-step use of the step's own spike z_t detached (the
# reset gate, and the adaptation of LSNN/AdEx): the e-prop variant, "no path through the layer's
# own spikes". Copies of Norse 1.1.0's code apart from ``zc``; the tests check that their values
# equal Norse's bit for bit.
def _lif_eprop_step(input_tensor, state, p, dt=0.001):
    i_new = state.i + input_tensor
    dv = dt * p.tau_mem_inv * ((p.v_leak - state.v) + i_new)
    v_decayed = state.v + dv
    di = -dt * p.tau_syn_inv * i_new
    i_decayed = i_new + di
    z_new = threshold(v_decayed - p.v_th, p.method, p.alpha)
    zc = z_new.detach()
    v_new = (1 - zc) * v_decayed + zc * p.v_reset
    return z_new, LIFFeedForwardState(v=v_new, i=i_decayed)


def _lif_box_eprop_step(input_tensor, state, p, dt=0.001):
    dv = dt * p.tau_mem_inv * (input_tensor + p.v_leak - state.v)
    v_decayed = state.v + dv
    z_new = threshold(v_decayed - p.v_th, p.method, p.alpha)
    v_new = p.reset_method(z_new.detach(), v_decayed, p.v_reset, p.v_th)
    return z_new, LIFBoxFeedForwardState(v=v_new)


def _iaf_eprop_step(input_spikes, state, p, dt=0.001):
    v_new = state.v + input_spikes
    z_new = threshold(v_new - p.v_th, p.method, p.alpha)
    zc = z_new.detach()
    v_new = (1 - zc) * v_new + zc * p.v_reset
    return z_new, IAFFeedForwardState(v=v_new)


def _lsnn_eprop_step(input_tensor, state, p, dt=0.001):
    dv = dt * p.tau_mem_inv * ((p.v_leak - state.v) + state.i)
    v_decayed = state.v + dv
    di = -dt * p.tau_syn_inv * state.i
    i_decayed = state.i + di
    db = dt * p.tau_adapt_inv * (p.v_th - state.b)
    b_decayed = state.b + db
    z_new = threshold(v_decayed - b_decayed, p.method, p.alpha)
    zc = z_new.detach()
    v_new = (1 - zc) * v_decayed + zc * p.v_reset
    b_new = b_decayed + zc * p.beta
    i_new = i_decayed + input_tensor
    return z_new, LSNNFeedForwardState(v=v_new, i=i_new, b=b_new)


def _lif_adex_eprop_step(input_spikes, state, p, dt=0.001):
    i_jump = state.i + input_spikes
    dv_leak = p.v_leak - state.v
    dv_exp = p.delta_T * torch.exp((state.v - p.v_th) / p.delta_T)
    dv = dt * p.tau_mem_inv * (dv_leak + dv_exp + i_jump - state.a)
    v_decayed = state.v + dv
    di = -dt * p.tau_syn_inv * i_jump
    i_decayed = i_jump + di
    da = dt * p.tau_ada_inv * (p.adaptation_current * (state.v - p.v_leak) - state.a)
    a_decayed = state.a + da
    z_new = threshold(v_decayed - p.v_th, p.method, p.alpha)
    zc = z_new.detach()
    v_new = (1 - zc) * v_decayed + zc * p.v_reset
    a_new = a_decayed + zc * p.adaptation_spike
    return z_new, LIFAdExFeedForwardState(v_new, i_decayed, a_new)


class NorseCellAdapter(ElementwiseAdapter):
    """What every Norse cell adapter shares.

    Class attributes of the concrete adapters:
        state_type: The Norse state named tuple.
        step_fn: The Norse step function the module must use (anything else, e.g. the adjoint
            step, is refused).
        initial: Per state tensor, the field of ``p`` it starts from (None: zero).
        spiking: Whether the module's output is spikes (False for the leaky integrators).
        recurrent: Whether the cell has ``input_weights``/``recurrent_weights`` (z is state 0).
        frozen: Fields of ``p`` that must not be ``nn.Parameter``\\ s, with the reason.
        eprop_step: The step with the own spike detached inside the update (feed-forward
            spiking cells), used by the ``"eprop"`` variant; None where nothing needs cutting.

    Variants: ``"ostl-no-h"`` equals ``"ostl"`` for feed-forward cells (no recurrent weights to
    leave out); ``"eprop"`` detaches every in-step use of the step's own spike z_t (the reset
    gate, and the threshold adaptation of LSNN / AdEx), the analogue of the SNU's detached
    y_{t-1}; the leaky integrators have no spikes, so all three variants coincide for them.
    """

    framework = "norse"
    variants = ("ostl", "ostl-no-h", "eprop")
    eprop_step: ClassVar[Callable[..., Any] | None] = None
    state_type: ClassVar[type]
    step_fn: ClassVar[Callable[..., Any]]
    initial: ClassVar[tuple[str | None, ...]]
    spiking: ClassVar[bool] = True
    recurrent: ClassVar[bool] = False
    frozen: ClassVar[dict[str, str]] = {}

    # ------------------------------------------------------------------ validation
    def _uses_step(self, module: nn.Module) -> bool:
        return getattr(module, "activation", type(self).step_fn) is type(self).step_fn

    def problems(self, module: nn.Module, variant: str) -> list[tuple[str, str]]:
        out = super().problems(module, variant)
        p = module.p
        if getattr(p, "method", None) == "adjoint" or not self._uses_step(module):
            out.append(
                (
                    "it runs Norse's adjoint mode (method='adjoint' / adjoint=True), which is "
                    "broken in Norse 1.1 (LIF cells raise at the first step, LSNN cells replace "
                    "autograd by their own backward), so its gradient cannot be matched.",
                    "build the cell with a surrogate method (the default method='super') and "
                    "adjoint=False.",
                )
            )
        for name, why in self.frozen.items():
            if isinstance(getattr(p, name, None), nn.Parameter):
                out.append(
                    (
                        f"p.{name} is an nn.Parameter, but {why}",
                        f"keep p.{name} a plain tensor (train the other fields of p).",
                    )
                )
        if isinstance(getattr(p, "alpha", None), nn.Parameter):
            out.append(
                (
                    "p.alpha is an nn.Parameter, but it only shapes the surrogate gradient and "
                    "never receives a gradient (SuperSpike even ignores it in Norse 1.1).",
                    "pass alpha as a plain tensor or float.",
                )
            )
        return out

    # ------------------------------------------------------------------ state plumbing
    def current(self, module, args, kwargs):
        return args[0] if args else kwargs["input_tensor"]

    def _shape(self, module: nn.Module, x: Tensor) -> tuple[int, ...]:
        if self.recurrent:
            return (*x.shape[:-1], int(module.hidden_size))
        return tuple(x.shape)

    def _normalise(self, module: nn.Module, x: Tensor, state: Any) -> tuple[Tensor, ...]:
        """Broadcast every state tensor to [B, *N] in one floating dtype (Norse keeps scalars)."""
        shape = self._shape(module, x)
        tensors = [torch.as_tensor(s, device=x.device) for s in state]
        dtype = x.dtype
        for s in tensors:
            dtype = torch.promote_types(dtype, s.dtype)
        if not dtype.is_floating_point:
            dtype = torch.get_default_dtype()
        out = []
        for s in tensors:
            if s.is_sparse:
                s = s.to_dense()
            s = s.to(dtype)
            out.append(s if tuple(s.shape) == shape else s.expand(shape))
        return tuple(out)

    def _state_arg(self, args: tuple, kwargs: dict) -> Any:
        return args[1] if len(args) > 1 else kwargs.get("state")

    def read_state(self, module, args, kwargs):
        state = self._state_arg(args, kwargs)
        if state is None:
            return None
        return self._normalise(module, self.current(module, args, kwargs), state)

    def write_state(self, module, args, kwargs, state):
        state = self.state_type(*state)
        if len(args) > 1:
            return (args[0], state, *args[2:]), kwargs
        return args, {**kwargs, "state": state}

    def initial_state(self, module, current):
        p = module.p
        values = [
            torch.zeros((), dtype=current.dtype, device=current.device)
            if field is None
            else torch.as_tensor(getattr(p, field), device=current.device).detach()
            for field in self.initial
        ]
        zeros = torch.zeros(
            self._shape(module, current), dtype=current.dtype, device=current.device
        )
        return self._normalise(module, current, [zeros + v.to(current.dtype) for v in values])

    def new_state(self, module, args, kwargs, output):
        return tuple(output[1])

    def spikes(self, output):
        return output[0]

    # ------------------------------------------------------------------ the neuron
    def neuron_parameters(self, module: nn.Module) -> dict[str, nn.Parameter]:
        p = module.p
        return {
            f"p.{name}": value
            for name, value in p._asdict().items()
            if isinstance(value, nn.Parameter) and name not in _SETTINGS
        }

    def _params(self, module: nn.Module, params: dict[str, Tensor]) -> Any:
        if not params:
            return module.p
        return module.p._replace(**{key[2:]: value for key, value in params.items()})

    @contextlib.contextmanager
    def variant_forward(self, module: nn.Module, variant: str) -> Iterator[None]:
        if variant not in self.variants:
            raise NotImplementedError(f"{type(self).__name__} does not implement {variant!r}")
        cut = self._cut(variant)
        if cut is None:
            yield
            return
        had = "activation" in module.__dict__
        original = module.activation
        module.activation = cut(original)
        try:
            yield
        finally:
            if had:
                module.activation = original
            else:
                del module.activation

    def _cut(self, variant: str) -> Callable[[Callable[..., Any]], Callable[..., Any]] | None:
        """How ``variant`` changes the module's activation (None: not at all)."""
        step = type(self).eprop_step
        if variant != "eprop" or step is None:
            return None
        return lambda original: step

    def derivatives(
        self, module: nn.Module, step: StepRecord, variant: str, current: Callable[[], Tensor]
    ) -> ElementwiseDerivatives:
        """Autograd of :meth:`cell` in the given variant (the generic reference)."""
        params = dict(self.neuron_parameters(module))
        return elementwise_derivatives(
            lambda a, s, ph: self.cell(module, a, s, ph, variant), current(), step.prev, params
        )

    def cell(self, module, current, state, params, variant: str = "ostl"):
        """One step of the neuron from its summed current (``variant`` as in the forward)."""
        p = self._params(module, params)
        st = self.state_type(*state)
        if self.recurrent:
            # The engine passes the summed current W x + H z; feed it through identity weights
            # so that Norse's own step (and its detached reset) is what gets differentiated.
            n = current.shape[-1]
            eye = torch.eye(n, dtype=current.dtype, device=current.device)
            _, new = type(self).step_fn(current, st, eye, torch.zeros_like(eye), p, module.dt)
        else:
            step = type(self).eprop_step if variant == "eprop" else None
            _, new = (step or type(self).step_fn)(current, st, p, module.dt)
        return tuple(new)


class _RecurrentMixin:
    """Norse's recurrent cells: ``input_weights`` on x_t, ``recurrent_weights`` on z_{t-1}."""

    recurrent = True
    spike_states = (0,)

    def internal_synapses(self, module):
        return [InternalSynapse("input_weights", "input"), InternalSynapse("recurrent_weights", 0)]

    def _cut(self, variant):
        if variant == "ostl":
            return None

        # Both variants cut z_{t-1} inside the cell: it acts only through recurrent_weights, and
        # Norse already detaches the reset and the adaptation of these cells.
        def wrap(original):
            def cut(x, state, *rest):
                return original(x, state._replace(z=state.z.detach()), *rest)

            return cut

        return wrap


# ---------------------------------------------------------------------------- examples
# Small float64 modules for the tests and the docs table. Norse keeps p in float32 by default;
# a float64 model then computes parts of its first step from float32 scalars (its initial
# voltage is p.v_leak), which only matters for the exponential of LIFAdExCell, so some examples
# carry float64 parameters (_f64).
_N = 5  # neurons of the examples with per-neuron settings
_I = 4  # inputs of the examples with their own input weights


def _per_neuron(start: float, stop: float) -> Tensor:
    return torch.linspace(start, stop, _N, dtype=_DT)


def _f64(p: Any) -> Any:
    """A Norse parameter tuple with every tensor field in float64."""
    return p._replace(
        **{
            k: torch.as_tensor(v, dtype=_DT)
            for k, v in p._asdict().items()
            if isinstance(v, (Tensor, int, float)) and not isinstance(v, bool)
        }
    )


def _weights(rows: int, cols: int, scale: float = 1.0) -> nn.Parameter:
    return nn.Parameter(torch.randn(rows, cols, dtype=_DT) * scale)


_LIF_EXAMPLES = {
    "default": lambda: nt.LIFCell(),
    "triangle surrogate, per-neuron threshold": lambda: nt.LIFCell(
        p=LIFParameters(method="triangle", alpha=torch.as_tensor(0.3), v_th=_per_neuron(0.8, 1.2))
    ),
    "trained tau_mem_inv and v_th": lambda: nt.LIFCell(
        p=LIFParameters(
            tau_mem_inv=nn.Parameter(torch.full((_N,), 100.0, dtype=_DT)),
            v_th=nn.Parameter(torch.tensor(1.0, dtype=_DT)),
        )
    ),
}


# ---------------------------------------------------------------------------- LIF
@register_adapter(nt.LIFCell, examples=_LIF_EXAMPLES)
class LIFCellAdapter(NorseCellAdapter):
    """``LIFCell``: i += a; v integrates i; z = Θ(v - v_th); v = (1-z) v + z v_reset (gate kept).

    Partials are written out (the hot path) for every surrogate of Norse 1.1; the tests check
    them against autograd of :meth:`cell`.
    """

    state_names = ("v", "i")
    state_type = LIFFeedForwardState
    step_fn = staticmethod(lif_feed_forward_step)
    eprop_step = staticmethod(_lif_eprop_step)
    initial = ("v_leak", None)

    def derivatives(
        self, module: nn.Module, step: StepRecord, variant: str, current: Callable[[], Tensor]
    ) -> ElementwiseDerivatives:
        p, dt = module.p, module.dt
        if p.method not in _SURROGATES:
            return super().derivatives(module, step, variant, current)
        v, i = step.prev
        v_leak, v_th, v_reset = _detached(p.v_leak), _detached(p.v_th), _detached(p.v_reset)
        # the forward, as Norse computes it (its coefficients in the precision of p)
        i_new = i + current()
        dm = _coef(dt * _detached(p.tau_mem_inv), v)
        drive = (v_leak - v) + i_new
        v_dec = v + dm * drive
        keep = 1.0 + _coef(-dt * _detached(p.tau_syn_inv), v)  # ∂i_t/∂i_new
        x = v_dec - v_th
        z = (x > 0).to(v_dec.dtype)
        sg = surrogate_derivative(x, p.method, p.alpha)
        if variant == "eprop":
            sg = None  # the reset gate is detached: no path through the own spike
        # ∂v_t/∂v_dec: the gate (1 - z) plus the reset path through z
        gate = 1.0 - z if sg is None else (1.0 - z) + (v_reset - v_dec) * sg
        d_v = gate * (1.0 - dm)
        d_i = gate * dm
        state = [[d_v, d_i], [None, keep]]
        cur = [d_i, keep]
        params: dict[str, list[Partial]] = {}
        for key in self.neuron_parameters(module):
            name = key[2:]
            if name == "tau_mem_inv":
                params[key] = [gate * dt * drive, None]
            elif name == "tau_syn_inv":
                params[key] = [None, -dt * i_new]
            elif name == "v_leak":
                params[key] = [gate * dm, None]
            elif name == "v_th":
                params[key] = [None if sg is None else (v_dec - v_reset) * sg, None]
            elif name == "v_reset":
                params[key] = [z, None]
        return ElementwiseDerivatives(state, cur, params)


@register_adapter(
    nt.LIFRecurrentCell,
    examples={
        "default": lambda: nt.LIFRecurrentCell(
            _I, _N, input_weights=_weights(_N, _I), recurrent_weights=_weights(_N, _N, 0.5)
        ),
        "trained per-neuron v_th": lambda: nt.LIFRecurrentCell(
            _I,
            _N,
            p=LIFParameters(v_th=nn.Parameter(_per_neuron(0.8, 1.2))),
            input_weights=_weights(_N, _I),
            recurrent_weights=_weights(_N, _N, 0.5),
        ),
    },
)
class LIFRecurrentCellAdapter(_RecurrentMixin, NorseCellAdapter):
    """``LIFRecurrentCell``: state (z, v, i); reset detached by Norse; full Jacobian."""

    state_names = ("z", "v", "i")
    state_type = LIFState
    step_fn = staticmethod(lif_step)
    initial = (None, "v_leak", None)


@register_adapter(
    nt.LIFBoxCell,
    examples={
        "default": lambda: nt.LIFBoxCell(),
        "subtractive reset": lambda: nt.LIFBoxCell(p=LIFBoxParameters(reset_method=reset_subtract)),
    },
)
class LIFBoxCellAdapter(NorseCellAdapter):
    """``LIFBoxCell``: a LIF neuron without synaptic current (the SNU with a kept gate)."""

    state_names = ("v",)
    state_type = LIFBoxFeedForwardState
    step_fn = staticmethod(lif_box_feed_forward_step)
    eprop_step = staticmethod(_lif_box_eprop_step)
    initial = ("v_leak",)


@register_adapter(
    nt.IAFCell,
    examples={"default": lambda: nt.IAFCell()},
)
class IAFCellAdapter(NorseCellAdapter):
    """``IAFCell``: v += a; z = Θ(v - v_th); v = (1-z) v + z v_reset (no leak)."""

    state_names = ("v",)
    state_type = IAFFeedForwardState
    step_fn = staticmethod(iaf_feed_forward_step)
    eprop_step = staticmethod(_iaf_eprop_step)
    initial = ("v_reset",)
    frozen: ClassVar[dict[str, str]] = {
        "v_reset": "Norse starts IAFCell from p.v_reset without detaching it, a dependency of "
        "the initial state that eligibility traces do not carry.",
    }


@register_adapter(
    nt.LSNNCell,
    examples={
        "default": lambda: nt.LSNNCell(),
        "fast adaptation": lambda: nt.LSNNCell(
            p=LSNNParameters(tau_adapt_inv=torch.as_tensor(50.0), beta=torch.as_tensor(0.5))
        ),
    },
)
class LSNNCellAdapter(NorseCellAdapter):
    """``LSNNCell``: adaptive threshold b; the current enters i after the spike decision."""

    state_names = ("v", "i", "b")
    state_type = LSNNFeedForwardState
    step_fn = staticmethod(lsnn_feed_forward_step)
    eprop_step = staticmethod(_lsnn_eprop_step)
    initial = ("v_leak", None, "v_th")


@register_adapter(
    nt.LSNNRecurrentCell,
    examples={
        "fast adaptation": lambda: nt.LSNNRecurrentCell(
            _I,
            _N,
            p=LSNNParameters(tau_adapt_inv=torch.as_tensor(50.0), beta=torch.as_tensor(0.5)),
            input_weights=_weights(_N, _I),
            recurrent_weights=_weights(_N, _N, 0.5),
        ),
    },
)
class LSNNRecurrentCellAdapter(_RecurrentMixin, NorseCellAdapter):
    """``LSNNRecurrentCell``: state (z, v, i, b); reset detached by Norse; full Jacobian."""

    state_names = ("z", "v", "i", "b")
    state_type = LSNNState
    step_fn = staticmethod(lsnn_step)
    initial = (None, "v_leak", None, "v_th")


@register_adapter(
    nt.LIFAdExCell,
    examples={
        "float64 parameters": lambda: nt.LIFAdExCell(p=_f64(LIFAdExParameters())),
        "strong adaptation": lambda: nt.LIFAdExCell(
            p=_f64(LIFAdExParameters(adaptation_spike=torch.as_tensor(0.5)))
        ),
    },
)
class LIFAdExCellAdapter(NorseCellAdapter):
    """``LIFAdExCell``: adaptive exponential LIF, state (v, i, a)."""

    state_names = ("v", "i", "a")
    state_type = LIFAdExFeedForwardState
    step_fn = staticmethod(lif_adex_feed_forward_step)
    eprop_step = staticmethod(_lif_adex_eprop_step)
    initial = ("v_leak", None, None)


# ---------------------------------------------------------------------------- leaky integrators
def _li_derivatives(
    adapter: NorseCellAdapter, module: nn.Module, step: StepRecord, current: Callable[[], Tensor]
) -> ElementwiseDerivatives:
    """v_t = v + dm ((v_leak - v) + i + a), i_t = (1 - ds)(i + a): constant partials."""
    p, dt = module.p, module.dt
    like = step.prev[0]
    dm = _coef(dt * _detached(p.tau_mem_inv), like)
    keep = 1.0 + _coef(-dt * _detached(p.tau_syn_inv), like)
    state: list[list[Partial]] = [[1.0 - dm, dm], [None, keep]]
    cur: list[Partial] = [dm, keep]
    trained = adapter.neuron_parameters(module)
    params: dict[str, list[Partial]] = {}
    if trained:
        v, i = step.prev
        i_jump = i + current()
        for key in trained:
            name = key[2:]
            if name == "tau_mem_inv":
                params[key] = [dt * ((_detached(p.v_leak) - v) + i_jump), None]
            elif name == "tau_syn_inv":
                params[key] = [None, -dt * i_jump]
            elif name == "v_leak":
                params[key] = [dm, None]
    return ElementwiseDerivatives(state, cur, params)


def _li_factorised(module: nn.Module) -> bool:
    return _scalar(module.p.tau_mem_inv) and _scalar(module.p.tau_syn_inv)


@register_adapter(
    nt.LICell,
    examples={
        "default": lambda: nt.LICell(),
        "per-neuron time constants": lambda: nt.LICell(
            p=nt.LIParameters(tau_mem_inv=_per_neuron(50.0, 150.0))
        ),
        "trained time constants": lambda: nt.LICell(
            p=nt.LIParameters(
                tau_mem_inv=nn.Parameter(torch.tensor(100.0, dtype=_DT)),
                tau_syn_inv=nn.Parameter(torch.tensor(200.0, dtype=_DT)),
            )
        ),
    },
)
class LICellAdapter(NorseCellAdapter):
    """``LICell``: the leaky integrator (no spikes, no reset), two presynaptic traces.

    With scalar time constants every partial is a plain number, so the engine keeps one filtered
    input per state (``x̄^v``, ``x̄^i``) instead of per-synapse traces; per-neuron time constants
    fall back to per-synapse traces.
    """

    state_names = ("v", "i")
    state_type = LIState
    step_fn = staticmethod(li_feed_forward_step)
    initial = ("v_leak", None)
    spiking = False

    def factorised(self, module, variant):
        return _li_factorised(module)

    def derivatives(self, module, step, variant, current):
        return _li_derivatives(self, module, step, current)


@register_adapter(
    nt.LILinearCell,
    examples={
        "default": lambda: _li_linear(_I, _N),
    },
)
class LILinearCellAdapter(LICellAdapter):
    """``LILinearCell``: a leaky integrator with its own ``input_weights`` (presynaptic trace)."""

    def _shape(self, module, x):
        return (x.shape[0], int(module.hidden_size))

    def _uses_step(self, module):
        return True

    def internal_synapses(self, module):
        return [InternalSynapse("input_weights", "input")]


def _li_linear(inputs: int, hidden: int) -> nn.Module:
    cell = nt.LILinearCell(inputs, hidden)
    cell.input_weights = nn.Parameter(cell.input_weights.detach().to(_DT))
    return cell


# ---------------------------------------------------------------------------- refusals
def _register_refusals() -> None:
    """Refuse Norse's whole-sequence modules and the stateful cells that have no adapter."""
    for name in sorted(dir(nt)):
        cls = getattr(nt, name)
        if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
            continue
        if adapter_for_type(cls):
            continue
        if issubclass(cls, (SNN, SNNRecurrent)):
            cell = getattr(nt, f"{name}Cell", None)
            supported = cell is not None and adapter_for_type(cell)
            fix = (
                f"call norse.torch.{name}Cell once per time step, threading its state "
                "(z, s = cell(x, s)), e.g. inside norse.torch.SequentialState or your own loop."
                if supported
                else "call one of the supported Norse cells (LIFCell, LIFRecurrentCell, LSNNCell, "
                "...) once per time step instead."
            )
            register_refusal(
                cls,
                f"{name} runs the whole sequence [T, B, ...] in one call, so there is no step at "
                "which to carry eligibility traces forward.",
                fix,
            )
        elif issubclass(cls, (SNNCell, SNNRecurrentCell)) or name in (
            "CobaLIFCell",
            "LIFMCRecurrentCell",
            "LIFMCRefracRecurrentCell",
        ):
            register_refusal(
                cls,
                f"Norse's {name} has no OSTL adapter, so its state and step are unknown.",
                "use a supported Norse cell (LIFCell, LIFBoxCell, LIFRecurrentCell, LICell, "
                "LILinearCell, LSNNCell, LSNNRecurrentCell, IAFCell, LIFAdExCell) or register an "
                "adapter for it (see 'Writing an adapter').",
            )
    register_refusal(
        nt.Lift,
        "Lift runs the wrapped module over the whole sequence in one call, so there is no step "
        "at which to carry eligibility traces forward.",
        "call the wrapped module once per time step instead.",
    )
    register_refusal(
        nt.RecurrentSequential,
        "RecurrentSequential feeds the previous output back into the input outside of any cell, "
        "a recurrence the learner cannot see.",
        "use a recurrent cell (LIFRecurrentCell, LSNNRecurrentCell) inside SequentialState.",
    )


def adapter_for_type(cls: type[nn.Module]) -> bool:
    """Whether ``cls`` has a registered adapter (exact type)."""
    return any(entry.module_type is cls for entry in registered())


_register_refusals()
