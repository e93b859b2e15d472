"""A job's image files: its outputs, the references and mask it was given; kept in a folder or a bucket.

Layout (the same keys in every :class:`~fluxserve.storage.blobs.BlobStore`):
``outputs/<job id>/<index>.<ext>``, ``references/<job id>/<index>.png`` and a masked edit's
``references/<job id>/mask.png``. Keys are built from ids the server made (checked against
their pattern), never from request text; a job's files are found only through its record.
:func:`open_file_store` picks the backend: the data directory, or an S3 bucket (``object_store_url``).
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from fluxserve.errors import MissingExtra, NotFound
from fluxserve.imaging.encode import ImageFormat
from fluxserve.imaging.png import encode_png
from fluxserve.storage.blobs import Blob, BlobStore
from fluxserve.storage.folder import FolderBlobStore

_JOB_ID = re.compile(r"job_[A-Za-z0-9_-]{24}")
FOLDERS = ("outputs", "references", "previews")


def is_job_id(text: str) -> bool:
    return _JOB_ID.fullmatch(text) is not None


class FileStore:
    """The image files of jobs, over any :class:`~fluxserve.storage.blobs.BlobStore`."""

    def __init__(self, blobs: BlobStore) -> None:
        self.blobs = blobs

    @staticmethod
    def _checked(job_id: str) -> str:
        if not is_job_id(job_id):
            raise ValueError(f"not a job id: {job_id!r}")
        return job_id

    def output_key(self, job_id: str, index: int, fmt: ImageFormat) -> str:
        return f"outputs/{self._checked(job_id)}/{int(index)}.{ImageFormat(fmt).extension}"

    def reference_key(self, job_id: str, index: int) -> str:
        return f"references/{self._checked(job_id)}/{int(index)}.png"

    def mask_key(self, job_id: str) -> str:
        return f"references/{self._checked(job_id)}/mask.png"

    def preview_key(self, job_id: str, image: int, step: int) -> str:
        return f"previews/{self._checked(job_id)}/{int(image)}-{int(step)}.jpg"

    def write_preview(self, job_id: str, image: int, step: int, data: bytes) -> None:
        """Keep a step preview (a small JPEG) where other processes can read it; deleted with the job."""
        self.blobs.put(self.preview_key(job_id, image, step), data, "image/jpeg")

    def read_preview(self, job_id: str, image: int, step: int) -> bytes:
        """A step preview another process kept; NotFound when it is not there."""
        with self.blobs.open(self.preview_key(job_id, image, step)) as blob:
            return blob.read()

    def write_output(self, job_id: str, index: int, fmt: ImageFormat, data: bytes) -> None:
        self.blobs.put(self.output_key(job_id, index, fmt), data, fmt.media_type)

    def open_output(self, job_id: str, index: int, fmt: ImageFormat) -> Blob:
        """A job's image, open for streaming (close it); NotFound when it is not stored."""
        return self.blobs.open(self.output_key(job_id, index, fmt))

    def read_output(self, job_id: str, index: int, fmt: ImageFormat) -> bytes:
        with self.open_output(job_id, index, fmt) as blob:
            return blob.read()

    def has_output(self, job_id: str, index: int, fmt: ImageFormat) -> bool:
        return self.blobs.exists(self.output_key(job_id, index, fmt))

    def write_references(self, job_id: str, images: list[Image.Image]) -> None:
        """Store the prepared references losslessly, so a re-run sees the same pixels."""
        for index, image in enumerate(images):
            self.blobs.put(self.reference_key(job_id, index), encode_png(image, level=1), "image/png")

    def read_references(self, job_id: str, count: int) -> list[Image.Image]:
        return [self._read_image(self.reference_key(job_id, index), "RGB") for index in range(count)]

    def read_reference_files(self, job_id: str, count: int) -> list[bytes]:
        """The stored references as files (PNG), as they are kept."""
        files = []
        for index in range(count):
            with self.blobs.open(self.reference_key(job_id, index)) as blob:
                files.append(blob.read())
        return files

    def write_mask(self, job_id: str, mask: Image.Image) -> None:
        """Store a job's mask (mode L) losslessly beside its references."""
        self.blobs.put(self.mask_key(job_id), encode_png(mask, level=1), "image/png")

    def read_mask(self, job_id: str) -> Image.Image:
        return self._read_image(self.mask_key(job_id), "L")

    def _read_image(self, key: str, mode: str) -> Image.Image:
        """An input the server stored itself: one that is gone is the server's failure, not a 404."""
        try:
            with self.blobs.open(key) as blob:
                data = blob.read()
        except NotFound as missing:
            raise FileNotFoundError(str(missing)) from None
        with Image.open(io.BytesIO(data)) as image:
            return image.convert(mode)

    def delete_job(self, job_id: str) -> None:
        """Remove every file of a job (its references and outputs)."""
        for folder in FOLDERS:
            self.blobs.delete_prefix(f"{folder}/{self._checked(job_id)}/")

    def check(self) -> None:
        """Return if images can be stored and read now; else StorageUnavailable saying what to fix."""
        self.blobs.check()

    def close(self) -> None:
        self.blobs.close()


@dataclass(frozen=True)
class BucketOptions:
    """Where an S3-compatible bucket is and how to sign in; ``None`` fields fall back to boto3's
    usual sources (``AWS_*`` environment variables, ``~/.aws/config`` and ``credentials``)."""

    bucket: str
    prefix: str = ""
    """Prepended to every key: ``""`` or a path ending with ``/``."""
    endpoint_url: str | None = None
    region: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None
    timeout_seconds: float = 10.0

    @staticmethod
    def split_url(url: str) -> tuple[str, str]:
        """``s3://bucket/some/prefix`` -> ``("bucket", "some/prefix/")``."""
        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        prefix = prefix.strip("/")
        return bucket, f"{prefix}/" if prefix else ""


def open_file_store(data_dir: Path, bucket: BucketOptions | None = None) -> FileStore:
    """Images in ``data_dir`` (made private if new), or in ``bucket`` (the ``s3`` extra).

    Nothing is checked here: call :meth:`FileStore.check` to find out whether the store can be used.
    """
    if bucket is None:
        return FileStore(FolderBlobStore(data_dir, FOLDERS))
    try:
        from fluxserve.storage.s3 import S3BlobStore
    except ModuleNotFoundError as error:
        if (error.name or "").partition(".")[0] not in ("boto3", "botocore"):
            raise
        raise MissingExtra("s3", "object_store_url (images in an S3 bucket)", "boto3") from None
    return FileStore(S3BlobStore(bucket))
