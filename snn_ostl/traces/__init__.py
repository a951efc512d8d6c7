"""The trace forms: how eligibility is stored, advanced and contracted (pure functions).

:mod:`~snn_ostl.traces.forms` holds the presynaptic, elementwise and full-Jacobian forms and the
synapse operations; :mod:`~snn_ostl.traces.per_synapse` the per-synapse traces of a Linear
synapse, :mod:`~snn_ostl.traces.window` their flush every few steps,
:mod:`~snn_ostl.traces.dense` full layer Jacobians, :mod:`~snn_ostl.traces.derived` states
derived from another state, :mod:`~snn_ostl.traces.groups` one parameter's trace and
:mod:`~snn_ostl.traces.snapshots` which snapshots a pending backward still holds. Two learning
rules keep forms of their own: :mod:`~snn_ostl.traces.snap` SnAp-1's compact full-Jacobian
traces, :mod:`~snn_ostl.traces.filtered` SuperSpike's filtered per-synapse eligibilities;
:mod:`~snn_ostl.traces.grads` adds the terms computed outside autograd to ``.grad``.
Traces of parameters reached through a chain live in :mod:`snn_ostl.chains`.
"""
