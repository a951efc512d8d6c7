"""Adapters of the snnTorch 1.0 neurons (imported only when snnTorch itself is imported).

Every neuron is presented to the engine as an elementwise cell whose state tensors are the
attributes snnTorch keeps on the module, in the order of the neuron's ``forward`` arguments:

=============  ==========================  ============================================
neuron         state                       trace form
=============  ==========================  ============================================
``Leaky``      ``(mem,)``                  presynaptic (fused) for reset "subtract" with
                                           the default ``reset_delay=True``, or "none",
                                           and a scalar beta; per-synapse otherwise
``Synaptic``   ``(syn, mem)``              same rule, alpha and beta scalar (not fused:
                                           two state tensors)
``Lapicque``   ``(mem,)``                  presynaptic (fused) for "subtract"/"none" with
                                           scalar R and C; per-synapse for "zero"
``Alpha``      ``(syn_exc, syn_inh, mem)`` presynaptic for reset "none" only
``RLeaky``     ``(spk, mem)``              full Jacobian (all-to-all ``recurrent``
                                           Linear), per-synapse (one-to-one ``V``)
``RSynaptic``  ``(spk, syn, mem)``         same as RLeaky
``SLSTM``      ``(syn, mem)``              full Jacobian of its LSTM cell (dense)
=============  ==========================  ============================================

The hand-written :meth:`derivatives` of ``Leaky``, ``Synaptic`` and ``Lapicque`` are the hot
path; every other neuron (and every configuration, in the tests) uses the autograd reference of
its :meth:`cell`, which restates snnTorch's ``forward`` operation by operation.

Variants: ``"ostl-no-h"`` detaches the previous spikes on their way into ``recurrent`` (it is
``"ostl"`` for the feed-forward neurons). ``"eprop"`` additionally leaves out the path through
the layer's own spikes in the reset of ``reset_delay=False`` (snnTorch detaches the delayed
reset itself, so there e-prop equals OSTL); like the SNU's ``y_{t-1}``, that path is cut only
where the membrane carries it to later steps, never in the step's own outputs.

What snnTorch does that the adapters guard against:

- the state a caller passes with another shape than the input is silently replaced by zeros in
  snnTorch; here it raises :class:`snn_ostl.StateError` naming the module. An empty tensor
  (what ``init_leaky()``/``reset_mem()`` return before the first step) means "start from zero".
- ``reset`` clears only the module it is given, never every instance in the process.
- spikes are always float32 in snnTorch. While the learner (or :func:`spikes_like_input`)
  is active, the spike function returns spikes in the membrane's dtype with the surrogate's
  gradient in full precision, so a float64 model does not break at the next layer.
- known bugs are refused with the reason and a workaround: ``surrogate.LSO()`` (TypeError),
  ``RSynaptic(reset_delay=False)`` (crashes, and would not reset), ``Lapicque(beta=β)``
  (decays by 1 + ln β, not β), ``SLSTM`` with ``input_size != hidden_size`` (drops its state
  at every step), a ``reset_mechanism`` changed after construction (snnTorch keeps the old one).
  ``Alpha(learn_alpha=True)`` raises inside snnTorch's own constructor, before any of this.
  Also refused: the stochastic ``surrogate.SSO()``, ``inhibition=True``, ``state_quant``, a
  Conv2d recurrence, and the whole-sequence or unadapted modules (``LeakyParallel``,
  ``StateLeaky``, ``LinearLeaky``, ``SConv2dLSTM``, ``AssociativeLeaky``; the engine refuses
  subclasses such as ``DeltaLeaky`` by itself).
"""

from __future__ import annotations

from snn_ostl.adapters.snntorch._common import EXAMPLE_SIZE
from snn_ostl.adapters.snntorch._common import NONE as NONE
from snn_ostl.adapters.snntorch._common import SUBTRACT as SUBTRACT
from snn_ostl.adapters.snntorch._common import ZERO as ZERO
from snn_ostl.adapters.snntorch._spikes import spikes_like_input

# isort: off
# Imported in the order of the table above, which is the order the neurons register in (and
# so the order of the docs' supported-modules table); the refusals come last.
from snn_ostl.adapters.snntorch.leaky import LeakyAdapter
from snn_ostl.adapters.snntorch.synaptic import SynapticAdapter
from snn_ostl.adapters.snntorch.lapicque import LapicqueAdapter
from snn_ostl.adapters.snntorch.alpha import AlphaAdapter
from snn_ostl.adapters.snntorch.recurrent import RLeakyAdapter, RSynapticAdapter
from snn_ostl.adapters.snntorch.slstm import SLSTMAdapter
from snn_ostl.adapters.snntorch import refusals as refusals
# isort: on

__all__ = [
    "EXAMPLE_SIZE",
    "AlphaAdapter",
    "LapicqueAdapter",
    "LeakyAdapter",
    "RLeakyAdapter",
    "RSynapticAdapter",
    "SLSTMAdapter",
    "SynapticAdapter",
    "spikes_like_input",
]
