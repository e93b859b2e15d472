"""Images in a folder (the data directory by default): each key a file, written atomically.

The default, and all a single machine needs; several servers can share one on a shared
filesystem (NFS and the like), since a file appears whole or not at all.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path, PurePosixPath

from fluxserve.errors import NotFound, StorageUnavailable
from fluxserve.storage.blobs import Blob
from fluxserve.storage.private import private_dir


class FolderBlobStore:
    """A :class:`~fluxserve.storage.blobs.BlobStore` over ``root``, made private (0700) if new."""

    def __init__(self, root: Path, folders: tuple[str, ...] = ()) -> None:
        self.root = root
        private_dir(root)
        for folder in folders:
            (root / folder).mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        """The file of ``key``; a key that would leave the folder is a ValueError (a server bug)."""
        parts = PurePosixPath(key).parts
        if not parts or key.startswith("/") or any(part in ("", ".", "..") for part in parts):
            raise ValueError(f"not a storage key: {key!r}")
        return self.root.joinpath(*parts)

    def put(self, key: str, data: bytes, media_type: str) -> None:
        write_atomically(self.path(key), data)

    def open(self, key: str) -> Blob:
        try:
            file = self.path(key).open("rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise NotFound(f"no stored file {key}") from None
        return Blob(os.fstat(file.fileno()).st_size, file)

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def delete_prefix(self, prefix: str) -> None:
        if not prefix.endswith("/"):
            raise ValueError(f"a folder prefix ends with '/': {prefix!r}")
        shutil.rmtree(self.path(prefix.rstrip("/")), ignore_errors=True)

    def folders(self, prefix: str) -> list[str]:
        if not prefix.endswith("/"):
            raise ValueError(f"a folder prefix ends with '/': {prefix!r}")
        try:
            return sorted(entry.name for entry in self.path(prefix.rstrip("/")).iterdir() if entry.is_dir())
        except (FileNotFoundError, NotADirectoryError):
            return []

    def check(self) -> None:
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise StorageUnavailable(f"the image folder {self.root} is not writable by this server's user")

    def close(self) -> None:
        pass


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` so that ``path`` is either absent or complete, even across a crash."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
