"""
MCP's Streamable HTTP transport (revision 2025-11-25) at C{/mcp}.

- C{POST} carries one JSON-RPC message.  C{initialize} starts a session and
  answers with its id in C{Mcp-Session-Id}; every later request carries it.
  A request is answered with C{application/json}, or with an SSE stream
  (C{text/event-stream}) as soon as something is to be sent before the
  response (C{notifications/progress}, C{notifications/message}); a
  notification or a response is answered C{202 Accepted}.
- C{GET} opens the session's standalone SSE stream (one at a time), for
  notifications that belong to no request.
- C{DELETE} ends the session: the programs it started are cancelled
  (unless started with C{on_disconnect: "keep"}), as when a WebSocket closes.

Every method is subject to the same origin and token rules as the WebSocket
(L{ccx.web.access}), and answered only when its C{Host} header names the
service (L{check_host}: DNS rebinding).  Sessions have their own limit
(C{--max-http-sessions}; they hold no socket, so C{--max-connections} does
not count them), show in C{/health}'s connections, and end after
C{--http-session-idle} seconds without a request or an open stream, or when
the service stops.
"""

import json
from typing import Any, Dict, List, Optional, Set, Tuple

from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request
from zope.interface import implementer

from ccx.mcp.envelope import (
    HTTP_STATUS,
    STATELESS_VERSIONS,
    UNSUPPORTED_VERSION,
    check_headers,
    envelope_of,
    requested_version,
    unsupported,
)
from ccx.mcp.methods import McpMethods
from ccx.mcp.session import SUPPORTED_VERSIONS, McpSession
from ccx.mcp.tools import Tools
from ccx.mcp.waiting import WaitBudget
from ccx.node import Node
from ccx.rpc.errors import INVALID_REQUEST, LIMIT_EXCEEDED, RPCError
from ccx.rpc.interfaces import INotificationChannel
from ccx.rpc.jsonrpc import Dispatcher, Reply, encode, parse
from ccx.rpc.ratelimit import TokenBucket
from ccx.web.access import (
    AccessDenied,
    check_origin,
    check_request_host,
    check_web_request,
    header_text,
)
from ccx.web.channel import BoundedRequest, ClientChannel
from ccx.web.interfaces import IConnection
from ccx.web.sse import EventStream, ResponseStream
from ccx.web.websocket import CLOSE_TIMEOUT

SESSION_HEADER = b"mcp-session-id"
VERSION_HEADER = b"mcp-protocol-version"
_ALLOWED_HEADERS = (
    b"authorization, content-type, mcp-session-id, mcp-protocol-version, mcp-method, "
    b"mcp-name, last-event-id"
)


def _accepts(request: Request) -> Tuple[bool, bool]:
    """
    Whether the client takes C{application/json} and C{text/event-stream}
    answers (no C{Accept} header takes anything).
    """
    accept = (header_text(request, b"accept") or "*/*").lower()
    kinds = {part.split(";")[0].strip() for part in accept.split(",")}
    anything = "*/*" in kinds
    json_ok = anything or "application/json" in kinds or "application/*" in kinds
    sse_ok = anything or "text/event-stream" in kinds or "text/*" in kinds
    return json_ok, sse_ok


def _error(
    request: Request,
    status: int,
    message: str,
    request_id: Any = None,
    code: int = INVALID_REQUEST,
    data: Any = None,
) -> bytes:
    """
    Refuse at the HTTP level, with a JSON-RPC error as the body.
    """
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json")
    return encode(RPCError(code, message, data).response(request_id))


def _refuse(request: Request, error: RPCError, request_id: Any = None) -> bytes:
    """
    Refuse a stateless-era request with the HTTP status its error calls for.
    """
    status = HTTP_STATUS.get(error.code, 400)
    return _error(request, status, error.message, request_id, error.code, error.data)


def _error_status(payload: bytes) -> int:
    """
    The HTTP status of a stateless-era JSON answer: 200 for a result, the
    status an error calls for (400, 404) otherwise.
    """
    try:
        error = json.loads(payload).get("error")
    except (ValueError, AttributeError):
        return 200
    return HTTP_STATUS.get(error.get("code"), 200) if isinstance(error, dict) else 200


