"""
Server-sent event streams of MCP's Streamable HTTP transport (see
L{ccx.web.mcp_http}): the answer to one POSTed message, and a session's
standalone stream.  Each is its request's push producer, so that a client
that does not read pauses what is sent to it, and what it holds for such a
client is bounded.
"""

from typing import TYPE_CHECKING, Any, Callable, Optional

from twisted.internet.interfaces import IDelayedCall, IPushProducer
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.web.server import Request
from zope.interface import implementer

from ccx.rpc.interfaces import INotificationChannel
from ccx.rpc.jsonrpc import Reply, notification

if TYPE_CHECKING:
    from ccx.web.mcp_http import HttpSession


def sse_event(payload: bytes) -> bytes:
    """
    One C{message} event carrying a serialised JSON-RPC message.
    """
    # Serialised JSON holds no raw line breaks, so one data line carries it.
    return b"event: message\ndata: " + payload + b"\n\n"


def start_sse(request: Request) -> None:
    """
    Make C{request}'s response an event stream.
    """
    request.setResponseCode(200)
    request.setHeader(b"content-type", b"text/event-stream")
    request.setHeader(b"cache-control", b"no-cache, no-transform")
    request.setHeader(b"x-accel-buffering", b"no")


@implementer(IPushProducer)
class SessionStream:
    """
    An SSE response as its request's streaming producer: while the client's
    socket is full it is paused, and resuming lets the session's
    subscriptions deliver again.

    What is written while paused waits in memory, so it is bounded as a
    WebSocket's replies are: past the session's C{max_queued} bytes (its
    C{--max-message-size}), notifications are skipped, and a client that
    has not read everything within C{drain_timeout} seconds (its
    C{--ping-interval}) is dropped, which frees what waited for it.

    @ivar done: whether the stream is over (or the client went away).
    @ivar queued: bytes written since the client's socket last filled (0
        while it is not full).
    """

    log = Logger()

    def __init__(self, request: Request, session: "HttpSession") -> None:
        self.done = False
        self.queued = 0
        self._request = request
        self._session = session
        self._paused = False
        self._drain_call: Optional[IDelayedCall] = None

    def _write(self, data: bytes, skippable: bool = True) -> None:
        """
        Write C{data}, unless it is C{skippable} and more than the bound
        already waits for the client.
        """
        if self._paused:
            limit = self._session.max_queued
            if skippable and self.queued > limit:
                return
            self.queued += len(data)
            if self.queued > limit and self._drain_call is None:
                self._drain_call = self._session.clock.callLater(
                    self._session.drain_timeout, self._not_drained
                )
        self._request.write(data)

    def _not_drained(self) -> None:
        self._drain_call = None
        self.log.warn(
            "MCP session {session_id}: dropped an event stream: {queued} bytes went "
            "unread for {seconds:g} s (--ping-interval)",
            session_id=self._session.session_id,
            queued=self.queued,
            seconds=self._session.drain_timeout,
        )
        # Finishing would wait behind what the client does not read: cut
        # the connection, and what waited in it is freed.
        self._request.transport.abortConnection()

    def _stop_waiting(self) -> None:
        if self._drain_call is not None:
            if self._drain_call.active():
                self._drain_call.cancel()
            self._drain_call = None

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        # Twisted resumes its producer once everything written was sent.
        self._paused = False
        self.queued = 0
        self._stop_waiting()
        self._session.session.pump()

    def stopProducing(self) -> None:
        self._paused = True


@implementer(INotificationChannel)
class ResponseStream(SessionStream):
    """
    The answer to one POSTed message, and the channel of the calls it
    carries: plain JSON, unless something is sent before the response, which
    turns it into an SSE stream (when the client accepts one).

    While it streams it is the request's push producer: when the socket
    cannot take more, it stops being L{writable}, so progress reporting
    pauses (and skips, never queues) until Twisted resumes it.

    @param status: the HTTP status of a JSON answer (400 for the error
        that is the only answer a notification can get).
    @ivar done: whether the answer is complete or the client went away.
    """

    def __init__(
        self,
        request: Request,
        session: "HttpSession",
        json_ok: bool,
        sse_ok: bool,
        status: int = 200,
        status_of: Optional[Callable[[bytes], int]] = None,
    ) -> None:
        super().__init__(request, session)
        self.streaming = False
        self.on_lost: Optional[Callable[[], None]] = None
        self._json_ok = json_ok
        self._sse_ok = sse_ok
        self._status = status
        self._status_of = status_of
        session.request_started()
        request.notifyFinish().addErrback(self._lost)

    @property
    def writable(self) -> bool:
        return self._sse_ok and not self.done and not self._paused

    def send_notification(self, method: str, params: dict) -> None:
        if self.done or not self._sse_ok:
            return
        self._stream()
        self._write(sse_event(notification(method, params)))

    def _stream(self) -> None:
        if self.streaming:
            return
        self.streaming = True
        start_sse(self._request)
        self._request.registerProducer(self, True)

    def reply(self, reply: Reply) -> None:
        """
        Send the dispatcher's answer and end the response.
        """
        if self.done:
            return
        request = self._request
        if reply.payload is None:
            # A notification, or a request the client cancelled.
            if not self.streaming:
                request.setResponseCode(202)
        elif self.streaming or not self._json_ok:
            self._stream()
            # The answer is never skipped: it is what the client waits for.
            self._write(sse_event(reply.payload), skippable=False)
        else:
            status = self._status if self._status_of is None else self._status_of(reply.payload)
            request.setResponseCode(status)
            request.setHeader(b"content-type", b"application/json")
            request.write(reply.payload)
        self._finish()
        for action in reply.after:
            action()

    def _finish(self) -> None:
        self.done = True
        self._stop_waiting()
        if self.streaming:
            self._request.unregisterProducer()
        self._request.finish()
        self._session.request_done()

    def _lost(self, reason: Any) -> None:
        # The client went away.  In the handshake era that is not a
        # cancellation: the call runs on and its answer is dropped; in the
        # stateless era it is (on_lost).
        self._stop_waiting()
        if not self.done:
            self.done = True
            self._session.request_done()
            if self.on_lost is not None:
                self.on_lost()


@implementer(INotificationChannel)
class EventStream(SessionStream):
    """
    A session's standalone SSE stream (C{GET /mcp}), kept alive with a
    comment line every ping interval so that a vanished client is noticed.
    """

    def __init__(self, request: Request, session: "HttpSession", interval: float) -> None:
        super().__init__(request, session)
        start_sse(request)
        request.registerProducer(self, True)
        request.write(b": ccx event stream\n\n")
        self._keepalive = LoopingCall(self._ping)
        self._keepalive.clock = session.clock
        self._keepalive.start(interval, now=False)
        request.notifyFinish().addBoth(self._ended)

    @property
    def writable(self) -> bool:
        return not self.done and not self._paused

    def send_notification(self, method: str, params: dict) -> None:
        if not self.done:
            self._write(sse_event(notification(method, params)))

    def _ping(self) -> None:
        if not self.done:
            self._write(b": ping\n\n")

    def finish(self) -> None:
        """
        End the stream from the server's side.
        """
        if self.done:
            return
        self._close()
        self._request.unregisterProducer()
        self._request.finish()

    def _ended(self, reason: Any) -> None:
        if not self.done:
            self._close()

    def _close(self) -> None:
        self.done = True
        self._stop_waiting()
        if self._keepalive.running:
            self._keepalive.stop()
        self._session.stream_closed(self)
