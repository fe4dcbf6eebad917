"""How old a file of the snapshots folder is, by the file system's own clock (campus/infra/backup_files.py)."""

from __future__ import annotations

import os
from pathlib import Path

from campus.infra.backup_files import old_enough


def test_a_file_is_old_enough_once_its_age_by_the_file_systems_clock_passes(tmp_path: Path) -> None:
    fresh = tmp_path / "fresh.campus.part"
    fresh.write_bytes(b"x")
    assert old_enough(fresh, 0)
    assert not old_enough(fresh, 60), "a file written just now is not a minute old"

    stale = tmp_path / "stale.campus.part"
    stale.write_bytes(b"x")
    written = stale.stat().st_mtime
    os.utime(stale, (written - 600, written - 600))  # last changed ten minutes before it was written
    assert old_enough(stale, 60)
    assert not old_enough(stale, 3600)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fresh.campus.part", "stale.campus.part"], \
        "the probe that reads the folder's clock leaves nothing behind"


def test_a_file_that_is_gone_is_not_old_enough(tmp_path: Path) -> None:
    assert not old_enough(tmp_path / "gone.campus.part", 60)
