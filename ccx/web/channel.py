"""
One client's HTTP connection to the port, with the limits C{twisted.web}
leaves to its user: nothing is spent on a client before it proved who it
is, and a slow client holds its socket for a bounded time.

- L{ClientChannel}: a deadline for each whole request
  (C{--handshake-timeout}); while a request arrives the connection counts
  against C{--max-connections} (L{Node.handshakes}); a connection accepted
  past that limit, or when few file descriptors are left, is answered 503
  at once.
- L{BoundedRequest}: a request is judged by its head before its body is
  read (L{judge_body}): only C{POST /mcp} takes a body, and only from a
  client that passed the C{/mcp} checks, up to C{--max-message-size}; the
  body is kept in memory, never in a temporary file.
"""

from dataclasses import dataclass
from io import BytesIO
from typing import Any, List, Optional, Tuple
from urllib.parse import parse_qs, unquote_to_bytes

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, ISSLTransport, ITCPTransport
from twisted.logger import Logger
from twisted.web.http import HTTPChannel
from twisted.web.server import Request

from ccx.fdlimit import descriptors_low
from ccx.node import Node
from ccx.rpc.errors import INVALID_REQUEST, LIMIT_EXCEEDED, RPCError
from ccx.rpc.jsonrpc import encode
from ccx.web.access import AccessDenied, check_web_request

# Seconds a refused client may go on sending (read and dropped) before its
# connection is cut: long enough for it to read the answer, which a client
# still writing a body would otherwise lose to the reset.
LINGER = 1.0

# The paths of /mcp as Twisted's resource traversal sees them.
_MCP_PATHS = ([b"mcp"], [b"mcp", b""])

log = Logger()


@dataclass(frozen=True)
class Refusal:
    """
    An answer given without reading the request's body.

    @ivar status: the HTTP status.
    @ivar message: a sentence a person can act on (also the reason phrase,
        which is what WebSocket clients show).
    @ivar code: the JSON-RPC error code of the body.
    @ivar headers: more response headers.
    """

    status: int
    message: str
    code: int = INVALID_REQUEST
    headers: Tuple[Tuple[str, str], ...] = ()

    def response(self) -> bytes:
        body = encode(RPCError(self.code, self.message).response(None))
        lines = [
            f"HTTP/1.1 {self.status} {self.message}",
            "Content-Type: application/json",
            f"Content-Length: {len(body)}",
            "Cache-Control: no-store",
            "Connection: close",
        ] + [f"{name}: {value}" for name, value in self.headers]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def judge_body(
    node: Node, request: "BoundedRequest", method: bytes, target: bytes, length: Optional[int]
) -> Tuple[Optional[Refusal], int]:
    """
    Whether a request may send its body, judged from its head alone.

    @param target: the request line's target (path and query).
    @param length: the C{Content-Length}, or L{None} for a chunked body.
    @return: the refusal to answer with, or L{None}; and how many body
        bytes may come.
    """
    path, _, query = target.partition(b"?")
    # As twisted.web's traversal splits and decodes it.
    segments = [unquote_to_bytes(segment) for segment in path[1:].split(b"/")]
    if method == b"POST" and segments in _MCP_PATHS:
        config = node.config
        try:
            # The query as twisted.web will parse it into request.args.
            check_web_request(config, request, host=True, args=parse_qs(query, True))
        except AccessDenied as e:
            return Refusal(e.code, e.reason, headers=e.headers), 0
        request.judged = True
        if length is not None and length > config.max_message_size:
            return _too_large(config.max_message_size), 0
        return None, config.max_message_size
    if length == 0:
        return None, 0
    shown = path.decode("latin-1")[:100]
    log.info("refused a request body on {method} {path}", method=method, path=shown)
    return Refusal(413, f"{method.decode('latin-1')} {shown} takes no request body"), 0


def _too_large(limit: int) -> Refusal:
    log.info("refused a request body larger than {limit} bytes", limit=limit)
    return Refusal(413, f"the message is larger than {limit} bytes (--max-message-size)")


