"""
Tests for L{ccx.web.sse}: the SSE streams of MCP's HTTP transport, as
notification channels and as their requests' push producers.
"""

import json
from typing import Any, List, Optional, Tuple

from twisted.internet.error import ConnectionAborted
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest
from zope.interface.verify import verifyObject

from ccx.rpc.interfaces import INotificationChannel
from ccx.rpc.jsonrpc import Reply
from ccx.rpc.jsonrpc import notification
from ccx.web.sse import EventStream, ResponseStream, SessionStream, sse_event


class StreamingRequest(DummyRequest):
    """
    A request that records its producer (L{DummyRequest} would drive it as
    a pull producer).
    """

    producer: Optional[Tuple[Any, bool]] = None

    def __init__(self, postpath: List[bytes]) -> None:
        super().__init__(postpath)
        self.transport = AbortableTransport(self)

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self.producer = (producer, streaming)

    def unregisterProducer(self) -> None:
        self.producer = None

    def events(self) -> List[dict]:
        """
        The JSON messages written as C{message} events.
        """
        text = b"".join(self.written).decode("utf-8")
        return [
            json.loads(line[len("data: "):])
            for line in text.split("\n")
            if line.startswith("data: ")
        ]


class AbortableTransport:
    """
    The transport of a L{StreamingRequest}: aborting it fails the request,
    as losing a real connection does.
    """

    def __init__(self, request: DummyRequest) -> None:
        self.request = request
        self.aborted = 0

    def abortConnection(self) -> None:
        self.aborted += 1
        self.request.processingFailed(Failure(ConnectionAborted()))


class FakePumped:
    def __init__(self) -> None:
        self.pumps = 0

    def pump(self) -> None:
        self.pumps += 1


class FakeHttpSession:
    """
    What a stream uses of its L{ccx.web.mcp_http.HttpSession}.
    """

    session_id = "s1"
    max_queued = 1000
    drain_timeout = 5.0

    def __init__(self) -> None:
        self.clock = Clock()
        self.session = FakePumped()
        self.busy = 0
        self.closed_streams: List[Any] = []

    def request_started(self) -> None:
        self.busy += 1

    def request_done(self) -> None:
        self.busy -= 1

    def stream_closed(self, stream: Any) -> None:
        self.closed_streams.append(stream)


class ResponseStreamTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.request = StreamingRequest([])
        self.session = FakeHttpSession()
        self.stream = ResponseStream(self.request, self.session, json_ok=True, sse_ok=True)

    def test_channel(self) -> None:
        """A POST's answer is a notification channel."""
        self.assertTrue(verifyObject(INotificationChannel, self.stream))

    def test_notification_turns_it_into_a_stream(self) -> None:
        """A notification before the response makes the answer an event stream, paced by the socket."""
        self.stream.send_notification("notifications/progress", {"progress": 1})
        self.assertEqual(
            self.request.responseHeaders.getRawHeaders(b"content-type"), [b"text/event-stream"]
        )
        self.assertEqual(self.request.producer, (self.stream, True))
        self.stream.pauseProducing()
        self.assertFalse(self.stream.writable)
        self.stream.resumeProducing()
        self.assertTrue(self.stream.writable)
        self.assertEqual(self.session.session.pumps, 1)
        self.stream.reply(Reply(b'{"jsonrpc": "2.0", "id": 1, "result": {}}', []))
        self.assertEqual(
            self.request.events(),
            [
                {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progress": 1}},
                {"jsonrpc": "2.0", "id": 1, "result": {}},
            ],
        )
        self.assertEqual((self.request.finished, self.request.producer), (1, None))
        self.assertEqual(self.session.busy, 0)
        self.assertFalse(self.stream.writable)

    def test_no_sse_no_notifications(self) -> None:
        """A client that takes only JSON gets no notifications, and the channel says so."""
        stream = ResponseStream(StreamingRequest([]), self.session, json_ok=True, sse_ok=False)
        self.assertFalse(stream.writable)
        stream.send_notification("notifications/progress", {"progress": 1})
        self.assertFalse(stream.streaming)


class EventStreamTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.request = StreamingRequest([])
        self.session = FakeHttpSession()
        self.stream = EventStream(self.request, self.session, interval=5.0)

    def test_channel(self) -> None:
        """A session's standalone stream is a notification channel."""
        self.assertTrue(verifyObject(INotificationChannel, self.stream))

    def test_send_notification(self) -> None:
        """A notification is one message event on the stream."""
        self.stream.send_notification("notifications/message", {"level": "info"})
        self.assertEqual(
            self.request.events(),
            [{"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info"}}],
        )

    def test_finish(self) -> None:
        """Once finished, the stream takes nothing, stops pinging, and tells its session."""
        self.session.clock.advance(5)
        self.assertIn(b": ping\n\n", b"".join(self.request.written))
        self.stream.finish()
        written = len(self.request.written)
        self.stream.send_notification("notifications/message", {"level": "info"})
        self.session.clock.advance(5)
        self.assertEqual(len(self.request.written), written)
        self.assertFalse(self.stream.writable)
        self.assertEqual(self.session.closed_streams, [self.stream])
        self.assertEqual((self.request.finished, self.request.producer), (1, None))


