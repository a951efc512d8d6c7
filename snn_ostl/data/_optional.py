"""Lazy imports of optional dependencies with an actionable error message.

The core of ``snn_ostl`` depends only on torch and numpy; the data loaders use scikit-learn,
scipy, mlxtend or music21, which are optional extras. Importing them lazily keeps
``import snn_ostl`` cheap and lets a missing package fail with the command that fixes it.
"""

from __future__ import annotations

import importlib
from types import ModuleType


def import_optional(module: str, install: str, purpose: str) -> ModuleType:
    """Import ``module`` or raise an :class:`ImportError` that says how to install it.

    Args:
        module: Dotted module name, e.g. ``"sklearn.datasets"``.
        install: The pip requirement to suggest, e.g. ``"scikit-learn"``.
        purpose: What needs it, for the message, e.g. ``"load_digits()"``.

    Returns:
        The imported module.

    Raises:
        ImportError: When the module cannot be imported; the message contains
            ``pip install <install>``.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"{purpose} needs the optional package '{install}', which is not installed: "
            f"pip install {install}"
        ) from exc
