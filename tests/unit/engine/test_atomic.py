"""Write-then-rename: a failed write leaves the old file and no temporary file behind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from foprokd.atomic import atomic_paths, write_json_atomic, write_text_atomic


def test_write_replaces_the_old_content_and_leaves_nothing_else(tmp_path: Path) -> None:
    target = tmp_path / "run.json"
    target.write_text("old")
    write_json_atomic(target, {"epoch": 3})
    assert json.loads(target.read_text()) == {"epoch": 3}
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]


def test_a_failed_block_changes_no_target(tmp_path: Path) -> None:
    first, second = tmp_path / "a.bin", tmp_path / "config.json"
    write_text_atomic(first, "old a")

    def export_half_way() -> None:
        with atomic_paths([first, second]) as (temp_a, temp_b):
            temp_a.write_text("new a")
            temp_b.write_text("new config")
            raise RuntimeError("export failed half-way")

    with pytest.raises(RuntimeError):
        export_half_way()
    assert first.read_text() == "old a"
    assert not second.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]


def test_targets_are_renamed_in_order_with_fsync(tmp_path: Path) -> None:
    paths = [tmp_path / "weights.safetensors", tmp_path / "config.json"]
    with atomic_paths(paths, fsync=True) as temps:
        for temp in temps:
            temp.write_text(temp.name)
    assert all(p.exists() for p in paths)
    assert len(list(tmp_path.iterdir())) == 2
