"""
What the port takes from a client before any resource answers it
(L{ccx.web.channel}): request bodies judged before they are read and kept in
memory, a deadline for each whole request, unfinished requests counted
against C{--max-connections}, and the file descriptor reserve.  Raw bytes go
into the service's own L{Site} over a C{StringTransport}; time is a
L{MemoryReactorClock}.  L{tests.test_slow_clients} checks the same over real
sockets.
"""

import json
from io import BytesIO
from typing import Any, List, Tuple

from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial.unittest import TestCase
from twisted.web import http

from ccx import fdlimit
from ccx.config import build_config
from ccx.node import Node
from ccx.web.channel import LINGER, BoundedRequest, ClientChannel
from ccx.web.site import build_site

TOKEN = "intake-token"
PORT = 8003
LIMIT = 1000


class Transport(StringTransport):
    """
    A C{StringTransport} with a socket number, as TCP transports have.
    """

    fileno = 7

    def getHandle(self) -> Any:
        transport = self

        class Handle:
            def fileno(self) -> int:
                return transport.fileno

        return Handle()


class IntakeTestCase(TestCase):
    def start(self, **settings: Any) -> None:
        token_file = self.mktemp()
        with open(token_file, "w") as f:
            f.write(TOKEN + "\n")
        values = {
            "port": f"tcp:{PORT}:interface=127.0.0.1",
            "allow": [],
            "token_file": token_file,
            "max_message_size": LIMIT,
            **settings,
        }
        self.clock = MemoryReactorClock()
        self.node = Node(build_config(values), self.clock)
        self.site = build_site(self.node)
        # Nothing may go to a temporary file: the body stays in memory.
        self.patch(http.tempfile, "TemporaryFile", self.no_temporary_file)
        self.connections: List[Tuple[ClientChannel, Transport]] = []

    def no_temporary_file(self, *args: Any, **kwargs: Any) -> Any:
        self.fail("a request body went to a temporary file")

    def connect(self, fileno: int = 7) -> Tuple[ClientChannel, Transport]:
        peer = IPv4Address("TCP", "127.0.0.1", 40000 + len(self.connections))
        channel = self.site.buildProtocol(peer)
        transport = Transport(
            hostAddress=IPv4Address("TCP", "127.0.0.1", PORT), peerAddress=peer
        )
        transport.fileno = fileno
        channel.makeConnection(transport)
        self.connections.append((channel, transport))
        return channel, transport

    def head(
        self,
        method: str = "POST",
        path: str = "/mcp",
        token: Any = TOKEN,
        host: str = f"127.0.0.1:{PORT}",
        **headers: Any,
    ) -> bytes:
        lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", "Content-Type: application/json",
                 "Accept: application/json, text/event-stream"]
        if token is not None:
            lines.append(f"Authorization: Bearer {token}")
        lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    def status(self, transport: StringTransport) -> int:
        line = transport.value().split(b"\r\n", 1)[0]
        self.assertTrue(line.startswith(b"HTTP/1.1 "), transport.value()[:200])
        return int(line.split()[1])

    def error(self, transport: StringTransport) -> dict:
        return json.loads(transport.value().split(b"\r\n\r\n", 1)[1])["error"]


def ping(request_id: int = 1) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": request_id, "method": "ping"}).encode()


