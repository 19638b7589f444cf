"""
The back-pressure chain without sockets: the real WebSocket protocol over a
StringTransport, whose producer pause must stop a process's pipe reading,
and whose resume must restart it.
"""

from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IPushProducer
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from ccx.config import build_config
from ccx.node import Node
from ccx.native.wire import NotificationSink
from ccx.output.fanout import ProcessOutput
from ccx.output.interfaces import IReadControl
from ccx.web.websocket import make_factory

# The address the handshake's Host names (the WebSocket checks it).
LOCAL = IPv4Address("TCP", "127.0.0.1", 80)

HANDSHAKE = (
    b"GET /ws/mcp HTTP/1.1\r\n"
    b"Host: 127.0.0.1\r\n"
    b"Upgrade: websocket\r\n"
    b"Connection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n\r\n"
)


@implementer(IReadControl)
class PipeReading:
    """
    A process's pipe reading, as far as its output sees it.
    """

    def __init__(self) -> None:
        self.paused = False

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False


class ProducerChainTests(SynchronousTestCase):
    def setUp(self) -> None:
        reactor = MemoryReactorClock()
        node = Node(build_config({"port": "tcp:0:interface=127.0.0.1"}), reactor)
        self.connection = make_factory(node).buildProtocol(None)
        self.transport = StringTransport(hostAddress=LOCAL)
        self.connection.makeConnection(self.transport)
        # Autobahn's auto-ping runs on the global reactor (through txaio):
        # losing the connection cancels it.
        self.addCleanup(self.connection.connectionLost, Failure(ConnectionDone()))
        self.connection.dataReceived(HANDSHAKE)
        self.assertIn(b"101 Switching Protocols", self.transport.value())
        self.transport.clear()
        self.output = ProcessOutput("p1", 1024, 100, blocking=True)
        self.reading = PipeReading()
        self.output.set_reader(self.reading)
        subscription = self.connection.session.subscribe(
            _Process(self.output), NotificationSink(self.connection), blocking=True
        )
        subscription.activate()

    def test_connection_is_the_transports_streaming_producer(self) -> None:
        """Once open, the connection is registered with its transport as a push producer."""
        self.assertIs(self.transport.producer, self.connection)
        self.assertTrue(self.transport.streaming)
        verifyObject(IPushProducer, self.connection)

    def test_pause_reaches_the_pipes_and_resume_restarts_them(self) -> None:
        """The transport pausing its producer stops pipe reading once the buffer fills; resuming restarts it."""
        self.transport.producer.pauseProducing()
        self.output.receive("stdout", b"x" * 1024, 1.0)
        self.assertEqual(self.transport.value(), b"", "nothing is written while paused")
        self.assertTrue(self.reading.paused)
        self.transport.producer.resumeProducing()
        self.assertIn(b'"process.output"', self.transport.value())
        self.assertFalse(self.reading.paused)

    def test_unpaused_connection_never_stops_the_pipes(self) -> None:
        """While the transport takes everything, output flows through and reading never pauses."""
        for _ in range(10):
            self.output.receive("stdout", b"y" * 1024, 1.0)
        self.assertFalse(self.reading.paused)
        self.assertEqual(self.transport.value().count(b'"process.output"'), 10)


class _Process:
    """
    What a session needs of a process to subscribe to its output.
    """

    def __init__(self, output: ProcessOutput) -> None:
        self.process_id = output.process_id
        self.output = output
