"""Synthetic cue / delay / recall task for testing long temporal credit assignment.

A network sees a cue (one of ``C`` classes) at the start, then ``D`` steps of silence or noise,
then a recall signal, and must output the cue class at the recall steps. The answer depends
only on input seen ``D`` steps earlier, so the task isolates how far back a learning rule can
assign credit: exact BPTT and OSTL keep the needed eligibility, truncated BPTT shorter than
``D`` cannot.

Input channels (``F = C + 1 + num_noise_channels``), all 0/1 spikes:

* ``0 .. C-1``: cue channels; channel ``label`` is on during the first ``cue_steps`` steps.
* ``C``: recall channel, on during the last ``recall_steps`` steps.
* ``C + 1 ..``: distractor channels with Bernoulli(``noise``) spikes at every step.

During the delay the cue channels also carry Bernoulli(``noise``) spikes (0: silence).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

#: Target value at steps where the loss does not count; PyTorch's ``cross_entropy`` ignores it.
IGNORE_INDEX = -100


class DelayTask(NamedTuple):
    """One batch of the cue / delay / recall task.

    Attributes:
        inputs: ``float32 [T, B, F]`` spikes, ``T = cue_steps + delay + recall_steps``.
        targets: ``int64 [T, B]``: the cue class at recall steps, :data:`IGNORE_INDEX` elsewhere.
        mask: ``bool [T, B]``: True at the steps where the loss counts (the recall steps).
        labels: ``int64 [B]`` cue class of each sequence.
    """

    inputs: Tensor
    targets: Tensor
    mask: Tensor
    labels: Tensor


def make_delay_task(
    batch_size: int,
    *,
    num_classes: int = 2,
    delay: int = 50,
    cue_steps: int = 5,
    recall_steps: int = 5,
    noise: float = 0.0,
    num_noise_channels: int = 0,
    seed: int | None = 0,
    generator: torch.Generator | None = None,
) -> DelayTask:
    """Generate a seeded batch of the cue / delay / recall task.

    Args:
        batch_size: Number of sequences ``B``.
        num_classes: Number of cue classes ``C`` (at least 2).
        delay: Number of steps ``D`` between the end of the cue and the recall signal (>= 0).
        cue_steps: Duration of the cue (>= 1).
        recall_steps: Duration of the recall signal; the loss counts on these steps (>= 1).
        noise: Spike probability on cue channels during the delay and on distractor channels
            throughout, in ``[0, 1]``; 0 gives a silent delay.
        num_noise_channels: Extra distractor channels.
        seed: Seed of a fresh generator; ignored when ``generator`` is given. The same seed
            and arguments give the same batch.
        generator: A torch generator to draw from (e.g. one per epoch, advanced between calls).

    Returns:
        A :class:`DelayTask`.

    Raises:
        ValueError: If an argument is out of range.
    """
    if batch_size < 1 or num_classes < 2 or delay < 0 or cue_steps < 1 or recall_steps < 1:
        raise ValueError(
            "need batch_size >= 1, num_classes >= 2, delay >= 0, cue_steps >= 1, "
            f"recall_steps >= 1; got {batch_size}, {num_classes}, {delay}, {cue_steps}, "
            f"{recall_steps}"
        )
    if not 0.0 <= noise <= 1.0 or num_noise_channels < 0:
        raise ValueError(f"need 0 <= noise <= 1 and num_noise_channels >= 0, got {noise}")
    if generator is None:
        generator = torch.Generator()
        # A None seed means "fresh randomness", drawn from torch's global generator.
        generator.manual_seed(int(torch.randint(2**62, ())) if seed is None else seed)

    steps = cue_steps + delay + recall_steps
    features = num_classes + 1 + num_noise_channels
    recall_start = cue_steps + delay
    # every tensor on the generator's device, whatever torch's default device is
    device = generator.device
    labels = torch.randint(num_classes, (batch_size,), generator=generator, device=device)

    inputs = torch.zeros(steps, batch_size, features, device=device)
    if noise > 0:
        # Where noise may appear: cue channels during the delay, distractors throughout.
        noisy = torch.zeros(steps, 1, features, dtype=torch.bool, device=device)
        noisy[cue_steps:recall_start, :, :num_classes] = True
        noisy[:, :, num_classes + 1 :] = True
        draws = torch.full((steps, batch_size, features), noise, device=device)
        inputs = torch.bernoulli(draws, generator=generator) * noisy
    batch = torch.arange(batch_size, device=device)
    inputs[:cue_steps, batch, labels] = 1.0
    inputs[recall_start:, :, num_classes] = 1.0

    mask = torch.zeros(steps, batch_size, dtype=torch.bool, device=device)
    mask[recall_start:] = True
    targets = torch.full((steps, batch_size), IGNORE_INDEX, dtype=torch.int64, device=device)
    targets[recall_start:] = labels
    return DelayTask(inputs, targets, mask, labels)
