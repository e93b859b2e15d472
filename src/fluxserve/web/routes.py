"""GET / (the studio page) and GET /studio/{asset} (its scripts, styles and icons).

Every asset ships inside the package: the page works offline, with no CDN. The page is static:
the server never writes a key or any user data into it; the browser keeps the user's key.
"""

from __future__ import annotations

import re
from importlib import resources

from fastapi import APIRouter
from starlette.responses import Response

from fluxserve.errors import NotFound

router = APIRouter(include_in_schema=False)

_ASSET = re.compile(r"[a-z0-9-]+\.(js|css|svg|png|json)")
_TYPES = {
    "js": "text/javascript; charset=utf-8",
    "css": "text/css; charset=utf-8",
    "svg": "image/svg+xml",
    "png": "image/png",
    "json": "application/json",
}
# Assets change only with a new release; the page revalidates each time so a new release shows at once.
_CACHE = {"cache-control": "no-cache"}


def _read(name: str) -> bytes:
    return resources.files("fluxserve.web").joinpath("static", name).read_bytes()


@router.get("/")
async def studio() -> Response:
    return Response(_read("index.html"), media_type="text/html; charset=utf-8", headers=_CACHE)


@router.get("/studio/{name}")
async def asset(name: str) -> Response:
    match = _ASSET.fullmatch(name)
    if match is None:
        raise NotFound(f"no studio file {name!r}")
    try:
        data = _read(name)
    except (FileNotFoundError, IsADirectoryError):
        raise NotFound(f"no studio file {name!r}") from None
    return Response(data, media_type=_TYPES[match.group(1)], headers=_CACHE)
