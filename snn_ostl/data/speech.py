"""Free Spoken Digit Dataset (FSDD) as log-mel feature sequences (the TIMIT stand-in).

The recordings live only in the data folder (``$SNN_OSTL_DATA``) (``fsdd/recordings/*.wav``, 3,000
mono 8 kHz files named ``{digit}_{speaker}_{index}.wav``; CC BY-SA 4.0, Jakobovski and
contributors: attribute it where results are shown). No registry ships them, so there is no
fallback: :func:`load_fsdd` raises :class:`~snn_ostl.data.paths.DataUnavailableError`.

Features are hand-computed with ``scipy.signal.stft`` and a triangular mel filterbank. Why not
a library: ``python_speech_features`` has not been released since 2017, ``librosa`` pulls in
numba/llvmlite (far too heavy for a loader), and ``torchaudio`` is pinned to exact torch
builds; a mel filterbank is ten lines of numpy and the STFT comes from scipy.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from ._optional import import_optional
from .encoding import pad_time_major
from .paths import DataUnavailableError, describe_search, shared_path

_RECORDINGS = ("fsdd", "recordings")
_NAME = re.compile(r"^(?P<digit>\d)_(?P<speaker>[A-Za-z0-9-]+)_(?P<index>\d+)\.wav$")
#: Official FSDD split: recordings with index 0-4 are the test set, 5-49 the training set.
TEST_INDICES = range(5)


class SequenceBatch(NamedTuple):
    """Zero-padded, time-major feature sequences with their labels.

    Attributes:
        x: ``float32 [T_max, B, F]`` features, zero past each sequence's length.
        lengths: ``int64 [B]`` number of valid frames of each sequence.
        labels: ``int64 [B]`` spoken digit 0-9.
        speakers: Speaker name of each sequence.
    """

    x: Tensor
    lengths: Tensor
    labels: Tensor
    speakers: list[str]


@dataclass(frozen=True)
class SpeechSplit:
    """FSDD train and test sets.

    Attributes:
        train: Training sequences (recording index 5-49).
        test: Test sequences (recording index 0-4).
        source: Folder read, counts and feature settings.
        num_features: ``F``, the number of mel bands.
    """

    train: SequenceBatch
    test: SequenceBatch
    source: str
    num_features: int


def hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    """HTK mel scale: ``2595 log10(1 + f / 700)``."""
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
    """Inverse of :func:`hz_to_mel`."""
    return 700.0 * (10.0 ** (np.asarray(mel, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank(n_mels: int, n_fft: int, sample_rate: float) -> np.ndarray:
    """Triangular filters equally spaced on the mel scale from 0 Hz to Nyquist.

    Args:
        n_mels: Number of filters.
        n_fft: FFT length; the filters act on ``n_fft // 2 + 1`` one-sided bins.
        sample_rate: Sampling rate in Hz.

    Returns:
        ``[n_mels, n_fft // 2 + 1]`` matrix of non-negative weights; each row peaks at 1 at
        its centre frequency, so slightly below 1 on the nearest FFT bin.
    """
    bins = np.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(0.0, hz_to_mel(sample_rate / 2.0), n_mels + 2))
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins[None, :] - lower) / (centre - lower)
    falling = (upper - bins[None, :]) / (upper - centre)
    return np.maximum(0.0, np.minimum(rising, falling))


def log_mel(
    signal: np.ndarray,
    sample_rate: int,
    *,
    n_mels: int = 40,
    win_ms: float = 25.0,
    hop_ms: float = 10.0,
) -> np.ndarray:
    """Log-mel filterbank energies of a mono signal.

    Args:
        signal: ``[N]`` samples (any scale; float in ``[-1, 1]`` is usual).
        sample_rate: Sampling rate in Hz.
        n_mels: Number of mel bands ``F``.
        win_ms: Hann window length in milliseconds (25 ms: 200 samples at 8 kHz).
        hop_ms: Hop between frames in milliseconds (10 ms: 80 samples at 8 kHz).

    Returns:
        ``float32 [frames, n_mels]`` with ``frames = 1 + (N - win) // hop`` (at least 1: a
        signal shorter than one window is zero-padded to one window).
    """
    signal_mod = import_optional("scipy.signal", "scipy", "FSDD features")
    win = round(sample_rate * win_ms / 1000.0)
    hop = round(sample_rate * hop_ms / 1000.0)
    n_fft = 1 << (win - 1).bit_length()  # next power of two, for a fast FFT
    x = np.asarray(signal, dtype=np.float64)
    if x.shape[0] < win:
        x = np.pad(x, (0, win - x.shape[0]))
    _, _, spec = signal_mod.stft(
        x,
        fs=sample_rate,
        window="hann",
        nperseg=win,
        noverlap=win - hop,
        nfft=n_fft,
        boundary=None,  # no centring pad: frame t covers samples [t*hop, t*hop + win)
        padded=False,
    )
    power = np.abs(spec) ** 2  # [bins, frames]
    energies = mel_filterbank(n_mels, n_fft, sample_rate) @ power
    # The floor keeps log finite on digital silence (FSDD has trimmed, but exact-zero, edges).
    return np.log(energies.T + 1e-10).astype(np.float32)


def _read_wav(path: Path) -> tuple[int, np.ndarray]:
    wavfile = import_optional("scipy.io.wavfile", "scipy", "load_fsdd()")
    rate, data = wavfile.read(path)
    data = np.asarray(data)
    if data.ndim == 2:
        data = data.mean(axis=1)  # mix down stereo
    if data.dtype.kind == "i":
        data = data / float(-np.iinfo(data.dtype).min)
    elif data.dtype.kind == "u":  # 8-bit wav is unsigned with an offset of 128
        data = (data.astype(np.float64) - 128.0) / 128.0
    return int(rate), data.astype(np.float64)


def _batch(items: list[tuple[np.ndarray, int, str]], mean: np.ndarray, std: np.ndarray):
    seqs = [torch.from_numpy((f - mean) / std) for f, _, _ in items]
    x, lengths = pad_time_major(seqs)
    labels = torch.tensor([d for _, d, _ in items], dtype=torch.int64, device=x.device)
    return SequenceBatch(x, lengths, labels, [s for _, _, s in items])


def load_fsdd(
    root: str | Path | None = None,
    *,
    n_mels: int = 40,
    max_frames: int | None = None,
    normalize: bool = True,
) -> SpeechSplit:
    """Load the Free Spoken Digit Dataset as padded log-mel sequences, official split.

    Args:
        root: Folder holding the ``.wav`` files; default ``fsdd/recordings`` in the shared
            data folder (see :func:`~snn_ostl.data.paths.find_shared_data`).
        n_mels: Number of mel bands ``F``.
        max_frames: Truncate every utterance to at most this many 10 ms frames (bounds the
            padded size; the longest FSDD recordings are over 2 s).
        normalize: Standardise each band with the training set's mean and standard deviation.

    Returns:
        A :class:`SpeechSplit`; ``train.x`` is ``float32 [T, B_train, n_mels]``.

    Raises:
        DataUnavailableError: If the folder is absent or holds no ``{digit}_{speaker}_{index}``
            wav files.
        ValueError: If the recordings do not all share one sample rate.
    """
    folder = Path(root) if root is not None else shared_path(*_RECORDINGS)
    where = str(root) if root is not None else describe_search(*_RECORDINGS)
    files = sorted(folder.glob("*.wav")) if folder is not None and folder.is_dir() else []
    parsed = [(f, _NAME.match(f.name)) for f in files]
    parsed = [(f, m) for f, m in parsed if m is not None]
    if not parsed:
        raise DataUnavailableError(
            f"Free Spoken Digit Dataset recordings not found (looked for {where}); no pip "
            "package ships them: clone github.com/Jakobovski/free-spoken-digit-dataset into "
            "DIR/fsdd and set SNN_OSTL_DATA=DIR (the task reads DIR/fsdd/recordings)."
        )
    train: list[tuple[np.ndarray, int, str]] = []
    test: list[tuple[np.ndarray, int, str]] = []
    rates = set()
    for path, match in parsed:
        rate, signal = _read_wav(path)
        rates.add(rate)
        feats = log_mel(signal, rate, n_mels=n_mels)[:max_frames]
        item = (feats, int(match["digit"]), match["speaker"])
        (test if int(match["index"]) in TEST_INDICES else train).append(item)
    if len(rates) != 1:
        raise ValueError(f"FSDD recordings have mixed sample rates {sorted(rates)}")
    if not train or not test:
        raise DataUnavailableError(f"{where} lacks a train or a test recording (index 0-4 / 5+)")
    if normalize:
        frames = np.concatenate([f for f, _, _ in train])
        mean, std = frames.mean(axis=0), frames.std(axis=0) + 1e-6
    else:
        mean, std = np.zeros(n_mels, np.float32), np.ones(n_mels, np.float32)
    mean, std = mean.astype(np.float32), std.astype(np.float32)
    source = (
        f"Free Spoken Digit Dataset (CC BY-SA 4.0) from {folder}: {len(train)} train / "
        f"{len(test)} test recordings at {rates.pop()} Hz, {n_mels} log-mel bands, "
        "25 ms window, 10 ms hop"
    )
    return SpeechSplit(_batch(train, mean, std), _batch(test, mean, std), source, n_mels)
