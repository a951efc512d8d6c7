"""
Train convolutional spiking nets online
=======================================

This tutorial shows how to train convolutional spiking networks online with OSTL, how to check
their gradients against the exact reference, and how their memory behaves as sequences grow.

Convolutional spiking networks are usually written with the synapse and the neuron apart, with
stateless operations between them: snnTorch's tutorials put a ``MaxPool2d`` between each
``Conv2d`` and its ``Leaky`` neurons, Norse's ``ConvNet`` multiplies a convolution by 10 before
its ``LIFCell``. OSTL (Online Spatio-Temporal Learning, Bohnstingl et al., IEEE TNNLS 2022) needs
to know which synapse feeds which neuron. The learner reads that from the autograd graph of the
first step: a stateful layer owns every Conv, Linear or Embedding whose output reaches its input
current within the step through stateless operations only (pooling, dropout, batch norm, scaling,
flattening), and its eligibility traces follow the gradient through them exactly.

Here an snnTorch CSNN and a Norse conv net are trained with an optimizer step after every time
step, the gradients are checked, and the memory is measured against the sequence length. The
data are scikit-learn's 8x8 handwritten digits (1,797 real images, a copy of the test set of the
UCI optical recognition of handwritten digits data set), rate-coded into spike trains.
"""

# sphinx_gallery_thumbnail_number = 1

import matplotlib.pyplot as plt
import norse.torch as norse
import snntorch as snn
import torch
from snntorch import surrogate
from snntorch import utils as snn_utils
from torch import nn

import snn_ostl
from snn_ostl import testing
from snn_ostl.data import load_digits, rate_code

torch.manual_seed(0)
# The tensors here are small: one thread is as fast as several, and it does not slow down when
# other processes keep the machine's cores busy.
torch.set_num_threads(1)
STEPS, BATCH = 12, 64

data = load_digits()
print(data.source)
print(f"{len(data.x_train)} training and {len(data.x_test)} test images")


def batches(x_all, y_all, steps=STEPS, shuffle=True):
    """Rate-coded batches ``[T, B, 1, 8, 8]``: each pixel fires with its intensity per step."""
    order = torch.randperm(len(x_all)) if shuffle else torch.arange(len(x_all))
    for k in range(0, len(x_all), BATCH):
        idx = order[k : k + BATCH]
        spikes = rate_code(x_all[idx], steps)  # [T, B, 64]
        yield spikes.view(steps, len(idx), 1, 8, 8), y_all[idx]


# %%
# An snnTorch CSNN
# ----------------
#
# The network of snnTorch's convolutional tutorial, sized for 8x8 images: two blocks of
# ``Conv2d`` -> ``MaxPool2d`` -> ``Leaky``, then ``Flatten`` -> ``Linear`` -> ``Leaky``. The
# neurons keep their state on themselves (``init_hidden=True``) and the last one also returns its
# membrane potential, so one call of the ``nn.Sequential`` is one time step. Nothing here knows
# about OSTL.

spike_grad = surrogate.fast_sigmoid(slope=25)


def make_csnn():
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),  # [8, 8, 8]
        nn.MaxPool2d(2),  # [8, 4, 4]
        snn.Leaky(beta=0.5, spike_grad=spike_grad, init_hidden=True),
        nn.Conv2d(8, 16, 3, padding=1),  # [16, 4, 4]
        nn.MaxPool2d(2),  # [16, 2, 2]
        snn.Leaky(beta=0.5, spike_grad=spike_grad, init_hidden=True),
        nn.Flatten(),
        nn.Linear(16 * 2 * 2, 10),
        snn.Leaky(beta=0.5, spike_grad=spike_grad, init_hidden=True, output=True),
    )


csnn = make_csnn()
loss_fn = nn.CrossEntropyLoss()

# %%
# Attach a learner and run one step so that it can read the graph. The summary lists every
# trained parameter with the layer that owns it: each ``Conv2d`` belongs to the ``Leaky`` after
# the ``MaxPool2d`` ("through max_pool2d"). Max pooling picks one input per output neuron, so the
# derivative of a neuron's input current with respect to a kernel weight differs from neuron to
# neuron: those traces are *per-synapse*, one number per neuron, sample and weight of the
# neuron's kernel.
# The ``Linear`` feeds its ``Leaky`` directly and gets the cheap *presynaptic* trace, one filtered
# copy of its input.

