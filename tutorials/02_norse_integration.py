"""
Norse integration
=================

This tutorial shows how to train a Norse network online with OSTL, how to check in float64 that
its gradients are exactly the ones OSTL defines, and when ``flush_every`` helps.

Norse cells are called once per time step with an explicit state, ``z, s = cell(x, s)``, and
``norse.torch.SequentialState`` chains them with ordinary modules, threading every cell's state
through. That is already the shape online learning needs: attach a learner, backpropagate each
step's loss as it comes.

The network here: a Linear synapse, a layer of ``LIFCell`` spiking neurons, a second Linear
synapse and an ``LICell`` leaky integrator whose voltage is the output.
"""

import matplotlib.pyplot as plt
import norse.torch as norse
import torch
from torch import nn

import snn_ostl
from snn_ostl import testing
from snn_ostl.data import load_digits

torch.manual_seed(0)
STEPS, BATCH, HIDDEN = 20, 64, 100


def make_model(dtype=torch.float32):
    return norse.SequentialState(
        nn.Linear(64, HIDDEN),
        norse.LIFCell(),
        nn.Linear(HIDDEN, 10),
        norse.LICell(),
    ).to(dtype)


# %%
# Attaching the learner
# ---------------------
#
# The learner finds the two cells, and the Linear module called right before each one becomes
# that cell's synapse. The trace forms differ: Norse's LIF reset is a differentiable gate on the
# neuron's own spike, so the Jacobian changes from neuron to neuron and the first synapse needs
# *per-synapse* traces; the leaky integrator has no reset and one decay for all, so the second
# synapse gets cheap *presynaptic* traces.

model = make_model()
learner = snn_ostl.OSTL(model)
learner.reset()
x = (torch.rand(STEPS, 8, 64) < 0.3).float()
state = None
for t in range(STEPS):
    out, state = model(x[t], state)
print(learner.summary())
learner.detach()

# %%
# Exactness check in float64
# --------------------------
#
# Norse works in float64, so we can see OSTL's gradient to rounding error. The ``LICell`` has
# memory, so it is a stateful layer *above* the LIF layer: the LIF layer's gradient is not full
# BPTT's but the oracle's (BPTT with the states of the layers above detached at every step).
# The readout's own synapse has nothing stateful above it, so it equals BPTT.

model64 = make_model(torch.float64)
x64 = (torch.rand(STEPS, 8, 64) < 0.4).double() * 4.0
targets = torch.randint(10, (8,))
loss_fn = nn.CrossEntropyLoss()


def run():
    state = None
    for t in range(STEPS):
        out, state = model64(x64[t], state)
        yield loss_fn(out, targets)


# The LIF neurons must spike, or the comparison says nothing: run the first two modules alone.
with torch.no_grad():
    lif_state, rate = None, 0.0
    for t in range(STEPS):
        z, lif_state = model64[1](model64[0](x64[t]), lif_state)
        rate += float(z.mean()) / STEPS
print(f"LIF spike rate: {rate:.2f} spikes per neuron and step")

grads, owners, order = testing.ostl_gradients(model64, run)
oracle = testing.oracle_gradients(model64, run, owners, order)
model64.zero_grad()
torch.stack(list(run())).sum().backward()
bptt = {name: p.grad.clone() for name, p in model64.named_parameters()}
model64.zero_grad()

to_oracle, to_bptt = testing.compare(grads, oracle), testing.compare(grads, bptt)
print(f"{'parameter':10s} {'vs oracle':>10s} {'vs BPTT':>10s}")
for name in grads:
    print(f"{name:10s} {to_oracle[name]:10.1e} {to_bptt[name]:10.1e}")

# %%
# The same numbers as a chart (log scale; float64 rounding is about :math:`10^{-16}`). The LIF
# synapse matches its oracle to rounding error and differs from BPTT by the path through the
# integrator's memory that OSTL leaves out; the readout matches both.

fig, ax = plt.subplots(figsize=(6.5, 3.6))
positions = torch.arange(len(grads), dtype=torch.float64)
tiny = 1e-17  # an error of exactly 0 is drawn at 1e-17, below rounding
for offset, (errors, label) in zip((-0.2, 0.2), ((to_oracle, "vs oracle"), (to_bptt, "vs BPTT"))):
    values = [max(errors[name], tiny) for name in grads]
    ax.bar(positions + offset, values, width=0.4, label=f"OSTL {label}")