class BoundedRequest(Request):
    """
    A request whose body is judged (L{judge_body}) before any of it is
    read, counted as it arrives (a chunked body has no length to judge),
    and kept in memory: the limit bounds it.

    @ivar line: the method and target of the request line, which the
        channel sets as soon as it has it.
    @ivar judged: whether its head passed the C{/mcp} checks (the
        resource then does not check it again).
    """

    # Its repr leaves out the query string, where a browser puts its
    # token: twisted.web logs the repr at info level (a HEAD answered with a
    # body), with or without ccx's log observer.
    def __repr__(self) -> str:
        def text(value: bytes) -> str:
            # A repr must not raise, whatever bytes a client sent.
            return value.decode("ascii", "backslashreplace")

        path = self.uri.split(b"?", 1)[0]
        return (
            f"<{type(self).__name__} at 0x{id(self):x} method={text(self.method)} "
            f"path={text(path)} clientproto={text(self.clientproto)}>"
        )

    line: Tuple[bytes, bytes] = (b"", b"")
    judged = False
    _refused = False
    _limit = 0

    def gotLength(self, length: Optional[int]) -> None:
        self.content = BytesIO()
        method, target = self.line
        refusal, self._limit = judge_body(self.channel.node, self, method, target, length)
        if refusal is not None:
            self._refuse(refusal)

    def handleContentChunk(self, data: bytes) -> None:
        if self._refused:
            return
        if self.content.tell() + len(data) > self._limit:
            self._refuse(_too_large(self._limit))
            return
        self.content.write(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if not self._refused:
            super().requestReceived(command, path, version)

    def _refuse(self, refusal: Refusal) -> None:
        self._refused = True
        # Twisted would otherwise answer "Expect: 100-continue" after us.
        self.requestHeaders.removeHeader(b"expect")
        self.channel.refuse(refusal)


class ClientChannel(HTTPChannel):
    """
    One HTTP connection, until it becomes a WebSocket or closes.

    @ivar site: the port's site (set by the site); C{site.node} is the
        service's L{Node}.
    """

    site: Any
    _connected = False
    _arriving = False
    _refused = False
    _deadline: Optional[IDelayedCall] = None
    _linger: Optional[IDelayedCall] = None
    _lost_waiters: Optional[List[Deferred]] = None

    @property
    def node(self) -> Node:
        return self.site.node

    def connectionMade(self) -> None:
        super().connectionMade()
        self._connected = True
        refusal = self._admission()
        if refusal is None:
            self._await_request()
        else:
            self.refuse(refusal)

    def _admission(self) -> Optional[Refusal]:
        """
        Whether one more connection may be served now.
        """
        fileno = _fileno(self.transport)
        if fileno is not None and descriptors_low(fileno):
            log.warn("refused a connection: file descriptors are running out")
            return Refusal(
                503, "the service is short of file descriptors; try again later", LIMIT_EXCEEDED
            )
        refused = self.node.connection_refused()
        return None if refused is None else Refusal(503, refused, LIMIT_EXCEEDED)

    def _await_request(self) -> None:
        """
        A request may come: count the connection and start its deadline.
        """
        self._arriving = True
        self.node.handshakes += 1
        self._deadline = self.node.reactor.callLater(
            self.node.config.handshake_timeout, self._too_slow
        )

    def _stop_waiting(self) -> None:
        """
        No request is awaited any more (it arrived, or the connection was
        refused, timed out or lost): uncount it, cancel its deadline.
        """
        if self._arriving:
            self._arriving = False
            self.node.handshakes -= 1
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        self._stop_waiting()
        log.info(
            "closed a connection from {peer}: no whole request within {timeout:g}s "
            "(--handshake-timeout)",
            peer=str(self.transport.getPeer()),
            timeout=self.node.config.handshake_timeout,
        )
        self._close_soon()
        self.loseConnection()

    def _close_soon(self) -> None:
        # This closing replaces Twisted's idle timeout; a client that does
        # not read would keep the connection open: cut it after LINGER.
        self.setTimeout(None)
        if self._linger is None:
            self._linger = self.node.reactor.callLater(LINGER, self.transport.abortConnection)

    def lineReceived(self, line: bytes) -> None:
        count = len(self.requests)
        super().lineReceived(line)
        if len(self.requests) > count:
            # The request line: its Request judges its body by it.
            parts = line.split(b" ")
            if len(parts) == 3 and isinstance(self.requests[-1], BoundedRequest):
                self.requests[-1].line = (parts[0], parts[1])

    def dataReceived(self, data: bytes) -> None:
        # A refused client's bytes are read and dropped, never kept.
        if not self._refused:
            super().dataReceived(data)

    def allContentReceived(self) -> None:
        self._stop_waiting()
        super().allContentReceived()

    def requestDone(self, request: Request) -> None:
        # Counted again before a pipelined request is replayed.
        if self.persistent and self._connected and not self._refused:
            self._await_request()
        super().requestDone(request)

    def refuse(self, refusal: Refusal) -> None:
        """
        Answer C{refusal}, stop reading requests, and close: after the
        client closes, or after L{LINGER} seconds.
        """
        if self._refused:
            return
        self._refused = True
        self._stop_waiting()
        self.transport.write(refusal.response())
        self.transport.unregisterProducer()
        if ITCPTransport.providedBy(self.transport) and not ISSLTransport.providedBy(self.transport):
            # Half-close: the answer goes out, and what the client still
            # sends is read (and dropped) instead of resetting the
            # connection before the client has read the answer.
            self.transport.loseWriteConnection()
        else:
            self.transport.loseConnection()
        self._close_soon()

    def when_lost(self) -> Deferred:
        """
        @return: a L{Deferred} that fires once this connection is closed
            (at once if it is): what was written to it before has then been
            handed to the kernel, or dropped with it.
        """
        if not self._connected:
            return succeed(None)
        if self._lost_waiters is None:
            self._lost_waiters = []
        d: Deferred = Deferred()
        self._lost_waiters.append(d)
        return d

    def connectionLost(self, reason: Any) -> None:
        self._connected = False
        self._stop_waiting()
        if self._linger is not None and self._linger.active():
            self._linger.cancel()
        super().connectionLost(reason)
        waiters, self._lost_waiters = self._lost_waiters or [], None
        for d in waiters:
            d.callback(None)


def _fileno(transport: Any) -> Optional[int]:
    """
    The descriptor of a connection's socket, when its transport tells
    (TCP and UNIX sockets do; TLS hides it).
    """
    if ISSLTransport.providedBy(transport):
        return None
    try:
        return transport.getHandle().fileno()
    except (AttributeError, OSError, ValueError):
        return None
