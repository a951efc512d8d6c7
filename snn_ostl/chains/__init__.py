"""What feeds a neuron within one step, read from the step's own dataflow.

A stateful layer owns every synapse whose output reaches its input current within the same
step through stateless operations only (pooling, dropout, normalisation, scaling, reshaping,
sums of several synapses), and the parameters of those operations. This package finds that
*block* in the autograd graph of the current (:mod:`snn_ostl.chains.walk`; which operations it
holds: :mod:`snn_ostl.chains.ops`), computes how the
current depends on each of the block's parameters at this step (:mod:`snn_ostl.chains.tangents`),
keeps the exact eligibility traces of those parameters (:mod:`snn_ostl.chains.traces`), advances
them in place inside the backward where it can (:mod:`snn_ostl.chains.inplace`), follows a layer's
own spikes fed back by the user's loop (:mod:`snn_ostl.chains.fedback`), keeps a convolution's
trace in a ``flush_every`` window (:mod:`snn_ostl.chains.windowed`), and binds them to a layer
(:mod:`snn_ostl.chains.binding`).
"""
