"""
The WebSocket connection: JSON-RPC frames in, replies and notifications out,
and the connection's back-pressure handed to the output it subscribes to.
"""

from typing import Any, Optional

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from zope.interface import implementer

from ccx.config import Config
from ccx.mcp.methods import MCP_SUBPROTOCOL, websocket_methods
from ccx.native.methods import CAPABILITIES, NativeMethods
from ccx.node import Node
from ccx.rpc.interfaces import IFrameChannel
from ccx.rpc.jsonrpc import Dispatcher, Reply, notification
from ccx.rpc.ratelimit import TokenBucket
from ccx.session import Session
from ccx.web.access import AccessDenied, check_access
from ccx.web.interfaces import IConnection


@implementer(IConnection, IFrameChannel, IPushProducer)
class CCXServerProtocol(WebSocketServerProtocol):
    """
    One client connection speaking the native dialect, or MCP when the
    client chose the C{mcp} subprotocol (see L{ccx.mcp.methods}).

    It is the streaming producer registered with its transport: when the
    socket cannot take more, Twisted calls L{pauseProducing}, the connection
    stops being L{writable}, and its subscriptions stop delivering; their
    buffers then hold the program back or drop, as each subscription chose.
    """

    # Not "log": Autobahn's own level-filtered logger is self.log, and its
    # debug events carry raw handshakes.
    _log = Logger()
    holds_socket = True
    session: Optional[Session] = None
    _open = False
    _paused = False

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
        config = self.node.config
        try:
            check_access(
                config,
                origin=request.headers.get("origin"),
                authorization=request.headers.get("authorization"),
                query_tokens=request.params.get("token", ()),
            )
        except AccessDenied as e:
            raise ConnectionDeny(e.code, e.reason)
        if self.node.open_connections() >= config.max_connections:
            self._log.warn(
                "refused a connection: {count} connections are open",
                count=self.node.open_connections(),
            )
            raise ConnectionDeny(
                503, f"too many connections (--max-connections {config.max_connections})"
            )
        if MCP_SUBPROTOCOL in request.protocols:
            return MCP_SUBPROTOCOL
        return None

    def onOpen(self) -> None:
        self._open = True
        self.session = self.node.new_session()
        if self.speaks_mcp:
            methods = websocket_methods(self.node, self.session, self)
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
        self.dispatcher.dispatch(payload).addCallback(self._reply)

    def _reply(self, reply: Reply) -> None:
        if not self._open or self.state != self.STATE_OPEN:
            return
        if reply.payload is not None:
            self.sendMessage(reply.payload)
        for action in reply.after:
            action()

    def onClose(self, wasClean: bool, code: Optional[int], reason: Optional[str]) -> None:
        if not self._open:
            return
        self._open = False
        self.node.connections.discard(self)
        self._log.info(
            "session {session_id} closed (code {code})",
            session_id=self.session.session_id,
            code=code,
        )
        self.session.close()

    def close(self, reason: str) -> None:
        """
        Close with a normal close frame (code 1000) that carries C{reason}.
        """
        self.sendClose(code=1000, reason=reason)

    def send_notification(self, method: str, params: dict) -> None:
        # A closing connection stays subscribed until onClose; sending then
        # would raise Disconnected.
        if self._open and self.state == self.STATE_OPEN:
            self.sendMessage(notification(method, params))

    def send_frame(self, payload: bytes) -> None:
        if self._open and self.state == self.STATE_OPEN:
            self.sendMessage(payload, isBinary=True)

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        if self.session is not None and self._open:
            self.session.pump()

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
        "closeHandshakeTimeout": 5,
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
