"""
Replies obey back-pressure: the real WebSocket protocol over a
StringTransport and a L{MemoryReactorClock}.  While the transport has its
producer paused (the socket takes no more), replies are still sent; once
more than C{--max-message-size} bytes were sent since the pause, the
connection stops reading requests, holds back those Autobahn had already
parsed, and drops a client that has not read everything within
C{--ping-interval} seconds.
"""

import json
import struct
from typing import List

from autobahn.twisted.websocket import WebSocketClientFactory
from twisted.internet import reactor
from twisted.internet import reactor as global_reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from ccx.config import build_config
from ccx.node import Node
from ccx.testing.proc import peak_rss_mib, rss_mib
from ccx.testing.service import ServiceProcess
from ccx.web.websocket import make_factory
from tests.support import Client, program, until
from tests.test_producer_chain import HANDSHAKE, LOCAL

BOUND = 4096


def client_frame(payload: bytes) -> bytes:
    """
    One masked text frame, as a client sends it (the mask key is zero:
    the payload goes as it is).
    """
    if len(payload) < 126:
        head = struct.pack("!BB", 0x81, 0x80 | len(payload))
    else:
        head = struct.pack("!BBH", 0x81, 0x80 | 126, len(payload))
    return head + b"\0\0\0\0" + payload


def ping(request_id: int) -> bytes:
    return client_frame(
        json.dumps({"jsonrpc": "2.0", "id": request_id, "method": "ping"}).encode()
    )


def answered(data: bytes) -> List[int]:
    """
    The ids of the replies in what the server wrote (unmasked server frames).
    """
    ids = []
    while data:
        length = data[1] & 0x7F
        start = 2
        if length == 126:
            (length,) = struct.unpack("!H", data[2:4])
            start = 4
        message = json.loads(data[start : start + length])
        if "id" in message:
            ids.append(message["id"])
        data = data[start + length :]
    return ids


class FillingTransport(StringTransport):
    """
    A transport that, like Twisted's, pauses its streaming producer once it
    holds more than C{fill_at} bytes.
    """

    fill_at = None

    def write(self, data: bytes) -> None:
        super().write(data)
        if self.fill_at is not None and len(self.value()) > self.fill_at:
            self.producer.pauseProducing()


class ReplyBackPressureTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = MemoryReactorClock()
        config = build_config(
            {
                "port": "tcp:0:interface=127.0.0.1",
                "max_message_size": BOUND,
                "ping_interval": 30,
                "max_requests": 1000,
            }
        )
        self.node = Node(config, self.clock)
        self.connection = make_factory(self.node).buildProtocol(None)
        self.transport = FillingTransport(hostAddress=LOCAL)
        self.connection.makeConnection(self.transport)
        # Autobahn's auto-ping runs on the global reactor (through txaio):
        # losing the connection (first, cleanups run last in first out)
        # cancels it.
        self.addCleanup(self.assertNoAutobahnTimers, set(global_reactor.getDelayedCalls()))
        self.addCleanup(self.lose)
        self.connection.dataReceived(HANDSHAKE)
        self.transport.clear()
        self.next_id = 0

    def lose(self) -> None:
        # Also after a drop: the StringTransport never reports the loss.
        self.connection.connectionLost(Failure(ConnectionDone()))

    def assertNoAutobahnTimers(self, before: set) -> None:
        left = set(global_reactor.getDelayedCalls()) - before
        self.assertEqual([c for c in left if c.active()], [])

    def send_pings(self, count: int) -> List[int]:
        """
        C{count} ping requests in one read, as one TCP read can bring them.
        """
        ids = list(range(self.next_id + 1, self.next_id + count + 1))
        self.next_id += count
        self.connection.dataReceived(b"".join(ping(i) for i in ids))
        return ids

    def test_unpaused_replies_never_stop_reading(self) -> None:
        """While the socket takes everything, any number of replies leaves reading on."""
        ids = self.send_pings(500)
        self.assertEqual(answered(self.transport.value()), ids)
        self.assertTrue(self.connection.reading)
        self.assertEqual(self.transport.producerState, "producing")
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_reading_stops_just_past_the_bound(self) -> None:
        """Paused, reading goes on while the replies sent hold at most the bound, and stops at the first byte over it."""
        self.transport.producer.pauseProducing()
        seen_at_bound = False
        for _ in range(BOUND):
            self.send_pings(1)
            if self.connection.queued <= BOUND:
                self.assertTrue(self.connection.reading)
                self.assertEqual(self.transport.producerState, "producing")
                seen_at_bound = self.connection.queued > BOUND - 64
            else:
                break
        self.assertTrue(seen_at_bound, "no reply brought the count just under the bound")
        self.assertFalse(self.connection.reading)
        self.assertEqual(self.transport.producerState, "paused")
        self.assertEqual(len(answered(self.transport.value())), self.next_id)

    def test_frames_already_parsed_are_held_then_answered_in_order(self) -> None:
        """Requests Autobahn delivers after reading stopped wait, and are answered in order once the client has read."""
        self.transport.producer.pauseProducing()
        ids = self.send_pings(1000)
        replied = answered(self.transport.value())
        self.assertLess(len(replied), len(ids))
        self.assertEqual(replied, ids[: len(replied)])
        self.assertEqual(self.connection.queued, sum(len(f) for f in self._replies(replied)))
        self.transport.clear()
        # The client read everything: Twisted resumes its producer.
        self.transport.producer.resumeProducing()
        self.assertEqual(answered(self.transport.value()), ids[len(replied) :])
        self.assertTrue(self.connection.reading)
        self.assertEqual(self.transport.producerState, "producing")
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def _replies(self, ids: List[int]) -> List[bytes]:
        return [
            json.dumps({"jsonrpc": "2.0", "id": i, "result": {}}, separators=(",", ":")).encode()
            for i in ids
        ]

    def test_held_requests_stop_again_when_they_fill_it_again(self) -> None:
        """If answering the held requests fills the socket again, reading stops again with the rest still held."""
        self.transport.producer.pauseProducing()
        ids = self.send_pings(1000)
        first = answered(self.transport.value())
        self.transport.clear()
        # The client read everything; the next 2 KiB fill the socket again.
        self.transport.fill_at = 2048
        self.transport.producer.resumeProducing()
        second = answered(self.transport.value())
        self.assertEqual(first + second, ids[: len(first) + len(second)])
        self.assertLess(len(first) + len(second), len(ids))
        self.assertFalse(self.connection.reading)
        self.assertEqual(self.transport.producerState, "paused")
        self.transport.clear()
        self.transport.fill_at = None
        self.transport.producer.resumeProducing()
        third = answered(self.transport.value())
        self.assertEqual(first + second + third, ids)
        self.assertTrue(self.connection.reading)
        self.assertEqual(self.transport.producerState, "producing")

    def test_dropped_when_it_never_reads(self) -> None:
        """A client that has not read its replies --ping-interval seconds after reading stopped is dropped."""
        self.transport.producer.pauseProducing()
        self.send_pings(1000)
        self.assertFalse(self.connection.reading)
        self.clock.advance(29.9)
        self.assertFalse(self.transport.disconnected)
        self.clock.advance(0.1)
        self.assertTrue(self.transport.disconnected)

    def test_reading_on_in_time_is_not_dropped(self) -> None:
        """A client that reads everything before the deadline keeps its connection."""
        self.transport.producer.pauseProducing()
        self.send_pings(1000)
        self.clock.advance(29)
        self.transport.producer.resumeProducing()
        self.clock.advance(60)
        self.assertFalse(self.transport.disconnected)
        self.assertTrue(self.connection.reading)