def event_of_size(size: int) -> Tuple[str, dict]:
    """
    A notification whose SSE event is C{size} bytes long.
    """
    bare = len(sse_event(notification("n", {"x": ""})))
    return "n", {"x": "a" * (size - bare)}


class BoundTests(SynchronousTestCase):
    """
    What a stream holds for a client that does not read is bounded, and a
    client that never reads on is dropped after the deadline.
    """

    def setUp(self) -> None:
        self.request = StreamingRequest([])
        self.session = FakeHttpSession()
        self.stream = ResponseStream(self.request, self.session, json_ok=True, sse_ok=True)
        self.stream.send_notification(*event_of_size(100))
        self.stream.pauseProducing()

    def written(self) -> int:
        return sum(len(w) for w in self.request.written)

    def fill(self, stream: SessionStream, count: int) -> None:
        for _ in range(count):
            stream.send_notification(*event_of_size(100))

    def test_up_to_the_bound(self) -> None:
        """While paused, notifications are written up to the bound (1000 bytes here), the one that crosses it too; the next is skipped."""
        before = self.written()
        self.fill(self.stream, 10)
        self.assertEqual(self.stream.queued, 1000)
        self.assertEqual(self.written() - before, 1000)
        # At the bound, not past it: one more is still written.
        self.fill(self.stream, 1)
        self.assertEqual(self.written() - before, 1100)
        self.fill(self.stream, 5)
        self.assertEqual(self.written() - before, 1100)
        self.assertEqual(self.stream.queued, 1100)

    def test_the_answer_is_never_skipped(self) -> None:
        """Past the bound, the answer is still written, and ends the stream."""
        self.fill(self.stream, 11)
        self.stream.reply(Reply(b'{"jsonrpc": "2.0", "id": 1, "result": {}}', []))
        self.assertEqual(self.request.events()[-1], {"jsonrpc": "2.0", "id": 1, "result": {}})
        self.assertEqual(self.request.finished, 1)
        self.session.clock.advance(60)
        self.assertEqual(self.request.transport.aborted, 0)

    def test_dropped_after_the_deadline(self) -> None:
        """Past the bound, a client that has not read on within drain_timeout is dropped."""
        self.fill(self.stream, 11)
        self.session.clock.advance(4.999)
        self.assertEqual(self.request.transport.aborted, 0)
        self.session.clock.advance(0.001)
        self.assertEqual(self.request.transport.aborted, 1)
        self.assertTrue(self.stream.done)
        self.assertEqual(self.session.busy, 0)
        self.flushLoggedErrors(ConnectionAborted)

    def test_no_deadline_at_the_bound(self) -> None:
        """Exactly at the bound, no deadline runs."""
        self.fill(self.stream, 10)
        self.session.clock.advance(60)
        self.assertEqual(self.request.transport.aborted, 0)
        self.assertEqual(self.session.clock.getDelayedCalls(), [])

    def test_reading_on_resets(self) -> None:
        """A client that reads on in time is not dropped, and gets notifications again."""
        self.fill(self.stream, 11)
        self.stream.resumeProducing()
        self.assertEqual(self.stream.queued, 0)
        self.session.clock.advance(60)
        self.assertEqual(self.request.transport.aborted, 0)
        before = self.written()
        self.fill(self.stream, 1)
        self.assertEqual(self.written() - before, 100)

    def test_not_paused_not_counted(self) -> None:
        """While the socket takes everything, nothing is counted or skipped."""
        self.stream.resumeProducing()
        before = self.written()
        self.fill(self.stream, 30)
        self.assertEqual(self.written() - before, 3000)
        self.assertEqual(self.stream.queued, 0)

    def test_event_stream(self) -> None:
        """A session's standalone stream is bounded the same way, pings included, and dropped after the deadline."""
        request = StreamingRequest([])
        stream = EventStream(request, self.session, interval=1.0)
        stream.pauseProducing()
        self.fill(stream, 11)
        written = sum(len(w) for w in request.written)
        self.session.clock.advance(1.0)
        self.fill(stream, 3)
        self.assertEqual(sum(len(w) for w in request.written), written)
        self.session.clock.advance(3.999)
        self.assertEqual(request.transport.aborted, 0)
        self.session.clock.advance(0.001)
        self.assertEqual(request.transport.aborted, 1)
        self.assertTrue(stream.done)
        self.assertEqual(self.session.closed_streams, [stream])
        self.assertEqual(self.session.clock.getDelayedCalls(), [])
        self.flushLoggedErrors(ConnectionAborted)
