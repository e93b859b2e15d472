"""Files clients upload to use as inputs (Replicate's ``POST /v1/files``): owned, short-lived, size-limited.

Each upload is two blobs in the file store: ``uploads/<id>/content`` and ``uploads/<id>/meta.json``
(owner, name, type, size, checksum, times). The id is random and unguessable; only the key that
uploaded a file can read or delete it. An expired file reads as missing and is deleted then, and
:func:`sweep_expired` (run by the job service's periodic clean-up) deletes those nobody asks for.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from fluxserve.errors import NotFound
from fluxserve.storage.blobs import BlobStore

_UPLOAD_ID = re.compile(r"file_[A-Za-z0-9_-]{24}")


def is_upload_id(text: str) -> bool:
    return _UPLOAD_ID.fullmatch(text) is not None


@dataclass(frozen=True)
class Upload:
    id: str
    owner: str | None
    name: str
    content_type: str
    size: int
    sha256: str
    created_at: float
    expires_at: float
    metadata: dict[str, Any]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Upload:
        return cls(**data)


class Uploads:
    """Uploaded files over a blob store; ``clock`` decides expiry, ``ttl_seconds`` how long one lives."""

    def __init__(self, blobs: BlobStore, clock: Callable[[], float], ttl_seconds: float) -> None:
        self._blobs, self._clock, self._ttl = blobs, clock, ttl_seconds

    @staticmethod
    def _folder(file_id: str) -> str:
        if not is_upload_id(file_id):
            raise ValueError(f"not an upload id: {file_id!r}")
        return f"uploads/{file_id}/"

    def create(
        self, owner: str | None, name: str, content_type: str, data: bytes, metadata: dict[str, Any] | None = None
    ) -> Upload:
        now = self._clock()
        upload = Upload(
            id="file_" + secrets.token_urlsafe(18),
            owner=owner,
            name=name,
            content_type=content_type,
            size=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            created_at=now,
            expires_at=now + self._ttl,
            metadata=metadata or {},
        )
        folder = self._folder(upload.id)
        self._blobs.put(folder + "content", data, content_type)
        self._blobs.put(folder + "meta.json", json.dumps(asdict(upload)).encode(), "application/json")
        return upload

    def get(self, file_id: str, owner: str | None) -> Upload:
        """``owner``'s live upload; anyone else's, an expired or an unknown one is NotFound."""
        missing = NotFound(f"no file {file_id!r}")
        if not is_upload_id(file_id):
            raise missing
        try:
            with self._blobs.open(self._folder(file_id) + "meta.json") as blob:
                upload = Upload.from_json(json.loads(blob.read()))
        except NotFound:
            raise missing from None
        if upload.owner != owner:
            raise missing
        if upload.expires_at <= self._clock():
            self._blobs.delete_prefix(self._folder(file_id))
            raise missing
        return upload

    def read(self, file_id: str, owner: str | None) -> tuple[Upload, bytes]:
        upload = self.get(file_id, owner)
        try:
            with self._blobs.open(self._folder(file_id) + "content") as blob:
                return upload, blob.read()
        except NotFound:
            raise NotFound(f"no file {file_id!r}") from None

    def delete(self, file_id: str, owner: str | None) -> None:
        self.get(file_id, owner)
        self._blobs.delete_prefix(self._folder(file_id))


def sweep_expired(blobs: BlobStore, now: float) -> int:
    """Delete every upload that expired at or before ``now``; return how many.

    A folder without its details yet (an upload being written) is left alone; one whose details
    cannot be read as an upload's is too, rather than deleted on a guess.
    """
    removed = 0
    for name in blobs.folders("uploads/"):
        if not is_upload_id(name):
            continue
        try:
            with blobs.open(f"uploads/{name}/meta.json") as blob:
                expires_at = float(json.loads(blob.read())["expires_at"])
        except (NotFound, ValueError, KeyError, TypeError):
            continue
        if expires_at <= now:
            blobs.delete_prefix(f"uploads/{name}/")
            removed += 1
    return removed
