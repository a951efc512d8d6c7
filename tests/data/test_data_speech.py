"""FSDD loading on tiny generated wav files, the features, and the missing-data error."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.io import wavfile

from snn_ostl.data import DataUnavailableError, load_fsdd
from snn_ostl.data.paths import ENV_VAR
from snn_ostl.data.speech import log_mel, mel_filterbank

RATE = 8000


def _tone(freq, seconds, rate=RATE):
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t) * 32767).astype(np.int16)


@pytest.fixture
def recordings(tmp_path):
    folder = tmp_path / "fsdd" / "recordings"
    folder.mkdir(parents=True)
    # index 0 is test, index 5 is train (the official split); lengths 0.3-0.55 s.
    for digit in range(3):
        for index, speaker in ((0, "alice"), (5, "bob")):
            seconds = 0.3 + 0.05 * digit + (0.1 if index else 0.0)
            wavfile.write(
                folder / f"{digit}_{speaker}_{index}.wav", RATE, _tone(300 + 500 * digit, seconds)
            )
    (folder / "notes.wav").write_bytes(b"not a recording")  # ignored: wrong name pattern
    return tmp_path


def _frames(seconds):
    return 1 + (int(seconds * RATE) - 200) // 80


def test_load_fsdd_from_the_shared_folder(recordings, monkeypatch):
    monkeypatch.setenv(ENV_VAR, str(recordings))
    data = load_fsdd(n_mels=20)
    assert data.num_features == 20
    assert data.train.x.shape == (_frames(0.5), 3, 20)
    assert data.test.x.shape == (_frames(0.4), 3, 20)
    assert data.train.lengths.tolist() == [_frames(0.4), _frames(0.45), _frames(0.5)]
    assert data.train.labels.tolist() == [0, 1, 2] and data.test.labels.tolist() == [0, 1, 2]
    assert data.train.speakers == ["bob"] * 3 and data.test.speakers == ["alice"] * 3
    assert torch.all(data.train.x[_frames(0.4) :, 0] == 0)  # padding past the first length
    assert torch.isfinite(data.train.x).all()
    # Standardised with training statistics: valid training frames have mean 0, std 1.
    valid = torch.cat([data.train.x[:n, b] for b, n in enumerate(data.train.lengths)])
    torch.testing.assert_close(valid.mean(0), valid.new_zeros(20), atol=1e-4, rtol=0)
    assert "3 train / 3 test" in data.source and "CC BY-SA" in data.source


def test_tone_energy_lands_in_the_right_band(recordings):
    data = load_fsdd(recordings / "fsdd" / "recordings", normalize=False, max_frames=10)
    assert data.train.x.shape[0] == 10
    peaks = data.train.x[:, :, :].mean(0).argmax(-1)
    assert peaks[0] < peaks[1] < peaks[2]  # 300 Hz, 800 Hz, 1300 Hz tones


def test_missing_folder_raises_data_unavailable(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    with pytest.raises(DataUnavailableError) as info:
        load_fsdd()
    message = str(info.value)
    assert str(tmp_path / "fsdd" / "recordings") in message
    assert "SNN_OSTL_DATA=DIR" in message


def test_mixed_sample_rates_are_rejected(recordings):
    folder = recordings / "fsdd" / "recordings"
    wavfile.write(folder / "9_carol_7.wav", 16000, _tone(440, 0.3, 16000))
    with pytest.raises(ValueError, match="sample rates"):
        load_fsdd(folder)


def test_mel_filterbank_and_short_signal():
    bank = mel_filterbank(10, 256, RATE)
    assert bank.shape == (10, 129)
    assert bank.min() >= 0 and np.all(bank.max(axis=1) > 0.9)
    assert np.all(np.diff(bank.argmax(axis=1)) > 0)  # centres increase with the band
    feats = log_mel(np.zeros(50), RATE, n_mels=10)
    assert feats.shape == (1, 10) and np.isfinite(feats).all()
