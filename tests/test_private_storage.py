"""The data directory and the jobs database are readable by the server's user only, whatever the umask."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from fluxserve.api.app import build_services
from fluxserve.db import DATABASE_FILE, SqliteDatabase
from fluxserve.settings import Settings
from fluxserve.storage import private


@pytest.fixture(autouse=True)
def usual_umask() -> Iterator[None]:
    """The common umask 022, under which files are created readable by everyone unless made private."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def database_files(folder: Path) -> list[Path]:
    return sorted(folder.glob(DATABASE_FILE + "*"))


def test_a_fresh_store_makes_its_folder_and_database_files_private(tmp_path: Path) -> None:
    folder = tmp_path / "new" / "data"
    store = SqliteDatabase(folder / DATABASE_FILE)
    try:
        store.next_boot()  # a write: the -wal and -shm files exist while the store is open
        names = [path.name for path in database_files(folder)]
        modes = {path.name: mode(path) for path in database_files(folder)}
    finally:
        store.close()

    assert names == [DATABASE_FILE, DATABASE_FILE + "-shm", DATABASE_FILE + "-wal"]
    assert mode(folder) == 0o700
    assert modes == dict.fromkeys(names, 0o600)


def test_a_fresh_server_keeps_its_data_dir_private(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    service = build_services(
        Settings(data_dir=data_dir, models=["tiny-random"], warmup=False, allow_download=False), {}
    )
    service.start()
    try:
        files = [path for path in data_dir.iterdir() if path.is_file()]
        file_modes = {path.name: mode(path) for path in files}
    finally:
        service.stop()

    assert mode(data_dir) == 0o700
    assert DATABASE_FILE in file_modes
    assert file_modes == dict.fromkeys(file_modes, 0o600)


def test_an_existing_folder_and_database_are_tightened_at_start(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    SqliteDatabase(folder / DATABASE_FILE).close()
    folder.chmod(0o755)
    for path in [*database_files(folder), folder / (DATABASE_FILE + "-wal")]:
        path.touch()
        path.chmod(0o644)

    SqliteDatabase(folder / DATABASE_FILE).close()

    assert mode(folder) == 0o700
    assert {path.name: mode(path) for path in database_files(folder)} == {
        path.name: 0o600 for path in database_files(folder)
    }


def test_permissions_that_cannot_be_changed_are_reported_not_fatal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "shared"
    folder.mkdir(mode=0o755)

    def refused(self: Path, mode: int, **kwargs: object) -> None:
        raise PermissionError(1, "Operation not permitted", str(self))

    monkeypatch.setattr(Path, "chmod", refused)  # as when another user owns the folder
    private.private_dir(folder)

    assert mode(folder) == 0o755
    assert "chmod go-rwx" in caplog.text
