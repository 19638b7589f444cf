"""
The dashboard: a static single page (C{static/}) that speaks the native
WebSocket protocol, served at C{/} to browsers and its files below
C{/dashboard/}.  Nothing is built at install time and nothing is fetched
at run time: the vendored JavaScript (xterm.js) is in C{static/vendor/},
put there by C{scripts/vendor-js.sh}.
"""

import os
import secrets
from typing import Dict, Optional, Tuple

from twisted.web.iweb import IRequest
from twisted.web.resource import NoResource, Resource

from ccx.node import Node
from ccx.web.access import AccessDenied, check_request_host

STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")

# The files the page is made of, by how their names end: nothing else
# under static/ is served (a LICENSE is read from the repository).
CONTENT_TYPES = {
    ".html": b"text/html; charset=utf-8",
    ".js": b"text/javascript; charset=utf-8",
    ".css": b"text/css; charset=utf-8",
    ".png": b"image/png",
}

# What the page may do: its own scripts and styles, its own WebSocket and
# /health; no inline script, no frame, no form sent anywhere.  The styles
# xterm.js makes at run time carry the page's nonce (app.js hands it on).
_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'nonce-{nonce}'; "
    "img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)

# The placeholder index.html holds where the nonce goes.
_NONCE_MARK = b"{{nonce}}"


def load_assets(root: str = STATIC) -> Dict[bytes, Tuple[bytes, bytes]]:
    """
    Every file of the page, read once: its path below C{/dashboard/} (as
    C{twisted.web} splits it, joined with C{/}) to its content type and
    bytes.
    """
    assets: Dict[bytes, Tuple[bytes, bytes]] = {}
    for directory, _, names in os.walk(root):
        for name in names:
            kind = CONTENT_TYPES.get(os.path.splitext(name)[1])
            if kind is None:
                continue
            path = os.path.join(directory, name)
            with open(path, "rb") as f:
                data = f.read()
            assets[os.path.relpath(path, root).replace(os.sep, "/").encode()] = (kind, data)
    return assets


def wants_page(request: IRequest) -> bool:
    """
    Whether a request for C{/} comes from a browser, which asks for HTML
    (C{Accept: text/html}); other clients keep the small index page.
    """
    accept = request.getHeader(b"accept") or b""
    return b"text/html" in accept.lower()


def _common_headers(request: IRequest, kind: bytes) -> None:
    request.setHeader(b"content-type", kind)
    request.setHeader(b"x-content-type-options", b"nosniff")
    request.setHeader(b"referrer-policy", b"no-referrer")
    request.setHeader(b"cross-origin-opener-policy", b"same-origin")
    request.setHeader(b"cache-control", b"no-cache")


def _refuse(request: IRequest, refusal: AccessDenied) -> bytes:
    request.setResponseCode(refusal.code)
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    request.setHeader(b"cache-control", b"no-store")
    return refusal.reason.encode("utf-8") + b"\n"


class DashboardPage:
    """
    C{index.html}, with a new nonce in its C{Content-Security-Policy} and
    in its script tag each time it is served.
    """

    def __init__(self, node: Node, assets: Dict[bytes, Tuple[bytes, bytes]]) -> None:
        self._node = node
        self._html = assets[b"index.html"][1]

    def render(self, request: IRequest) -> bytes:
        try:
            check_request_host(self._node.config, request)
        except AccessDenied as e:
            return _refuse(request, e)
        nonce = secrets.token_urlsafe(18)
        _common_headers(request, CONTENT_TYPES[".html"])
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(
            b"content-security-policy", _POLICY.format(nonce=nonce).encode("ascii")
        )
        return self._html.replace(_NONCE_MARK, nonce.encode("ascii"))


class DashboardAssets(Resource):
    """
    C{GET /dashboard/PATH}: one of the page's files.  Their content is no
    secret (it ships with ccx), but the C{Host} is checked as for C{/}.
    """

    isLeaf = True

    def __init__(self, node: Node, assets: Optional[Dict[bytes, Tuple[bytes, bytes]]] = None) -> None:
        super().__init__()
        self._node = node
        self.assets = load_assets() if assets is None else assets

    def render_GET(self, request: IRequest) -> bytes:
        try:
            check_request_host(self._node.config, request)
        except AccessDenied as e:
            return _refuse(request, e)
        found = self.assets.get(b"/".join(request.postpath))
        if found is None or request.postpath == [b"index.html"]:
            return NoResource().render(request)
        kind, data = found
        _common_headers(request, kind)
        request.setHeader(b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'")
        return data
