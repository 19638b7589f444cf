"""
C{ccx mcp-stdio}: the MCP stdio transport, bridged to a running ccx.

MCP clients that only launch local servers (desktop assistants, coding
agents) talk to their server over its standard input and output: one
JSON-RPC message per line, UTF-8. This command is such a server for them,
and a client of ccx's WebSocket with the subprotocol C{mcp}
(docs/mcp.md): every line of standard input goes to ccx as one text
message, every message from ccx comes out as one line of standard output.
Standard output carries nothing else; diagnostics go to standard error.

What it does with its input:
  - a line that is valid UTF-8 is passed on as it is, JSON or not: ccx is
    the one judge of what is a valid message (it answers a line that is not
    JSON with a -32700 parse error, as it would on any transport);
  - a line that is not UTF-8 cannot travel as a WebSocket text message: it
    is answered here with a -32700 parse error (C{"id": null});
  - empty (or blank) lines are skipped; a final line without a newline at
    the end of input is still passed on.

How it ends:
  - end of input: it stops reading, waits for the answers to the requests
    it passed on (a request cancelled with C{notifications/cancelled} is
    not waited for: ccx sends no answer to it), then closes the WebSocket
    normally and exits 0;
  - the WebSocket closes otherwise (the service stopped, the network):
    one line on standard error, exit 2;
  - nobody reads standard output any more: it closes the WebSocket and
    exits 141; SIGTERM or Ctrl-C: it drops the connection at once (the
    service cancels what it started).

Back-pressure, both ways, with Twisted producers and consumers: standard
input is the streaming producer of the WebSocket's transport (reading stops
while the socket cannot take more), and the WebSocket's transport is the
producer of standard output (the socket is not read while standard output
is full, so that TCP holds ccx back). The standard streams are the
command-line client's console (L{ccx.cli.console}): non-blocking
descriptors watched by the reactor, as C{twisted.internet.stdio.StandardIO}
would be, shared with the other commands and replaceable in tests. Standard
input is cut into lines by L{InputLines}, Twisted's C{LineOnlyReceiver}
with the console's reader as its transport.
"""

import re
import sys
from typing import Any, Callable, Dict, List, Optional, Tuple

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.interfaces import IPushProducer
from twisted.protocols.basic import LineOnlyReceiver
from twisted.python.failure import Failure
from zope.interface import implementer

from ccx.cli.client import (
    RPCClientFactory,
    RPCClientProtocol,
    ServiceError,
    Unreachable,
    connect,
)
from ccx.cli.context import Context
from ccx.cli.status import EXIT_BROKEN_PIPE, EXIT_LOST
from ccx.protocol import PARSE_ERROR, JSONError, dumps, error_response, id_key, loads, valid_id

# The WebSocket subprotocol that makes ccx speak MCP (ccx/mcp/methods.py).
MCP_SUBPROTOCOL = "mcp"


class SubprotocolRefused(Unreachable):
    """
    The WebSocket opened, but the service did not choose the subprotocol
    C{mcp}: whatever answered does not speak MCP there.
    """


class McpClientProtocol(RPCClientProtocol):
    """
    A WebSocket to ccx that asked for the subprotocol C{mcp}. It reuses the
    handshake diagnostics of L{RPCClientProtocol} (refused token, no
    WebSocket there, TLS, ...) but hands every message, as it is, to
    C{receiver(payload, is_binary)} instead of parsing it.

    @ivar close_info: C{(was_clean, code, reason)} once closed.
    """

    receiver: Any = None
    close_info: Optional[Tuple[bool, Optional[int], Optional[str]]] = None

    def __init__(self) -> None:
        super().__init__()
        self._early: List[Tuple[bytes, bool]] = []

    def set_receiver(self, receiver: Any) -> None:
        self.receiver = receiver
        early, self._early = self._early, []
        for payload, is_binary in early:
            receiver(payload, is_binary)

    def onOpen(self) -> None:
        if self.websocket_protocol_in_use != MCP_SUBPROTOCOL:
            self.opened.errback(
                SubprotocolRefused(
                    f"the service at {self.factory.display_url} did not accept the "
                    f"WebSocket subprotocol {MCP_SUBPROTOCOL!r}, so it does not speak MCP "
                    "there (check --url: a ccx with MCP serves it at /ws/mcp)"
                )
            )
            self.sendClose(1000)
            return
        super().onOpen()

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if self.receiver is None:
            self._early.append((payload, isBinary))
        else:
            self.receiver(payload, isBinary)

    def onClose(self, wasClean: bool, code: Optional[int], reason: Optional[str]) -> None:
        self.close_info = (wasClean, code, reason)
        super().onClose(wasClean, code, reason)


class McpClientFactory(RPCClientFactory):
    protocol = McpClientProtocol


