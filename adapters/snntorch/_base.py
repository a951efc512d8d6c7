"""Base classes of the snnTorch adapters: state plumbing, checks, variants, derivatives.

:class:`_SnnTorchState` reads and writes the state snnTorch keeps on the module, refuses the
known snnTorch bugs shared by every neuron, and applies the variants in the forward pass;
:class:`_SnnTorchElementwise` adds the derivative machinery of the elementwise neurons.
"""

from __future__ import annotations

import contextlib
from typing import Any, ClassVar

import torch
from snn_ostl.adapters.snntorch._common import (
    SUBTRACT,
    _delayed,
    _floats,
    _mechanism,
    _tidy,
    _value,
)
from snn_ostl.adapters.snntorch._spikes import (
    _own_reset_cut_in_time,
    _slope,
    _spike,
    _spikes_in_dtype,
)
from torch import Tensor, nn

from snn_ostl.adapter import CellAdapter, ElementwiseAdapter, StepRecord
from snn_ostl.derivatives import Partial, elementwise_derivatives
from snn_ostl.errors import StateError


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
            if s.shape != shape and s.grad_fn is None:
                # a constant of another shape (init_leaky() of an earlier batch size): snnTorch
                # starts from zeros of the input's shape, and so does the learner
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

    def restore_state(self, module, state):
        if module.init_hidden:
            for name, s in zip(self.state_names, state):
                setattr(module, name, s)

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