@implementer(IConnection, INotificationChannel)
class HttpSession:
    """
    One MCP session over HTTP: a ccx L{Session} (its processes), its MCP
    state, and its standalone stream.  It is the L{INotificationChannel} of the
    notifications that belong to no request, which go on the C{GET} stream
    while one is open and are dropped otherwise.

    It is one of the node's connections (L{IConnection}), closed when the
    service stops; it holds no socket, so C{--max-connections} does not
    count it (C{--max-http-sessions} does).
    """

    log = Logger()
    holds_socket = False

    def __init__(
        self,
        node: Node,
        resource: "McpResource",
        peer: str = "unknown",
        client: Optional["StatelessClient"] = None,
    ) -> None:
        self.session = node.new_session()
        self.session.peer = peer
        self.mcp = McpSession(
            self.session, standalone=self, waits=client.waits if client else None
        )
        self.clock = node.reactor
        self.closed = False
        self.stream: Optional[EventStream] = None
        self._node = node
        self._resource = resource
        self._tools = Tools(node, self.mcp)
        self._limiter = (
            client.limiter if client else TokenBucket(node.reactor, node.config.max_requests)
        )
        # What a stream may hold for a client that does not read, and how
        # long it is given to read on (L{ccx.web.sse.SessionStream}).
        self.max_queued = node.config.max_message_size
        self.drain_timeout = node.config.ping_interval
        self._busy = 0
        self._idle: IDelayedCall = self.clock.callLater(self._idle_timeout, self._expire)
        # The connections its requests came on: what was written to them
        # is sent before the service stops (L{close}).
        self._channels: Set[ClientChannel] = set()

    @property
    def session_id(self) -> str:
        return self.session.session_id

    @property
    def writable(self) -> bool:
        return self.stream is not None and self.stream.writable

    def send_notification(self, method: str, params: dict) -> None:
        if self.stream is not None:
            self.stream.send_notification(method, params)

    def dispatcher(self, channel: INotificationChannel) -> Dispatcher:
        """
        The dispatcher of one POST, whose calls answer on C{channel}.
        """
        return Dispatcher(
            McpMethods(self._node, self.mcp, self._tools, channel).table(),
            max_batch=1,
            log_context={"session_id": self.session_id},
            limiter=self._limiter,
            observer=self._node.metrics.observe_request,
        )

    def track(self, request: Request) -> None:
        """
        A request of this session: at stop, its connection is closed once
        what was written to it is sent.
        """
        channel = request.channel
        if isinstance(channel, ClientChannel) and channel not in self._channels:
            self._channels.add(channel)
            channel.when_lost().addCallback(lambda _: self._channels.discard(channel))

    def request_started(self) -> None:
        self._busy += 1
        self._touch()

    def request_done(self) -> None:
        self._busy -= 1
        self._touch()

    def open_stream(self, stream: EventStream) -> None:
        self.stream = stream
        self._touch()

    def stream_closed(self, stream: EventStream) -> None:
        if self.stream is stream:
            self.stream = None
        self._touch()

    @property
    def _idle_timeout(self) -> float:
        return self._node.config.http_session_idle

    def _touch(self) -> None:
        if self._idle.active():
            self._idle.reset(self._idle_timeout)

    def _expire(self) -> None:
        if self._busy or self.stream is not None:
            self._idle = self.clock.callLater(self._idle_timeout, self._expire)
            return
        self.end(f"idle for {self._idle_timeout:g}s")

    def close(self, reason: str) -> Deferred:
        """
        The service is stopping: end the session, and close the connections
        its requests came on once what was written to them (the answers of
        the calls its cancelled programs ended, the end of its event stream)
        is sent, before the reactor stops and cuts them; a client that has
        not read it within L{CLOSE_TIMEOUT} seconds is dropped.

        @return: a L{Deferred} that fires once they are closed.
        """
        self.end(reason)
        channels = list(self._channels)
        closed = DeferredList([c.when_lost() for c in channels])
        for channel in channels:
            # Twisted writes what is pending, then closes.
            channel.loseConnection()
        deadline = self.clock.callLater(CLOSE_TIMEOUT, self._drop, channels)

        def done(result: object) -> None:
            if deadline.active():
                deadline.cancel()

        return closed.addCallback(done)

    def _drop(self, channels: List[ClientChannel]) -> None:
        left = [c for c in channels if c in self._channels]
        if left:
            self.log.warn(
                "MCP session {session_id}: dropped {count} connections: the client had not "
                "read everything {seconds:g} s after the service began to stop",
                session_id=self.session_id,
                count=len(left),
                seconds=CLOSE_TIMEOUT,
            )
        for channel in left:
            channel.transport.abortConnection()

    def end(self, reason: str) -> None:
        """
        End the session: cancel what it started, close its stream.
        """
        if self.closed:
            return
        self.closed = True
        if self._idle.active():
            self._idle.cancel()
        if self.stream is not None:
            self.stream.finish()
        self._node.connections.discard(self)
        self._resource.forget(self)
        if self.mcp.protocol_version is not None:
            self.log.info(
                "MCP session {session_id} closed: {why}", session_id=self.session_id, why=reason
            )
        self.session.close()
        self.mcp.close()


