"""Rate coding and the stratified split helper."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from snn_ostl.data import pad_time_major, rate_code, stratified_split


def test_rate_code_shape_values_and_flattening():
    images = torch.rand(3, 1, 4, 5)
    spikes = rate_code(images, 7, generator=torch.Generator().manual_seed(0))
    assert spikes.shape == (7, 3, 20)
    assert spikes.dtype == torch.float32
    assert set(spikes.unique().tolist()) <= {0.0, 1.0}


def test_rate_code_firing_rate_matches_intensity():
    images = torch.tensor([[0.0, 0.25, 0.5, 1.0]])
    spikes = rate_code(images, 20_000, generator=torch.Generator().manual_seed(1))
    rate = spikes.mean(dim=(0, 1))
    assert rate[0] == 0.0 and rate[3] == 1.0
    torch.testing.assert_close(rate, images[0], atol=0.02, rtol=0)


def test_rate_code_gain_clamps_and_is_reproducible():
    images = torch.full((2, 3), 0.6)
    spikes = rate_code(images, 50, gain=2.0, generator=torch.Generator().manual_seed(2))
    assert torch.all(spikes == 1.0)
    a = rate_code(images, 50, generator=torch.Generator().manual_seed(3))
    b = rate_code(images, 50, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_rate_code_integer_input_and_bad_steps():
    assert rate_code(torch.ones(2, 2, dtype=torch.int64), 3).dtype == torch.float32
    with pytest.raises(ValueError, match="num_steps"):
        rate_code(torch.rand(2, 2), 0)


def test_stratified_split_keeps_class_proportions():
    y = np.array([0] * 80 + [1] * 20)
    x = np.arange(100)[:, None]
    x_tr, x_te, y_tr, y_te = stratified_split(x, y, test_size=0.25, seed=0)
    assert len(y_te) == 25 and len(y_tr) == 75
    assert np.bincount(y_te).tolist() == [20, 5]
    assert sorted(np.concatenate([x_tr, x_te])[:, 0].tolist()) == list(range(100))
    again = stratified_split(x, y, test_size=0.25, seed=0)
    assert np.array_equal(again[1], x_te)


def test_pad_time_major():
    seqs = [torch.ones(3, 2), torch.ones(5, 2) * 2]
    padded, lengths = pad_time_major(seqs)
    assert padded.shape == (5, 2, 2)
    assert lengths.tolist() == [3, 5]
    assert torch.all(padded[3:, 0] == 0) and torch.all(padded[:, 1] == 2)
    with pytest.raises(ValueError):
        pad_time_major([])
