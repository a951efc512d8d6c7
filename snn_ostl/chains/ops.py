"""Which operations a chain holds, and which fast path computes their tangent.

The names are those of the autograd nodes the step recorded (``MaxPool2DWithIndicesBackward0``
for a ``MaxPool2d``): the walk in :mod:`snn_ostl.chains.walk` collects them, and
:mod:`snn_ostl.chains.tangents` and :mod:`snn_ostl.chains.binding` read the tables here.
"""

from __future__ import annotations

from torch import nn

from snn_ostl.chains.walk import SynapseUse

__all__ = ["ELEMENTWISE", "MAXPOOL", "STATIC_CHANNELS", "VIEWS", "channel_axis", "kind"]

CONVS = (
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
)

VIEWS = {
    "ViewBackward0",
    "ReshapeAliasBackward0",
    "UnsafeViewBackward0",
    "CloneBackward0",
    "AliasBackward0",
    "SqueezeBackward0",
    "SqueezeBackward1",
    "SqueezeBackward2",
    "UnsqueezeBackward0",
    "ToCopyBackward0",
}
#: Operations whose derivative is diagonal when they have one differentiable input.
ELEMENTWISE = {
    "MulBackward0",
    "MulBackward1",
    "DivBackward0",
    "DivBackward1",
    "NegBackward0",
    "AddBackward0",
    "AddBackward1",
    "SubBackward0",
    "SubBackward1",
    "RsubBackward1",
    "NativeDropoutBackward0",
    "ReluBackward0",
    "LeakyReluBackward0",
    "SigmoidBackward0",
    "TanhBackward0",
    "HardtanhBackward0",
}
#: Operations whose channel -> neuron map is the same at every step (selections such as a
#: max-pooling pick within a channel). A chain with any other operation (an index that may change
#: from step to step, a sort, a max over channels) is traced with every parameter entry as its own
#: direction, which is exact whatever the operation does.
STATIC_CHANNELS = (
    {
        "PermuteBackward0",
        "TransposeBackward0",
        "TBackward0",
        "SliceBackward0",
        "SelectBackward0",
        "ExpandBackward0",
        "CatBackward0",
        "StackBackward0",
        "ConstantPadNdBackward0",
        "ReflectionPad1DBackward0",
        "ReflectionPad2DBackward0",
        "ReflectionPad3DBackward0",
        "ReplicationPad1DBackward0",
        "ReplicationPad2DBackward0",
        "ReplicationPad3DBackward0",
        "MaxPool2DWithIndicesBackward0",
        "MaxPool3DWithIndicesBackward0",
        "AvgPool2DBackward0",
        "AvgPool3DBackward0",
        "AdaptiveAvgPool2DBackward0",
        "AdaptiveAvgPool3DBackward0",
        "AdaptiveMaxPool2DBackward0",
        "AdaptiveMaxPool3DBackward0",
        "NativeBatchNormBackward0",
        "NativeLayerNormBackward0",
        "NativeGroupNormBackward0",
        "EluBackward0",
        "GeluBackward0",
        "SiluBackward0",
        "SoftplusBackward0",
        "PreluKernelBackward0",
        "HardswishBackward0",
        "ClampBackward1",
        "AbsBackward0",
        "ExpBackward0",
        "PowBackward0",
        "SqrtBackward0",
        "RsqrtBackward0",
        "SumBackward1",
        "MeanBackward1",
    }
    | VIEWS
    | ELEMENTWISE
)

MAXPOOL = {
    "MaxPool2DWithIndicesBackward0": 2,
    "MaxPool3DWithIndicesBackward0": 3,
}


def channel_axis(module: nn.Module) -> int:
    """The axis of the synapse's output that holds its channels (features)."""
    return 1 if isinstance(module, CONVS) else -1


def kind(use: SynapseUse) -> str:
    """``"identity"``, ``"elementwise"``, ``"maxpool"`` or ``"generic"`` for one synapse."""
    nodes = use.nodes
    if nodes is None:
        return "generic"
    names = [type(n).__name__ for n in nodes]
    start = 0
    if names and names[0] in MAXPOOL:
        node = nodes[0]
        kernel = list(node._saved_kernel_size)
        stride = list(node._saved_stride) or kernel
        dims = MAXPOOL[names[0]]
        kernel = kernel * dims if len(kernel) == 1 else kernel
        stride = stride * dims if len(stride) == 1 else stride
        dilation = list(node._saved_dilation)
        if any(k > s for k, s in zip(kernel, stride)) or any(d != 1 for d in dilation):
            return "generic"  # overlapping windows: one input may feed two outputs
        if channel_axis(use.module) != 1:
            return "generic"
        start = 1
    rest = names[start:]
    for node, name in zip(nodes[start:], rest):
        differentiable = [c for c, _ in node.next_functions if c is not None]
        if name not in VIEWS and name not in ELEMENTWISE:
            return "generic"
        if name in ("AddBackward0", "SubBackward0"):
            continue  # a sum of branches: each branch is differentiated on its own
        if len(differentiable) != 1:
            return "generic"
    if start:
        return "maxpool"
    return "identity" if all(n in VIEWS for n in rest) else "elementwise"
