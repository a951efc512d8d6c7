"""Find a layer's synaptic block in the autograd graph of its input current.

At each step the learner walks back from the tensor a stateful module receives as its input
current. The walk stops at the outputs of synapse modules (``nn.Linear``, ``nn.Conv*``,
``nn.Embedding``, recorded by the learner's synapse hooks), at the outputs of other stateful
layers, and at leaves. What it passes on the way is the layer's chain: every operation, whether
a module (pooling, dropout, batch norm) or a tensor operation (``10 * x``, ``flatten``, ``+``).
Trainable parameters met as leaves belong to the chain (a batch norm's affine weights).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn

__all__ = ["Block", "ChainTooLongError", "SynapseUse", "walk"]

#: The most operations a chain may hold; a longer walk means the current depends on the
#: model's history (a tensor carried over from earlier steps), not on one step's synapses.
LIMIT = 256


class ChainTooLongError(RuntimeError):
    """The walk met more operations than :data:`LIMIT`."""


@dataclass(eq=False)
class SynapseUse:
    """One synapse whose output reaches the current at this step.

    Attributes:
        path: Qualified module name.
        module: The synapse module.
        output: Its output ``z_t`` as it entered the chain (part of the step's graph).
        input: Its input ``x_t`` without graph (indices for an ``nn.Embedding``).
        nodes: The chain's operations from ``z_t`` up to the current, when the chain from this
            synapse is a plain sequence (no shared subgraph); None otherwise.
        recurrent: The input is the layer's own output of the previous step.
    """

    path: str
    module: nn.Module
    output: Tensor
    input: Tensor
    nodes: list[Any] | None = None
    recurrent: bool = False


@dataclass
class Block:
    """What feeds one layer's current at one step.

    Attributes:
        synapses: The synapses found, in the order the walk met them.
        params: Trainable parameters of the chain itself, by qualified name.
        ops: Names of the chain's operations (autograd node names), in walk order.
        tree: Whether every synapse reaches the current along its own sequence of operations
            (sums allowed), so that each synapse's :attr:`SynapseUse.nodes` is set.
    """

    synapses: list[SynapseUse] = field(default_factory=list)
    params: dict[str, nn.Parameter] = field(default_factory=dict)
    ops: list[str] = field(default_factory=list)
    tree: bool = True
    #: Trained parameters reached that the model does not hold (outside the attached module).
    outside: list[nn.Parameter] = field(default_factory=list)

    def signature(self) -> tuple:
        """What must stay the same from step to step (modules, parameters, operations)."""
        return (
            tuple(id(s.module) for s in self.synapses),
            tuple(id(p) for p in self.params.values()),
            tuple(self.ops),
        )

    def release(self) -> None:
        """Let go of the step's tensors (the signature and names stay)."""
        for use in self.synapses:
            use.output = use.input = None
            use.nodes = None

    def describe(self) -> str:
        """The chain's operations in readable form (``max_pool2d -> mul``)."""
        names = [_readable(op) for op in reversed(self.ops)]
        return " -> ".join(dict.fromkeys(names)) or "none"


def _readable(op: str) -> str:
    name = op.removesuffix("Backward0").removesuffix("Backward1")
    name = name.replace("WithIndices", "").replace("Native", "")
    out = []
    for i, ch in enumerate(name):
        if ch.isupper() and i and not name[i - 1].isupper() and not name[i - 1].isdigit():
            out.append("_")
        out.append(ch.lower())
    return "".join(out)


def walk(
    current: Tensor,
    synapse_nodes: dict[Any, tuple[str, nn.Module, Tensor, Tensor]],
    stops: set[Any],
    names: dict[int, str],
) -> Block:
    """The block that feeds ``current`` at this step.

    Args:
        current: The input current a stateful module received, ``[B, *N]``.
        synapse_nodes: ``grad_fn`` of each recent synapse output -> (path, module, output,
            input).
        stops: ``grad_fn`` of tensors the walk must not cross (other layers' outputs).
        names: ``id(parameter)`` -> qualified name, for the model's parameters.

    Raises:
        ChainTooLongError: More than :data:`LIMIT` operations lie between the current and
            the synapses.
    """
    block = Block()
    seen: set[Any] = set()
    found: dict[int, SynapseUse] = {}

    def visit(node: Any, above: tuple[Any, ...]) -> None:
        if node is None:
            return
        hit = synapse_nodes.get(node)
        if hit is not None:
            if id(node) in found:  # one synapse output used twice: not a plain sequence
                block.tree = False
                found[id(node)].nodes = None
                return
            use = SynapseUse(*hit, nodes=list(reversed(above)))
            found[id(node)] = use
            block.synapses.append(use)
            return
        if node in stops:
            return
        name = type(node).__name__
        if name == "AccumulateGrad":
            param = node.variable
            key = names.get(id(param))
            if key is not None and param.requires_grad and key not in block.params:
                block.params[key] = param
            elif key is None and param.requires_grad:
                block.outside.append(param)
            block.tree = False
            return
        if node in seen:
            block.tree = False
            return
        seen.add(node)
        if len(seen) > LIMIT:
            raise ChainTooLongError(
                f"more than {LIMIT} operations lie between the input current and the synapses"
            )
        block.ops.append(name)
        for child, _ in node.next_functions:
            visit(child, (*above, node))

    try:
        visit(current.grad_fn, ())
    finally:
        # ``visit`` refers to itself: without this the closure, and with it every node it saw
        # (and the step's graph and history node), would wait for the cycle collector
        visit = None
        seen.clear()
        found.clear()
    if not block.tree:
        for use in block.synapses:
            use.nodes = None
    return block
