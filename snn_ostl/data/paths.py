"""Locating the data folder of the larger real data sets.

The JSB chorales' benchmark split and the Free Spoken Digit Dataset ship in no pip package and
are never downloaded at run time. They are read from a data folder: the one
``$SNN_OSTL_DATA`` names, or else a folder ``shared/data`` beside the repository. Without it,
loaders fall back to data that ships in a pip package and say so in their ``source`` string, or
raise :class:`DataUnavailableError` when there is no fallback (``snn-ostl tasks`` says how to
get the files).
"""

from __future__ import annotations

import os
from pathlib import Path

#: Environment variable that overrides every other location.
ENV_VAR = "SNN_OSTL_DATA"

# The repository root is the parent of the ``snn_ostl`` package directory; this file is
# ``<root>/snn_ostl/data/paths.py``.
_REPO_ROOT = Path(__file__).resolve().parent.parent.parent


class DataUnavailableError(RuntimeError):
    """Raised when a data set exists only in the data folder and that folder is absent.

    It subclasses :class:`RuntimeError` (not :class:`FileNotFoundError`) on purpose: the
    condition is "this machine has no copy of the data set", which callers handle by skipping a
    task, not a mistyped path.
    """


def candidate_dirs() -> list[Path]:
    """List the places searched for the data folder, in order of precedence.

    When ``$SNN_OSTL_DATA`` is set it is the only candidate, even if it does not exist: an
    explicit setting must not be silently overridden, and it lets a test (or a user) force the
    "no data" path by pointing it at an empty folder.

    Returns:
        ``[$SNN_OSTL_DATA]`` when set and non-empty, otherwise ``../shared/data`` relative to the
        current directory and then relative to the repository root (duplicates removed).
    """
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        return [Path(env).expanduser()]
    candidates: list[Path] = []
    for base in (Path.cwd(), _REPO_ROOT):
        path = (base / ".." / "shared" / "data").resolve()
        if path not in candidates:
            candidates.append(path)
    return candidates


def find_shared_data() -> Path | None:
    """Find the data folder.

    Returns:
        The first existing folder from :func:`candidate_dirs`, resolved, or ``None`` when none
        exists. Never raises for a missing or unreadable path.
    """
    for path in candidate_dirs():
        try:
            if path.is_dir():
                return path.resolve()
        except OSError:
            # An unreadable parent (permissions, a stale mount) means "not here", not a crash.
            continue
    return None


def shared_path(*parts: str) -> Path | None:
    """Return a path inside the data folder if it exists.

    Args:
        *parts: Path components below the data folder, e.g. ``("jsb", "x.json")``.

    Returns:
        The existing file or folder, or ``None`` when the data folder or the entry is absent.
    """
    root = find_shared_data()
    if root is None:
        return None
    path = root.joinpath(*parts)
    return path if path.exists() else None


def describe_search(*parts: str) -> str:
    """Describe where ``parts`` was looked for, for error messages.

    Args:
        *parts: Path components below the data folder.

    Returns:
        A human-readable list of the candidate locations.
    """
    rel = "/".join(parts)
    places = [str(c / rel) if rel else str(c) for c in candidate_dirs()]
    return ", ".join(places)
