"""
The WebSocket connection: JSON-RPC frames in, replies and notifications out,
and the connection's back-pressure handed to the output it subscribes to.
"""

from collections import deque
from typing import Any, Deque, List, Optional

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IPushProducer, ISSLTransport
from twisted.logger import Logger
from zope.interface import implementer

from ccx.config import Config
from ccx.mcp.methods import MCP_SUBPROTOCOL, websocket_methods
from ccx.mcp.session import McpSession
from ccx.native.methods import CAPABILITIES, NativeMethods
from ccx.node import Node
from ccx.rpc.interfaces import IFrameChannel
from ccx.rpc.jsonrpc import Dispatcher, Reply, notification
from ccx.rpc.ratelimit import TokenBucket
from ccx.session import Session
from ccx.web.access import AccessDenied, check_access, check_host
from ccx.web.interfaces import IConnection

# When the service stops, how long a connection has to deliver what it holds
# (its programs' process.completed) before it is dropped; then the closing
# handshake has as long (Autobahn's closeHandshakeTimeout).
CLOSE_TIMEOUT = 5.0

# The close code a client is told when the service stops (RFC 6455 7.4.1:
# "going away", as a server going down).
GOING_AWAY = WebSocketServerProtocol.CLOSE_STATUS_CODE_GOING_AWAY


