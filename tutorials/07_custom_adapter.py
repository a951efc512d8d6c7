"""
Writing your own adapter
========================

This tutorial shows how to make the learner train a spiking neuron module of your own: you
write an adapter for it, check the gradients against the exact reference, and then make its
traces cheaper with hand-written derivatives.

The learner trains any stateful module it has an adapter for. Here a small spiking neuron module
written from scratch gets an adapter in two steps (first the minimum, which lets autograd work out
the derivatives; then a fast path that makes the traces presynaptic), and both are checked against
the exact reference of :mod:`snn_ostl.testing`.

The full contract is documented in :mod:`snn_ostl.adapter`; the adapter of the native SNU,
``snn_ostl.adapters.native``, is a complete example.
"""

import matplotlib.pyplot as plt
import torch
from torch import nn

import snn_ostl
from snn_ostl import testing
from snn_ostl.adapter import ElementwiseAdapter
from snn_ostl.derivatives import ElementwiseDerivatives

torch.manual_seed(0)
DTYPE = torch.float64

# %%
# The neuron
# ----------
#
# A leaky integrate-and-fire neuron with one state tensor, the membrane potential ``v``. It leaks
# by ``beta``, adds its input current, and when the previous potential was above the threshold it
# subtracts the threshold. The reset is decided by a comparison, so no gradient flows through it.
# The output is a spike with a smooth surrogate derivative (the step in the forward pass, the
# sigmoid's slope in the backward pass).


def spike(x):
    smooth = torch.sigmoid(4.0 * x)
    return (x > 0).to(x.dtype) + (smooth - smooth.detach())


class LeakyNeuron(nn.Module):
    """``v_t = beta * v_{t-1} + a_t - threshold * [v_{t-1} > threshold]``, spikes on ``v_t``."""

    def __init__(self, beta=0.9, threshold=1.0):
        super().__init__()
        self.beta, self.threshold = beta, threshold

    def forward(self, current, v=None):
        if v is None:
            v = torch.zeros_like(current)
        reset = (v > self.threshold).to(v.dtype)
        v = self.beta * v + current - self.threshold * reset
        return spike(v - self.threshold), v


# %%
# Step 1: the minimal adapter
# ---------------------------
#
# An :class:`~snn_ostl.adapter.ElementwiseAdapter` (each neuron updates from its own state and its
# own current) has to tell the learner where the state goes in and comes out of a call, and what
# one step does as a pure function. That is all:
#
# - ``read_state`` / ``write_state``: the previous state a call uses, and how to make the call use
#   another one (the learner substitutes a detached copy that carries the history term);
# - ``initial_state`` / ``new_state``: the zeros a call starts from, and the state it produced;
# - ``cell``: one step from the current and the old state, written without the module's
#   bookkeeping. The learner differentiates it with autograd to get the step's partial
#   derivatives.
#
# :func:`snn_ostl.register_adapter` puts it in the registry, keyed by the module class. The
# ``examples`` are what the test suite and the supported-modules table use.


@snn_ostl.register_adapter(LeakyNeuron, examples={"default": lambda: LeakyNeuron()})
class LeakyNeuronAdapter(ElementwiseAdapter):
    state_names = ("v",)
    variants = ("ostl",)
    framework = "tutorial"

    def read_state(self, module, args, kwargs):
        v = args[1] if len(args) > 1 else kwargs.get("v")
        return None if v is None else (v,)

    def write_state(self, module, args, kwargs, state):
        if len(args) > 1:
            return (args[0], state[0], *args[2:]), kwargs
        return args, {**kwargs, "v": state[0]}

    def initial_state(self, module, current):
        return (torch.zeros_like(current),)

    def new_state(self, module, args, kwargs, output):
        return (output[1],)

    def cell(self, module, current, state, params):
        (v,) = state
        reset = (v > module.threshold).to(v.dtype)
        return (module.beta * v + current - module.threshold * reset,)


# %%
# A model that uses it: two layers of the new neuron, each fed by its own Linear synapse, and a
# Linear readout. The synapses are ordinary ``nn.Linear`` modules called right before each neuron;
# the learner finds them at the first step.


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(8, 24, dtype=DTYPE)
        self.lif1 = LeakyNeuron()
        self.fc2 = nn.Linear(24, 12, dtype=DTYPE)
        self.lif2 = LeakyNeuron(beta=0.8, threshold=0.5)
        self.readout = nn.Linear(12, 3, dtype=DTYPE)

    def forward(self, x, state=None):
        v1, v2 = state if state is not None else (None, None)
        y, v1 = self.lif1(self.fc1(x), v1)
        y, v2 = self.lif2(self.fc2(y), v2)
        return self.readout(y), (v1, v2)


net = Net()
T = 25
inputs = (torch.rand(T, 4, 8) < 0.5).to(DTYPE) * 2.0
targets = torch.randn(T, 4, 3, dtype=DTYPE)


def run():
    """One sequence from a fresh state, yielding every step's loss (what testing expects)."""
    state = None
    for t in range(T):
        out, state = net(inputs[t], state)
        yield ((out - targets[t]) ** 2).sum()


with torch.no_grad():
    state, rates = None, torch.zeros(2, dtype=DTYPE)
    for t in range(T):
        _, state = net(inputs[t], state)
        y1 = (state[0] > net.lif1.threshold).to(DTYPE).mean()
        y2 = (state[1] > net.lif2.threshold).to(DTYPE).mean()
        rates += torch.stack([y1, y2]) / T
