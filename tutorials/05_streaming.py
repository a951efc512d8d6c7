"""
Streaming and continual learning
================================

This tutorial shows how to learn from an endless input stream with an optimizer step after every
time step, and how a network trained this way keeps adapting when the stream changes.

Because OSTL's gradient of step ``t`` is ready at step ``t``, a network can learn from a stream
that never ends: there is no sequence to wait for and nothing that grows in memory. Here the
optimizer takes a step after *every* time step, on one unbroken input stream whose statistics
change halfway through, and the network adapts to the change while it runs.

The learner only writes ``.grad``; when to call ``optimizer.step()`` is the user's choice. Every
step, every ``k`` steps, or once per sequence all work with the same learner.
"""

import matplotlib.pyplot as plt
import torch
from torch import nn

import snn_ostl

torch.manual_seed(0)
STREAMS, CHANNELS, HIDDEN, CLASSES = 8, 20, 48, 2
STEPS, SWITCH, HOLD = 2000, 1000, 10

# %%
# The stream
# ----------
#
# Each class has a prototype: a firing probability per input channel. The stream shows one class
# at a time for ``HOLD`` steps as random spikes drawn from its prototype, then moves on to a class
# picked at random; the target at every step is the class being shown. ``STREAMS`` independent
# streams run side by side as a batch. At step ``SWITCH`` both prototypes are replaced by new ones:
# what the network learned about the old ones no longer applies.


def prototypes():
    return torch.rand(CLASSES, CHANNELS) * 0.6


def stream(steps, switch):
    protos = prototypes()
    label = torch.randint(CLASSES, (STREAMS,))
    for t in range(steps):
        if t == switch:
            protos = prototypes()
        if t % HOLD == 0:
            label = torch.randint(CLASSES, (STREAMS,))
        yield (torch.rand(STREAMS, CHANNELS) < protos[label]).float(), label


# %%
# The network and the learner
# ---------------------------
#
# A layer of SNUs reads the spikes and a Linear readout gives one score per class at every step.


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.hidden = snn_ostl.SNU(CHANNELS, HIDDEN, threshold=0.5)
        self.readout = nn.Linear(HIDDEN, CLASSES)

    def forward(self, x, state=None):
        spikes, state = self.hidden(x, state)
        return self.readout(spikes), state


net = Net()
optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
loss_fn = nn.CrossEntropyLoss()
learner = snn_ostl.OSTL(net)

# %%
# The loop: forward one step, backward the step's loss, update the weights, move on. The state
# is carried forward without ever being reset, since the stream is one long sequence. Right
# before the switch we also keep a frozen copy of the network, which keeps running on the stream
# without learning, to show what the updates after the switch are worth.

frozen = Net()
losses, frozen_losses = [], []
state = frozen_state = None
learner.reset()
for t, (x, label) in enumerate(stream(STEPS, SWITCH)):
    if t == SWITCH:
        frozen.load_state_dict(net.state_dict())
        frozen_state = tuple(s.detach() for s in state)
    out, state = net(x, state)
    loss = loss_fn(out, label)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    losses.append(loss.item())
    if t >= SWITCH:
        with torch.no_grad():
            frozen_out, frozen_state = frozen(x, frozen_state)
            frozen_losses.append(loss_fn(frozen_out, label).item())

print(learner.summary())
learner.detach()

# %%
# The loss, averaged over windows of 50 steps. It falls while the network learns the first two
# prototypes, jumps when they change, and falls again as the network adapts; the frozen copy
# stays where the switch left it.


def smooth(values, window=50):
    v = torch.tensor(values)
    return v.unfold(0, window, window).mean(1).tolist()


window = 50
fig, ax = plt.subplots(figsize=(8, 3.8))
ax.plot(range(0, STEPS, window), smooth(losses, window), label="learning at every step")
ax.plot(
    range(SWITCH, STEPS, window),
    smooth(frozen_losses, window),
    label="frozen at the switch",
    color="grey",
)
ax.axvline(SWITCH, color="black", ls=":", lw=1)
ax.text(SWITCH, ax.get_ylim()[1] * 0.95, " statistics change", va="top")
ax.set(xlabel="time step", ylabel="cross-entropy (mean over 50 steps)")
ax.legend()
fig.tight_layout()

first, before, after = (sum(v[:200]) / 200 for v in (losses, losses[SWITCH - 200 :], losses[-200:]))
print(
    f"mean loss: first 200 steps {first:.3f}, before the switch {before:.3f}, last 200 {after:.3f}"
)
print(f"frozen copy, last 200 steps: {sum(frozen_losses[-200:]) / 200:.3f}")

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
# With an update at every step, the eligibility traces of step ``t`` were built while the
# weights were still changing; each gradient is that of a slowly moving network. This is true of
# every online learning rule, and with a small learning rate it does not get in the way.
