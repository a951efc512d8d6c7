"""What feeds a neuron within one step, read from the step's own dataflow.

A stateful layer owns every synapse whose output reaches its input current within the same
step through stateless operations only (pooling, dropout, normalisation, scaling, reshaping,
sums of several synapses), and the parameters of those operations. This package finds that
*block* in the autograd graph of the current (:mod:`snn_ostl.chains.walk`), computes how the
current depends on each of the block's parameters at this step (:mod:`snn_ostl.chains.tangents`)
and keeps the exact eligibility traces of those parameters (:mod:`snn_ostl.chains.traces`).
"""

from snn_ostl.chains.walk import Block, SynapseUse, walk

__all__ = ["Block", "SynapseUse", "walk"]