class NeverReadingClientTests(TestCase):
    """
    The service as twistd, and a real client that sends requests with large
    replies (C{list} of a program with a long command line), never reads,
    and stays under the rate limit: the service's memory stays bounded, the
    client is dropped after C{--ping-interval}, and the memory is back.
    """

    timeout = 120

    @inlineCallbacks
    def setUp(self):
        self.service = ServiceProcess(
            allow=[program("true")],
            settings={"ping_interval": 2, "max_requests": 1000, "log_level": "info"},
        )
        yield Deferred.fromCoroutine(self.service.started(reactor))
        self.addCleanup(self.stop_service)

    @inlineCallbacks
    def stop_service(self):
        yield Deferred.fromCoroutine(self.service.stopped(reactor))
        self.assertEqual(self.service.cgroups_left(), [], "cgroups left behind")

    def logged(self, text: str) -> bool:
        return any(text in line for line in self.service.log_lines())

    @inlineCallbacks
    def connect(self):
        factory = WebSocketClientFactory(self.service.url)
        factory.protocol = Client
        client = yield TCP4ClientEndpoint(reactor, "127.0.0.1", self.service.port).connect(factory)
        yield client.opened
        self.addCleanup(client.close)
        return client

    @inlineCallbacks
    def test_memory_stays_bounded_and_comes_back(self):
        """400 requests whose replies total ~190 MiB, never read: RSS grows by well under 32 MiB, then the client is dropped."""
        client = yield self.connect()
        # Four arguments of 120 KiB: each list reply carries about 480 KiB.
        long_args = ["x" * (120 * 1024)] * 4
        result = yield client.call("execute", {"command": ["true", *long_args]})
        yield client.notification("process.completed", result["process_id"])
        before = rss_mib(self.service.pid)
        client.transport.pauseProducing()
        for request_id in range(1000, 1400):
            client.send_json({"jsonrpc": "2.0", "id": request_id, "method": "list"})
        # A client that does not read does not see its connection go either:
        # the service's log says when it did.
        yield until(lambda: self.logged("replies went unread for 2 s"), timeout=30)
        peak = peak_rss_mib(self.service.pid)
        after = rss_mib(self.service.pid)
        self.assertTrue(self.logged("not reading its requests"))
        self.assertLess(peak - before, 32, f"before {before:.1f} MiB, peak {peak:.1f} MiB")
        self.assertLess(after - before, 32, f"before {before:.1f} MiB, after {after:.1f} MiB")
        self.assertEqual(self.service.health()["connections"], 0)
        client.transport.resumeProducing()
        code = yield client.closed
        self.assertEqual(code, 1006)
