"""Shared helpers of the snnTorch adapters: reset mechanism, parameter values and partials.

What snnTorch's neuron really runs (the reset mechanism picked in its constructor, whether the
reset is delayed), the reset signal, and the tidying of partials before they reach the engine.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from snn_ostl.derivatives import ElementwiseDerivatives, Partial

#: Number of neurons of every registered example module (tests build their models around it).
EXAMPLE_SIZE = 6

SUBTRACT, ZERO, NONE = 0, 1, 2
_STATE_FUNCTIONS = {"_base_sub": SUBTRACT, "_base_zero": ZERO, "_base_int": NONE}


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


def _reset_signal(mem: Tensor, threshold: Any) -> Tensor:
    """snnTorch's ``mem_reset``: the detached Heaviside of the previous membrane."""
    return ((mem - threshold).detach() > 0).to(mem.dtype)


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


def _clamp_mask(value: Tensor) -> Tensor:
    """Where ``value.clamp(0, 1)`` passes gradients (torch includes both ends)."""
    return ((value >= 0) & (value <= 1)).to(value.dtype)
