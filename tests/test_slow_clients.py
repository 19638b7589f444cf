"""
Hostile HTTP clients against a real service on 127.0.0.1: a 300 MiB body
sent without a token, a thousand half-sent requests, and the open file
limit the service takes at start.  L{tests.test_intake} checks the same
rules deterministically.
"""

import os
import resource
from typing import Any, List

from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import TestCase
from zope.interface import implementer
from twisted.internet.interfaces import IPullProducer

from ccx.web.channel import ClientChannel
from tests.support import ServiceFixture, until

TOKEN = "slow-clients-token"
BODY = 300 << 20
CHUNK = 1 << 20


def service_connections() -> List[Any]:
    """
    The service's HTTP connections the reactor still reads from.
    """
    return [
        reader
        for reader in reactor.getReaders()
        if isinstance(getattr(reader, "protocol", None), ClientChannel)
    ]


def spooled_bytes() -> int:
    """
    Bytes in files this process holds open that were deleted (the
    temporary files twisted.web spools request bodies to).
    """
    total = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}").endswith("(deleted)"):
                total += os.fstat(int(fd)).st_size
        except OSError:
            pass
    return total


@implementer(IPullProducer)
class BodySender(Protocol):
    """
    Sends a request head, then a body of L{BODY} bytes as fast as the
    socket takes it, looking at the service's temporary files after every
    MiB; collects the answer.
    """

    def __init__(self, head: bytes) -> None:
        self.head = head
        self.sent = 0
        self.most_spooled = 0
        self.answer = b""
        self.done: Deferred = Deferred()

    def connectionMade(self) -> None:
        self.transport.write(self.head)
        self.transport.registerProducer(self, False)

    def resumeProducing(self) -> None:
        self.most_spooled = max(self.most_spooled, spooled_bytes())
        if self.sent >= BODY:
            self.transport.unregisterProducer()
            return
        self.transport.write(b"x" * CHUNK)
        self.sent += CHUNK

    def stopProducing(self) -> None:
        pass

    def dataReceived(self, data: bytes) -> None:
        self.answer += data

    def connectionLost(self, reason: Any) -> None:
        self.most_spooled = max(self.most_spooled, spooled_bytes())
        self.done.callback(None)


class HalfRequest(Protocol):
    """
    Sends half a request head and never the rest.
    """

    def __init__(self) -> None:
        self.answer = b""
        self.closed: Deferred = Deferred()

    def connectionMade(self) -> None:
        self.transport.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")

    def dataReceived(self, data: bytes) -> None:
        self.answer += data

    def connectionLost(self, reason: Any) -> None:
        self.closed.callback(None)


class BigBodyTests(TestCase):
    timeout = 120

    @inlineCallbacks
    def send(self, path: str, headers: str = "") -> Any:
        ccx = yield ServiceFixture(self, token=TOKEN).start()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{ccx.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {BODY}\r\n{headers}\r\n"
        ).encode()
        sender = BodySender(head)
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", ccx.port)
        yield endpoint.connect(Factory.forProtocol(lambda: sender))
        yield sender.done
        # The service is done with the connection too.
        yield until(lambda: service_connections() == [])
        return sender

    @inlineCallbacks
    def test_unauthenticated_body_to_mcp(self):
        """300 MiB to /mcp without the token: 401, and not a byte of it on disk."""
        sender = yield self.send("/mcp")
        self.assertTrue(sender.answer.startswith(b"HTTP/1.1 401 "), sender.answer[:100])
        self.assertEqual(sender.most_spooled, 0)

    @inlineCallbacks
    def test_body_to_health(self):
        """300 MiB to /health: 413, and not a byte of it on disk."""
        sender = yield self.send("/health")
        self.assertTrue(sender.answer.startswith(b"HTTP/1.1 413 "), sender.answer[:100])
        self.assertEqual(sender.most_spooled, 0)

    @inlineCallbacks
    def test_authenticated_body_over_the_limit(self):
        """300 MiB to /mcp with the token: 413 from the length, nothing read."""
        sender = yield self.send("/mcp", f"Authorization: Bearer {TOKEN}\r\n")
        self.assertTrue(sender.answer.startswith(b"HTTP/1.1 413 "), sender.answer[:100])
        self.assertEqual(sender.most_spooled, 0)


class HalfSentRequestTests(TestCase):
    timeout = 60

    @inlineCallbacks
    def test_thousand_slow_clients(self):
        """1000 half-sent requests: a real client still gets its WebSocket and /health; then every slow one is cut at --handshake-timeout, and the service holds none of their sockets."""
        ccx = yield ServiceFixture(self, handshake_timeout=2.0, max_connections=1024).start()
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", ccx.port)
        slow: List[HalfRequest] = []
        for _ in range(1000):
            protocol = HalfRequest()
            slow.append(protocol)
            yield endpoint.connect(Factory.forProtocol(lambda p=protocol: p))
        client = yield ccx.connect()
        self.assertEqual((yield client.call("ping")), {})
        health = HalfRequest()
        yield endpoint.connect(Factory.forProtocol(lambda: health))
        health.transport.write(b"Connection: close\r\n\r\n")
        yield health.closed
        self.assertTrue(health.answer.startswith(b"HTTP/1.1 200 "), health.answer[:100])

        yield gatherResults([protocol.closed for protocol in slow])
        self.assertEqual([p.answer for p in slow if p.answer], [])
        self.assertEqual(ccx.service.node.handshakes, 0)
        self.assertEqual((yield client.call("ping")), {})
        yield client.close()
        yield until(lambda: service_connections() == [])

    @inlineCallbacks
    def test_past_the_limit(self):
        """Half-sent requests fill --max-connections; the next connection is answered 503 at once."""
        ccx = yield ServiceFixture(self, max_connections=5).start()
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", ccx.port)
        slow = []
        for _ in range(5):
            protocol = HalfRequest()
            slow.append(protocol)
            yield endpoint.connect(Factory.forProtocol(lambda p=protocol: p))
        yield _until_counted(ccx, 5)
        refused = HalfRequest()
        yield endpoint.connect(Factory.forProtocol(lambda: refused))
        yield refused.closed
        self.assertTrue(refused.answer.startswith(b"HTTP/1.1 503 "), refused.answer[:100])
        self.assertIn(b"--max-connections 5", refused.answer)
        for protocol in slow:
            protocol.transport.loseConnection()
        yield gatherResults([protocol.closed for protocol in slow])
        yield until(lambda: ccx.service.node.handshakes == 0)


def _until_counted(ccx: Any, count: int) -> Deferred:
    return until(lambda: ccx.service.node.handshakes == count)


class OpenFileLimitTests(TestCase):
    @inlineCallbacks
    def test_raised_at_start(self):
        """The service raises the soft RLIMIT_NOFILE to the hard limit when it starts, and logs it."""
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        self.addCleanup(resource.setrlimit, resource.RLIMIT_NOFILE, (soft, hard))
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard - 1, hard))
        events: List[dict] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        yield ServiceFixture(self).start()
        self.assertEqual(resource.getrlimit(resource.RLIMIT_NOFILE), (hard, hard))
        [raised] = [e for e in events if "RLIMIT_NOFILE" in e.get("log_format", "")]
        self.assertEqual((raised["old"], raised["new"]), (hard - 1, hard))
