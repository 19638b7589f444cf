"""
The HTTP side of the port: C{/ws} and C{/ws/mcp} (the WebSocket),
C{/health}, C{/metrics}, C{/mcp} (MCP's Streamable HTTP), and C{/}: the
dashboard (C{/dashboard/}) for a browser, else a page naming them.
"""

import json
from html import escape

from autobahn.twisted.resource import WebSocketResource
from twisted.web.resource import NoResource, Resource
from twisted.web.server import Site

from ccx.web.channel import BoundedRequest, ClientChannel
from ccx.web.mcp_http import McpResource
from ccx.metrics import CONTENT_TYPE, journal_state
from ccx.node import Node
from ccx.web.dashboard import DashboardAssets, DashboardPage, wants_page
from ccx.web.access import (
    AccessDenied,
    carries_token,
    check_request_host,
    check_web_request,
    header_text,
    token_parameters,
)
from ccx.web.websocket import make_factory


class HealthResource(Resource):
    """
    C{GET /health}: the service's status as JSON.  When a token is
    configured, a request without it learns only C{status} (a liveness probe
    needs no more); with it, every key of docs/protocol.md section 1.
    """

    isLeaf = True

    def __init__(self, node: Node) -> None:
        super().__init__()
        self._node = node

    def render_GET(self, request) -> bytes:
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        health = dict(self._node.health(), **journal_state(self._node.registry))
        authorization = header_text(request, b"authorization")
        if not carries_token(self._node.config, authorization, token_parameters(request.args)):
            health = {"status": health["status"]}
        return json.dumps(health).encode("utf-8")


# The endpoints the index page names (paths on this port).
ENDPOINTS = (
    ("/ws", "WebSocket, JSON-RPC 2.0 (ccx's own methods)"),
    ("/ws/mcp", "WebSocket, MCP (subprotocol mcp)"),
    ("/mcp", "MCP over HTTP (Streamable HTTP)"),
    ("/health", "status as JSON (all of it with the token)"),
    ("/metrics", "Prometheus metrics (with the token)"),
)


# The documents that come with ccx, named on the index page.
DOCS = (
    ("docs/protocol.md", "the wire protocol: JSON-RPC methods and notifications"),
    ("docs/mcp.md", "MCP: tools, transports, sessions"),
    ("docs/cli.md", "the ccx command"),
    ("docs/running.md", "running the service: options, tokens, systemd"),
)


class IndexPage(Resource):
    """
    C{GET /}: the dashboard for a browser (L{wants_page}); for any other
    client, a small page naming ccx, its endpoints and its docs.  Its
    C{Host} must name the service.  The version is named only to a
    request that carries the token (as C{/health} tells it), and nothing
    else the service holds (programs, sessions) is.  No script runs and
    nothing of the request is written back.
    """

    isLeaf = True

    def __init__(self, node: Node, dashboard: DashboardPage) -> None:
        super().__init__()
        self._node = node
        self._dashboard = dashboard

    def render_GET(self, request) -> bytes:
        if request.getHeader(b"upgrade") is not None:
            # A WebSocket client that tried the wrong path: / is not one.
            return NoResource().render(request)
        if wants_page(request):
            return self._dashboard.render(request)
        try:
            # As /mcp: a page whose name was pointed here learns nothing.
            check_request_host(self._node.config, request)
        except AccessDenied as e:
            request.setResponseCode(e.code)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return e.reason.encode("utf-8") + b"\n"
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"x-content-type-options", b"nosniff")
        request.setHeader(b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'")
        authorization = header_text(request, b"authorization")
        trusted = carries_token(self._node.config, authorization, token_parameters(request.args))
        title = f"ccx {self._node.version}" if trusted else "ccx"
        rows = "".join(
            f"<li><code>{escape(path)}</code>: {escape(what)}</li>\n"
            for path, what in ENDPOINTS
        )
        docs = "".join(
            f"<li><code>{escape(path)}</code>: {escape(what)}</li>\n" for path, what in DOCS
        )
        page = (
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{escape(title)}</title></head><body>\n"
            f"<h1>{escape(title)}</h1>\n"
            "<p>Runs allow-listed programs for clients and streams their output.</p>\n"
            f"<h2>Endpoints on this port</h2>\n<ul>\n{rows}</ul>\n"
            f"<h2>Documentation</h2>\n<ul>\n{docs}</ul>\n"
            "</body></html>\n"
        )
        return page.encode("utf-8")


class MetricsResource(Resource):
    """
    C{GET /metrics}: Prometheus text exposition, behind the same origin and
    token rules as the WebSocket (Prometheus sends C{Authorization: Bearer}).
    """

    isLeaf = True

    def __init__(self, node: Node) -> None:
        super().__init__()
        self._node = node

    def render_GET(self, request) -> bytes:
        request.setHeader(b"cache-control", b"no-store")
        try:
            check_web_request(self._node.config, request)
        except AccessDenied as e:
            request.setResponseCode(e.code)
            for name, value in e.headers:
                request.setHeader(name, value)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return e.reason.encode("utf-8") + b"\n"
        request.setHeader(b"content-type", CONTENT_TYPE.encode("ascii"))
        return self._node.metrics.render()


class WebSocketEndpoint(WebSocketResource):
    """
    The WebSocket, at C{/ws} and at C{/ws/mcp}.
    """

    # WebSocketResource is a leaf: every path below /ws reaches render().
    _PATHS = ([], [b""], [b"mcp"])

    def render(self, request):
        if request.postpath not in self._PATHS:
            return NoResource().render(request)
        return super().render(request)


class _Quiet(Site):
    # Access logging is the WebSocket's job (it logs sessions), and Site's own
    # line would print the query string, where a browser puts its token.
    # Its connections and requests are ccx's own (ccx.web.channel): bounded
    # before authentication, and in time.
    protocol = ClientChannel
    requestFactory = BoundedRequest

    def __init__(self, resource: Resource, node: Node) -> None:
        super().__init__(resource, reactor=node.reactor)
        self.node = node

    def log(self, request) -> None:
        pass


def build_site(node: Node) -> Site:
    """
    The port's C{Site}; its HTTP connection timeouts run on the node's reactor.
    """
    root = Resource()
    assets = DashboardAssets(node)
    root.putChild(b"", IndexPage(node, DashboardPage(node, assets.assets)))
    root.putChild(b"dashboard", assets)
    root.putChild(b"ws", WebSocketEndpoint(make_factory(node)))
    root.putChild(b"health", HealthResource(node))
    root.putChild(b"mcp", McpResource(node))
    root.putChild(b"metrics", MetricsResource(node))
    return _Quiet(root, node)