ax.axhline(torch.finfo(torch.float64).eps, color="grey", ls=":", lw=1, label="float64 epsilon")
ax.set(yscale="log", ylim=(1e-18, 10))
ax.set_xticks(
    positions, [f"{name}\n({'LIF' if name.startswith('0.') else 'LI'} synapse)" for name in grads]
)
ax.set(ylabel="largest relative difference", title="Norse LIF -> LI network, float64")
ax.legend(loc="center left", fontsize="small")
fig.tight_layout()

# %%
# Flushing every few steps
# ------------------------
#
# The per-synapse trace of the LIF layer is ``[neurons, batch, inputs]``, the largest tensor the
# learner keeps, and by default every step's backward reads and rewrites it. When the optimizer
# steps only once per sequence, ``OSTL(model, flush_every=W)`` records each step's state gradient
# instead and adds the history terms of ``W`` steps at once, in matrix products. The gradient is
# the same (only the order of floating-point sums differs); what changes is *when* ``.grad``
# holds it: every ``W`` steps, before every ``optimizer.step()``, and on ``learner.flush()``.

flushed, _, _ = testing.ostl_gradients(model64, run, flush_every=8)  # detach() flushes
print(f"flush_every=8 vs every step: {max(testing.compare(flushed, grads).values()):.1e}")

with snn_ostl.OSTL(model64, flush_every=100) as learner:
    learner.reset()
    for loss in run():
        loss.backward()
    weight = model64[0].weight
    before = (weight.grad - grads["0.weight"]).abs().max()
    learner.flush()  # optimizer.step() would do the same first
    after = (weight.grad - grads["0.weight"]).abs().max()
print(f"LIF synapse .grad off by {before:.1e} before the flush, {after:.1e} after it")
model64.zero_grad()

# %%
# Training
# --------
#
# A short run on scikit-learn's 8x8 digits, rate-coded into spike trains. The loss is the
# cross-entropy of the integrator's voltage at every step, backpropagated at every step; the
# optimizer steps once per batch. The prediction is the class with the largest voltage at the
# last step.

data = load_digits()
model = make_model()
optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
learner = snn_ostl.OSTL(model)


def batches(x_all, y_all, shuffle=True):
    order = torch.randperm(len(x_all)) if shuffle else torch.arange(len(x_all))
    for k in range(0, len(x_all), BATCH):
        idx = order[k : k + BATCH]
        yield (torch.rand(STEPS, len(idx), 64) < x_all[idx]).float(), y_all[idx]


def accuracy():
    correct = 0
    with torch.no_grad():
        for x, labels in batches(data.x_test, data.y_test, shuffle=False):
            state = None
            for t in range(STEPS):
                out, state = model(x[t], state)
            correct += int((out.argmax(1) == labels).sum())
    return correct / len(data.x_test)


batch_losses = []
for epoch in range(2):
    for x, labels in batches(data.x_train, data.y_train):
        learner.reset()
        state, batch_loss = None, 0.0
        for t in range(STEPS):
            out, state = model(x[t], state)
            loss = loss_fn(out, labels)
            loss.backward()
            batch_loss += loss.item() / STEPS
        optimizer.step()
        optimizer.zero_grad()
        batch_losses.append(batch_loss)
    test_acc = accuracy()
    print(f"epoch {epoch + 1}: test accuracy {test_acc:.1%}")
learner.detach()

# %%
# The training loss of every batch (the mean over its time steps) and, in the title, the test
# accuracy at the end.

fig, ax = plt.subplots(figsize=(6.5, 3.4))
ax.plot(range(1, len(batch_losses) + 1), batch_losses, lw=1)
ax.set(xlabel="batch", ylabel="cross-entropy per step")
ax.set_title(f"Norse LIF -> LI, trained by OSTL: test accuracy {test_acc:.1%}")
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

# %%
# Norse specifics worth knowing
# -----------------------------
#
# - Norse's neuron parameters (time constants, threshold) live in named tuples such as
#   ``LIFParameters``, not in ``nn.Parameter`` attributes, so by default only the synapses are
#   trained. Putting an ``nn.Parameter`` into a field of the tuple makes the learner train it
#   too; Norse does not register it on the module, so pass it to the optimizer yourself.
# - The sequence modules (``norse.torch.LIF`` and friends, which take a whole ``[T, B, ...]``
#   tensor) are refused with the name of the cell to call per step instead: OSTL needs to see
#   every step.
# - Which Norse cells are supported, and with which trace form, is listed on the supported
#   modules page, generated from the adapters.