def connect_mcp(
    reactor: Any,
    url: str,
    token: Optional[str] = None,
    cacert: Optional[str] = None,
    timeout: float = 10.0,
) -> Deferred:
    """
    Open a WebSocket to ccx with the subprotocol C{mcp}: as
    L{ccx.cli.client.connect} (the same URLs, token, TLS and messages), plus
    the subprotocol, which the service must accept.

    @return: a Deferred firing with an open L{McpClientProtocol}, or failing
        with a L{ServiceError}.
    """
    def opened(protocol: McpClientProtocol) -> Deferred:
        d = protocol.opened

        def refused(failure: Failure) -> Deferred:
            # Let the closing handshake go out before saying why.
            closing = protocol.when_closed()
            closing.addTimeout(3, reactor, onTimeoutCancel=lambda *_: None)
            return closing.addBoth(lambda _: failure)

        d.addErrback(lambda f: refused(f) if f.check(SubprotocolRefused) else f)
        return d

    return connect(
        reactor,
        url,
        token,
        cacert,
        timeout,
        factory_class=McpClientFactory,
        protocols=[MCP_SUBPROTOCOL],
        opened=opened,
    )


# The bridge -----------------------------------------------------------------


def _id_key(value: Any) -> Optional[str]:
    """
    A request id as ccx echoes it, as a dictionary key; None for ids that
    ccx does not echo (it answers those with C{"id": null}).
    """
    if value is None or not valid_id(value):
        return None
    return id_key(value)


def _messages(parsed: Any) -> List[Any]:
    return parsed if isinstance(parsed, list) else [parsed]


def parse_error(message: str) -> bytes:
    """
    A JSON-RPC parse error response (one line, without its newline).
    """
    return dumps(error_response(None, PARSE_ERROR, message))


class InputLines(LineOnlyReceiver):
    """
    Standard input as the MCP stdio transport frames messages: one a line.

    It receives from the console's stdin reader (C{data_received},
    C{input_ended}), which is its transport, and hands C{line_received}
    every line that is not blank, without its C{\\n} or C{\\r\\n}; at the end
    of input, a last line without a newline too, then calls C{ended}.
    """

    delimiter = b"\n"
    # No limit of its own: the service is the judge of a message's size
    # (--max-message-size) as it is of its JSON, and says so when it refuses.
    # LineOnlyReceiver joins what it holds to each read, so a line of N bytes
    # costs about N*N/128 KiB bytes copied: nothing at the default 1 MiB,
    # seconds only for lines of tens of MiB.
    MAX_LENGTH = sys.maxsize

    def __init__(self, line_received: Callable[[bytes], None], ended: Callable[[], None]) -> None:
        self._line_received = line_received
        self._ended = ended

    def data_received(self, data: bytes) -> None:
        self.dataReceived(data)

    def input_ended(self) -> None:
        # What follows the last newline is a line too.
        self.dataReceived(self.delimiter)
        self._ended()

    def lineReceived(self, line: bytes) -> None:
        if line.endswith(b"\r"):
            line = line[:-1]
        if line.strip():
            self._line_received(line)


@implementer(IPushProducer)
class _StdinGate:
    """
    Standard input as the producer of the WebSocket's transport.  (Not the
    reader itself: a transport stops its producer when it closes, and
    C{stop()} is the reader's way of being stopped.)
    """

    def __init__(self, reader: Any) -> None:
        self._reader = reader

    def pauseProducing(self) -> None:
        self._reader.pauseProducing()

    def resumeProducing(self) -> None:
        self._reader.resumeProducing()

    def stopProducing(self) -> None:
        self._reader.stop()


@implementer(IPushProducer)
class _SocketGate:
    """
    The WebSocket's transport as the producer of standard output: while
    standard output is full the socket is not read.
    """

    def __init__(self, bridge: "Bridge") -> None:
        self._bridge = bridge

    def pauseProducing(self) -> None:
        self._bridge._socket_call("pauseProducing")

    def resumeProducing(self) -> None:
        self._bridge._socket_call("resumeProducing")

    def stopProducing(self) -> None:
        self._bridge._stdout_lost()