print(f"spike rates: layer 1 {rates[0]:.2f}, layer 2 {rates[1]:.2f} (both must be above 0)")

# %%
# Check it against the oracle
# ---------------------------
#
# The oracle is the BPTT gradient of a graph in which every stateful layer above the one in
# question has its previous state detached at each step. OSTL must match it to rounding error for
# every parameter. The upper layer and the readout have nothing stateful above them, so for them
# the oracle is plain BPTT.


def check(label):
    """OSTL's gradients and their relative error against the oracle, parameter by parameter."""
    grads, owners, order = testing.ostl_gradients(net, run)
    reference = testing.oracle_gradients(net, run, owners, order)
    errors = testing.compare(grads, reference)
    worst = max(errors.values())
    print(f"{label}: largest relative error against the oracle over all parameters: {worst:.1e}")
    assert worst < 1e-10
    return grads, errors


grads_generic, errors_generic = check("generic derivatives")

# %%
# The summary shows the trace form the learner chose: *per-synapse*, one number per weight,
# because the adapter did not claim anything more about the neuron.


def show_traces():
    """Attach a learner, run one step, print the summary and the bytes the traces hold."""
    with snn_ostl.OSTL(net) as learner:
        learner.reset()
        net(inputs[0])
        print(learner.summary())
        total = learner.trace_bytes()  # the summary's total, in bytes
    print(f"trace memory after one step: {total} bytes")
    return total


generic_bytes = show_traces()

# %%
# Step 2: a fast path
# -------------------
#
# This neuron's Jacobian is very simple: :math:`\partial v_t / \partial v_{t-1} = \beta` (the reset
# carries no gradient) and :math:`\partial v_t / \partial a_t = 1`, the same plain numbers for
# every neuron at every step. Then every neuron's trace for its weight :math:`W_{ni}` is the same
# filtered input :math:`\bar x_t = \beta \bar x_{t-1} + x_t`, and the learner only has to store
# :math:`\bar x` (presynaptic traces, see the theory page).
#
# The adapter says so with ``factorised`` and gives the derivatives by hand. In the factorised
# case the entries must be Python numbers, not tensors. Registering the subclass for the same
# module class replaces the first adapter.


@snn_ostl.register_adapter(LeakyNeuron, examples={"default": lambda: LeakyNeuron()})
class FactorisedLeakyNeuronAdapter(LeakyNeuronAdapter):
    def factorised(self, module, variant):
        return True

    def derivatives(self, module, step, variant, current):
        return ElementwiseDerivatives(state=[[float(module.beta)]], current=[1.0])


grads_fast, errors_fast = check("hand-written derivatives")
fast_bytes = show_traces()

# %%
# Same gradients, far smaller traces. A hand-written ``derivatives`` is only a speed-up: it must
# agree with the autograd derivatives of ``cell``, which stay the reference. And ``factorised``
# must only say ``True`` when it holds: had the reset passed a gradient through the neuron's own
# spikes, the Jacobian would differ from neuron to neuron and the presynaptic form would be wrong.

difference = max(testing.compare(grads_fast, grads_generic).values())
print(f"generic vs fast path, largest relative difference: {difference:.1e}")
print(f"trace memory: {generic_bytes} bytes per-synapse, {fast_bytes} bytes presynaptic")

# %%
# Both adapters side by side: the error of every parameter's gradient against the oracle (log
# scale; float64 rounding is about :math:`10^{-16}`), and the memory the traces take.

fig, (ax_err, ax_mem) = plt.subplots(
    1, 2, figsize=(9.5, 3.8), gridspec_kw={"width_ratios": [2.3, 1]}
)
names = list(errors_generic)
positions = torch.arange(len(names), dtype=torch.float64)
tiny = 1e-17  # an error of exactly 0 is drawn at 1e-17, below rounding
for offset, errors, label in ((-0.2, errors_generic, "generic"), (0.2, errors_fast, "fast path")):
    ax_err.bar(positions + offset, [max(errors[n], tiny) for n in names], width=0.4, label=label)
ax_err.axhline(torch.finfo(DTYPE).eps, color="grey", ls=":", lw=1, label="float64 epsilon")
ax_err.set_yscale("log")
ax_err.set_xticks(positions, names, rotation=30, ha="right")
ax_err.set(ylabel="relative error vs the oracle", title="gradients", ylim=(1e-18, 1))
ax_err.legend(fontsize="small")
ax_mem.bar(["generic\n(per-synapse)", "fast path\n(presynaptic)"], [generic_bytes, fast_bytes])
ax_mem.set(ylabel="bytes after one step", title="trace memory")
fig.tight_layout()

# sphinx_gallery_start_ignore
# Run as a script, the tutorial saves its figures as PNG files in the current folder (the
# documentation build, which defines no ``__file__``, collects the figures itself).
if "__file__" in globals():
    from pathlib import Path

    for number in plt.get_fignums():
        path = Path(f"tutorial_{Path(__file__).stem}_{number}.png")
        plt.figure(number).savefig(path, dpi=100)
        print(f"figure saved to {path.resolve()}")
# sphinx_gallery_end_ignore