learner = snn_ostl.OSTL(csnn)
learner.reset()
x, labels = next(batches(data.x_train, data.y_train))
spikes, membrane = csnn(x[0])
loss_fn(membrane, labels).backward()
print(learner.summary())
csnn.zero_grad()

# %%
# Training with an update at every step
# -------------------------------------
#
# The loop of online learning: forward one time step, backpropagate that step's loss (the
# cross-entropy of the output membrane), update the weights, move to the next step. Nothing is
# kept from one step to the next but the neurons' state and the learner's eligibility traces.
# ``learner.reset()`` before each batch clears both: a batch is a new set of sequences. The
# prediction is the class whose output neuron fired most over the sequence.

optimizer = torch.optim.Adam(csnn.parameters(), lr=2e-3)


def accuracy(model, learner, score_fn):
    correct = 0
    with torch.no_grad():  # evaluation: the learner steps aside
        for x, labels in batches(data.x_test, data.y_test, shuffle=False):
            learner.reset()  # also empties the state the Leaky neurons keep on themselves
            score = score_fn(model, x)
            correct += int((score.argmax(1) == labels).sum())
    return correct / len(data.x_test)


def spike_count(model, x):
    return sum(model(x_t)[0] for x_t in x)


EPOCHS = 4
losses, test_accs = [], []
for epoch in range(EPOCHS):
    for x, labels in batches(data.x_train, data.y_train):
        learner.reset()
        batch_loss = 0.0
        for x_t in x:
            _, membrane = csnn(x_t)
            loss = loss_fn(membrane, labels)
            loss.backward()
            optimizer.step()  # immediate update: the weights change within the sequence
            optimizer.zero_grad()
            batch_loss += loss.item() / STEPS
        losses.append(batch_loss)
    test_accs.append(accuracy(csnn, learner, spike_count))
    print(f"epoch {epoch + 1}: test accuracy {test_accs[-1]:.1%}")
learner.detach()

# %%
# The loss of every batch (the mean over its time steps) and the test accuracy after each epoch.
# With an update at every step, the traces of step ``t`` were built while the weights were still
# changing, so each gradient is that of a slowly moving network; with a small learning rate this
# does not get in the way.

fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.6))
ax_loss.plot(range(1, len(losses) + 1), losses, lw=1)
ax_loss.set(xlabel="batch", ylabel="cross-entropy per step", title="snnTorch CSNN, online")
ax_acc.plot(range(1, EPOCHS + 1), [100 * a for a in test_accs], marker="o")
ax_acc.set(xlabel="epoch", ylabel="test accuracy (%)", ylim=(0, 100), xticks=range(1, EPOCHS + 1))
fig.tight_layout()

# %%
# Are these the OSTL gradients?
# -----------------------------
#
# With three stateful layers, OSTL is not BPTT: the gradient of a lower layer leaves out the
# paths that travel forward in time through the memory of the layers above it. What it computes
# instead is exactly the BPTT gradient of a graph in which the previous state of every stateful
# layer above the parameter's layer is detached at every step.
# :func:`~snn_ostl.testing.oracle_gradients` builds that reference with plain autograd;
# :func:`~snn_ostl.testing.ostl_gradients` runs the learner over the same sequence with a backward
# at every step (and no optimizer step, so the weights stay put). One batch of 16 digits is
# enough.

x, labels = next(batches(data.x_test[:16], data.y_test[:16], shuffle=False))

