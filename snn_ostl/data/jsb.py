"""JSB chorales as 88-key piano rolls (the OSTL paper's polyphonic music task).

Two sources, in order of preference:

1. ``jsb/jsb-chorales-quarter.json`` in the data folder (``$SNN_OSTL_DATA``): the standard
   229/76/77 split of Boulanger-Lewandowski et al. (2012) that published results use.
2. music21's bundled Bach corpus (``pip install music21``, optional, ~20 MB): the four-part
   chorales converted to a roll on a quarter-note grid and split 60/20/20 with a seed. It is
   close to, but not the same as, the benchmark, so results are not comparable to the
   literature; the returned ``source`` string says which one was used.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ._optional import import_optional
from .paths import DataUnavailableError, describe_search, shared_path

#: Lowest and highest MIDI notes of an 88-key piano (A0 and C8).
LOWEST_NOTE = 21
HIGHEST_NOTE = 108
NUM_KEYS = HIGHEST_NOTE - LOWEST_NOTE + 1

_JSON_PARTS = ("jsb", "jsb-chorales-quarter.json")
_SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class MusicSplit:
    """Piano-roll sequences split into train / valid / test.

    Attributes:
        train: ``float32 [T_i, 88]`` rolls, 1 where key ``note - 21`` sounds at step ``t``.
        valid: Same format.
        test: Same format.
        source: Which data were loaded (shared benchmark file or music21 fallback).
    """

    train: list[Tensor]
    valid: list[Tensor]
    test: list[Tensor]
    source: str


def steps_to_roll(steps: Sequence[Iterable[int]]) -> Tensor:
    """Convert a list of time steps (each a collection of MIDI notes) to a piano roll.

    Args:
        steps: ``T`` time steps; each holds the MIDI note numbers (21..108) sounding then.

    Returns:
        ``float32 [T, 88]`` roll with ``roll[t, note - 21] = 1``.

    Raises:
        ValueError: If a note lies outside 21..108.
    """
    roll = torch.zeros(len(steps), NUM_KEYS, dtype=torch.float32, device="cpu")
    for t, notes in enumerate(steps):
        for note in notes:
            key = int(note) - LOWEST_NOTE
            if not 0 <= key < NUM_KEYS:
                raise ValueError(
                    f"MIDI note {note} at step {t} is outside the piano range "
                    f"{LOWEST_NOTE}..{HIGHEST_NOTE}"
                )
            roll[t, key] = 1.0
    return roll


def load_jsb_json(path: str | Path) -> MusicSplit:
    """Load a JSB file in the ``{"train"|"valid"|"test": [[[note, ...], ...], ...]}`` format.

    Args:
        path: The JSON file.

    Returns:
        The three splits as piano rolls.

    Raises:
        ValueError: If a split is missing or a note lies outside the piano range.
    """
    path = Path(path)
    with path.open(encoding="utf-8") as fh:
        data = json.load(fh)
    missing = [s for s in _SPLITS if s not in data]
    if missing:
        raise ValueError(f"{path} lacks the split(s) {missing}; expected keys {list(_SPLITS)}")
    rolls = {s: [steps_to_roll(seq) for seq in data[s]] for s in _SPLITS}
    counts = "/".join(str(len(rolls[s])) for s in _SPLITS)
    source = f"JSB chorales benchmark split {counts} (train/valid/test) from {path}"
    return MusicSplit(rolls["train"], rolls["valid"], rolls["test"], source)


def events_to_roll(events: Iterable[tuple[float, float, Iterable[int]]]) -> Tensor:
    """Sample note events on a quarter-note grid into a piano roll.

    A key is on at step ``t`` when a note sounds at quarter-note time ``t`` exactly
    (``onset <= t < onset + duration``), the sampling Boulanger-Lewandowski used; a note that
    starts and ends between two beats (a passing eighth) is therefore not seen.

    Args:
        events: ``(onset, duration, midi_notes)`` triples, onset and duration in quarter notes.
            Zero-length events (grace notes) are ignored; notes off the piano are dropped.

    Returns:
        ``float32 [T, 88]`` roll, ``T = ceil(last note end)`` (0 rows for no events).
    """
    items = [(float(o), float(d), list(n)) for o, d, n in events if float(d) > 0]
    length = max((math.ceil(o + d - 1e-9) for o, d, _ in items), default=0)
    roll = np.zeros((length, NUM_KEYS), dtype=np.float32)
    for onset, duration, notes in items:
        first = math.ceil(onset - 1e-9)
        last = math.ceil(onset + duration - 1e-9)
        for note in notes:
            key = int(note) - LOWEST_NOTE
            if 0 <= key < NUM_KEYS:
                roll[first:last, key] = 1.0
    return torch.from_numpy(roll)


_VOICES = ("soprano", "alto", "tenor", "bass")


def satb_parts(parts: Sequence[object]) -> list[object] | None:
    """Pick the four sung voices of a chorale score.

    Many cantata chorales add instrumental parts (horns, trumpets, timpani, continuo) to the
    choir; the JSB benchmark holds only the four voices. A part counts as a voice when its
    name starts with "Soprano", "Alto", "Tenor" or "Bass" (some name the doubling instruments
    after it, e.g. "Bass Continuo"); a score with exactly four unnamed parts is taken as is.

    Args:
        parts: The score's parts, objects with a ``partName`` attribute (may be None).

    Returns:
        The four voice parts in SATB order, or None when they cannot be identified.
    """
    chosen = []
    for voice in _VOICES:
        match = next(
            (p for p in parts if str(getattr(p, "partName", "") or "").lower().startswith(voice)),
            None,
        )
        if match is None:
            return list(parts) if len(parts) == 4 else None
        chosen.append(match)
    return chosen


def _part_events(parts: Sequence[object]) -> list[tuple[float, float, list[int]]]:
    # flatten() gives each part's notes with offsets from the start of the piece, a timeline
    # the parts share; .notes keeps Note and Chord objects (rests are silence in a roll).
    return [
        (float(n.offset), float(n.quarterLength), [p.midi for p in n.pitches])
        for part in parts
        for n in part.flatten().notes  # type: ignore[attr-defined]
    ]


def _split_indices(n: int, seed: int, fractions: tuple[float, float]) -> tuple[list[int], ...]:
    order = np.random.default_rng(seed).permutation(n).tolist()
    n_train = round(n * fractions[0])
    n_valid = round(n * fractions[1])
    return order[:n_train], order[n_train : n_train + n_valid], order[n_train + n_valid :]


def load_jsb_music21(*, seed: int = 0, max_files: int | None = None) -> MusicSplit:
    """Build JSB-like piano rolls from music21's bundled Bach chorales.

    Parses every file of ``corpus.getComposer("bach")`` (sorted, so the order is stable), keeps
    the scores whose four voices (SATB) can be identified, drops any instrumental parts
    and converts the voices with :func:`events_to_roll`. About 400
    chorales; takes 30-60 s on two cores.

    Args:
        seed: Seed of the 60/20/20 train/valid/test permutation.
        max_files: Parse only the first ``max_files`` files (for quick checks).

    Returns:
        The three splits and a ``source`` string naming music21 and its version.

    Raises:
        ImportError: If music21 is not installed (the message says ``pip install music21``).
    """
    music21 = import_optional("music21", "music21", "load_jsb() without the shared JSB file")
    corpus = music21.corpus
    paths = sorted(str(p) for p in corpus.getComposer("bach"))
    if max_files is not None:
        paths = paths[:max_files]
    rolls = []
    for path in paths:
        voices = satb_parts(list(corpus.parse(path).parts))
        if voices is None:  # a keyboard work or a lone melody, not a four-part chorale
            continue
        roll = events_to_roll(_part_events(voices))
        if roll.shape[0] > 0:
            rolls.append(roll)
    train, valid, test = _split_indices(len(rolls), seed, (0.6, 0.2))
    version = getattr(music21, "__version__", "?")
    source = (
        f"music21 {version} Bach corpus: {len(rolls)} four-part chorales on a quarter-note "
        f"grid, seeded 60/20/20 split (seed={seed}); NOT the standard 229/76/77 benchmark"
    )
    return MusicSplit(
        [rolls[i] for i in train], [rolls[i] for i in valid], [rolls[i] for i in test], source
    )


def load_jsb(*, seed: int = 0, allow_fallback: bool = True) -> MusicSplit:
    """Load JSB chorales: the shared benchmark file if present, else music21's Bach corpus.

    Args:
        seed: Seed of the fallback's split (the benchmark split is fixed).
        allow_fallback: When False, raise instead of falling back to music21.

    Returns:
        A :class:`MusicSplit`; its ``source`` says which data were used.

    Raises:
        DataUnavailableError: If the shared file is absent and ``allow_fallback`` is False.
        ImportError: If the shared file is absent and music21 is not installed; the message
            names the folders searched and ``pip install music21``.
    """
    path = shared_path(*_JSON_PARTS)
    if path is not None:
        return load_jsb_json(path)
    where = describe_search(*_JSON_PARTS)
    if not allow_fallback:
        raise DataUnavailableError(
            f"The JSB benchmark file was not found (looked for {where}); download "
            "jsb-chorales-quarter.json (github.com/czhuang/JSB-Chorales-dataset) into a folder "
            "DIR/jsb/ and set SNN_OSTL_DATA=DIR."
        )
    try:
        split = load_jsb_music21(seed=seed)
    except ImportError as exc:
        raise ImportError(
            f"JSB chorales: the shared benchmark file was not found (looked for {where}) and "
            "the fallback needs music21's Bach corpus: pip install music21"
        ) from exc
    # Say so loudly: numbers from this split are not comparable to published JSB results.
    warnings.warn(
        f"JSB benchmark file not found (looked for {where}); using {split.source}",
        UserWarning,
        stacklevel=2,
    )
    return split
