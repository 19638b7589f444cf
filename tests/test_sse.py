"""
Tests for L{ccx.web.sse}: the SSE streams of MCP's HTTP transport, as
notification channels and as their requests' push producers.
"""

import json
from typing import Any, List, Optional, Tuple

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest
from zope.interface.verify import verifyObject

from ccx.rpc.interfaces import INotificationChannel
from ccx.rpc.jsonrpc import Reply
from ccx.web.sse import EventStream, ResponseStream


class StreamingRequest(DummyRequest):
    """
    A request that records its producer (L{DummyRequest} would drive it as
    a pull producer).
    """

    producer: Optional[Tuple[Any, bool]] = None

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


class FakePumped:
    def __init__(self) -> None:
        self.pumps = 0

    def pump(self) -> None:
        self.pumps += 1


class FakeHttpSession:
    """
    What a stream uses of its L{ccx.web.mcp_http.HttpSession}.
    """

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
