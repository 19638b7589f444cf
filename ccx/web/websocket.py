"""
The WebSocket connection: JSON-RPC frames in, replies and notifications out,
and the connection's back-pressure handed to the output it subscribes to.
"""

import hmac
from typing import Any, Optional

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from zope.interface import implementer

from ccx.config import Config
from ccx.native.methods import CAPABILITIES, NativeMethods
from ccx.node import Node
from ccx.output.interfaces import IOutputSink
from ccx.rpc.jsonrpc import Dispatcher, Reply, notification
from ccx.rpc.ratelimit import TokenBucket
from ccx.session import Session


def _bearer_token(request: Any) -> Optional[str]:
    header = request.headers.get("authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip()
    tokens = request.params.get("token")
    return tokens[0] if tokens else None


@implementer(IOutputSink, IPushProducer)
class CCXServerProtocol(WebSocketServerProtocol):
    """
    One client connection speaking the native dialect.

    It is the streaming producer registered with its transport: when the
    socket cannot take more, Twisted calls L{pauseProducing}, the connection
    stops being L{writable}, and its subscriptions stop delivering; their
    buffers then hold the program back or drop, as each subscription chose.
    """

    log = Logger()
    session: Optional[Session] = None
    _open = False
    _paused = False

    @property
    def node(self) -> Node:
        return self.factory.node

    @property
    def writable(self) -> bool:
        return self._open and not self._paused and self.state == self.STATE_OPEN

    def onConnect(self, request: Any) -> None:
        config = self.node.config
        origin = request.headers.get("origin")
        if origin is not None and origin not in config.allow_origin:
            self.log.warn("refused a connection from origin {origin}", origin=origin)
            raise ConnectionDeny(
                403, f"origin {origin} is not allowed (start ccx with --allow-origin)"
            )
        if config.token is not None:
            given = _bearer_token(request)
            if given is None or not hmac.compare_digest(
                given.encode("utf-8"), config.token.encode("utf-8")
            ):
                self.log.warn("refused a connection with a missing or wrong token")
                raise ConnectionDeny(401, "a valid bearer token is required")
        if len(self.node.connections) >= config.max_connections:
            self.log.warn(
                "refused a connection: {count} connections are open",
                count=len(self.node.connections),
            )
            raise ConnectionDeny(
                503, f"too many connections (--max-connections {config.max_connections})"
            )
        return None

    def onOpen(self) -> None:
        self._open = True
        self.session = Session(self)
        self.dispatcher = Dispatcher(
            NativeMethods(self.node, self.session).table(),
            max_batch=self.node.config.max_batch,
            log_context={"session_id": self.session.session_id},
            limiter=TokenBucket(self.node.reactor, self.node.config.max_requests),
            observer=self.node.metrics.observe_request,
        )
        self._register_as_producer()
        self.node.connections.add(self)
        self.log.info(
            "session {session_id} opened from {peer}",
            session_id=self.session.session_id,
            peer=self.peer,
        )
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
        if reply.text is not None:
            self.sendMessage(reply.text.encode("utf-8"))
        for action in reply.after:
            action()

    def onClose(self, wasClean: bool, code: Optional[int], reason: Optional[str]) -> None:
        if not self._open:
            return
        self._open = False
        self.node.connections.discard(self)
        self.log.info(
            "session {session_id} closed (code {code})",
            session_id=self.session.session_id,
            code=code,
        )
        self.session.close()

    def send_notification(self, method: str, params: dict) -> None:
        # A closing connection stays subscribed until onClose; sending then
        # would raise Disconnected.
        if self._open and self.state == self.STATE_OPEN:
            self.sendMessage(notification(method, params).encode("utf-8"))

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
