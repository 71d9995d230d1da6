"""`fopro demo` only ever empties a folder it created itself."""

from __future__ import annotations

from pathlib import Path

import pytest

from fopro.demo import MARKER, DemoFailed, _prepare_data_dir


def test_a_fresh_folder_is_created_and_marked(tmp_path: Path) -> None:
    target = tmp_path / "demo"
    _prepare_data_dir(target, force=False)
    assert [p.name for p in target.iterdir()] == [MARKER]


def test_a_previous_demo_is_emptied(tmp_path: Path) -> None:
    target = tmp_path / "demo"
    _prepare_data_dir(target, force=False)
    (target / "fopro.db").write_text("old run")
    _prepare_data_dir(target, force=False)
    assert [p.name for p in target.iterdir()] == [MARKER]


def test_someone_elses_folder_is_refused_and_kept_even_with_force(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(DemoFailed, match="--force"):
        _prepare_data_dir(tmp_path, force=False)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
    _prepare_data_dir(tmp_path, force=True)  # used as it is: nothing deleted, nothing marked
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
    _prepare_data_dir(tmp_path, force=True)  # so a later demo there still deletes nothing
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
