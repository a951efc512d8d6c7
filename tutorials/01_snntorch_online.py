"""
Add online learning to an existing snnTorch model
=================================================

This tutorial shows how to add online learning (OSTL) to an snnTorch network and training loop
you already have, with two added lines, and how to make the memory of training independent of
the sequence length.

It does so first for a model that runs its time loop inside ``forward`` (the style of snnTorch's
own tutorials), then for a model the caller steps one time step at a time.

The data are scikit-learn's 8x8 handwritten digits (1,797 real images that ship with the
package), turned into spike trains by rate coding.
"""

import matplotlib.pyplot as plt
import snntorch as snn
import torch
from snntorch import spikegen
from torch import nn

import snn_ostl
from snn_ostl.data import load_digits
from snn_ostl.testing import max_relative_error

torch.manual_seed(0)
STEPS, BATCH, HIDDEN = 20, 64, 128

data = load_digits()
print(data.source)


def batches(x, y, shuffle=True):
    order = torch.randperm(len(x)) if shuffle else torch.arange(len(x))
    for k in range(0, len(x), BATCH):
        idx = order[k : k + BATCH]
        # rate coding: each pixel fires at each step with a probability equal to its intensity
        yield spikegen.rate(x[idx], num_steps=STEPS), y[idx]


# %%
# Style 1: the time loop inside ``forward``
# -----------------------------------------
#
# Two Linear layers, each followed by a ``Leaky`` neuron. ``forward`` takes a whole spike train
# ``[T, B, 64]``, loops over time and returns the recorded output spikes and membrane potentials.
# Nothing here knows about OSTL.


class LoopNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(64, HIDDEN)
        self.lif1 = snn.Leaky(beta=0.9)
        self.fc2 = nn.Linear(HIDDEN, 10)
        self.lif2 = snn.Leaky(beta=0.9)

    def forward(self, x):
        mem1 = self.lif1.init_leaky()
        mem2 = self.lif2.init_leaky()
        spikes, membranes = [], []
        for t in range(x.shape[0]):
            spk1, mem1 = self.lif1(self.fc1(x[t]), mem1)
            spk2, mem2 = self.lif2(self.fc2(spk1), mem2)
            spikes.append(spk2)
            membranes.append(mem2)
        return torch.stack(spikes), torch.stack(membranes)


loss_fn = nn.CrossEntropyLoss()


def sequence_loss(membranes, labels):
    """The loss of snnTorch's tutorials: cross-entropy of the output membrane at every step."""
    return sum(loss_fn(m, labels) for m in membranes)


# %%
# Adding OSTL: attach a learner once, and call ``learner.reset()`` before each new batch (a new
# batch is a new set of sequences, so the eligibility traces must start from zero). The rest of
# the loop is unchanged.

loop_net = LoopNet()
optimizer = torch.optim.Adam(loop_net.parameters(), lr=2e-3)
learner = snn_ostl.OSTL(loop_net)  # new line 1

for x, labels in batches(data.x_train, data.y_train):
    learner.reset()  # new line 2
    _, membranes = loop_net(x)
    loss = sequence_loss(membranes, labels)
    loss.backward()  # .grad now holds the OSTL gradient
    optimizer.step()
    optimizer.zero_grad()
print(f"one epoch, last batch loss {loss.item():.2f}")
print(learner.summary())

# %%
# The summary says how each parameter is trained. ``Leaky`` with its default subtractive reset,
# which carries no gradient, and one shared ``beta`` has the same Jacobian for every neuron, so
# both synapses get *presynaptic* traces: one filtered copy of the layer's input.
#
# In this style the gradients are OSTL's, but one backward pass still runs over the whole
# sequence, so every step's graph stays in memory until the end, as with BPTT. To make memory
# independent of the sequence length, the backward pass has to run at every step, and
# ``learner.backward_at`` does that without touching ``LoopNet``: every time the model's own loop
# calls the named module (here ``lif2``, once per step), it backpropagates that step's loss at
# once and hands the loop a detached output, so the stacked records hold no graph.

for x, labels in batches(data.x_train, data.y_train):
    learner.reset()

    def step_loss(out, t, labels=labels):  # out is lif2's (spikes, membrane) at step t
        return loss_fn(out[1], labels)

    with learner.backward_at(loop_net.lif2, step_loss):
        spikes, membranes = loop_net(x)  # the unchanged loop: one backward per step inside
    optimizer.step()
    optimizer.zero_grad()