@implementer(IConnection, IFrameChannel, IPushProducer)
class CCXServerProtocol(WebSocketServerProtocol):
    """
    One client connection speaking the native dialect, or MCP when the
    client chose the C{mcp} subprotocol (see L{ccx.mcp.methods}).

    It is the streaming producer registered with its transport: when the
    socket cannot take more, Twisted calls L{pauseProducing}, the connection
    stops being L{writable}, and its subscriptions stop delivering; their
    buffers then hold the program back or drop, as each subscription chose.

    Replies cannot wait like output: they are sent even while paused.  Once
    more than C{--max-message-size} bytes were sent since the pause, the
    connection stops reading the client's requests (TCP then holds the
    client back), and drops the client if it has not read everything within
    C{--ping-interval} seconds.

    @ivar queued: bytes sent since the transport last paused the connection
        (0 while it is not paused).
    @ivar reading: whether the client's requests are read.
    """

    # Not "log": Autobahn's own level-filtered logger is self.log, and its
    # debug events carry raw handshakes.
    _log = Logger()
    holds_socket = True
    session: Optional[Session] = None
    _open = False
    _paused = False
    queued = 0
    reading = True
    _drain_call: Optional[IDelayedCall] = None
    _going_away: Optional[str] = None
    _close_call: Optional[IDelayedCall] = None

    def __init__(self) -> None:
        super().__init__()
        # Requests Autobahn parsed after reading stopped: it delivers every
        # frame of what it has already received.
        self._held: Deque[bytes] = deque()
        self._close_waiters: List[Deferred] = []
        # The MCP state of a connection that chose the subprotocol mcp.
        self._mcp: Optional[McpSession] = None

    @property
    def node(self) -> Node:
        return self.factory.node

    @property
    def writable(self) -> bool:
        return self._open and not self._paused and self.state == self.STATE_OPEN

    @property
    def speaks_mcp(self) -> bool:
        """
        Whether the client chose the C{mcp} subprotocol: the connection then
        speaks MCP (with the native methods beside it) and gets no
        C{connected} notification.
        """
        return self.websocket_protocol_in_use == MCP_SUBPROTOCOL

    def onConnect(self, request: Any) -> Optional[str]:
        local = self.transport.getHost()
        secure = ISSLTransport.providedBy(self.transport)
        try:
            # Its Host first, as /mcp's: a page whose name its attacker
            # pointed at this address (DNS rebinding) gets nothing.
            check_host(self.node.config, request.headers.get("host"), local, secure)
            check_access(
                self.node.config,
                origin=request.headers.get("origin"),
                authorization=request.headers.get("authorization"),
                query_tokens=request.params.get("token", ()),
                local=local,
                secure=secure,
            )
        except AccessDenied as e:
            raise ConnectionDeny(e.code, e.reason)
        refused = self.node.connection_refused()
        if refused is not None:
            raise ConnectionDeny(503, refused)
        if MCP_SUBPROTOCOL in request.protocols:
            return MCP_SUBPROTOCOL
        return None

    def onOpen(self) -> None:
        self._open = True
        self.session = self.node.new_session()
        self.session.peer = self.peer
        if self.speaks_mcp:
            methods, self._mcp = websocket_methods(self.node, self.session, self)
        else:
            methods = NativeMethods(self.node, self.session, self, frames=self).table()
        self.dispatcher = Dispatcher(
            methods,
            max_batch=self.node.config.max_batch,
            log_context={"session_id": self.session.session_id},
            limiter=TokenBucket(self.node.reactor, self.node.config.max_requests),
            observer=self.node.metrics.observe_request,
            # Autobahn refuses to send messages over its (incoming) limit.
            max_reply=self.node.config.max_message_size,
        )
        self._register_as_producer()
        self.node.connections.add(self)
        self._log.info(
            "session {session_id} opened from {peer}",
            session_id=self.session.session_id,
            peer=self.peer,
        )
        if self.speaks_mcp:
            return
        self.send_notification(
            "connected",
            {
                "session_id": self.session.session_id,
                "version": self.node.version,
                "capabilities": list(CAPABILITIES),
            },
        )

    def _register_as_producer(self) -> None:
        # Served from a twisted.web Site, the transport still has the HTTP
        # channel registered as its producer.
        try:
            self.transport.registerProducer(self, True)
        except RuntimeError:
            self.transport.unregisterProducer()
            self.transport.registerProducer(self, True)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if self.reading and not self._held:
            self._dispatch(payload)
        else:
            self._held.append(payload)

    def _dispatch(self, payload: bytes) -> None:
        self.dispatcher.dispatch(payload).addCallback(self._reply)

    def _reply(self, reply: Reply) -> None:
        if not self._open or self.state != self.STATE_OPEN:
            return
        if reply.payload is not None:
            self._send(reply.payload)
        for action in reply.after:
            action()

    def _send(self, payload: bytes, binary: bool = False) -> None:
        self.sendMessage(payload, isBinary=binary)
        if not self._paused:
            return
        self.queued += len(payload)
        if self.reading and self.queued > self.node.config.max_message_size:
            self._stop_reading()

    def _stop_reading(self) -> None:
        """
        The client does not read its replies: stop reading its requests, so
        that TCP holds it back, and give it until the deadline to read on.
        """
        self.reading = False
        # The TCP transport (or the TLS/PROXY wrapper, which hands this on)
        # stops reading the socket.
        self.transport.pauseProducing()
        if self._drain_call is None:
            self._drain_call = self.node.reactor.callLater(
                self.node.config.ping_interval, self._not_drained
            )
        self._log.info(
            "session {session_id}: {queued} bytes of replies wait unread; "
            "not reading its requests until they are",
            session_id=self.session.session_id,
            queued=self.queued,
        )

    def _read_again(self) -> None:
        """
        Everything sent was written: answer the requests held back, in
        order, then read the socket again, unless they fill it once more.
        """
        self.reading = True
        while self._held and self.reading and self._open:
            self._dispatch(self._held.popleft())
        if self.reading:
            if self._drain_call is not None:
                self._drain_call.cancel()
                self._drain_call = None
            self.transport.resumeProducing()

    def _not_drained(self) -> None:
        self._drain_call = None
        self._log.warn(
            "session {session_id}: dropped: its replies went unread for "
            "{seconds:g} s (--ping-interval)",
            session_id=self.session.session_id,
            seconds=self.node.config.ping_interval,
        )
        # A close frame would wait behind what the client does not read.
        self.dropConnection(abort=True)

    def onClose(self, wasClean: bool, code: Optional[int], reason: Optional[str]) -> None:
        for call in (self._drain_call, self._close_call):
            if call is not None and call.active():
                call.cancel()
        self._drain_call = self._close_call = None
        self._held.clear()
        if self._open:
            self._open = False
            self.node.connections.discard(self)
            self._log.info(
                "session {session_id} closed (code {code})",
                session_id=self.session.session_id,
                code=code,
            )
            self.session.close()
            if self._mcp is not None:
                self._mcp.close()
        waiters, self._close_waiters = self._close_waiters, []
        for d in waiters:
            d.callback(None)

    def close(self, reason: str) -> Deferred:
        """
        The service is stopping: deliver what the connection still holds
        (its programs' C{process.completed}), then close with code 1001
        ("going away") and C{reason}.  A connection that has not delivered
        everything within L{CLOSE_TIMEOUT} seconds is dropped; the closing
        handshake then has as long.

        @return: a L{Deferred} that fires once the connection is closed.
        """
        d: Deferred = Deferred()
        if self.state == self.STATE_CLOSED:
            d.callback(None)
            return d
        self._close_waiters.append(d)
        if self._going_away is None:
            self._going_away = reason
            self._close_call = self.node.reactor.callLater(CLOSE_TIMEOUT, self._close_timed_out)
            self._close_when_delivered()
        return d

    def _close_when_delivered(self) -> None:
        if self._going_away is None or self.state != self.STATE_OPEN:
            return
        if self.session is not None and (not self.writable or self.session.delivering()):
            # resumeProducing comes back here once the client has read on.
            return
        # From here on Autobahn's closing handshake timeout bounds the wait.
        if self._close_call is not None:
            self._close_call.cancel()
            self._close_call = None
        # sendClose takes only 1000 and 3000-4999 from applications; 1001 is
        # the code RFC 6455 gives a server going down.
        self.sendCloseFrame(code=GOING_AWAY, reasonUtf8=self._going_away.encode("utf-8")[:123])

    def _close_timed_out(self) -> None:
        self._close_call = None
        self._log.warn(
            "session {session_id}: dropped: the client had not read everything "
            "{seconds:g} s after the service began to stop",
            session_id=self.session.session_id if self.session else None,
            seconds=CLOSE_TIMEOUT,
        )
        self.dropConnection(abort=True)

    def send_notification(self, method: str, params: dict) -> None:
        # A closing connection stays subscribed until onClose; sending then
        # would raise Disconnected.
        if self._open and self.state == self.STATE_OPEN:
            self._send(notification(method, params))

    def send_frame(self, payload: bytes) -> None:
        if self._open and self.state == self.STATE_OPEN:
            self._send(payload, binary=True)

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        # Twisted resumes its producer once its buffer is empty.
        self._paused = False
        self.queued = 0
        if self.session is None or not self._open:
            return
        if not self.reading:
            self._read_again()
        self.session.pump()
        self._close_when_delivered()

    def stopProducing(self) -> None:
        self._paused = True


def protocol_options(config: Config) -> dict:
    """
    The Autobahn protocol options of every ccx WebSocket (also used by the
    conformance tests' echo server, so that they test exactly these).
    """
    return {
        "maxMessagePayloadSize": config.max_message_size,
        "maxFramePayloadSize": config.max_message_size,
        "autoPingInterval": config.ping_interval,
        "autoPingTimeout": config.ping_interval,
        "openHandshakeTimeout": 30,
        "closeHandshakeTimeout": CLOSE_TIMEOUT,
        # Autobahn would refuse "Origin: null" itself, with a 400; ccx's own
        # rule (ccx.web.access) refuses it with 403, as any other origin.
        "allowNullOrigin": True,
        # Failing a connection (too big, bad frames) sends a close frame with
        # the reason's code (1009, 1002, ...) before the TCP connection ends,
        # so that clients learn why.
        "failByDrop": False,
    }


def make_factory(node: Node) -> WebSocketServerFactory:
    """
    The WebSocket factory with the service's limits.
    """
    factory = WebSocketServerFactory(server=f"ccx/{node.version}")
    factory.protocol = CCXServerProtocol
    factory.node = node
    factory.setProtocolOptions(**protocol_options(node.config))
    return factory
