"""
A small JSON-RPC 2.0 client over one Autobahn WebSocket: calls return
Deferreds, notifications go to listeners, and every way of failing to reach
the service becomes a L{ServiceError} with a sentence a person can act on.
"""

import errno
import re
from typing import Any, Callable, Dict, List, Optional, Tuple
from urllib.parse import urlparse

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from autobahn.websocket.util import parse_url
from OpenSSL.crypto import Error as OpenSSLError
from twisted.internet.defer import Deferred, fail, inlineCallbacks, succeed
from twisted.internet.endpoints import HostnameEndpoint, UNIXClientEndpoint, wrapClientTLS
from twisted.internet.error import (
    ConnectError,
    ConnectionRefusedError,
    DNSLookupError,
    TimeoutError,
)
from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.python.failure import Failure
from service_identity import VerificationError

from ccx.protocol import (
    BASE64,
    BINARY,
    BINARY_FRAMES,
    JSONError,
    OutputFrame,
    decode_output_frame,
    dumps,
    loads,
)

DEFAULT_URL = "ws://127.0.0.1:8003/ws/mcp"

Listener = Callable[[str, dict], None]
FrameListener = Callable[[OutputFrame], None]


class ServiceError(Exception):
    """
    An expected failure, reported as C{ccx: MESSAGE} and an exit status
    rather than a traceback.

    @ivar message: what went wrong, for a person.
    @ivar status: the exit status of the command.
    """

    status = 2

    def __init__(self, message: str, status: Optional[int] = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status


class Unreachable(ServiceError):
    """
    No WebSocket could be opened: nothing listens, the name does not
    resolve, TLS failed, or the peer is not a ccx service.
    """


class HandshakeRefused(ServiceError):
    """
    The service answered the opening handshake with an HTTP error.

    @ivar code: the HTTP status code (401 for a missing or wrong token).
    """

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class ConnectionLost(ServiceError):
    """
    An open connection closed before the command was done.
    """


class CallError(ServiceError):
    """
    A JSON-RPC error response.

    @ivar code: the JSON-RPC error code.
    @ivar data: the error's C{data}, if any.
    """

    status = 1

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.data = data


class RPCClientProtocol(WebSocketClientProtocol):
    """
    One connection to the service.

    @ivar opened: fires with this protocol once the WebSocket is open, or
        fails with a L{ServiceError} saying why it could not be opened.
    @ivar session: the params of the service's C{connected} notification.
    """

    def __init__(self) -> None:
        super().__init__()
        self.opened: Deferred = Deferred()
        self.session: Optional[dict] = None
        self._greeting_waiters: List[Deferred] = []
        self._calls: Dict[int, Deferred] = {}
        self._notification_listeners: List[Listener] = []
        self._frame_listeners: List[FrameListener] = []
        self._next_id = 0
        self._open = False
        self._lost: Optional[ConnectionLost] = None
        self._lost_reason: Optional[Failure] = None
        self._close_waiters: List[Deferred] = []

    @inlineCallbacks
    def output_encoding(self) -> Any:
        """
        The best output encoding this service offers: binary frames where it
        announces them, base64 (exact bytes too) otherwise.
        """
        session = yield self.when_greeted()
        capabilities = session.get("capabilities")
        if isinstance(capabilities, list) and BINARY_FRAMES in capabilities:
            return BINARY
        return BASE64

    def when_greeted(self) -> Deferred:
        """
        @return: a Deferred that fires with the params of the service's
            C{connected} notification once they arrive, or fails with
            L{ConnectionLost} if the connection closes first.
        """
        if self.session is not None:
            return succeed(self.session)
        if self._lost is not None:
            return fail(self._lost)
        d: Deferred = Deferred()
        self._greeting_waiters.append(d)
        return d

    def when_closed(self) -> Deferred:
        """
        @return: a Deferred that fires with a L{ConnectionLost} (as a value,
            saying how) once the connection has closed, however it closed.
        """
        if self._lost is not None:
            return succeed(self._lost)
        d: Deferred = Deferred()
        self._close_waiters.append(d)
        return d

    # Listeners -----------------------------------------------------------

    def add_listener(self, listener: Listener) -> None:
        """
        Call C{listener(method, params)} for every notification from now on.
        """
        self._notification_listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        if listener in self._notification_listeners:
            self._notification_listeners.remove(listener)

    def add_frame_listener(self, listener: FrameListener) -> None:
        """
        Call C{listener(frame)} with every binary output frame from now on.
        """
        self._frame_listeners.append(listener)

    def remove_frame_listener(self, listener: FrameListener) -> None:
        if listener in self._frame_listeners:
            self._frame_listeners.remove(listener)

    # Calls ---------------------------------------------------------------

    def call(self, method: str, params: Optional[dict] = None) -> Deferred:
        """
        Call a method of the service.

        @return: a Deferred that fires with the call's result, or fails with
            L{CallError} (an error response) or L{ConnectionLost}.
        """
        if not self._open or self.state != self.STATE_OPEN:
            return fail(ConnectionLost("the connection to the service is closed"))
        self._next_id += 1
        request_id = self._next_id
        message: Dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
        if params is not None:
            message["params"] = params
        d: Deferred = Deferred()
        self._calls[request_id] = d
        self.sendMessage(dumps(message))
        return d

    def close(self) -> Deferred:
        """
        Close the connection with the WebSocket closing handshake.

        @return: a Deferred that fires once it is closed.
        """
        if self.state == self.STATE_OPEN:
            self.sendClose(1000)
        elif self.state == self.STATE_CONNECTING:
            self.dropConnection(abort=True)
        return self.when_closed()

    # Autobahn ------------------------------------------------------------

    def connectionLost(self, reason: Failure) -> None:
        self._lost_reason = reason
        super().connectionLost(reason)

    def onOpen(self) -> None:
        self._open = True
        self.opened.callback(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if isBinary:
            try:
                frame = decode_output_frame(payload)
            except ValueError:
                return
            for frame_listener in list(self._frame_listeners):
                frame_listener(frame)
            return
        try:
            message = loads(payload)
        except JSONError:
            return
        for item in message if isinstance(message, list) else [message]:
            if isinstance(item, dict):
                self._receive(item)

    def _receive(self, message: dict) -> None:
        if "method" in message:
            params = message.get("params")
            params = params if isinstance(params, dict) else {}
            if message["method"] == "connected" and self.session is None:
                self.session = params
                waiters, self._greeting_waiters = self._greeting_waiters, []
                for d in waiters:
                    d.callback(params)
            for listener in list(self._notification_listeners):
                listener(message["method"], params)
            return
        d = self._calls.pop(message.get("id"), None)
        if d is None:
            return
        error = message.get("error")
        if isinstance(error, dict):
            d.errback(
                CallError(
                    error.get("code", 0), str(error.get("message", "error")), error.get("data")
                )
            )
        else:
            d.callback(message.get("result"))

    def onClose(self, wasClean: bool, code: Optional[int], reason: Optional[str]) -> None:
        self._open = False
        if not self.opened.called:
            self.opened.errback(self._handshake_failure(reason))
        lost = self._lost = ConnectionLost(_closed_reason(wasClean, code, reason))
        waiters, self._greeting_waiters = self._greeting_waiters, []
        for d in waiters:
            d.errback(lost)
        calls, self._calls = self._calls, {}
        for d in calls.values():
            d.errback(lost)
        waiters, self._close_waiters = self._close_waiters, []
        for d in waiters:
            d.callback(lost)

    def _handshake_failure(self, reason: Optional[str]) -> ServiceError:
        url = self.factory.display_url
        status_line = getattr(self, "http_status_line", None)
        if status_line:
            parts = status_line.split(None, 2)
            try:
                code = int(parts[1])
            except (IndexError, ValueError):
                code = 0
            text = parts[2] if len(parts) > 2 else ""
            if code == 401:
                if self.factory.has_token:
                    message = "the service refused the token (see --token-file)"
                else:
                    message = (
                        "the service requires a token: give --token-file FILE "
                        "(or set CCX_TOKEN_FILE or CCX_TOKEN)"
                    )
            elif code == 404:
                message = f"the service at {url} has no WebSocket there (HTTP 404; check --url)"
            else:
                message = f"the service at {url} refused the connection: HTTP {code} {text}"
                message = message.rstrip()
            return HandshakeRefused(message, code)
        lost = self._lost_reason
        if lost is not None and lost.check(VerificationError):
            return Unreachable(
                f"cannot open a WebSocket to {url}: the service's certificate is not "
                f"valid for {parse_url(url)[1]}"
            )
        detail = reason or "the connection closed"
        match = re.search(r'uncleanly \("(.*)"\)$', detail)
        if match:
            detail = match.group(1)
        if detail.startswith("SSL error: "):
            detail = "TLS failed: " + re.sub(r" \(in \w*\)$", "", detail[len("SSL error: "):])
        elif detail.startswith("peer dropped the TCP connection"):
            detail = "the service closed the connection during the handshake"
            if url.startswith("ws://"):
                detail += " (does it need wss://?)"
        return Unreachable(f"cannot open a WebSocket to {url}: {detail}")


def _closed_reason(was_clean: bool, code: Optional[int], reason: Optional[str]) -> str:
    if was_clean and code in (1000, 1001, None):
        return "the service closed the connection"
    text = f" ({reason})" if reason else ""
    return f"the connection to the service was lost: code {code}{text}"


class RPCClientFactory(WebSocketClientFactory):
    """
    @ivar display_url: the URL as the person gave it, for messages.
    @ivar has_token: whether a token is sent.
    """

    protocol = RPCClientProtocol
    has_token = False
    display_url = ""


DEFAULT_RESOURCE = "/ws/mcp"


def _unix_target(url: str) -> Optional[Tuple[str, str]]:
    """
    For C{ws://unix:/path/to/socket[:/resource]}: the socket's path and the
    resource (by default C{/ws/mcp}); None for any other URL.
    """
    parsed = urlparse(url)
    if parsed.scheme != "ws" or parsed.hostname != "unix":
        return None
    _unix, _, rest = (parsed.netloc + parsed.path).partition(":")
    socket_path, _, resource = rest.partition(":")
    if parsed.query:
        resource = (resource or DEFAULT_RESOURCE) + "?" + parsed.query
    return socket_path, resource or DEFAULT_RESOURCE


def _endpoint(reactor: Any, url: str, cacert: Optional[str], timeout: float) -> Any:
    unix = _unix_target(url)
    if unix is not None:
        return UNIXClientEndpoint(reactor, unix[0], timeout=timeout)
    secure, host, port, _resource, _path, _params = parse_url(url)
    endpoint = HostnameEndpoint(reactor, host, port, timeout=timeout)
    if not secure:
        return endpoint
    trust = None
    if cacert is not None:
        try:
            with open(cacert, "rb") as f:
                trust = Certificate.loadPEM(f.read())
        except OSError as e:
            raise ServiceError(f"--cacert {cacert}: {e.strerror}")
        except (ValueError, OpenSSLError) as e:
            raise ServiceError(f"--cacert {cacert}: not a PEM certificate ({e})")
    return wrapClientTLS(optionsForClientTLS(host, trustRoot=trust), endpoint)


def check_url(url: str) -> None:
    """
    @raise ServiceError: when C{url} is not a ws:// or wss:// URL.
    """
    try:
        parse_url(url)
    except ValueError as e:
        raise ServiceError(f"--url {url}: {e}")


def connect(
    reactor: Any,
    url: str,
    token: Optional[str] = None,
    cacert: Optional[str] = None,
    timeout: float = 10.0,
    factory_class: Optional[type] = None,
    protocols: Optional[List[str]] = None,
    opened: Optional[Callable[[Any], Deferred]] = None,
) -> Deferred:
    """
    Open a WebSocket to the service.

    @param url: C{ws://HOST:PORT/PATH}, C{wss://...} (verified against the
        system's trust store, or against C{cacert}), or
        C{ws://unix:/SOCKET/PATH[:/RESOURCE]} for a UNIX socket.
    @param token: sent as C{Authorization: Bearer TOKEN}.
    @param cacert: a PEM file of the certificate (authority) to trust for wss.
    @param factory_class: the client factory, L{RPCClientFactory} by default.
    @param protocols: WebSocket subprotocols to offer.
    @param opened: given the connected protocol, returns the Deferred of its
        opening (by default its C{opened}).
    @return: a Deferred firing with an open L{RPCClientProtocol}, or failing
        with a L{ServiceError}.
    """
    try:
        check_url(url)
        endpoint = _endpoint(reactor, url, cacert, timeout)
    except ServiceError as e:
        return fail(e)
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    unix = _unix_target(url)
    handshake_url = url if unix is None else f"ws://localhost{unix[1]}"
    factory = (factory_class or RPCClientFactory)(
        handshake_url, protocols=protocols, headers=headers, reactor=reactor
    )
    factory.display_url = url
    factory.has_token = token is not None
    factory.setProtocolOptions(
        openHandshakeTimeout=timeout,
        closeHandshakeTimeout=2,
        maxMessagePayloadSize=0,
        maxFramePayloadSize=0,
    )

    def unreachable(failure: Failure) -> Failure:
        if failure.check(ConnectionRefusedError):
            raise Unreachable(
                f"cannot reach the service at {url}: connection refused "
                "(is `twistd ccx` running?)"
            )
        if failure.check(ConnectError) and failure.value.osError == errno.ENOENT:
            raise Unreachable(
                f"cannot reach the service at {url}: no such socket "
                "(is `twistd ccx` running?)"
            )
        if failure.check(DNSLookupError):
            raise Unreachable(f"cannot reach the service at {url}: unknown host")
        if failure.check(TimeoutError):
            raise Unreachable(f"cannot reach the service at {url}: the connection timed out")
        if failure.check(ConnectError):
            raise Unreachable(f"cannot reach the service at {url}: {failure.value}")
        return failure

    d = endpoint.connect(factory)
    d.addErrback(unreachable)
    d.addCallback(opened or (lambda protocol: protocol.opened))
    return d