class StatelessClient:
    """
    What the stateless-era requests of one client (its address) share: the
    request rate and the bound on waiting requests.
    """

    def __init__(self, node: Node) -> None:
        self.limiter = TokenBucket(node.reactor, node.config.max_requests)
        self.waits = WaitBudget()


# How many clients' rates and waits are remembered; past it, the idle ones go.
MAX_STATELESS_CLIENTS = 1024


class McpResource(Resource):
    """
    C{/mcp}: the Streamable HTTP endpoint.
    """

    isLeaf = True
    log = Logger()

    def __init__(self, node: Node) -> None:
        super().__init__()
        self._node = node
        self.sessions: Dict[str, HttpSession] = {}
        self._clients: Dict[str, StatelessClient] = {}

    def forget(self, session: HttpSession) -> None:
        if self.sessions.get(session.session_id) is session:
            del self.sessions[session.session_id]

    # -- access ---------------------------------------------------------------

    def render(self, request: Request) -> Any:
        request.setHeader(b"cache-control", b"no-store")
        if request.postpath not in ([], [b""]):
            return _error(request, 404, "not found: the MCP endpoint is /mcp")
        config = self._node.config
        origin = header_text(request, b"origin")
        try:
            if request.method == b"OPTIONS":
                check_request_host(config, request)
                check_origin(config, origin)
                return self._preflight(request, origin)
            # A POST through the port's channel was judged before its body.
            if not (isinstance(request, BoundedRequest) and request.judged):
                check_web_request(config, request, host=True)
        except AccessDenied as e:
            for name, value in e.headers:
                request.setHeader(name, value)
            return _error(request, e.code, e.reason)
        if origin is not None:
            self._allow_origin(request, origin)
        return super().render(request)

    def _allow_origin(self, request: Request, origin: str) -> None:
        request.setHeader(b"access-control-allow-origin", origin.encode("latin-1"))
        request.setHeader(b"vary", b"Origin")
        request.setHeader(b"access-control-expose-headers", b"Mcp-Session-Id")

    def _preflight(self, request: Request, origin: Optional[str]) -> bytes:
        """
        A browser's CORS preflight, from an allowed origin: it carries no
        token, so only its host and origin are judged; the request that
        follows is judged in full.
        """
        if origin is not None:
            self._allow_origin(request, origin)
            request.setHeader(b"access-control-allow-methods", b"GET, POST, DELETE")
            request.setHeader(b"access-control-allow-headers", _ALLOWED_HEADERS)
            request.setHeader(b"access-control-max-age", b"600")
        request.setHeader(b"allow", b"GET, POST, DELETE, OPTIONS")
        request.setResponseCode(204)
        return b""

    def _session(self, request: Request, request_id: Any = None) -> Tuple[Optional[HttpSession], bytes]:
        """
        The session a request names, or the refusal to answer with.
        """
        session_id = header_text(request, SESSION_HEADER)
        if session_id is None:
            return None, _error(
                request,
                400,
                "bad request: no Mcp-Session-Id header; start a session with an "
                "initialize request",
                request_id,
            )
        session = self.sessions.get(session_id)
        if session is None:
            return None, _error(
                request,
                404,
                "session not found: it ended or expired; start a new one with initialize",
                request_id,
            )
        return session, b""

    # -- methods ------------------------------------------------------------------

    def render_POST(self, request: Request) -> Any:
        content_type = (header_text(request, b"content-type") or "").split(";")[0].strip().lower()
        if content_type != "application/json":
            return _error(
                request, 415, "unsupported media type: POST one JSON-RPC message as application/json"
            )
        json_ok, sse_ok = _accepts(request)
        if not (json_ok or sse_ok):
            return _error(
                request, 406, "not acceptable: Accept must list application/json and text/event-stream"
            )
        # BoundedRequest kept it within --max-message-size.
        body = request.content.read()
        try:
            message = parse(body)
        except RPCError as e:
            return _error(request, 400, e.message, code=e.code)
        if isinstance(message, list):
            return _error(
                request,
                400,
                "invalid request: POST one JSON-RPC message at a time (batches are not "
                "part of MCP's HTTP transport)",
            )
        if not isinstance(message, dict):
            return _error(request, 400, "invalid request: a JSON-RPC message must be an object")
        request_id = message.get("id")
        if isinstance(request_id, bool) or not isinstance(request_id, (str, int, float)):
            request_id = None
        has_method = "method" in message
        is_request = has_method and "id" in message
        version = header_text(request, VERSION_HEADER)
        if (version is not None and version not in SUPPORTED_VERSIONS) or (
            header_text(request, SESSION_HEADER) is None
            and requested_version(message.get("params")) is not None
        ):
            return self._stateless(request, message, body, request_id, json_ok, sse_ok)
        if is_request and message["method"] == "initialize":
            return self._initialize(request, body, request_id, json_ok, sse_ok)

        session, refusal = self._session(request, request_id)
        if session is None:
            return refusal
        session.track(request)
        if not has_method:
            if "result" in message or "error" in message:
                # A response to a request of ours; ccx sends none.
                request.setResponseCode(202)
                return b""
            return _error(request, 400, "invalid request: not a JSON-RPC message", request_id)
        if is_request:
            stream = ResponseStream(request, session, json_ok, sse_ok)
        else:
            # A notification is answered only when it is malformed.
            stream = ResponseStream(request, session, True, False, status=400)
        session.dispatcher(stream).dispatch(body).addCallback(stream.reply)
        return NOT_DONE_YET

    def _client(self, request: Request) -> Tuple[str, StatelessClient]:
        address = request.getClientAddress()
        host = str(getattr(address, "host", address))
        client = self._clients.get(host)
        if client is None:
            if len(self._clients) >= MAX_STATELESS_CLIENTS:
                for idle in [h for h, c in self._clients.items() if not c.waits.open]:
                    del self._clients[idle]
            client = self._clients[host] = StatelessClient(self._node)
        return f"{host}:{getattr(address, 'port', '')}", client

    def _stateless(
        self,
        request: Request,
        message: Dict[str, Any],
        body: bytes,
        request_id: Any,
        json_ok: bool,
        sse_ok: bool,
    ) -> Any:
        """
        A stateless-era POST: one request answered on its own, no session.
        Its envelope and routing headers are checked first; a notification
        is accepted and dropped (a client cancels a request by closing its
        stream, which ccx takes as the cancellation it is).
        """
        if "method" not in message:
            return _error(request, 400, "invalid request: POST one JSON-RPC request")
        if "id" not in message:
            version = header_text(request, VERSION_HEADER)
            if version not in STATELESS_VERSIONS:
                return _refuse(request, unsupported(version))
            request.setResponseCode(202)
            return b""
        # The envelope first, then the headers that repeat it, then its version.
        refusal: Optional[RPCError] = None
        try:
            envelope_of(message.get("params"), str(message["method"]))
        except RPCError as e:
            refusal = e
        if refusal is None or refusal.code == UNSUPPORTED_VERSION:
            try:
                check_headers(message, lambda name: header_text(request, name.encode()))
            except RPCError as e:
                refusal = e
        if refusal is not None:
            return _refuse(request, refusal, request_id)
        peer, client = self._client(request)
        session = HttpSession(self._node, self, peer, client)
        session.track(request)
        stream = ResponseStream(request, session, json_ok, sse_ok, status_of=_error_status)
        # The client closing the stream cancels the request.
        stream.on_lost = lambda: session.mcp.cancel(request_id)

        def answered(reply: Reply) -> None:
            stream.reply(reply)
            session.end("answered")

        session.dispatcher(stream).dispatch(body).addCallback(answered)
        return NOT_DONE_YET

    def _initialize(
        self, request: Request, body: bytes, request_id: Any, json_ok: bool, sse_ok: bool
    ) -> Any:
        node = self._node
        limit = node.config.max_http_sessions
        if len(self.sessions) >= limit:
            self.log.warn(
                "refused an MCP session: {count} HTTP sessions are open",
                count=len(self.sessions),
            )
            return _error(
                request,
                503,
                f"limit exceeded: too many MCP sessions over HTTP (--max-http-sessions {limit})",
                request_id,
                code=LIMIT_EXCEEDED,
            )
        address = request.getClientAddress()
        peer = f"{getattr(address, 'host', address)}:{getattr(address, 'port', '')}"
        session = HttpSession(node, self, peer)
        session.track(request)
        stream = ResponseStream(request, session, json_ok, sse_ok)

        def answered(reply: Reply) -> None:
            opened = session.mcp.protocol_version is not None and not stream.done
            if opened:
                self.sessions[session.session_id] = session
                node.connections.add(session)
                request.setHeader(SESSION_HEADER, session.session_id.encode("ascii"))
                self.log.info(
                    "MCP session {session_id} opened over HTTP from {peer}",
                    session_id=session.session_id,
                    peer=peer,
                )
            stream.reply(reply)
            if not opened:
                session.end("initialize failed")

        session.dispatcher(stream).dispatch(body).addCallback(answered)
        return NOT_DONE_YET

    def _stateless_refusal(self, request: Request) -> Optional[bytes]:
        """
        The stateless era has no GET stream and no session to DELETE.
        """
        version = header_text(request, VERSION_HEADER)
        if version is None or version in SUPPORTED_VERSIONS:
            return None
        request.setHeader(b"allow", b"POST")
        return _error(
            request, 405, f"method not allowed: at {version} every request is a POST"
        )

    def render_GET(self, request: Request) -> Any:
        refusal = self._stateless_refusal(request)
        if refusal is not None:
            return refusal
        json_ok, sse_ok = _accepts(request)
        if not sse_ok:
            return _error(
                request, 406, "not acceptable: GET opens an event stream; Accept must list text/event-stream"
            )
        session, refusal = self._session(request)
        if session is None:
            return refusal
        if session.stream is not None:
            return _error(request, 409, "conflict: this session already has an open event stream")
        session.track(request)
        session.open_stream(EventStream(request, session, self._node.config.ping_interval))
        return NOT_DONE_YET

    def render_HEAD(self, request: Request) -> bytes:
        request.setHeader(b"allow", b"GET, POST, DELETE, OPTIONS")
        return _error(request, 405, "method not allowed: use POST, GET or DELETE")

    def render_DELETE(self, request: Request) -> bytes:
        refusal = self._stateless_refusal(request)
        if refusal is not None:
            return refusal
        session, refusal = self._session(request)
        if session is None:
            return refusal
        session.end("ended by the client")
        request.setResponseCode(204)
        return b""
