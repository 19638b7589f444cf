"""
The output of one process, relayed to the console as it arrives: stdout to
standard output, stderr to standard error, byte for byte, with the
WebSocket paused while either cannot take more.
"""

import base64
import binascii
from typing import Any, Callable, List, Optional

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

from ccx.cli.client import RPCClientProtocol, ServiceError
from ccx.cli.context import Context
from ccx.cli.status import EXIT_BROKEN_PIPE, EXIT_TERMINATED
from ccx.protocol import BASE64, PTY, UTF8, OutputFrame


class ChunkDecoder:
    """
    Turns the C{data} of C{process.output} back into bytes.

    The encoding is given by C{ccx run} and C{ccx attach}: the one they ask
    for (binary frames, which need no decoding, or base64 from a service
    without them), or for C{attach} on such a service the one the process
    was started with, as C{list} says.  Guessing is only for L{None} (a
    service that does not say): a chunk that is valid, canonical base64 is
    read as base64, anything else as text, and once a chunk is not base64
    every later chunk is read as text.
    """

    def __init__(self, encoding: Optional[str] = None) -> None:
        self.encoding = encoding

    def __call__(self, text: str) -> bytes:
        if self.encoding != UTF8 and text:
            try:
                data = base64.b64decode(text, validate=True)
            except (binascii.Error, ValueError):
                self.encoding = UTF8
            else:
                if base64.b64encode(data).decode("ascii") == text:
                    self.encoding = BASE64
                    return data
                self.encoding = UTF8
        return text.encode("utf-8", "surrogatepass")


@implementer(IPushProducer)
class _TransportGate:
    """
    The connection seen by one output as its producer: the WebSocket's
    transport is paused while any output is full, and resumed once none is.
    """

    def __init__(self, relay: "OutputRelay", name: str) -> None:
        self._relay = relay
        self._name = name

    def pauseProducing(self) -> None:
        self._relay._pause(self._name)

    def resumeProducing(self) -> None:
        self._relay._resume(self._name)

    def stopProducing(self) -> None:
        self._relay._output_lost(self._name)


class OutputRelay:
    """
    Writes one process's output to the console as it arrives: stdout to
    standard output, stderr to standard error, byte for byte.

    Output reaches L{output_received} as bytes, whatever carried it; the
    C{process.*} notifications are read here and their C{data} decoded
    before it gets there.

    @ivar finished: fires with the C{process.completed} params, or fails
        with a L{ServiceError} if the connection closes first.
    @ivar broken: standard output or error broke (EPIPE).
    @ivar on_broken: called when an output breaks; by default the command
        ends at once with status 141, as a program killed by SIGPIPE would.
    @ivar on_change: called with C{"paused"}, C{"resumed"} or C{"cancelled"}
        when the process's state changes (whoever changed it).
    @ivar on_lost: what is said of the program when the connection closes
        before it ended (how to follow it again).
    """

    broken = False
    on_broken: Optional[Callable[[], None]] = None
    on_change: Optional[Callable[[str], None]] = None
    on_lost = ""

    def __init__(
        self,
        context: Context,
        client: RPCClientProtocol,
        encoding: Optional[str] = None,
    ) -> None:
        self._context = context
        self._client = client
        self._console = context.console
        self._decode = ChunkDecoder(encoding)
        self._process_id: Optional[str] = None
        self._early: List[Any] = []
        self._paused: set = set()
        self._done = False
        self._outputs = {"stdout": self._console.stdout, "stderr": self._console.stderr}
        self.finished: Deferred = Deferred()
        client.add_listener(self._notification)
        client.add_frame_listener(self._frame)
        client.when_closed().addCallback(self._closed)
        for name, output in self._outputs.items():
            output.registerProducer(_TransportGate(self, name), True)

    def follow(self, process_id: str) -> None:
        """
        Relay the notifications of C{process_id} (including those that came
        before it was known).
        """
        self._process_id = process_id
        early, self._early = self._early, []
        for item in early:
            if isinstance(item, OutputFrame):
                self._frame(item)
            else:
                self._notification(*item)

    def output_received(self, stream: str, offset: int, data: bytes) -> None:
        """
        The bytes C{data} of the followed process's C{stream}, from byte
        C{offset} of that stream, arrived: write them out.

        @param offset: where C{data} begins; chunks arrive in order, so it
            is not needed to place them.
        """
        if self._done:
            return
        # A program on a terminal has one stream, shown as a terminal shows it.
        output = self._outputs.get("stdout" if stream == PTY else stream)
        if output is not None:
            output.write(data)

    def _frame(self, frame: OutputFrame) -> None:
        if self._done:
            return
        if self._process_id is None:
            self._early.append(frame)
            return
        if frame.process_id == self._process_id:
            self.output_received(frame.stream, frame.offset, frame.data)

    def _notification(self, method: str, params: dict) -> None:
        if self._done or not method.startswith("process."):
            return
        if self._process_id is None:
            self._early.append((method, params))
            return
        if params.get("process_id") != self._process_id:
            return
        if method == "process.output":
            # Decoded only once known to be this process's: ChunkDecoder
            # learns the encoding from what it decodes.
            self.output_received(
                params.get("type"), params.get("offset"), self._decode(params.get("data", ""))
            )
        elif method == "process.dropped":
            self.dropped_received(params.get("type"), params.get("offset"), params.get("bytes"))
        elif method in ("process.paused", "process.resumed", "process.cancelled"):
            if self.on_change is not None:
                self.on_change(method.partition(".")[2])
        elif method == "process.completed":
            if params.get("error"):
                self._console.say(str(params["error"]))
            self._end(params)

    def dropped_received(self, stream: str, offset: int, size: int) -> None:
        """
        The bytes C{[offset, offset+size)} of C{stream} will not come: say so.
        """
        self._console.say(
            f"{size} bytes of the program's {stream} (from "
            f"byte {offset}) were dropped: the service no longer held them"
        )

    def discard(self) -> None:
        """
        Stop relaying, without firing L{finished}.
        """
        self._done = True
        self._client.remove_listener(self._notification)
        self._client.remove_frame_listener(self._frame)
        for output in self._outputs.values():
            output.unregisterProducer()
        if self._paused:
            self._paused.clear()
            self._transport_call("resumeProducing")

    def _end(self, result: Any) -> None:
        if not self._done:
            self.discard()
            self.finished.callback(result)

    def _closed(self, lost: ServiceError) -> None:
        if not self._done:
            self.discard()
            # The service stopped (or the network broke) before the program
            # ended: as a program ended by SIGTERM, whatever became of it.
            message = (
                f"the connection to the service at {self._context.url} closed before "
                "the program ended (did the service stop?)"
            )
            self.finished.errback(ServiceError(message + self.on_lost, EXIT_TERMINATED))

    def _transport_call(self, name: str) -> None:
        transport = self._client.transport
        if transport is not None and hasattr(transport, name):
            getattr(transport, name)()

    def _pause(self, name: str) -> None:
        if not self._paused:
            self._transport_call("pauseProducing")
        self._paused.add(name)

    def _resume(self, name: str) -> None:
        if name in self._paused:
            self._paused.discard(name)
            if not self._paused:
                self._transport_call("resumeProducing")

    def _output_lost(self, name: str) -> None:
        # Nobody reads that output any more (EPIPE): what still comes for it
        # is thrown away, and the command is told.
        self._resume(name)
        if not self._done and self._outputs[name].broken:
            self.broken = True
            if self.on_broken is not None:
                self.on_broken()
            else:
                self._context.finish(EXIT_BROKEN_PIPE, abrupt=True)
