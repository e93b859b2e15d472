"""The storage seam: bytes kept under keys such as ``outputs/<job id>/0.png``, in a folder or a bucket.

:class:`BlobStore` is all a place that keeps images must do; :class:`fluxserve.storage.files.FileStore`
builds the layout, the id checks and the image encoding on top of it, once for every backend.
Two implementations: :class:`fluxserve.storage.folder.FolderBlobStore` (the data directory; also
fine on a shared filesystem) and :class:`fluxserve.storage.s3.S3BlobStore` (an S3-compatible
bucket, the ``s3`` extra).

A backend that cannot be reached raises :class:`fluxserve.errors.StorageUnavailable` (503); a key
that is not there is :class:`fluxserve.errors.NotFound` (404).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol

CHUNK_BYTES = 256 * 1024
"""How much of a stored image one read returns when it is streamed."""


class Reader(Protocol):
    """An open stored object: a file, or the body of an S3 response."""

    def read(self, size: int = -1, /) -> bytes: ...
    def close(self) -> None: ...


@dataclass
class Blob:
    """One stored object, open for reading: ``size`` bytes from ``reader``. Close it (or use ``with``)."""

    size: int
    reader: Reader

    def read(self) -> bytes:
        return self.reader.read()

    def chunks(self, size: int = CHUNK_BYTES) -> Iterator[bytes]:
        while chunk := self.reader.read(size):
            yield chunk

    def close(self) -> None:
        self.reader.close()

    def __enter__(self) -> Blob:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()


class BlobStore(Protocol):
    """Bytes under ``/``-separated keys. Keys come from :class:`~fluxserve.storage.files.FileStore`,
    built from ids the server made, never from request text."""

    def put(self, key: str, data: bytes, media_type: str) -> None:
        """Store ``data`` so that ``key`` is either absent or complete, never half written."""

    def open(self, key: str) -> Blob:
        """The object at ``key``, open for reading; NotFound when there is none."""

    def exists(self, key: str) -> bool: ...

    def delete_prefix(self, prefix: str) -> None:
        """Remove every object whose key starts with ``prefix`` (a folder: it ends with ``/``)."""

    def folders(self, prefix: str) -> list[str]:
        """The names of the folders directly under ``prefix`` (a folder: it ends with ``/``), sorted."""

    def check(self) -> None:
        """Return if the store can be used now; else StorageUnavailable saying what to fix."""

    def close(self) -> None: ...
