"""The security headers every response carries: a page's policy for HTML, the data policy otherwise."""

from __future__ import annotations

# The studio page runs only its own scripts and styles and talks only to this server.
PAGE_POLICY = (
    "default-src 'self'; img-src 'self' data: blob:; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
# Everything else is data, never a document to render.
DATA_POLICY = "default-src 'none'; frame-ancestors 'none'; sandbox"
# FastAPI's interactive docs load Swagger UI and ReDoc from a CDN: no policy of ours there.
DOCS_PATHS = ("/docs", "/docs/oauth2-redirect", "/redoc")


def security_headers(*, html: bool, docs: bool = False) -> list[tuple[bytes, bytes]]:
    """The headers every response carries: a page's policy for HTML, the data policy otherwise, none on the docs."""
    wanted = [
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"no-referrer"),
        (b"x-frame-options", b"DENY"),
        (b"cross-origin-opener-policy", b"same-origin"),
    ]
    if not docs:
        wanted.append((b"content-security-policy", (PAGE_POLICY if html else DATA_POLICY).encode()))
    return wanted
