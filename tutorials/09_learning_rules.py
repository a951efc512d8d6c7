"""
Three learning rules on one snnTorch model
==========================================

The learner trains a model with one of several online learning rules, picked by name:
``snn_ostl.OSTL(model, rule="eprop-random")``. This tutorial trains the same snnTorch network,
from the same initial weights and on the same spike trains, with three of them and compares
their test accuracy, their time per epoch and the memory of their traces:

- ``"ostl"``: the exact eligibility of each layer, with the error passed down through the
  transposed weights at every step (the default rule);
- ``"eprop-random"``: e-prop (Bellec et al., 2020) with random feedback: the error reaches the
  hidden layer through a fixed random matrix instead of the transposed output weights;
- ``"decolle"``: DECOLLE (Kaiser, Mostafa & Neftci, 2020): no error crosses layers; the hidden
  layer learns from a loss of its own, computed on a fixed random readout of its spikes.

The :doc:`theory page <../theory>` says what each rule keeps of the exact gradient. The data are
scikit-learn's 8x8 digits, rate-coded into spike trains, as in the first tutorial.
"""

import copy
import time

import matplotlib.pyplot as plt
import snntorch as snn
import torch
from snntorch import spikegen
from torch import nn

import snn_ostl
from snn_ostl.data import load_digits

SEED, STEPS, BATCH, HIDDEN, EPOCHS = 0, 20, 64, 128, 6
torch.manual_seed(SEED)

data = load_digits()
print(data.source)
print("learning rules:", ", ".join(snn_ostl.rules.rule_names()))


def batches(x, y, shuffle=True):
    order = torch.randperm(len(x)) if shuffle else torch.arange(len(x))
    for k in range(0, len(x), BATCH):
        idx = order[k : k + BATCH]
        # rate coding: a pixel of intensity p fires at each step with probability p
        yield spikegen.rate(x[idx], num_steps=STEPS), y[idx]


# %%
# The model
# ---------
#
# Written as in snnTorch's tutorials: two Linear layers, each followed by a ``Leaky`` neuron,
# with the membranes passed in and out explicitly. One call is one time step; the caller keeps
# the membranes between steps. Nothing in it knows about learning rules.


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(64, HIDDEN)
        self.lif1 = snn.Leaky(beta=0.9)
        self.fc2 = nn.Linear(HIDDEN, 10)
        self.lif2 = snn.Leaky(beta=0.9)

    def forward(self, x, mem1, mem2):
        spk1, mem1 = self.lif1(self.fc1(x), mem1)
        spk2, mem2 = self.lif2(self.fc2(spk1), mem2)
        return spk2, mem1, mem2


initial = Net()  # one draw of the initial weights, copied for every rule below
loss_fn = nn.CrossEntropyLoss()

# %%
# One training loop for the three rules
# -------------------------------------
#
# ``OSTL(model, rule=...)`` takes a rule's name, or a rule object when it has options.
# DECOLLE's local readouts need their size, the number of classes: ``DECOLLE(outputs=10)``.
#
# The loop is the one of the first tutorial: a backward pass at every time step on the
# cross-entropy of the output membrane, an optimizer step per batch. ``"ostl"`` and
# ``"eprop-random"`` need nothing else. DECOLLE needs one extra term in the loss: the hidden
# layer's local loss, ``learner.rule.local_loss(labels)``, the mean squared error between the
# random readout of its spikes at this step and the one-hot label. Each layer's ``.grad`` then
# holds what DECOLLE gives it: the hidden layer's from its local loss only, the output layer's
# from the cross-entropy.

RULES = {
    "ostl": "ostl",
    "eprop-random": "eprop-random",
    "decolle": snn_ostl.rules.DECOLLE(outputs=10),
}


def accuracy(model, learner, x_all, y_all):
    """Fraction of digits whose label is the output neuron that spiked most."""
    correct = 0
    with torch.no_grad():  # evaluation: the learner steps aside
        for x, labels in batches(x_all, y_all, shuffle=False):
            learner.reset()
            mem1, mem2 = model.lif1.init_leaky(), model.lif2.init_leaky()
            spike_count = 0
            for t in range(STEPS):
                spk2, mem1, mem2 = model(x[t], mem1, mem2)
                spike_count = spike_count + spk2
            correct += int((spike_count.argmax(1) == labels).sum())
    return correct / len(x_all)


