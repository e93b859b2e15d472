"""Image files in the data directory: written atomically, found only through a job's record.

Layout: ``outputs/<job id>/<index>.<ext>``, ``references/<job id>/<index>.png`` and a masked
edit's ``references/<job id>/mask.png``. Paths are
built from ids the server made (checked against their pattern), never from request text.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

from PIL import Image

from fluxserve.imaging.png import encode_png
from fluxserve.storage.private import private_dir

_JOB_ID = re.compile(r"job_[A-Za-z0-9_-]{24}")


def is_job_id(text: str) -> bool:
    return _JOB_ID.fullmatch(text) is not None


class FileStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        private_dir(root)
        (root / "outputs").mkdir(parents=True, exist_ok=True)
        (root / "references").mkdir(parents=True, exist_ok=True)

    @staticmethod
    def _checked(job_id: str) -> str:
        if not is_job_id(job_id):
            raise ValueError(f"not a job id: {job_id!r}")
        return job_id

    def output_path(self, job_id: str, index: int, extension: str) -> Path:
        return self.root / "outputs" / self._checked(job_id) / f"{int(index)}.{extension}"

    def reference_path(self, job_id: str, index: int) -> Path:
        return self.root / "references" / self._checked(job_id) / f"{int(index)}.png"

    def mask_path(self, job_id: str) -> Path:
        return self.root / "references" / self._checked(job_id) / "mask.png"

    def write_mask(self, job_id: str, mask: Image.Image) -> None:
        """Store a job's mask (mode L) losslessly beside its references."""
        write_atomically(self.mask_path(job_id), encode_png(mask, level=1))

    def read_mask(self, job_id: str) -> Image.Image:
        with Image.open(self.mask_path(job_id)) as image:
            return image.convert("L")

    def write_output(self, job_id: str, index: int, extension: str, data: bytes) -> Path:
        path = self.output_path(job_id, index, extension)
        write_atomically(path, data)
        return path

    def write_references(self, job_id: str, images: list[Image.Image]) -> None:
        """Store the prepared references losslessly, so a re-run sees the same pixels."""
        for index, image in enumerate(images):
            write_atomically(self.reference_path(job_id, index), encode_png(image, level=1))

    def delete_job(self, job_id: str) -> None:
        """Remove every file of a job (its references and outputs)."""
        for folder in ("references", "outputs"):
            shutil.rmtree(self.root / folder / self._checked(job_id), ignore_errors=True)

    def read_references(self, job_id: str, count: int) -> list[Image.Image]:
        images = []
        for index in range(count):
            with Image.open(self.reference_path(job_id, index)) as image:
                images.append(image.convert("RGB"))
        return images


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
