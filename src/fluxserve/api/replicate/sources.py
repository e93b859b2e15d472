"""Where a prediction's input images come from: data URIs, this server's own files, allowed hosts.

The official client uploads a local file with ``POST /v1/files`` and sends the file's ``urls.get``;
other clients send data URIs. An ``http(s)`` URL is read without a network request when it names
this server's own upload (the caller's) or a signed image of one of its jobs; any other URL is
fetched only when its host is on the operator's ``replicate_fetch_hosts`` list. fluxserve never
makes a request to an address a client chose.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import httpx

from fluxserve.api.parsing import RawImage, decode_base64
from fluxserve.api.routes.files import open_output
from fluxserve.errors import InvalidRequest, NotFound, PayloadTooLarge, PermissionDenied
from fluxserve.jobs.service import JobService
from fluxserve.settings import Settings
from fluxserve.storage.files import FileStore
from fluxserve.storage.signing import UrlSigner
from fluxserve.storage.uploads import Uploads

_UPLOAD_PATH = re.compile(r"/v1/files/([^/]+)(?:/download)?")
_IMAGE_PATH = re.compile(r"/v1/images/files/([^/]+)/([^/]+)")
FETCH_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class Sources:
    """What a caller's input URLs may resolve to."""

    base_url: str
    owner: str | None
    uploads: Uploads
    jobs: JobService
    files: FileStore
    signer: UrlSigner
    settings: Settings

    def read(self, text: str, param: str) -> RawImage:
        """The bytes ``text`` names (blocking: run it in a thread)."""
        value = text.strip()
        if not value.startswith(("http://", "https://")):
            return RawImage(param, decode_base64(value, param, self.settings))
        url = urlsplit(value)
        origin = urlsplit(self.base_url)
        if (url.scheme, url.netloc) == (origin.scheme, origin.netloc):
            return RawImage(param, self._own(url.path.removeprefix(origin.path.rstrip("/")), url.query, param))
        host = (url.hostname or "").lower()
        if host in self.settings.replicate_fetch_hosts:
            return RawImage(param, self._fetch(value, param))
        raise InvalidRequest(
            f"{param} is a URL of another server; fluxserve fetches only its own files (upload with POST /v1/files) "
            "and hosts on its replicate_fetch_hosts list: send a data URI instead",
            param=param,
        )

    def _own(self, path: str, query: str, param: str) -> bytes:
        if (match := _UPLOAD_PATH.fullmatch(path)) is not None:
            try:
                return self.uploads.read(match.group(1), self.owner)[1]
            except NotFound:
                raise InvalidRequest(f"{param}: no such file (or it expired); upload it again", param=param) from None
        if (match := _IMAGE_PATH.fullmatch(path)) is not None:
            signed = parse_qs(query)
            try:
                self.signer.verify(path, *(signed.get(name, [None])[0] for name in ("expires", "signature")))
                blob, _ = open_output(self.jobs, self.files, match.group(1), match.group(2))
            except (PermissionDenied, NotFound) as error:
                raise InvalidRequest(f"{param}: {error}", param=param) from None
            with blob:
                return blob.read()
        raise InvalidRequest(f"{param} names nothing this server holds: send a file URL or a data URI", param=param)

    def _fetch(self, url: str, param: str) -> bytes:
        limit = self.settings.max_upload_bytes
        try:
            with httpx.stream("GET", url, timeout=FETCH_TIMEOUT_SECONDS, follow_redirects=False) as response:
                if response.status_code != 200:
                    raise InvalidRequest(f"{param}: its host answered {response.status_code}", param=param)
                data = b""
                for chunk in response.iter_bytes():
                    data += chunk
                    if len(data) > limit:
                        raise PayloadTooLarge(f"{param} is larger than {self.settings.max_upload_mb:g} MB", param=param)
                return data
        except httpx.HTTPError as error:
            raise InvalidRequest(f"{param}: could not fetch it ({type(error).__name__})", param=param) from None
