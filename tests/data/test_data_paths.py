"""Finding the shared data folder and the optional-import error."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from snn_ostl.data import DataUnavailableError, find_shared_data
from snn_ostl.data._optional import import_optional
from snn_ostl.data.paths import ENV_VAR, candidate_dirs, describe_search, shared_path


def test_env_var_wins(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    assert find_shared_data() == tmp_path.resolve()
    assert candidate_dirs() == [tmp_path]


def test_env_var_pointing_nowhere_gives_none_not_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "missing"))
    assert find_shared_data() is None
    assert shared_path("jsb", "x.json") is None
    assert str(tmp_path / "missing" / "jsb" / "x.json") in describe_search("jsb", "x.json")


def test_relative_to_current_directory(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    (tmp_path / "shared" / "data").mkdir(parents=True)
    work = tmp_path / "repo"
    work.mkdir()
    monkeypatch.chdir(work)
    assert find_shared_data() == (tmp_path / "shared" / "data").resolve()


def test_candidates_include_repository_root_sibling(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    import snn_ostl.data.paths as paths

    repo_root = Path(paths.__file__).resolve().parents[2]
    assert (repo_root.parent / "shared" / "data").resolve() in candidate_dirs()


def test_shared_path_finds_existing_entries_only(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    (tmp_path / "fsdd").mkdir()
    assert shared_path("fsdd") == tmp_path.resolve() / "fsdd"
    assert shared_path("jsb") is None


def test_data_unavailable_is_a_runtime_error():
    assert issubclass(DataUnavailableError, RuntimeError)


def test_import_optional_names_the_pip_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "not_a_real_pkg_xyz", None)
    with pytest.raises(ImportError, match=r"pip install some-dist"):
        import_optional("not_a_real_pkg_xyz", "some-dist", "a loader")
