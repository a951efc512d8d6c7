"""What a learning rule is, and the registry that maps rule names to rule classes.

The online-learning family derives from real-time recurrent learning (RTRL) by dropping or
approximating terms of the exact gradient (Zenke & Neftci, Proc. IEEE 2021). Every member is
trained by the same learner on the same hooks: a rule picks what the eligibility traces keep
(the *variant*), how the error reaches each layer (the *learning signal*), and may add what
only it has (local readouts, filtered eligibilities, a sparsity mask on the traces).

A rule is a small object; :func:`make_rule` turns a registered name into one with the rule's
defaults, and ``OSTL(model, rule=...)`` accepts either.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from snn_ostl.errors import Problem
    from snn_ostl.learner import OSTL

__all__ = ["Rule", "make_rule", "refuse_distributed", "register_rule", "rule_names"]

_RULES: dict[str, Callable[[], Rule]] = {}


def register_rule(*names: str) -> Callable[[type[Rule]], type[Rule]]:
    """Class decorator: register a rule class under one or more names.

    Each name is built by the class's :meth:`Rule.preset` (``"snap-1"`` and ``"snap-2"`` are
    one class with two settings).
    """

    def wrap(cls: type[Rule]) -> type[Rule]:
        for name in names:
            if name in _RULES:
                raise ValueError(f"learning rule {name!r} is registered twice")
            _RULES[name] = cls.preset(name)
        return cls

    return wrap


def rule_names() -> tuple[str, ...]:
    """The names ``OSTL(model, rule=...)`` accepts, in registration order."""
    return tuple(_RULES)


def make_rule(rule: str | Rule) -> Rule:
    """The rule object for a name (with the rule's defaults), or ``rule`` itself.

    Raises:
        ValueError: An unknown name (the known ones are listed).
        TypeError: Neither a name nor a :class:`Rule`.
    """
    if isinstance(rule, Rule):
        return rule
    if isinstance(rule, str):
        if rule not in _RULES:
            raise ValueError(
                f"OSTL option rule={rule!r} is not a known learning rule; known rules: "
                + ", ".join(repr(n) for n in _RULES)
            )
        return _RULES[rule]()
    raise TypeError(
        f"OSTL option rule= takes a rule name or a snn_ostl.rules.Rule object, not "
        f"{type(rule).__name__}"
    )


class Rule:
    """Base class of the learning rules.

    Attributes:
        name: The rule's registered name (``"eprop-random"``, ``"snap-1"``, ...).
        variant: What the eligibility traces keep: ``"ostl"`` (the exact eligibility),
            ``"ostl-no-h"`` (recurrent weights left out of the Jacobian) or ``"eprop"`` (no
            path through the layer's own spikes).
        learning_signal: How the error of a step reaches each layer: ``"backprop"``,
            ``"random"``, ``"adaptive"``, ``"direct"``, ``"local"`` (DECOLLE: nothing between
            layers) or ``"superspike"`` (the filtered output error, sent down by the rule).
        keeps: One line for the summary: what the rule keeps of the exact gradient.
    """

    name: str = "rule"
    variant: str = "ostl"
    learning_signal: str = "backprop"
    keeps: ClassVar[str] = ""
    #: Whether the rule trains through the engine's traces. SuperSpike computes its gradient
    #: with hooks of its own, and the learner then attaches none of the engine's step hooks.
    uses_engine: ClassVar[bool] = True

    @classmethod
    def preset(cls, name: str) -> Callable[[], Rule]:
        """A factory of the rule registered as ``name`` (subclasses map names to options)."""
        return cls

    # ---------------------------------------------------------------- learner life cycle
    def problems(self, learner: OSTL, plan: Any) -> list[Problem]:
        """Modules this rule cannot train, found before any hook is attached."""
        return []

    def attach(self, learner: OSTL) -> list[Any]:
        """Add the rule's own hooks once the learner's are in place; returns their handles."""
        self.learner = learner
        return []

    def reset(self) -> None:
        """A new sequence starts (the learner's :meth:`~snn_ostl.OSTL.reset`)."""

    def after_layer(self, layer: Any, output: Any) -> None:
        """A stateful layer finished its step (called by the learner's post-hook)."""

    def trace_mask(self, layer: Any, group: Any) -> Any:
        """A mask multiplied into a full-Jacobian trace after each step (None: keep all)."""
        return None

    def state_dict(self) -> dict[str, Any]:
        """The rule's own state for checkpoints (fixed random matrices and the like)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""

    def describe(self) -> str:
        """The rule and its options, for the summary's first line."""
        return self.name

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.describe()!r})"


def refuse_distributed(rule: Rule, path: str, module_type: str) -> None:
    """Refuse a rule that writes ``.grad`` outside autograd under several processes.

    DistributedDataParallel averages only what its backward pass sees; a term added to
    ``.grad`` by a hook of the rule would stay this rank's own, a silently wrong gradient.
    """
    from snn_ostl.hooks.distributed import running_distributed

    if running_distributed():
        from snn_ostl.errors import ConfigurationError, Problem

        raise ConfigurationError(
            [
                Problem(
                    path,
                    module_type,
                    f"rule {rule.name!r} adds its terms to .grad outside the backward pass "
                    "that DistributedDataParallel averages, so each rank would keep its own.",
                    "train this rule in one process, or use rule='ostl', an e-prop rule, "
                    "'rflo' or 'decolle' with several processes.",
                )
            ]
        )
