"""Find every module of a model the learner cannot train, before attaching anything.

In the manner of Opacus's ``ModuleValidator``: :func:`validate` returns all problems at once;
:class:`snn_ostl.OSTL` raises them together in one :class:`~snn_ostl.UnsupportedModuleError`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from snn_ostl.adapter import CellAdapter
from snn_ostl.errors import Problem
from snn_ostl.registry import adapter_for, refusal_for, registered

__all__ = [
    "CHAIN_MODULES",
    "STATELESS",
    "SYNAPSES",
    "WHOLE_SEQUENCE",
    "Plan",
    "plan_model",
    "supported_names",
    "validate",
]

#: Modules whose weights can feed a stateful layer's current (directly or through a chain).
SYNAPSES: tuple[type[nn.Module], ...] = (
    nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
    nn.ConvTranspose3d, nn.Embedding,
)  # fmt: skip

#: Modules without state or parameters that may sit anywhere in the model.
STATELESS: tuple[type[nn.Module], ...] = (
    nn.Sequential, nn.ModuleList, nn.ModuleDict, nn.Identity, nn.Flatten, nn.Unflatten,
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout,
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.Softplus,
    nn.Softmax, nn.LogSoftmax, nn.Hardtanh, nn.Hardsigmoid,
    nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d,
)  # fmt: skip

#: Stateless modules with parameters (or buffers that never feed back into the output) that
#: may sit between a synapse and its neuron; their parameters are then part of that layer.
CHAIN_MODULES: tuple[type[nn.Module], ...] = (
    nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.LayerNorm, nn.GroupNorm,
    nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d, nn.LocalResponseNorm, nn.PReLU,
)  # fmt: skip

#: Whole-sequence torch modules refused, with the cell to use instead.
WHOLE_SEQUENCE = {
    nn.RNN: "nn.RNNCell",
    nn.LSTM: "nn.LSTMCell",
    nn.GRU: "nn.GRUCell",
}


@dataclass
class Plan:
    """How the learner will treat each module of a model.

    Attributes:
        layers: Stateful modules with an adapter, by qualified name.
        synapses: Linear/Conv/Embedding modules (each may turn out to feed a stateful layer).
        chain_modules: Normalisations with parameters (each may sit in a layer's chain).
        instantaneous: Modules trained with their instantaneous gradient, with the reason.
        problems: Modules that cannot be trained exactly.
    """

    layers: dict[str, tuple[nn.Module, CellAdapter]] = field(default_factory=dict)
    synapses: dict[str, nn.Module] = field(default_factory=dict)
    chain_modules: dict[str, nn.Module] = field(default_factory=dict)
    instantaneous: dict[str, str] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)


def supported_names() -> str:
    """Comma-separated names of every registered stateful module type."""
    names = []
    for entry in registered():
        mod = entry.module_type.__module__.split(".")[0]
        names.append(f"{mod}.{entry.module_type.__name__}")
    return ", ".join(names)


def _has_own_tensors(module: nn.Module, claimed: set[int]) -> bool:
    return any(id(p) not in claimed for p in module.parameters(recurse=False)) or any(
        True for _ in module.buffers(recurse=False)
    )


def plan_model(model: nn.Module, variant: str = "ostl") -> Plan:
    """Classify every module of ``model`` (no hooks are attached).

    Args:
        model: The user's model.
        variant: The OSTL variant the learner will use.
    """
    plan = Plan()
    owned: list[str] = []  # modules whose insides belong to an adapted module
    # Parameters an adapter trains although another module registers them (e.g. a Norse
    # LIFParameters field wrapped in nn.Parameter and held by the user's model).
    claimed: set[int] = set()
    for module in model.modules():
        adapter = adapter_for(module)
        if adapter is not None and hasattr(adapter, "neuron_parameters"):
            claimed.update(id(p) for p in adapter.neuron_parameters(module).values())
    for path, module in model.named_modules():
        if any(path.startswith(prefix + ".") for prefix in owned):
            continue
        name = type(module).__name__
        adapter = adapter_for(module)
        if adapter is not None:
            owned.append(path)
            plan.layers[path] = (module, adapter)
            for why, fix in adapter.problems(module, variant):
                plan.problems.append(Problem(path, name, why, fix))
            continue
        parent = next(
            (e.module_type for e in registered() if isinstance(module, e.module_type)), None
        )
        if parent is not None:
            owned.append(path)
            plan.problems.append(
                Problem(
                    path,
                    name,
                    f"it subclasses {parent.__name__}, whose adapter is not used for subclasses "
                    "because a subclass may change forward().",
                    f"if {name} keeps {parent.__name__}'s step, register it: "
                    f"snn_ostl.register_adapter({name})(type(snn_ostl.registry.adapter_for("
                    f"{parent.__name__}(...)))), or use {parent.__name__} itself.",
                )
            )
            continue
        refusal = refusal_for(module)
        if refusal is not None:
            owned.append(path)
            plan.problems.append(Problem(path, name, *refusal))
            continue
        if type(module) in SYNAPSES:
            plan.synapses[path] = module
        elif type(module) in WHOLE_SEQUENCE:
            owned.append(path)
            plan.problems.append(
                Problem(
                    path,
                    name,
                    f"{name} runs the whole sequence in one call, so there is no step at which "
                    "to carry eligibility traces forward.",
                    f"use {WHOLE_SEQUENCE[type(module)]} and call it once per time step.",
                )
            )
        elif type(module) in CHAIN_MODULES:
            if any(True for _ in module.parameters(recurse=False)):
                plan.chain_modules[path] = module
        elif isinstance(module, STATELESS):
            continue
        elif _has_own_tensors(module, claimed):
            framework = type(module).__module__.split(".")[0]
            owned.append(path)
            if framework in ("snntorch", "norse"):
                why = f"it is a {framework} module without an OSTL adapter; its state is unknown."
            else:
                why = "it has parameters or buffers and no OSTL adapter, so its state is unknown."
            plan.problems.append(
                Problem(
                    path,
                    name,
                    why,
                    "replace it with a supported module, register an adapter for it "
                    "(see 'Writing an adapter'), or pass strict=False to train it with its "
                    "instantaneous gradient.",
                )
            )
            plan.instantaneous[path] = "unknown module (strict=False)"
    return plan


def validate(model: nn.Module, variant: str = "ostl") -> list[Problem]:
    """Every reason why ``model`` cannot be trained exactly with OSTL (empty: all fine).

    Args:
        model: The user's model.
        variant: ``"ostl"``, ``"ostl-no-h"`` or ``"eprop"``.
    """
    from snn_ostl.adapters import load_available

    load_available()
    return plan_model(model, variant).problems
