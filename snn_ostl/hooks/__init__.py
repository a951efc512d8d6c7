"""How a learner sits in the model: forward hooks, the history node, learning signals.

:mod:`~snn_ostl.hooks.forward` holds the module hooks of :class:`snn_ostl.OSTL`;
:mod:`~snn_ostl.hooks.layer` and :mod:`~snn_ostl.hooks.updates` hold one stateful layer, its
trained parameters and the per-step advance of their traces; :mod:`~snn_ostl.hooks.inject` and
:mod:`~snn_ostl.hooks.history` add the history term in the backward pass;
:mod:`~snn_ostl.hooks.signals` replaces the exact learning signal by random or direct feedback;
:mod:`~snn_ostl.hooks.guards` checks at every step that the traces still fit what the layer
receives; :mod:`~snn_ostl.hooks.distributed` averages flushed terms under distributed data
parallel.
"""
