"""Refusals of Norse's whole-sequence modules and of its stateful cells without an adapter.

Import it after every Norse adapter: a module type that has an adapter by then is not refused.
"""

from __future__ import annotations

import norse.torch as nt
from norse.torch.module.snn import SNN, SNNCell, SNNRecurrent, SNNRecurrentCell
from torch import nn

from snn_ostl.registry import register_refusal, registered


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