results = {}
for name, rule in RULES.items():
    torch.manual_seed(SEED)  # the same shuffles and spike trains for every rule
    model = copy.deepcopy(initial)
    learner = snn_ostl.OSTL(model, rule=rule)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    # epoch 0: before training
    accs = [accuracy(model, learner, data.x_test, data.y_test)]
    losses, seconds, trace_bytes = [], [], 0
    for _ in range(EPOCHS):
        start, total, count = time.perf_counter(), 0.0, 0
        for x, labels in batches(data.x_train, data.y_train):
            learner.reset()  # new sequences: traces and membranes from zero
            mem1, mem2 = model.lif1.init_leaky(), model.lif2.init_leaky()
            for t in range(STEPS):
                spk2, mem1, mem2 = model(x[t], mem1, mem2)
                task_loss = loss_fn(mem2, labels)
                loss = task_loss
                if name == "decolle":  # DECOLLE's one extra term
                    loss = loss + learner.rule.local_loss(labels)
                loss.backward()
                total, count = total + task_loss.item(), count + 1
            trace_bytes = max(trace_bytes, learner.trace_bytes())
            optimizer.step()
            optimizer.zero_grad()
        seconds.append(time.perf_counter() - start)
        losses.append(total / count)
        accs.append(accuracy(model, learner, data.x_test, data.y_test))
    print(f"{learner.rule.describe()}: test accuracy", [f"{a:.1%}" for a in accs])
    results[name] = dict(acc=accs, loss=losses, seconds=seconds, bytes=trace_bytes)
    learner.detach()

# %%
# The seconds are those of the fastest epoch of each rule (the one least disturbed by other work
# on the machine), training loop only, without the test-set evaluation; the trace memory is the
# largest :meth:`~snn_ostl.OSTL.trace_bytes` seen during training.

print(f"{'rule':14s} {'test accuracy':>14s} {'s per epoch':>12s} {'trace bytes':>12s}")
for name, r in results.items():
    fastest = min(r["seconds"])
    print(f"{name:14s} {r['acc'][-1]:14.1%} {fastest:12.2f} {r['bytes']:12,d}")

# %%
# The test accuracy after each epoch (epoch 0 is the common starting point) and the
# cross-entropy of the output membrane averaged over the steps of each epoch (for DECOLLE
# without its local term, so that the three curves measure the same thing).

fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.6))
styles = {"ostl": ("o", "-"), "eprop-random": ("s", "--"), "decolle": ("^", ":")}
for name, r in results.items():
    marker, line = styles[name]
    percent = [100 * a for a in r["acc"]]
    ax_loss.plot(range(1, EPOCHS + 1), r["loss"], marker=marker, ls=line, label=name)
    ax_acc.plot(range(EPOCHS + 1), percent, marker=marker, ls=line, label=name)
ax_loss.set(xlabel="epoch", ylabel="cross-entropy per step")
ax_loss.set_xticks(range(1, EPOCHS + 1))
ax_loss.set_title("training loss (output layer)")
ax_loss.legend()
ax_acc.set(xlabel="epoch", ylabel="test accuracy (%)", ylim=(0, 100))
ax_acc.set_xticks(range(EPOCHS + 1))
ax_acc.set_title("digits, most output spikes")
ax_acc.grid(alpha=0.3)
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
# What the numbers say
# --------------------
#
# **Memory.** The three rules keep traces of the same size. ``Leaky`` with its default reset,
# which carries no gradient, has the same Jacobian for every neuron, so every rule stores one
# filtered copy of each layer's input, ``64 × (64 + 128)`` float32 numbers for a batch of 64,
# whatever it does with the error. For this neuron e-prop's eligibility (no path through the
# layer's own spikes) is also OSTL's: the two rules differ here by their learning signal only.
#
# **Learning signal.** Under ``"ostl"`` the hidden layer receives the output error through
# ``fc2``'s weights; under ``"eprop-random"`` through a fixed random matrix of ``fc2``'s shape.
# The hidden layer's updates help only once the forward weights have come to agree with that
# matrix (feedback alignment), and here the rule learns more slowly than ``"ostl"``. Under
# ``"decolle"`` the hidden layer never sees the output error: it learns to make its own spikes
# decodable by a fixed random readout, and the output layer learns from what the hidden layer
# offers; it starts slowest here, then catches up.
#
# **Time.** The traces' work is the same for the three rules; what differs is the work of the
# learning signal, which adds little: a product with a random matrix for e-prop, a readout and
# its loss for DECOLLE. On a model this small a step's time is mostly fixed overhead (Python,
# autograd, the learner's hooks). The seconds are measured on the machine that built this page.
#
# **Accuracy.** A few epochs on 1,437 small images, from one initialisation and one data order:
# the curves show how fast each rule starts to learn, not the best accuracy each can reach.
# None of the three is BPTT: with two stateful layers even ``"ostl"`` leaves out the paths that
# run through the output layer's memory (see the "gradients equal BPTT" tutorial).
#
# **The other rules** plug in the same way, by name. On this model several of them coincide,
# because a ``Leaky`` layer without recurrent weights has nothing for them to drop:
# ``"eprop-symmetric"``, ``"ostl-no-h"``, ``"snap-1"`` and ``"snap-2"`` give exactly the
# gradients of ``"ostl"``, and ``"rflo"`` those of ``"eprop-random"`` (``"eprop-adaptive"``
# too, until its feedback matrix has taken in a first update). They differ on recurrent layers.
# ``"superspike"`` needs target spike trains, and
# ``learner.rule.van_rossum(spk2, target_spikes).backward()`` at every step in place of the
# loss.
