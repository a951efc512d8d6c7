"""Base classes of the Norse adapters: state plumbing, checks, variants, generic derivatives.

:class:`NorseCellAdapter` threads Norse's explicit ``(output, state)`` through the engine, refuses
the adjoint mode and untrainable fields of ``p``, and differentiates Norse's own step;
:class:`_RecurrentMixin` adds the input and recurrent weights of the recurrent cells.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import torch
from snn_ostl.adapters.norse._common import _SETTINGS
from torch import Tensor, nn

from snn_ostl.adapter import ElementwiseAdapter, InternalSynapse, StepRecord
from snn_ostl.derivatives import ElementwiseDerivatives, elementwise_derivatives


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
