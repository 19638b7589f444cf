"""
The HTTP side of the port: C{/ws} and C{/ws/mcp} (the WebSocket),
C{/health}, C{/metrics} and C{/mcp} (MCP's Streamable HTTP).
"""

import json

from autobahn.twisted.resource import WebSocketResource
from twisted.web.resource import NoResource, Resource
from twisted.web.server import Site

from ccx.web.channel import BoundedRequest, ClientChannel
from ccx.web.mcp_http import McpResource
from ccx.metrics import CONTENT_TYPE, journal_state
from ccx.node import Node
from ccx.web.access import (
    AccessDenied,
    carries_token,
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
    root.putChild(b"ws", WebSocketEndpoint(make_factory(node)))
    root.putChild(b"health", HealthResource(node))
    root.putChild(b"mcp", McpResource(node))
    root.putChild(b"metrics", MetricsResource(node))
    return _Quiet(root, node)