# Both hidden layers must spike, or the comparison says nothing.
with torch.no_grad():
    snn_utils.reset(csnn)
    rates = [0.0, 0.0]
    for x_t in x:
        h = x_t
        for k, module in enumerate(csnn):
            h = module(h)
            if k in (2, 5):  # the two hidden Leaky layers
                rates[k // 3] += float(h.mean()) / STEPS
print(f"spikes per neuron and step: first layer {rates[0]:.2f}, second layer {rates[1]:.2f}")


def run():
    """One sequence from a fresh state (the helpers reset the neurons): each step's loss."""
    for x_t in x:
        yield loss_fn(csnn(x_t)[1], labels)


ostl, owners, order = testing.ostl_gradients(csnn, run)
oracle = testing.oracle_gradients(csnn, run, owners, order)
snn_utils.reset(csnn)  # full BPTT: one backward of the summed loss, nothing detached
torch.stack(list(run())).sum().backward()
bptt = {name: p.grad.clone() for name, p in csnn.named_parameters()}
csnn.zero_grad()

to_oracle, to_bptt = testing.compare(ostl, oracle), testing.compare(ostl, bptt)
print(f"{'parameter':10s} {'owner':>6s} {'vs oracle':>10s} {'vs BPTT':>10s}")
for name in ostl:
    print(f"{name:10s} {owners[name]:>6s} {to_oracle[name]:10.1e} {to_bptt[name]:10.1e}")

# %%
# Every parameter matches its oracle to float32 rounding (snnTorch computes in float32). The
# ``Linear`` has no stateful layer above it, so its oracle is BPTT itself; the two convolutions
# have one and two ``Leaky`` layers above them and differ from full BPTT. Each entry of the lower
# convolution's gradient, against both references (on the diagonal: equal):


def scatter(ax, reference, title):
    ref, mine = reference["0.weight"].flatten(), ostl["0.weight"].flatten()
    lim = float(torch.cat([ref, mine]).abs().max()) * 1.1
    ax.plot([-lim, lim], [-lim, lim], color="grey", lw=0.8)
    ax.scatter(ref, mine, s=14, marker="o", facecolors="none", edgecolors="C0")
    ax.set(xlim=(-lim, lim), ylim=(-lim, lim), aspect="equal", title=title)
    ax.set(xlabel="reference gradient", ylabel="OSTL gradient")
    ax.locator_params(nbins=5)


fig, axes = plt.subplots(1, 2, figsize=(9, 4.2))
scatter(axes[0], oracle, "first conv vs the oracle")
scatter(axes[1], bptt, "first conv vs full BPTT")
fig.tight_layout()

# %%
# A Norse conv net
# ----------------
#
# Norse's ``ConvNet`` (``norse.torch.models.conv``) calls its cells once per step with an explicit
# state, scales its second convolution by 10 before that layer's ``LIFCell``, pools the spikes,
# and reads out through a leaky integrator (an ``LILinearCell``: a Linear synapse and the
# integrator in one module). The same shape, smaller, with the synapse and the integrator apart:
# ``Conv2d`` -> ``10 *`` -> ``LIFCell`` -> ``MaxPool2d`` -> flatten -> ``Linear`` -> ``LIFCell``
# -> ``Linear`` -> ``LICell``.


class NorseConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.lif0 = norse.LIFCell()
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(8 * 4 * 4, 64)
        self.lif1 = norse.LIFCell()
        self.readout = nn.Linear(64, 10)
        self.out = norse.LICell()

    def forward(self, x, state=None):
        s0, s1, so = state if state is not None else (None, None, None)
        z, s0 = self.lif0(10 * self.conv(x), s0)
        z = self.pool(z).flatten(1)
        z, s1 = self.lif1(self.fc(z), s1)
        v, so = self.out(self.readout(z), so)
        return v, (s0, s1, so)


# %%
# The learner finds the scaling between the convolution and the first ``LIFCell`` ("through
# mul"). Norse's LIF neurons reset through a differentiable gate on their own spike, so the
# derivative of the state differs from neuron to neuron and both LIF layers need per-synapse
# traces (the first ``Linear``'s trace is still presynaptic for the synaptic current ``i``, the
# part of the state that the input enters). The leaky integrator at the top has no reset and gets
# the cheap presynaptic kind.

norse_net = NorseConvNet()
learner = snn_ostl.OSTL(norse_net)
learner.reset()
x, labels = next(batches(data.x_train, data.y_train))
v, _ = norse_net(x[0])
loss_fn(v, labels).backward()
print(learner.summary())
norse_net.zero_grad()

# %%
# The summary's tip about ``flush_every`` is for loops that step the optimizer once per sequence;
# with an update after every step, the traces have to be read at every step anyway.
#
# Per-synapse traces are the most expensive kind, so the run is short: three epochs, again with
# an update at every step. The prediction is the class with the largest voltage at the last
# step.

optimizer = torch.optim.Adam(norse_net.parameters(), lr=2e-3)


def last_voltage(model, x):
    state = None
    for x_t in x:
        v, state = model(x_t, state)
    return v


for epoch in range(3):
    for x, labels in batches(data.x_train, data.y_train):
        learner.reset()
        state = None
        for x_t in x:
            v, state = norse_net(x_t, state)
            loss_fn(v, labels).backward()
            optimizer.step()
            optimizer.zero_grad()
    print(f"epoch {epoch + 1}: test accuracy {accuracy(norse_net, learner, last_voltage):.1%}")
learner.detach()

# %%
# Memory against the sequence length
# ----------------------------------
#
# BPTT keeps everything autograd saved for the backward pass until the end of the sequence;
# OSTL runs a backward pass at every step and frees it at once. We count the bytes saved for
# backward with :func:`torch.autograd.graph.saved_tensors_hooks` (each tensor once, cleared after
# every backward pass, keeping the peak) for the snnTorch CSNN at ``T`` = 10, 20 and 40, one
# batch of 64 digits.


class SavedBytes:
    """The peak of the bytes saved for backward since the last backward pass."""

    def __init__(self):
        self.peak, self.window = 0, {}

    def pack(self, tensor):
        key = (tensor.data_ptr(), tensor.shape, tensor.dtype)
        self.window[key] = tensor.numel() * tensor.element_size()
        self.peak = max(self.peak, sum(self.window.values()))
        return tensor

    def hooks(self):
        return torch.autograd.graph.saved_tensors_hooks(self.pack, lambda tensor: tensor)


def bptt_bytes(model, x, labels):
    counter = SavedBytes()
    snn_utils.reset(model)
    with counter.hooks():
        total = sum(loss_fn(model(x_t)[1], labels) for x_t in x)
        total.backward()
    return counter.peak


def ostl_bytes(model, learner, x, labels):
    counter = SavedBytes()
    learner.reset()
    with counter.hooks():
        for x_t in x:
            loss_fn(model(x_t)[1], labels).backward()
            counter.window.clear()  # this step's graph is gone
    return counter.peak


LENGTHS = [10, 20, 40]
MIB = 2**20
memory = {"BPTT": [], "OSTL": []}
for T in LENGTHS:
    x, labels = next(batches(data.x_train, data.y_train, steps=T))
    memory["BPTT"].append(bptt_bytes(csnn, x, labels) / MIB)
    with snn_ostl.OSTL(csnn) as learner:
        memory["OSTL"].append(ostl_bytes(csnn, learner, x, labels) / MIB)
        # the traces' size, which depends on the batch and not on T
        trace_mib = learner.trace_bytes() / MIB
    csnn.zero_grad()

print(f"{'T':>4s} {'BPTT saved':>11s} {'OSTL saved':>11s} {'OSTL traces':>12s}")
for k, T in enumerate(LENGTHS):
    print(f"{T:4d} {memory['BPTT'][k]:7.2f} MiB {memory['OSTL'][k]:7.2f} MiB {trace_mib:8.2f} MiB")

# %%
# BPTT's saved memory grows in proportion to ``T``. OSTL's is one step's worth at every length,
# and its eligibility traces are a fixed cost on top that depends on the network and the batch
# size, never on ``T``.

fig, ax = plt.subplots(figsize=(5.2, 3.8))
ax.plot(LENGTHS, memory["BPTT"], marker="o", label="BPTT, saved for backward")
ax.plot(LENGTHS, memory["OSTL"], marker="s", label="OSTL, saved for backward")
ax.plot(
    LENGTHS,
    [m + trace_mib for m in memory["OSTL"]],
    marker="^",
    ls="--",
    mfc="none",
    label="OSTL, saved + traces",
)
ax.set(xlabel="sequence length T", ylabel="MiB at the peak", title="snnTorch CSNN, batch 64")
ax.set_ylim(0, None)
ax.legend()
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
# What to take away
# -----------------
#
# - Convolutional spiking nets train online without changing how they are written: the learner
#   finds which synapse feeds which neuron through pooling and scaling, from the graph of the
#   first step.
# - The gradients are OSTL's exactly (checked against the oracle above), which for a deep net is
#   not full BPTT's: the lower layers leave out the paths through the memory of the layers above.
# - Pooling and neurons with a differentiable reset make the traces per-synapse, whose size grows
#   with the number of neurons times the kernel size; the summary prints what each costs before
#   you scale a network up.
