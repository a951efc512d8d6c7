"""snn_ostl: Online Spatio-Temporal Learning for PyTorch spiking networks.

Attach :class:`OSTL` to an existing snnTorch, Norse or torch model; the user's own per-step
``loss.backward()`` then leaves the OSTL gradient in ``.grad``. Importing this package never
imports snnTorch or Norse.
"""

from snn_ostl.cells.snu import SNU, SNUState, SoftSNU, snu_step
from snn_ostl.errors import (
    AlreadyAttachedError,
    ConfigurationError,
    DetachedLearnerError,
    Problem,
    SnnOstlError,
    StateError,
    TraceBudgetError,
    UnsupportedModuleError,
)
from snn_ostl.learner import LEARNING_SIGNALS, OSTL, VARIANTS, is_attached
from snn_ostl.registry import register_adapter, register_refusal
from snn_ostl.validate import validate

__version__ = "0.1.0"

__all__ = [
    "LEARNING_SIGNALS",
    "OSTL",
    "SNU",
    "VARIANTS",
    "AlreadyAttachedError",
    "ConfigurationError",
    "DetachedLearnerError",
    "Problem",
    "SNUState",
    "SnnOstlError",
    "SoftSNU",
    "StateError",
    "TraceBudgetError",
    "UnsupportedModuleError",
    "is_attached",
    "register_adapter",
    "register_refusal",
    "snu_step",
    "validate",
]
