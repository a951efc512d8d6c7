"""JSB chorales: the shared JSON benchmark, the piano-roll conversion, the music21 fallback."""

from __future__ import annotations

import json
import sys
from types import SimpleNamespace

import pytest
import torch

from snn_ostl.data import DataUnavailableError, load_jsb
from snn_ostl.data.jsb import NUM_KEYS, events_to_roll, load_jsb_json, satb_parts, steps_to_roll
from snn_ostl.data.paths import ENV_VAR, shared_path

TINY = {
    "train": [[[60, 64, 67], [60], []], [[21, 108]]],
    "valid": [[[62, 65]]],
    "test": [[[59], [59, 62]]],
}


@pytest.fixture
def tiny_shared(tmp_path, monkeypatch):
    (tmp_path / "jsb").mkdir()
    (tmp_path / "jsb" / "jsb-chorales-quarter.json").write_text(json.dumps(TINY))
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    return tmp_path


def test_steps_to_roll_marks_keys():
    roll = steps_to_roll([[60, 64], [], [21, 108]])
    assert roll.shape == (3, NUM_KEYS) == (3, 88)
    assert roll[0].nonzero().flatten().tolist() == [39, 43]
    assert roll[1].sum() == 0
    assert roll[2, 0] == 1 and roll[2, 87] == 1
    with pytest.raises(ValueError, match="outside the piano range"):
        steps_to_roll([[20]])


def test_load_jsb_reads_the_shared_json(tiny_shared):
    data = load_jsb()
    assert [len(data.train), len(data.valid), len(data.test)] == [2, 1, 1]
    assert data.train[0].shape == (3, 88) and data.train[0].dtype == torch.float32
    assert data.train[0].sum(dim=1).tolist() == [3.0, 1.0, 0.0]
    assert data.test[0][1].nonzero().flatten().tolist() == [38, 41]
    assert "benchmark" in data.source and "2/1/1" in data.source
    assert str(tiny_shared.resolve()) in data.source


def test_json_missing_split_is_reported(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"train": []}))
    with pytest.raises(ValueError, match="valid"):
        load_jsb_json(path)


def test_fallback_without_music21_explains_both_options(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_VAR, str(tmp_path))  # a shared folder without jsb/
    monkeypatch.setitem(sys.modules, "music21", None)
    with pytest.raises(ImportError) as info:
        load_jsb()
    message = str(info.value)
    assert "pip install music21" in message
    assert str(tmp_path / "jsb" / "jsb-chorales-quarter.json") in message


def test_no_fallback_raises_data_unavailable(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "nowhere"))
    with pytest.raises(DataUnavailableError, match="SNN_OSTL_DATA=DIR"):
        load_jsb(allow_fallback=False)


def test_events_to_roll_samples_on_quarter_beats():
    # A half note C4 at beat 0, a chord at beat 2 for one beat, a passing eighth at 3.5,
    # a grace note (zero length) and a note off the piano.
    events = [(0, 2, [60]), (2.0, 1.0, [64, 67]), (3.5, 0.5, [72]), (1, 0, [50]), (0, 1, [10])]
    roll = events_to_roll(events)
    assert roll.shape == (4, 88)
    assert roll[:, 39].tolist() == [1, 1, 0, 0]
    assert roll[2].nonzero().flatten().tolist() == [43, 46]
    assert roll[3].sum() == 0  # the eighth at 3.5 does not sound at beat 3
    assert roll[:, 29].sum() == 0
    assert events_to_roll([]).shape == (0, 88)


@pytest.mark.skipif(
    shared_path("jsb", "jsb-chorales-quarter.json") is None,
    reason="the developers' shared data folder is absent",
)
def test_shared_benchmark_file_has_the_standard_split():
    data = load_jsb()
    assert [len(data.train), len(data.valid), len(data.test)] == [229, 76, 77]
    lengths = [r.shape[0] for r in data.train]
    assert min(lengths) > 0 and all(r.shape[1] == 88 for r in data.train)
    notes_per_step = sum(r.sum() for r in data.train) / sum(lengths)
    assert 3.5 < notes_per_step < 4.1


def test_satb_parts_drops_instruments():
    def parts(*names):
        return [SimpleNamespace(partName=n) for n in names]

    score = parts("Horn 2", "Soprano", "Alto Oboe 2", "Tenor", "Bass Continuo", "Organ")
    assert [p.partName for p in satb_parts(score)] == [
        "Soprano",
        "Alto Oboe 2",
        "Tenor",
        "Bass Continuo",
    ]
    unnamed = parts(None, None, None, None)
    assert satb_parts(unnamed) == unnamed
    assert satb_parts(parts("Piano")) is None
    assert satb_parts(parts("Soprano", "Alto", "Tenor", "Viola", "Horn")) is None
