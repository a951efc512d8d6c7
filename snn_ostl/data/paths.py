"""Locating the developers' shared data folder.

The larger real data sets (the JSB benchmark split, the Free Spoken Digit Dataset) cannot be
downloaded at run time and must not be copied into the repository, so they live in a folder
``shared/data`` that sits beside the repository on developers' machines and in CI. A user's
machine has no such folder: loaders then fall back to data that ships in a pip package and say
so in their ``source`` string, or raise :class:`DataUnavailableError` when there is no fallback.
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
    """Raised when a data set exists only in the shared folder and that folder is absent.

    It subclasses :class:`RuntimeError` (not :class:`FileNotFoundError`) on purpose: the
    condition is "this machine has no copy of the developers' data", which callers handle by
    skipping a task, not a mistyped path.
    """


def candidate_dirs() -> list[Path]:
    """List the places searched for the shared data folder, in order of precedence.

    When ``$SNN_OSTL_DATA`` is set it is the only candidate, even if it does not exist: an
    explicit setting must not be silently overridden, and it lets a test (or a user) force the
    "no shared data" path by pointing it at an empty folder.

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
    """Find the developers' shared data folder.

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
    """Return a path inside the shared data folder if it exists.

    Args:
        *parts: Path components below the shared folder, e.g. ``("jsb", "x.json")``.

    Returns:
        The existing file or folder, or ``None`` when the shared folder or the entry is absent.
    """
    root = find_shared_data()
    if root is None:
        return None
    path = root.joinpath(*parts)
    return path if path.exists() else None


def describe_search(*parts: str) -> str:
    """Describe where ``parts`` was looked for, for error messages.

    Args:
        *parts: Path components below the shared folder.

    Returns:
        A human-readable list of the candidate locations.
    """
    rel = "/".join(parts)
    places = [str(c / rel) if rel else str(c) for c in candidate_dirs()]
    return ", ".join(places)
