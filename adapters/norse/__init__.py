"""Adapters of Norse 1.1 cells (imported only when Norse is).

Norse cells are called once per step with an explicit state, ``z, s = cell(x, s)`` (``s=None``
at the start), either by the user's own module or by ``norse.torch.SequentialState``. Each
adapter reads that state argument, swaps in the learner's state and reads the new state from the
returned ``(output, state)`` pair. What the engine sees:

============================  =====================  ==============================  ============
cell                          state                  synapses                        trace form
============================  =====================  ==============================  ============
``LIFCell``                   (v, i)                 Linear before it                per-synapse
``LIFBoxCell``                (v,)                   Linear before it                per-synapse
``IAFCell``                   (v,)                   Linear before it                per-synapse
``LSNNCell``                  (v, i, b)              Linear before it                per-synapse
``LIFAdExCell``               (v, i, a)              Linear before it                per-synapse
``LICell``                    (v, i)                 Linear/Conv before it           presynaptic
``LILinearCell``              (v, i)                 ``input_weights``               presynaptic
``LIFRecurrentCell``          (z, v, i)              ``input_weights``,              full Jacobian
                                                     ``recurrent_weights`` (by z)
``LSNNRecurrentCell``         (z, v, i, b)           same                            full Jacobian
============================  =====================  ==============================  ============

Why these forms: in every feed-forward spiking cell Norse's reset
``v = (1 - z) v + z v_reset`` is a differentiable gate on the step's own spike, so ``J_t`` depends
on the neuron and the step and the synapses need per-synapse traces. The leaky integrator has no
reset and scalar decays, so its traces factorise (two presynaptic traces, one per state). The
recurrent cells keep the previous spikes ``z`` as state tensor 0; their ``recurrent_weights`` are
an internal synapse driven by it, which makes ``J_t`` a full matrix (their reset is detached, as
in Norse). Their variants ``"ostl-no-h"`` and ``"eprop"`` both cut ``z_{t-1}`` inside the cell
(the only place it acts), which leaves per-synapse traces. For the feed-forward cells
``"ostl-no-h"`` is ``"ostl"`` (no recurrent weights) and ``"eprop"`` detaches the step's own spike
in the reset gate, the analogue of the SNU's detached ``y_{t-1}``; the threshold adaptation of
``LSNNCell`` and ``LIFAdExCell`` keeps the spike's path, as the ALIF eligibility of Bellec et al.
(2020) does.

``LSNNCell`` lets its current in *after* the spike decision (``z_t`` depends on ``s_{t-1}`` only),
so an error at step t never reaches a layer below an LSNN layer within the step: OSTL (exactly
like its exact oracle) gives such lower layers no gradient. Put LSNN layers at the bottom.

Norse's neuron parameters are named tuples (``p``), not module parameters: the synapses are what
gets trained. An ``nn.Parameter`` placed in a field of ``p`` (``LIFParameters(tau_mem_inv=
nn.Parameter(...))``) is trained too, as an elementwise neuron parameter named ``p.<field>``
(scalar or one value per neuron); remember to give it to the optimizer, since Norse does not
register it on the module. The surrogate's ``alpha`` is a setting, not a trained parameter.

Facts of Norse 1.1.0 that the adapters rely on, pinned by the tests: current jumps first, then
the voltage integrates (``dt=1e-3`` gives decays 0.9 and 0.8); ``SuperSpike`` ignores its
``alpha`` (surrogate gradient ``1 / (|x| + 1)^2``); ``method="adjoint"`` cannot be trained (it
raises in ``LIFCell`` and replaces autograd by a custom backward in ``LSNNCell(adjoint=True)``),
so it is refused. Norse's sequence modules (``LIF``, ``LSNN``, ... over ``[T, B, ...]``) are
refused with the name of the cell to call per step instead, and so are Norse's stateful cells
without an adapter (``LIFExCell``, ``IzhikevichCell``, ...): they hold no parameters, so the
generic validation would otherwise let them through untraced.

The learner starts a sequence from a ``[B, *N]`` state in the input's dtype. Norse itself starts
from scalars of ``p`` (float32 unless ``p`` holds float64 tensors); for a float64 model with the
default float32 ``p`` this changes nothing except ``LIFAdExCell``'s exponential on the first step
(about 1e-10 relative in the gradients against BPTT from ``state=None``).
"""

from __future__ import annotations

from snn_ostl.adapters.norse._base import NorseCellAdapter as NorseCellAdapter
from snn_ostl.adapters.norse._common import surrogate_derivative

# isort: off
# Imported in this order, the cells register in the order the docs' supported-modules table
# lists them. The refusals come last: they skip the module types that have an adapter by then.
from snn_ostl.adapters.norse.lif import (
    IAFCellAdapter,
    LIFBoxCellAdapter,
    LIFCellAdapter,
    LIFRecurrentCellAdapter,
)
from snn_ostl.adapters.norse.adaptive import (
    LIFAdExCellAdapter,
    LSNNCellAdapter,
    LSNNRecurrentCellAdapter,
)
from snn_ostl.adapters.norse.leaky_integrator import LICellAdapter, LILinearCellAdapter
from snn_ostl.adapters.norse.refusals import adapter_for_type as adapter_for_type
# isort: on

__all__ = [
    "IAFCellAdapter",
    "LICellAdapter",
    "LIFAdExCellAdapter",
    "LIFBoxCellAdapter",
    "LIFCellAdapter",
    "LIFRecurrentCellAdapter",
    "LILinearCellAdapter",
    "LSNNCellAdapter",
    "LSNNRecurrentCellAdapter",
    "surrogate_derivative",
]
