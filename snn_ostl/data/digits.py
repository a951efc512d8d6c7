"""scikit-learn's 8x8 handwritten digits: the real-data default that ships on every machine.

``sklearn.datasets.load_digits`` embeds 1,797 real 8x8 digit images (UCI optical recognition
of handwritten digits) in the scikit-learn wheel, so no download and no data folder is needed.
It stands in for MNIST in quick runs and tests; see :mod:`snn_ostl.data.mnist` for real 28x28
MNIST digits.
"""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor

from ._optional import import_optional
from .encoding import stratified_split, to_tensors

# Pixel values in load_digits are integers 0..16 (counts of set pixels in 4x4 blocks).
_DIGITS_MAX = 16.0


class ImageSplit(NamedTuple):
    """A stratified train/test split of a labelled image set.

    Attributes:
        x_train: ``float32 [N_train, F]`` intensities in ``[0, 1]`` (images flattened).
        y_train: ``int64 [N_train]`` class labels.
        x_test: ``float32 [N_test, F]`` intensities in ``[0, 1]``.
        y_test: ``int64 [N_test]`` class labels.
        source: Human-readable description of where the data came from.
        image_shape: ``(height, width)`` to un-flatten ``F`` for plotting.
    """

    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    source: str
    image_shape: tuple[int, int]

    @property
    def num_classes(self) -> int:
        """Number of classes (largest label + 1)."""
        return int(max(self.y_train.max(), self.y_test.max())) + 1


def load_digits(*, test_size: float = 0.2, seed: int = 0) -> ImageSplit:
    """Load scikit-learn's 1,797 real 8x8 digits with a stratified, seeded split.

    Args:
        test_size: Fraction of samples in the test set (default 0.2: 1,437 train / 360 test).
        seed: Seed of the shuffle; the same seed gives the same split.

    Returns:
        An :class:`ImageSplit` with ``F = 64`` features scaled to ``[0, 1]`` and 10 classes.
    """
    datasets = import_optional("sklearn.datasets", "scikit-learn", "load_digits()")
    bunch = datasets.load_digits()
    x_train, x_test, y_train, y_test = stratified_split(
        bunch.data, bunch.target, test_size=test_size, seed=seed
    )
    xtr, ytr = to_tensors(x_train, y_train, scale=_DIGITS_MAX)
    xte, yte = to_tensors(x_test, y_test, scale=_DIGITS_MAX)
    source = (
        f"scikit-learn load_digits: {len(bunch.target)} real 8x8 digits "
        f"(stratified split, test_size={test_size}, seed={seed})"
    )
    return ImageSplit(xtr, ytr, xte, yte, source, (8, 8))
