"""Exceptions raised by snn_ostl.

Every message says what went wrong, where (the module's qualified name from
``model.named_modules()``), why, and how to fix it.
"""

from __future__ import annotations

__all__ = [
    "AlreadyAttachedError",
    "ConfigurationError",
    "DetachedLearnerError",
    "Problem",
    "SnnOstlError",
    "StateError",
    "TraceBudgetError",
    "UnsupportedModuleError",
]

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One reason why a module cannot be trained exactly.

    Attributes:
        path: Qualified module name (``""`` is the root model).
        module_type: Class name of the module.
        why: What makes it a problem.
        fix: What the user can do about it.
    """

    path: str
    module_type: str
    why: str
    fix: str

    def __str__(self) -> str:
        where = self.path or "<root>"
        return f"{where} ({self.module_type}): {self.why} Fix: {self.fix}"


class SnnOstlError(Exception):
    """Base class of every error raised by snn_ostl."""


class UnsupportedModuleError(SnnOstlError, ValueError):
    """The model holds modules the learner cannot train.

    Attributes:
        problems: Every problem found, not only the first.
    """

    #: Whether ``strict=False`` is a way out (modules the learner does not know).
    strict_hint = True

    def __init__(self, problems: list[Problem], supported: str = "") -> None:
        self.problems = list(problems)
        lines = [f"OSTL cannot train {len(self.problems)} module(s) of this model:"]
        lines += [f"  - {p}" for p in self.problems]
        if supported:
            lines.append(f"Supported stateful modules: {supported}.")
        if self.strict_hint:
            lines.append(
                "Pass strict=False to train unknown modules with their instantaneous gradient "
                "(an approximation that learner.summary() lists)."
            )
        super().__init__("\n".join(lines))


class ConfigurationError(UnsupportedModuleError):
    """A known module type is configured in a way the learner cannot train exactly."""

    strict_hint = False


class AlreadyAttachedError(SnnOstlError, RuntimeError):
    """A learner is already attached to this model (or to one of its modules)."""


class DetachedLearnerError(SnnOstlError, RuntimeError):
    """The learner was used after :meth:`snn_ostl.OSTL.detach`."""


class StateError(SnnOstlError, ValueError):
    """A neuron received a state that does not fit its traces (shape, dtype, device, batch)."""


class TraceBudgetError(SnnOstlError, RuntimeError):
    """Too many steps await a backward pass, so eligibility snapshots pile up in memory."""
