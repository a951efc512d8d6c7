"""Adapters that present stateful modules to the OSTL engine (installed as snn_ostl.adapters).

The native and torch adapters always register. The snnTorch and Norse adapters register when
their framework is importable; :func:`load_available` imports them only if the framework is
already imported (a user's model built with it means it is), or when ``import_frameworks`` is
set, so ``import snn_ostl`` never imports snnTorch or Norse by itself.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys

__all__ = ["FRAMEWORK_ADAPTERS", "load_available"]

#: framework module name -> adapter module inside this package
FRAMEWORK_ADAPTERS = {"snntorch": "snntorch", "norse": "norse"}
_ALWAYS = ("native", "leaky_rnn", "torch_cells")


def load_available(import_frameworks: bool = False) -> list[str]:
    """Register every adapter whose framework can be used now.

    Args:
        import_frameworks: Also import installed frameworks that are not imported yet (tests and
            the docs table do; the learner does not).

    Returns:
        Names of the adapter modules that are loaded.
    """
    loaded = []
    for name in _ALWAYS:
        if importlib.util.find_spec(f"{__name__}.{name}") is not None:
            importlib.import_module(f"{__name__}.{name}")
            loaded.append(name)
    for framework, name in FRAMEWORK_ADAPTERS.items():
        present = framework in sys.modules or (
            import_frameworks and importlib.util.find_spec(framework) is not None
        )
        if present and importlib.util.find_spec(f"{__name__}.{name}") is not None:
            importlib.import_module(f"{__name__}.{name}")
            loaded.append(name)
    return loaded
