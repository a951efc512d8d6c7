"""Spike encoding of static inputs and a stratified split helper.

``rate_code`` does what snnTorch's ``snntorch.spikegen.rate`` does (independent Bernoulli
draws per time step with probability equal to the intensity), but the core of ``snn_ostl``
must not import snnTorch, which is an optional adapter dependency, so it is re-done here in a
few lines of torch with an explicit ``generator`` for reproducibility.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from ._optional import import_optional


def rate_code(
    images: Tensor,
    num_steps: int,
    *,
    generator: torch.Generator | None = None,
    gain: float = 1.0,
) -> Tensor:
    """Bernoulli rate coding of intensities into spike trains.

    Each feature of each sample fires at each time step independently with probability
    ``clamp(gain * intensity, 0, 1)``. Equivalent to ``snntorch.spikegen.rate(x, num_steps,
    gain=gain)`` followed by flattening the feature dimensions.

    Args:
        images: Intensities in ``[0, 1]``, shape ``[B, ...]`` (any trailing feature shape, e.g.
            ``[B, 64]`` or ``[B, 1, 28, 28]``); the trailing dimensions are flattened.
        num_steps: Number of time steps ``T`` (at least 1).
        generator: Optional torch random generator, for reproducible spikes.
        gain: Multiplier on the firing probability (values are clamped to ``[0, 1]`` after it).

    Returns:
        Float tensor of 0s and 1s with shape ``[T, B, F]`` where ``F`` is the product of the
        trailing dimensions of ``images``; same floating dtype as ``images`` (float32 for
        integer inputs).

    Raises:
        ValueError: If ``num_steps < 1`` or ``images`` has no batch dimension.
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be at least 1, got {num_steps}")
    if images.dim() < 1:
        raise ValueError("images needs a batch dimension: expected shape [B, ...]")
    x = images if images.is_floating_point() else images.to(torch.float32)
    x = x.reshape(x.shape[0], -1)
    # Clamp after the gain, like snnTorch: a probability outside [0, 1] would make bernoulli
    # raise, and intensities slightly above 1 from rescaling should just mean "always fire".
    prob = (x * gain).clamp(0.0, 1.0)
    prob = prob.unsqueeze(0).expand(num_steps, *prob.shape)
    if generator is not None and generator.device != prob.device:
        # Draw where the generator lives and bring the spikes back: the same spikes for a
        # seed whatever device the images are on.
        return torch.bernoulli(prob.to(generator.device), generator=generator).to(prob.device)
    return torch.bernoulli(prob, generator=generator)


def stratified_split(
    x: Any,
    y: Any,
    *,
    test_size: float | int,
    seed: int,
) -> tuple[Any, Any, Any, Any]:
    """Split ``(x, y)`` into train and test sets keeping the class proportions of ``y``.

    A thin wrapper over scikit-learn's ``train_test_split(..., stratify=y)`` so every loader
    uses the same shuffling and rounding rules.

    Args:
        x: Samples, array-like with the sample axis first.
        y: Integer class labels, shape ``[N]``.
        test_size: Fraction (``0 < test_size < 1``) or absolute number of test samples.
        seed: Seed for the shuffle, so the split is reproducible.

    Returns:
        ``(x_train, x_test, y_train, y_test)`` in the input types (numpy arrays for numpy in).
    """
    model_selection = import_optional(
        "sklearn.model_selection", "scikit-learn", "stratified_split()"
    )
    x_train, x_test, y_train, y_test = model_selection.train_test_split(
        x, y, test_size=test_size, random_state=seed, shuffle=True, stratify=y
    )
    return x_train, x_test, y_train, y_test


def to_tensors(x: np.ndarray, y: np.ndarray, *, scale: float = 1.0) -> tuple[Tensor, Tensor]:
    """Convert a feature matrix and labels to float32 / int64 tensors.

    Args:
        x: Features, shape ``[N, F]``.
        y: Integer labels, shape ``[N]``.
        scale: Divisor applied to ``x`` (e.g. 16 or 255 to map pixel values to ``[0, 1]``).

    Returns:
        ``(x, y)`` as ``float32 [N, F]`` and ``int64 [N]`` tensors.
    """
    # Data sets live on the CPU, as a DataLoader's batches do, whatever torch's default device:
    # the training loop moves each batch to the model's device.
    xt = torch.as_tensor(np.asarray(x, dtype=np.float64) / scale, dtype=torch.float32, device="cpu")
    yt = torch.as_tensor(np.asarray(y), dtype=torch.int64, device="cpu")
    return xt, yt


def pad_time_major(sequences: list[Tensor], *, pad_value: float = 0.0) -> tuple[Tensor, Tensor]:
    """Stack variable-length sequences into one zero-padded time-major batch.

    Uses ``torch.nn.utils.rnn.pad_sequence`` (time-major is its default layout).

    Args:
        sequences: ``B`` tensors of shape ``[T_i, F]`` with the same ``F``.
        pad_value: Value written past each sequence's end.

    Returns:
        ``(padded, lengths)``: ``padded`` is ``[max T_i, B, F]`` and ``lengths`` is
        ``int64 [B]`` holding each ``T_i``.

    Raises:
        ValueError: If ``sequences`` is empty.
    """
    if not sequences:
        raise ValueError("pad_time_major needs at least one sequence")
    # next to the sequences, whatever torch's default device
    device = sequences[0].device
    lengths = torch.tensor([s.shape[0] for s in sequences], dtype=torch.int64, device=device)
    padded = torch.nn.utils.rnn.pad_sequence(sequences, padding_value=pad_value)
    return padded, lengths
