"""Draws and data do not follow ``torch.set_default_device``.

A user who calls ``torch.set_default_device("cuda")`` must get the same data, the same random
feedback matrices and the same shuffles as without it: the CPU generators then draw on the CPU
and the data sets stay there until the training loop moves a batch. The CPU suite checks this
with the ``meta`` device as the default (any device other than the generators' shows it);
``pytest --device cuda`` runs the whole suite with CUDA as the default.
"""

from __future__ import annotations

import numpy as np
import torch

from snn_ostl.data import pad_time_major, rate_code
from snn_ostl.data.delay import make_delay_task
from snn_ostl.data.encoding import to_tensors
from snn_ostl.hooks.signals import FeedbackSignals
from snn_ostl.tasks.base import generator, shuffled


def _under_meta(make):
    """``make()`` once as usual and once with ``meta`` as torch's default device."""
    plain = make()
    with torch.device("meta"):
        other = make()
    return plain, other


def test_delay_task_is_drawn_on_its_generators_device():
    plain, other = _under_meta(lambda: make_delay_task(6, num_classes=3, delay=4, seed=2))
    for name in ("inputs", "targets", "mask", "labels"):
        a, b = getattr(plain, name), getattr(other, name)
        assert b.device.type == "cpu", name
        assert torch.equal(a, b), name


def test_rate_code_draws_on_its_generators_device():
    images = torch.rand(3, 5, device="cpu")

    def make():
        return rate_code(images, 7, generator=torch.Generator().manual_seed(4), gain=0.8)

    plain, other = _under_meta(make)
    assert other.device.type == "cpu"
    assert torch.equal(plain, other)


def test_data_sets_and_padding_stay_on_the_cpu():
    x, y = np.arange(12.0).reshape(3, 4), np.array([0, 1, 2])
    (xa, ya), (xb, yb) = _under_meta(lambda: to_tensors(x, y, scale=2.0))
    assert xb.device.type == ya.device.type == yb.device.type == "cpu"
    assert torch.equal(xa, xb) and torch.equal(ya, yb)
    seqs = [torch.ones(2, 3, device="cpu"), torch.ones(4, 3, device="cpu")]
    _, (padded, lengths) = _under_meta(lambda: pad_time_major(seqs))
    assert padded.device.type == lengths.device.type == "cpu"
    assert lengths.tolist() == [2, 4]


def test_shuffles_do_not_depend_on_the_default_device():
    plain, other = _under_meta(lambda: shuffled(10, generator(3, 0, 1)))
    assert plain == other and sorted(plain) == list(range(10))


def test_random_feedback_matrix_is_the_same_under_another_default_device():
    weight = torch.randn(4, 6, dtype=torch.float64, device="cpu")
    plain, other = _under_meta(lambda: FeedbackSignals("random", seed=5).matrix_for("w", weight))
    assert other.device == weight.device and other.dtype == weight.dtype
    assert torch.equal(plain, other)