class BodyTests(IntakeTestCase):
    def setUp(self) -> None:
        self.start()

    def assertRefusedUnread(self, transport: Transport, channel: ClientChannel, status: int) -> None:
        """
        Answered C{status} from the head, writing closed; then a body's worth
        of bytes is read and dropped, and the connection is cut after LINGER.
        """
        self.assertEqual(self.status(transport), status)
        answered = transport.value()
        channel.dataReceived(b"x" * (256 * 1024))
        self.assertEqual(transport.value(), answered)
        self.assertEqual(self.node.handshakes, 0)
        [request] = channel.requests
        self.assertIsInstance(request.content, BytesIO)
        self.assertEqual(request.content.tell(), 0)
        self.clock.advance(LINGER)
        self.assertTrue(transport.disconnecting or transport.disconnected)

    def test_paths_without_a_body(self) -> None:
        """A body on /health, /ws, /metrics, or /mcp by GET/DELETE is refused (413) from its head, with or without the token."""
        for method, path in (
            ("POST", "/health"),
            ("GET", "/health"),
            ("GET", "/ws/mcp"),
            ("POST", "/metrics"),
            ("GET", "/mcp"),
            ("DELETE", "/mcp"),
            ("POST", "/mcp/x"),
            ("POST", "/mcpx"),
            ("post", "/mcp"),
        ):
            channel, transport = self.connect()
            channel.dataReceived(self.head(method, path, Content_Length=300 << 20))
            self.assertRefusedUnread(transport, channel, 413)
            self.assertIn("takes no request body", self.error(transport)["message"])

    def test_one_byte_is_a_body(self) -> None:
        """Content-Length: 1 on a path without a body is refused; Content-Length: 0 is answered."""
        channel, transport = self.connect()
        channel.dataReceived(self.head("GET", "/health", Content_Length=1))
        self.assertEqual(self.status(transport), 413)
        channel, transport = self.connect()
        channel.dataReceived(self.head("GET", "/health", Content_Length=0))
        self.assertEqual(self.status(transport), 200)

    def test_chunked_body_on_a_path_without_one(self) -> None:
        """A chunked body on /health is refused before its first chunk."""
        channel, transport = self.connect()
        channel.dataReceived(self.head("POST", "/health", Transfer_Encoding="chunked"))
        self.assertRefusedUnread(transport, channel, 413)

    def test_token_before_the_body(self) -> None:
        """POST /mcp without the token, with a wrong one, a prefix of it or an empty one: 401 before any byte of the body is read."""
        for token in (None, "wrong", TOKEN[:-1], TOKEN + "x", ""):
            channel, transport = self.connect()
            channel.dataReceived(self.head(token=token, Content_Length=300 << 20))
            self.assertRefusedUnread(transport, channel, 401)
            self.assertIn(b'WWW-Authenticate: Bearer realm="ccx"', transport.value())
            self.assertIn(b"Connection: close", transport.value())

    def test_query_token_before_the_body(self) -> None:
        """The ?token= of a browser counts as the header does; a wrong one gets 401."""
        channel, transport = self.connect()
        body = ping()
        channel.dataReceived(
            self.head(path=f"/mcp?token={TOKEN}x", token=None, Content_Length=len(body))
        )
        self.assertEqual(self.status(transport), 401)
        channel, transport = self.connect()
        channel.dataReceived(
            self.head(path=f"/mcp?token={TOKEN}", token=None, Content_Length=len(body)) + body
        )
        # Past the checks: the resource answers (no session yet).
        self.assertEqual(self.status(transport), 400)

    def test_origin_and_host_before_the_body(self) -> None:
        """A refused origin (null, one that starts like an allowed one) or Host gets 403 before the body."""
        self.start(allow_origin=["https://ok.example"])
        for headers in (
            {"Origin": "null"},
            {"Origin": "https://ok.example.evil.com"},
            {"Origin": "https://ok.example:8443"},
            {"host": f"127.0.0.1:{PORT + 1}"},
            {"host": f"evil.example:{PORT}"},
        ):
            channel, transport = self.connect()
            channel.dataReceived(self.head(Content_Length=300 << 20, **headers))
            self.assertRefusedUnread(transport, channel, 403)

    def test_expect_continue_refused(self) -> None:
        """A client that waits for 100 Continue gets the refusal alone, never a 100."""
        channel, transport = self.connect()
        channel.dataReceived(self.head(token=None, Content_Length=300 << 20, Expect="100-continue"))
        self.assertEqual(self.status(transport), 401)
        self.assertNotIn(b"100 Continue", transport.value())

    def test_length_over_the_limit(self) -> None:
        """Content-Length one byte over --max-message-size: 413 before reading; exactly the limit is read and answered."""
        channel, transport = self.connect()
        channel.dataReceived(self.head(Content_Length=LIMIT + 1))
        self.assertRefusedUnread(transport, channel, 413)
        self.assertIn("--max-message-size", self.error(transport)["message"])
        body = ping().ljust(LIMIT)
        channel, transport = self.connect()
        channel.dataReceived(self.head(Content_Length=len(body)) + body)
        self.assertEqual(self.status(transport), 400)
        self.assertIn("Mcp-Session-Id", self.error(transport)["message"])

    def test_chunked_over_the_limit(self) -> None:
        """A chunked body is counted as it comes: one byte past the limit gets 413; exactly the limit is answered."""
        channel, transport = self.connect()
        channel.dataReceived(self.head(Transfer_Encoding="chunked"))
        chunk = b"x" * 500
        channel.dataReceived(b"1f4\r\n" + chunk + b"\r\n" + b"1f4\r\n" + chunk + b"\r\n")
        self.assertEqual(transport.value(), b"")
        [request] = channel.requests
        self.assertEqual(request.content.tell(), LIMIT)
        channel.dataReceived(b"1\r\nx\r\n")
        self.assertEqual(self.status(transport), 413)
        channel.dataReceived(b"1\r\nx\r\n0\r\n\r\n")
        self.assertEqual(request.content.tell(), LIMIT)

        body = ping().ljust(LIMIT)
        channel, transport = self.connect()
        channel.dataReceived(self.head(Transfer_Encoding="chunked"))
        channel.dataReceived(b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
        self.assertEqual(self.status(transport), 400)

    def test_accepted_body_in_memory(self) -> None:
        """A body Twisted would spool to disk (over 100000 bytes) stays in memory."""
        self.start(max_message_size=200000)
        body = ping().ljust(150000)
        channel, transport = self.connect()
        channel.dataReceived(self.head(Content_Length=len(body)) + body)
        self.assertEqual(self.status(transport), 400)


class DeadlineTests(IntakeTestCase):
    def setUp(self) -> None:
        self.start(token_file=None, handshake_timeout=10.0)

    def test_slow_head_cut_at_the_deadline(self) -> None:
        """A request head sent a byte a second is cut when the whole request has taken --handshake-timeout, though bytes keep coming."""
        channel, transport = self.connect()
        head = self.head("GET", "/health", token=None)
        for byte in head[:9]:
            channel.dataReceived(bytes([byte]))
            self.clock.advance(1)
        self.assertFalse(transport.disconnecting)
        self.assertEqual(self.node.handshakes, 1)
        channel.dataReceived(head[9:10])
        self.clock.advance(1)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.node.handshakes, 0)
        self.assertEqual(transport.value(), b"")

    def test_head_just_in_time(self) -> None:
        """The last byte of the head just before the deadline: answered."""
        channel, transport = self.connect()
        head = self.head("GET", "/health", token=None)
        channel.dataReceived(head[:-1])
        self.clock.advance(9.999)
        channel.dataReceived(head[-1:])
        self.assertEqual(self.status(transport), 200)
        self.assertFalse(transport.disconnecting)

    def test_body_counts_in_the_deadline(self) -> None:
        """The deadline is for the whole request: a body still arriving at it is cut too."""
        channel, transport = self.connect()
        channel.dataReceived(self.head("POST", "/mcp", token=None, Content_Length=100))
        self.clock.advance(9.5)
        channel.dataReceived(b"x" * 99)
        self.clock.advance(0.5)
        self.assertTrue(transport.disconnecting)

    def test_keep_alive_waits_with_a_deadline(self) -> None:
        """After an answer, the next request of a kept-alive connection has its own deadline."""
        channel, transport = self.connect()
        channel.dataReceived(self.head("GET", "/health", token=None))
        self.assertEqual(self.status(transport), 200)
        self.assertEqual(self.node.handshakes, 1)
        self.clock.advance(9.9)
        transport.clear()
        channel.dataReceived(self.head("GET", "/health", token=None))
        self.assertEqual(self.status(transport), 200)
        self.clock.advance(9.9)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(0.1)
        self.assertTrue(transport.disconnecting)

    def test_pipelined_requests(self) -> None:
        """Two requests in one write are both answered, and the connection then waits for a third."""
        channel, transport = self.connect()
        channel.dataReceived(self.head("GET", "/health", token=None) * 2)
        self.assertEqual(transport.value().count(b"HTTP/1.1 200 OK"), 2)
        self.assertEqual(self.node.handshakes, 1)

    def test_closed_connection_uncounted(self) -> None:
        """A connection that closes halfway through its request is no longer counted, and its deadline is gone."""
        channel, transport = self.connect()
        channel.dataReceived(b"GET /hea")
        channel.connectionLost(None)
        self.assertEqual(self.node.handshakes, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_no_data_at_all(self) -> None:
        """A connection that sends nothing is cut at the deadline."""
        channel, transport = self.connect()
        self.clock.advance(10)
        self.assertTrue(transport.disconnecting)


class ConnectionCountTests(IntakeTestCase):
    def setUp(self) -> None:
        self.start(token_file=None, max_connections=2)

    def test_handshakes_count(self) -> None:
        """Two half-sent requests fill --max-connections 2: the next connection gets 503 at once, naming the option."""
        self.connect()[0].dataReceived(b"GET /health HTTP/1.1\r\n")
        self.connect()
        self.assertEqual(self.node.open_connections(), 2)
        channel, transport = self.connect()
        self.assertEqual(self.status(transport), 503)
        self.assertIn(b"--max-connections 2", transport.value())
        self.assertEqual(self.error(transport)["code"], -32001)
        self.assertEqual(self.node.handshakes, 2)
        self.clock.advance(LINGER)
        self.assertTrue(transport.disconnecting)

    def test_last_place(self) -> None:
        """One half-sent request and --max-connections 2: the second connection is served."""
        self.connect()
        channel, transport = self.connect()
        channel.dataReceived(self.head("GET", "/health", token=None))
        self.assertEqual(self.status(transport), 200)

    def test_deadline_frees_a_place(self) -> None:
        """Once the slow requests are cut, new connections are served again."""
        self.connect()
        self.connect()
        self.clock.advance(10)
        channel, transport = self.connect()
        channel.dataReceived(self.head("GET", "/health", token=None))
        self.assertEqual(self.status(transport), 200)


class ReserveTests(IntakeTestCase):
    def setUp(self) -> None:
        self.start(token_file=None)
        self.limit = 1000
        self.patch(fdlimit.resource, "getrlimit", lambda which: (self.limit, 4096))

    def test_reserve(self) -> None:
        """A connection whose socket is within RESERVE of the descriptor limit gets 503; one just below is served."""
        channel, transport = self.connect(fileno=self.limit - fdlimit.RESERVE)
        self.assertEqual(self.status(transport), 503)
        self.assertIn(b"file descriptors", transport.value())
        self.assertEqual(self.node.handshakes, 0)
        channel, transport = self.connect(fileno=self.limit - fdlimit.RESERVE - 1)
        channel.dataReceived(self.head("GET", "/health", token=None))
        self.assertEqual(self.status(transport), 200)


class OpenFileLimitTests(TestCase):
    def test_raised_to_the_hard_limit(self) -> None:
        """The soft limit goes up to the hard one; the old and new values are told."""
        calls = []
        raised = fdlimit.raise_open_file_limit(
            lambda which: (1024, 524288), lambda which, limits: calls.append(limits)
        )
        self.assertEqual(raised, (1024, 524288))
        self.assertEqual(calls, [(524288, 524288)])

    def test_already_there(self) -> None:
        """Nothing is changed when the soft limit is the hard one, or unlimited."""
        def refuse(which: int, limits: Any) -> None:
            self.fail("setrlimit called")

        self.assertIsNone(fdlimit.raise_open_file_limit(lambda which: (4096, 4096), refuse))
        infinity = fdlimit.resource.RLIM_INFINITY
        self.assertIsNone(fdlimit.raise_open_file_limit(lambda which: (4096, infinity), refuse))

    def test_refused(self) -> None:
        """A system that refuses leaves the limit, and says so by returning None."""
        def refuse(which: int, limits: Any) -> None:
            raise ValueError("not allowed")

        self.assertIsNone(fdlimit.raise_open_file_limit(lambda which: (1024, 4096), refuse))

    def test_low(self) -> None:
        """descriptors_low holds from limit - RESERVE on, and never for an unlimited soft limit."""
        limits = lambda which: (1000, 4096)
        self.assertFalse(fdlimit.descriptors_low(1000 - fdlimit.RESERVE - 1, limits))
        self.assertTrue(fdlimit.descriptors_low(1000 - fdlimit.RESERVE, limits))
        infinity = fdlimit.resource.RLIM_INFINITY
        self.assertFalse(fdlimit.descriptors_low(10**9, lambda which: (infinity, infinity)))


class RequestClassTests(TestCase):
    def test_site_classes(self) -> None:
        """The service's Site builds ccx's channel and requests."""
        node = Node(build_config({"port": "tcp:0:interface=127.0.0.1", "allow": []}), MemoryReactorClock())
        site = build_site(node)
        channel = site.buildProtocol(None)
        self.assertIsInstance(channel, ClientChannel)
        self.assertIs(site.requestFactory, BoundedRequest)
