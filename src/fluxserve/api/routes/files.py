"""GET /v1/images/files/{job_id}/{index}.{ext}?expires=...&signature=...: the images of ``url`` responses.

No API key is needed: the signature is the permission, so the URL opens in a browser or an
``<img>``. The path only selects a job record and an index; the file's location comes from the record.
"""

from __future__ import annotations

import asyncio
import re

from fastapi import APIRouter
from starlette.responses import FileResponse

from fluxserve.api.deps import FilesDep, JobsDep, SignerDep
from fluxserve.api.openapi import error_responses
from fluxserve.errors import NotFound
from fluxserve.imaging.encode import ImageFormat
from fluxserve.jobs.models import JobStatus
from fluxserve.jobs.service import JobService
from fluxserve.storage.files import FileStore, is_job_id

router = APIRouter(tags=["images"])

_NAME = re.compile(r"([0-9]{1,2})\.(png|jpg|webp)")
# Results never change once written, but the URL stops working when its signature expires.
CACHE_CONTROL = "private, max-age=3600, immutable"


def locate_output(jobs: JobService, files: FileStore, job_id: str, name: str) -> tuple[str, ImageFormat]:
    """The stored file behind a result URL, or NotFound."""
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
    return str(files.output_path(job_id, index, fmt.extension)), fmt


@router.get(
    "/v1/images/files/{job_id}/{name}",
    summary="Download one generated image",
    response_class=FileResponse,
    responses={
        200: {"content": {"image/png": {}, "image/jpeg": {}, "image/webp": {}}, "description": "The image."},
        **error_responses((403, "The signature is missing, wrong or expired."), (404, "No such image.")),
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
) -> FileResponse:
    signer.verify(f"/v1/images/files/{job_id}/{name}", expires, signature)
    path, fmt = await asyncio.to_thread(locate_output, jobs, files, job_id, name)
    headers = {"cache-control": CACHE_CONTROL, "x-content-type-options": "nosniff"}
    return FileResponse(path, media_type=fmt.media_type, headers=headers)