print(f"online in the model's own loop: records carry a graph? {membranes.requires_grad}")

learner.detach()

# %%
# Style 2: the caller steps the model
# -----------------------------------
#
# The same network as an ``nn.Sequential`` whose neurons keep their state on themselves
# (``init_hidden=True``); the last one also returns its membrane (``output=True``). Each call is
# one time step, so the loss of each step can be backpropagated right away.


def step_net():
    return nn.Sequential(
        nn.Linear(64, HIDDEN),
        snn.Leaky(beta=0.9, init_hidden=True),
        nn.Linear(HIDDEN, 10),
        snn.Leaky(beta=0.9, init_hidden=True, output=True),
    )


# %%
# First a check that both styles compute the same gradient. Give the stepped network the
# weights of the looped one, run one batch each way, compare. ``learner.reset()`` also empties
# the hidden state the neurons keep on themselves (of this model only, never of every snnTorch
# neuron in the process).

stepped = step_net()
stepped[0].load_state_dict(loop_net.fc1.state_dict())
stepped[2].load_state_dict(loop_net.fc2.state_dict())
x, labels = next(batches(data.x_train, data.y_train, shuffle=False))

with snn_ostl.OSTL(loop_net) as learner:
    learner.reset()
    sequence_loss(loop_net(x)[1], labels).backward()
with snn_ostl.OSTL(stepped) as learner:
    learner.reset()
    for t in range(STEPS):
        _, membrane = stepped(x[t])
        loss_fn(membrane, labels).backward()

print(
    "relative difference of the two styles' gradients:",
    f"fc1 {max_relative_error(stepped[0].weight.grad, loop_net.fc1.weight.grad):.1e},",
    f"fc2 {max_relative_error(stepped[2].weight.grad, loop_net.fc2.weight.grad):.1e}",
)
loop_net.zero_grad()
stepped.zero_grad()

# %%
# They agree up to float32 rounding (snnTorch computes its spikes in float32). Now train the
# stepped network with a backward pass at every step and an optimizer step per batch. Updating
# after every time step would work too; see the streaming tutorial.

optimizer = torch.optim.Adam(stepped.parameters(), lr=2e-3)
learner = snn_ostl.OSTL(stepped)


def accuracy(model, x_all, y_all):
    correct = 0
    with torch.no_grad():  # evaluation: the learner steps aside
        for x, labels in batches(x_all, y_all, shuffle=False):
            learner.reset()
            spike_count = 0
            for t in range(STEPS):
                spikes, _ = model(x[t])
                spike_count = spike_count + spikes
            correct += int((spike_count.argmax(1) == labels).sum())
    return correct / len(x_all)


EPOCHS = 3
batch_losses, test_accs = [], []
for epoch in range(EPOCHS):
    for x, labels in batches(data.x_train, data.y_train):
        learner.reset()
        batch_loss = 0.0
        for t in range(STEPS):
            _, membrane = stepped(x[t])
            loss = loss_fn(membrane, labels)
            loss.backward()
            batch_loss += loss.item() / STEPS
        optimizer.step()
        optimizer.zero_grad()
        batch_losses.append(batch_loss)
    test_accs.append(accuracy(stepped, data.x_test, data.y_test))
    print(f"epoch {epoch + 1}: test accuracy (most output spikes) {test_accs[-1]:.1%}")
learner.detach()

# %%
# The loss of every batch (the mean over its time steps) and the test accuracy after each epoch.

fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.6))
ax_loss.plot(range(1, len(batch_losses) + 1), batch_losses, lw=1)
ax_loss.set(xlabel="batch", ylabel="cross-entropy per step", title="snnTorch, trained by OSTL")
ax_acc.plot(range(1, EPOCHS + 1), [100 * a for a in test_accs], marker="o")
ax_acc.set(xlabel="epoch", ylabel="test accuracy (%)", ylim=(0, 100), xticks=range(1, EPOCHS + 1))
ax_acc.set_title("digits, most output spikes")
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
# The predictions count the output spikes over the sequence, a common readout for snnTorch
# classifiers; the training loss used the membrane instead, as snnTorch's tutorial does. A few
# epochs on 1,437 small images are enough to show learning, not to reach the best accuracy.
#
# What changes with more layers: here both ``Leaky`` layers are stateful, so the first layer's
# OSTL gradient leaves out the paths that run through the second layer's memory (see the
# "gradients equal BPTT" tutorial for what exactly it computes).
