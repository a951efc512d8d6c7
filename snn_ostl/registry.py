"""The registry of adapters, filled by the :func:`register_adapter` decorator.

Keys are exact module classes: a subclass may override ``forward``, so it opts in by being
registered itself (``subclasses=True`` on the decorator). The supported-modules table in the docs
and the parametrised tests both read this registry, so nothing is kept by hand.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from snn_ostl.adapter import CellAdapter

__all__ = [
    "AdapterEntry",
    "adapter_for",
    "refusal_for",
    "refusals",
    "register_adapter",
    "register_refusal",
    "registered",
]


@dataclass(frozen=True)
class AdapterEntry:
    """One registered module type.

    Attributes:
        module_type: The module class.
        adapter: The adapter instance.
        subclasses: Whether subclasses of ``module_type`` use it too.
        examples: Factories of example modules for tests and docs, by configuration name.
    """

    module_type: type[nn.Module]
    adapter: CellAdapter
    subclasses: bool
    examples: tuple[tuple[str, Callable[[], nn.Module]], ...] = ()


_REGISTRY: dict[type[nn.Module], AdapterEntry] = {}


def register_adapter(
    module_type: type[nn.Module],
    *,
    subclasses: bool = False,
    examples: dict[str, Callable[[], nn.Module]] | None = None,
) -> Callable[[type[CellAdapter]], type[CellAdapter]]:
    """Class decorator: register an adapter class for ``module_type``.

    Args:
        module_type: The stateful module class the adapter handles.
        subclasses: Also use it for subclasses (only when they keep the parent's ``forward``).
        examples: Named factories of small example modules (used by tests and docs).
    """

    def decorate(cls: type[CellAdapter]) -> type[CellAdapter]:
        _REGISTRY[module_type] = AdapterEntry(
            module_type, cls(), subclasses, tuple((examples or {}).items())
        )
        return cls

    return decorate


def adapter_for(module: nn.Module) -> CellAdapter | None:
    """The adapter for this module's type, or None."""
    entry = _REGISTRY.get(type(module))
    if entry is not None:
        return entry.adapter
    for entry in _REGISTRY.values():
        if entry.subclasses and isinstance(module, entry.module_type):
            return entry.adapter
    return None


def registered() -> list[AdapterEntry]:
    """Every registered entry, in registration order."""
    return list(_REGISTRY.values())


_REFUSALS: dict[type[nn.Module], tuple[str, str]] = {}


def register_refusal(module_type: type[nn.Module], why: str, fix: str) -> None:
    """Record a module type the learner must refuse, with the reason and the workaround.

    Used for framework modules that cannot be trained online (whole-sequence modules) or
    whose known bugs would mis-train.
    """
    _REFUSALS[module_type] = (why, fix)


def refusals() -> dict[type[nn.Module], tuple[str, str]]:
    """Every refused module type with its (why, fix)."""
    return dict(_REFUSALS)


def refusal_for(module: nn.Module) -> tuple[str, str] | None:
    """(why, fix) when this module's type is refused, else None."""
    return _REFUSALS.get(type(module))
