"""GET /v1/images/files/{job_id}/{index}.{ext}?expires=...&signature=...: the images of ``url`` responses.

No API key is needed: the signature is the permission, so the URL opens in a browser or an
``<img>``. The path only selects a job record and an index; the file's location comes from the record.
The bytes are streamed from the file store, a folder or a bucket alike: a bucket that is down is a
503 (``storage_unavailable``), an image that is not stored a 404.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

from fastapi import APIRouter
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from fluxserve.api.deps import FilesDep, JobsDep, SignerDep
from fluxserve.api.openapi import error_responses
from fluxserve.errors import NotFound
from fluxserve.imaging.encode import ImageFormat
from fluxserve.jobs.models import JobStatus
from fluxserve.jobs.service import JobService
from fluxserve.storage.blobs import CHUNK_BYTES, Blob
from fluxserve.storage.files import FileStore, is_job_id

router = APIRouter(tags=["images"])

_NAME = re.compile(r"([0-9]{1,2})\.(png|jpg|webp)")
# Results never change once written, but the URL stops working when its signature expires.
CACHE_CONTROL = "private, max-age=3600, immutable"


def open_output(jobs: JobService, files: FileStore, job_id: str, name: str) -> tuple[Blob, ImageFormat]:
    """The stored image behind a result URL, open for reading; NotFound, or StorageUnavailable."""
    missing = NotFound(f"no image {job_id}/{name}")
    match = _NAME.fullmatch(name)
    if not is_job_id(job_id) or match is None:
        raise missing
    try:
        job = jobs.get(job_id)
    except NotFound:
        raise missing from None
    if job.status is not JobStatus.SUCCEEDED:
        raise missing
    fmt = ImageFormat(job.spec.output_format)
    index = int(match.group(1))
    if match.group(2) != fmt.extension or index >= len(job.outputs):
        raise missing
    return files.open_output(job_id, index, fmt), fmt


class BlobResponse(StreamingResponse):
    """A stored image streamed in chunks. The blob is closed here, without an ``await``, however the
    response ends: finished, its client gone, its task canceled or dropped with the server's event
    loop at shutdown (when an ``await`` in a generator's ``finally`` may never run)."""

    def __init__(self, blob: Blob, media_type: str, headers: dict[str, str]) -> None:
        super().__init__(self._chunks(blob), media_type=media_type, headers=headers)
        self.blob = blob

    @staticmethod
    async def _chunks(blob: Blob) -> AsyncIterator[bytes]:
        while chunk := await asyncio.to_thread(blob.reader.read, CHUNK_BYTES):
            yield chunk

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.blob.close()


@router.get(
    "/v1/images/files/{job_id}/{name}",
    summary="Download one generated image",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"image/png": {}, "image/jpeg": {}, "image/webp": {}}, "description": "The image."},
        **error_responses(
            (403, "The signature is missing, wrong or expired."),
            (404, "No such image."),
            (503, "The image store (a bucket) cannot be reached; try again."),
        ),
    },
)
async def image_file(
    job_id: str,
    name: str,
    jobs: JobsDep,
    files: FilesDep,
    signer: SignerDep,
    expires: str | None = None,
    signature: str | None = None,
) -> BlobResponse:
    signer.verify(f"/v1/images/files/{job_id}/{name}", expires, signature)
    blob, fmt = await asyncio.to_thread(open_output, jobs, files, job_id, name)
    headers = {"cache-control": CACHE_CONTROL, "x-content-type-options": "nosniff", "content-length": str(blob.size)}
    return BlobResponse(blob, fmt.media_type, headers)
