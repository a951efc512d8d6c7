"""The synthetic cue / delay / recall task."""

from __future__ import annotations

import pytest
import torch

from snn_ostl.data import make_delay_task
from snn_ostl.data.delay import IGNORE_INDEX


def test_layout_of_a_silent_delay():
    task = make_delay_task(8, num_classes=3, delay=10, cue_steps=2, recall_steps=3, seed=0)
    assert task.inputs.shape == (15, 8, 4)
    assert task.targets.shape == task.mask.shape == (15, 8)
    assert task.mask.dtype == torch.bool
    # Cue: exactly the label's channel during the first two steps.
    cue = task.inputs[:2, :, :3]
    assert torch.equal(cue.argmax(-1), task.labels.expand(2, 8))
    assert torch.all(cue.sum(-1) == 1)
    # Silent delay, then only the recall channel.
    assert torch.all(task.inputs[2:12] == 0)
    assert torch.all(task.inputs[12:, :, 3] == 1) and torch.all(task.inputs[12:, :, :3] == 0)
    # Loss counts only at the recall steps, where the target is the cue.
    assert task.mask[12:].all() and not task.mask[:12].any()
    assert torch.equal(task.targets[12:], task.labels.expand(3, 8))
    assert torch.all(task.targets[:12] == IGNORE_INDEX)


def test_targets_work_with_cross_entropy_ignore_index():
    task = make_delay_task(4, num_classes=2, delay=3, seed=1)
    logits = torch.zeros(*task.targets.shape, 2, device=task.targets.device)
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), task.targets.flatten())
    assert torch.isclose(loss, torch.log(torch.tensor(2.0)))


def test_noise_stays_in_the_delay_and_distractors():
    task = make_delay_task(
        64,
        num_classes=2,
        delay=40,
        cue_steps=1,
        recall_steps=1,
        noise=0.3,
        num_noise_channels=2,
        seed=2,
    )
    x = task.inputs
    assert x.shape == (42, 64, 5)
    delay_rate = x[1:41, :, :2].mean()
    assert 0.25 < delay_rate < 0.35
    assert 0.25 < x[:, :, 3:].mean() < 0.35
    assert torch.all(x[:41, :, 2] == 0)  # recall channel silent until recall
    assert torch.all(x[41, :, :2] == 0)


def test_seed_determinism_and_generator():
    a = make_delay_task(16, delay=5, noise=0.2, seed=7)
    b = make_delay_task(16, delay=5, noise=0.2, seed=7)
    c = make_delay_task(16, delay=5, noise=0.2, seed=8)
    assert torch.equal(a.inputs, b.inputs) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.inputs, c.inputs)
    gen = torch.Generator().manual_seed(7)
    d = make_delay_task(16, delay=5, noise=0.2, generator=gen)
    e = make_delay_task(16, delay=5, noise=0.2, generator=gen)
    assert torch.equal(d.inputs, a.inputs) and not torch.equal(d.inputs, e.inputs)


def test_classes_are_balanced_over_a_large_batch():
    labels = make_delay_task(4000, num_classes=4, delay=0, seed=3).labels
    counts = torch.bincount(labels, minlength=4)
    assert counts.min() > 900


@pytest.mark.parametrize(
    "kwargs", [{"num_classes": 1}, {"delay": -1}, {"cue_steps": 0}, {"noise": 1.5}]
)
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        make_delay_task(2, **kwargs)