class Bridge:
    """
    Lines of standard input to WebSocket messages and back, until either
    side ends.

    @ivar done: fires with the exit status (0) once the WebSocket closed
        after the end of input, or fails with a L{ServiceError} when it
        closed unexpectedly.
    """

    def __init__(self, context: Context, client: McpClientProtocol) -> None:
        self._context = context
        self._console = context.console
        self._client = client
        # Requests passed on and not yet answered: id key -> how many.
        self._pending: Dict[str, int] = {}
        self._reader: Any = None
        self._stdin_registered = False
        self._input_closed = False
        self._closing = False
        self._finished = False
        self._shutdown_trigger: Any = None
        self.done: Deferred = Deferred()

    def start(self) -> Deferred:
        client = self._client
        # The reactor stopping (SIGTERM stops it) drops the connection: that
        # is leaving, not losing the service, and nothing is to be said.
        self._shutdown_trigger = self._context.reactor.addSystemEventTrigger(
            "before", "shutdown", self._shutting_down
        )
        self._console.stdout.registerProducer(_SocketGate(self), True)
        client.when_closed().addCallback(self._closed)
        client.set_receiver(self._from_service)
        if not self._finished:
            lines = InputLines(self._line, self._end_of_input)
            self._reader = self._console.read_stdin(lines)
            lines.makeConnection(self._reader)
            if client.transport is not None and not self._input_closed and not self._finished:
                client.transport.registerProducer(_StdinGate(self._reader), True)
                self._stdin_registered = True
        return self.done

    # Standard input -> ccx ----------------------------------------------------

    def _end_of_input(self) -> None:
        if self._input_closed:
            return
        self._input_closed = True
        self._unregister_stdin()
        self._maybe_close()

    def _unregister_stdin(self) -> None:
        transport = self._client.transport
        if self._stdin_registered and transport is not None:
            self._stdin_registered = False
            transport.unregisterProducer()

    def _line(self, line: bytes) -> None:
        if self._input_closed or self._finished:
            return
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            self._console.say("a line of standard input is not UTF-8: answered with a parse error")
            self._write(parse_error("parse error: the message is not valid UTF-8"))
            return
        try:
            parsed = loads(text)
        except JSONError:
            parsed = None  # ccx answers with a parse error; nothing to wait for
        for message in _messages(parsed):
            self._track_request(message)
        if self._client.state == self._client.STATE_OPEN:
            self._client.sendMessage(line, isBinary=False)

    def _track_request(self, message: Any) -> None:
        if not isinstance(message, dict):
            return
        if "method" in message and "id" in message:
            key = _id_key(message["id"])
            if key is not None:
                self._pending[key] = self._pending.get(key, 0) + 1
        elif message.get("method") == "notifications/cancelled":
            params = message.get("params")
            if isinstance(params, dict) and "requestId" in params:
                self._answered(params["requestId"])

    def _answered(self, request_id: Any) -> None:
        key = _id_key(request_id)
        count = self._pending.get(key) if key is not None else None
        if count is None:
            return
        if count > 1:
            self._pending[key] = count - 1
        else:
            del self._pending[key]

    # ccx -> standard output ---------------------------------------------------

    def _from_service(self, payload: bytes, is_binary: bool) -> None:
        if self._finished:
            return
        try:
            payload.decode("utf-8")
        except UnicodeDecodeError:
            self._console.say("ccx sent a message that is not UTF-8: left out")
            return
        if b"\n" in payload or b"\r" in payload:
            # Only possible between JSON tokens, where a space means the same.
            payload = payload.replace(b"\r", b" ").replace(b"\n", b" ")
        self._write(payload)
        if self._pending:
            try:
                parsed = loads(payload)
            except JSONError:
                return
            for message in _messages(parsed):
                if isinstance(message, dict) and "method" not in message and "id" in message:
                    self._answered(message["id"])
            self._maybe_close()

    def _write(self, line: bytes) -> None:
        self._console.stdout.write(line + b"\n")

    # The end ------------------------------------------------------------------

    def _maybe_close(self) -> None:
        if self._input_closed and not self._pending and not self._closing and not self._finished:
            self._closing = True
            self._client.close()

    def _socket_call(self, name: str) -> None:
        transport = self._client.transport
        if transport is not None and hasattr(transport, name):
            getattr(transport, name)()

    def _stdout_lost(self) -> None:
        # Nobody reads standard output any more (EPIPE): the MCP client is
        # gone. Close the WebSocket; the service cancels what it started.
        self._socket_call("resumeProducing")
        if self._console.stdout.broken and not self._finished:
            self._finish()
            self._context.finish(EXIT_BROKEN_PIPE)

    def _finish(self) -> None:
        self._finished = True
        if self._reader is not None:
            self._reader.stop()

    def _shutting_down(self) -> None:
        self._shutdown_trigger = None
        self._finish()

    def _closed(self, _lost: Any) -> None:
        if self._shutdown_trigger is not None:
            self._context.reactor.removeSystemEventTrigger(self._shutdown_trigger)
            self._shutdown_trigger = None
        if self._finished:
            return
        self._finish()
        if self._closing:
            self.done.callback(0)
            return
        was_clean, code, reason = self._client.close_info or (False, None, None)
        url = self._context.url
        if was_clean and code in (1000, 1001, None):
            message = f"the service at {url} closed the connection"
            if reason:
                message += f" ({reason})"
        else:
            unclean = re.search(r'uncleanly \("(.*)"\)$', reason or "")
            if unclean:
                detail = unclean.group(1)
            else:
                detail = f"code {code}" + (f" ({reason})" if reason else "")
            message = f"lost the connection to the service at {url}: {detail}"
        self.done.errback(ServiceError(message, EXIT_LOST))


@inlineCallbacks
def mcp_stdio(context: Context, options: Any) -> Any:
    """
    C{ccx mcp-stdio}: bridge the MCP stdio transport to ccx's WebSocket.
    """
    client = yield connect_mcp(context.reactor, context.url, context.token, context.cacert)
    context.client = client
    status = yield Bridge(context, client).start()
    return status
