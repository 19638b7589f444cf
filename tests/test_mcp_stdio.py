"""
C{ccx mcp-stdio}: the MCP stdio transport bridged to the WebSocket
subprotocol C{mcp}, run as a child process (C{python -m ccx mcp-stdio})
against the real service, driven with raw lines and with the official MCP
Python SDK's stdio client (itself in a child process: it is asyncio).
"""

import importlib.util
import json
import os
import signal
import sys
from typing import Any, Callable, List, Optional

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import Clock
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import SynchronousTestCase, TestCase

from ccx.cli.console import MemoryReader
from ccx.cli.mcp_stdio import InputLines
from ccx.process.group import ProcessGroup
from ccx.web.websocket import CCXServerProtocol
from ccx.testing.ports import free_port
from tests.support import ServiceFixture, until
from tests.test_mcp import TOOLS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STDIO_CLIENT = os.path.join(ROOT, "tests", "clients", "mcp_stdio_client.py")
TOKEN = "stdio-test-token"


def request(request_id: Any, method: str, params: Optional[dict] = None) -> dict:
    message = {"jsonrpc": "2.0", "id": request_id, "method": method}
    if params is not None:
        message["params"] = params
    return message


def initialize(request_id: Any = 1) -> dict:
    return request(
        request_id,
        "initialize",
        {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "test_mcp_stdio", "version": "0"},
        },
    )


INITIALIZED = {"jsonrpc": "2.0", "method": "notifications/initialized"}


def call_tool(request_id: Any, name: str, arguments: dict) -> dict:
    return request(request_id, "tools/call", {"name": name, "arguments": arguments})


def flood(size: int) -> dict:
    return {"command": f"head -c {size} /dev/zero | tr '\\0' a", "shell": True}


def unsent(descriptor: Any) -> int:
    """
    Bytes a Twisted file descriptor (a socket, a pipe) holds, not yet written.
    """
    return len(descriptor.dataBuffer) - descriptor.offset + descriptor._tempDataLen


class Bridge(ProcessProtocol):
    """
    C{python -m ccx mcp-stdio ...} as a child: lines to its stdin, its
    stdout read as lines (each checked to be one JSON message), its end
    awaited.
    """

    def __init__(self) -> None:
        self.out = b""
        self.err = b""
        self.messages: List[Any] = []
        self.ended: Deferred = Deferred()
        self.status: Optional[int] = None
        self._waiting: List[Any] = []

    def send(self, *messages: Any) -> None:
        for message in messages:
            line = message if isinstance(message, bytes) else json.dumps(message).encode()
            self.transport.write(line + b"\n")

    def outReceived(self, data: bytes) -> None:
        self.out += data
        *lines, rest = self.out.split(b"\n")
        self.out = rest
        for line in lines:
            self.messages.append(json.loads(line))
        for entry in list(self._waiting):
            matches, d = entry
            found = [m for m in self.messages if matches(m)]
            if found:
                self._waiting.remove(entry)
                d.callback(found[0])

    def errReceived(self, data: bytes) -> None:
        self.err += data

    def wait_for(self, matches: Callable[[Any], bool]) -> Deferred:
        d: Deferred = Deferred()
        self._waiting.append((matches, d))
        self.outReceived(b"")
        return d

    def response(self, request_id: Any) -> Deferred:
        return self.wait_for(
            lambda m: isinstance(m, dict) and m.get("id") == request_id and "method" not in m
        )

    def responses(self) -> List[dict]:
        return [m for m in self.messages if isinstance(m, dict) and "method" not in m]

    def processEnded(self, reason: Any) -> None:
        self.status = reason.value.exitCode
        self.signal = reason.value.signal
        for _matches, d in self._waiting:
            d.errback(AssertionError(f"the bridge ended first: {self.err!r}"))
        self._waiting = []
        self.ended.callback(self)


class InputLinesTests(SynchronousTestCase):
    """
    L{InputLines}: standard input cut into messages, fed by the console's
    in-memory reader a few bytes at a time.
    """

    def lines(self, data: bytes, chunk: int = 3) -> List[Any]:
        clock = Clock()
        received: List[Any] = []
        lines = InputLines(received.append, lambda: received.append("ended"))
        reader = MemoryReader(clock, data, lines, chunk=chunk)
        lines.makeConnection(reader)
        reader.start()
        while clock.getDelayedCalls():
            clock.advance(0)
        return received

    def test_lines(self):
        """Each line without its newline, however the input is cut; then the end."""
        data = b'{"id": 1}\n{"id": 2}\n\n[3]\n'
        for chunk in (1, 3, len(data)):
            self.assertEqual(
                self.lines(data, chunk), [b'{"id": 1}', b'{"id": 2}', b"[3]", "ended"], chunk
            )

    def test_crlf_and_blank(self):
        """CRLF line ends are accepted; blank lines are skipped."""
        self.assertEqual(self.lines(b"a\r\n  \n\r\nb\n"), [b"a", b"b", "ended"])

    def test_last_line_without_newline(self):
        """What follows the last newline is a line too."""
        self.assertEqual(self.lines(b"a\nlast"), [b"a", b"last", "ended"])
        self.assertEqual(self.lines(b""), ["ended"])

    def test_long_line(self):
        """A line far longer than LineOnlyReceiver's default limit passes whole."""
        line = b"a" * (1024 * 1024)
        self.assertEqual(self.lines(line + b"\n", chunk=64 * 1024), [line, "ended"])


class BridgeTestCase(TestCase):
    timeout = 60

    @inlineCallbacks
    def setUp(self):
        self.ccx = yield ServiceFixture(self, **self.settings()).start()

    def settings(self) -> dict:
        return {}

    def spawn(self, *argv: str, url: Optional[str] = None, environ: Optional[dict] = None):
        """
        Start C{python -m ccx mcp-stdio --url URL ARGV...}.
        """
        bridge = Bridge()
        env = dict(os.environ, PYTHONPATH=ROOT)
        for name in ("CCX_URL", "CCX_TOKEN", "CCX_TOKEN_FILE", "CCX_CACERT"):
            env.pop(name, None)
        env.update(environ or {})
        url_args = ["--url", url or self.ccx.url()] if url is not False else []
        reactor.spawnProcess(
            bridge,
            sys.executable,
            [sys.executable, "-m", "ccx", "mcp-stdio", *url_args, *argv],
            env=env,
        )

        def stop():
            if not bridge.ended.called:
                bridge.transport.resumeProducing()  # else its stdout never closes
                bridge.transport.signalProcess("KILL")
                return bridge.ended

        self.addCleanup(stop)
        return bridge

    @inlineCallbacks
    def initialized(self, *argv: str, **kwargs: Any) -> Any:
        bridge = self.spawn(*argv, **kwargs)
        bridge.send(initialize(1))
        response = yield bridge.response(1)
        self.assertEqual(response["result"]["serverInfo"]["name"], "ccx", response)
        bridge.send(INITIALIZED)
        return bridge

    def server_connection(self) -> CCXServerProtocol:
        connections = [
            c for c in self.ccx.service.node.connections if isinstance(c, CCXServerProtocol)
        ]
        self.assertEqual(len(connections), 1)
        self.assertTrue(connections[0].speaks_mcp)
        return connections[0]


class SessionTests(BridgeTestCase):
    @inlineCallbacks
    def test_session(self):
        """initialize, tools/list and tools/call execute through the bridge; end of input: exit 0."""
        bridge = self.spawn()
        bridge.send(initialize(1))
        init = yield bridge.response(1)
        self.assertEqual(init["result"]["protocolVersion"], "2025-11-25")
        self.assertEqual(init["result"]["serverInfo"]["name"], "ccx")
        capabilities = dict(init["result"]["capabilities"])
        # 2025-11-25's experimental tasks (tests/test_mcp_tasks.py).
        self.assertEqual(capabilities.pop("tasks")["requests"], {"tools": {"call": {}}})
        self.assertEqual(capabilities, {"tools": {"listChanged": False}, "logging": {}})
        bridge.send(INITIALIZED)

        bridge.send(request(2, "tools/list"))
        listed = yield bridge.response(2)
        self.assertEqual(sorted(tool["name"] for tool in listed["result"]["tools"]), TOOLS)

        bridge.send(call_tool("three", "execute", {"command": ["seq", "1", "3"]}))
        called = yield bridge.response("three")
        result = called["result"]
        self.assertFalse(result["isError"], result)
        out = result["structuredContent"]
        self.assertEqual(
            (out["status"], out["exit_code"], out["stdout"]), ("completed", 0, "1\n2\n3\n")
        )
        # The text content is for a model to read (tests/test_mcp_text.py).
        self.assertRegex(
            result["content"][0]["text"],
            r"^completed: exit 0 after [\d.]+ s\nprocess \w+: seq 1 3\n--- stdout: 6 bytes ---\n1\n2\n3$",
        )

        bridge.transport.closeStdin()
        yield bridge.ended
        self.assertEqual(bridge.status, 0, bridge.err)
        self.assertEqual(bridge.err, b"")
        self.assertEqual(bridge.out, b"", "every line of stdout ends with a newline")
        # Nothing but the three answers: no notification was asked for.
        self.assertEqual([m["id"] for m in bridge.messages], [1, 2, "three"])

    @inlineCallbacks
    def test_end_of_input_waits_for_answers(self):
        """Input that ends at once: every request is answered before the bridge closes; a cancelled one is not waited for."""
        bridge = self.spawn()
        bridge.send(
            initialize(1),
            INITIALIZED,
            call_tool(2, "execute", {"command": ["sleep", "0.3"]}),
            call_tool(3, "execute", {"command": ["sleep", "1000"]}),
            {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 3}},
            request(4, "ping"),
        )
        bridge.transport.closeStdin()
        yield bridge.ended
        self.assertEqual(bridge.status, 0, bridge.err)
        self.assertEqual(bridge.err, b"")
        self.assertEqual(sorted(m["id"] for m in bridge.responses()), [1, 2, 4])
        slept = [m for m in bridge.responses() if m["id"] == 2][0]["result"]["structuredContent"]
        self.assertEqual((slept["status"], slept["exit_code"]), ("completed", 0))
        registry = self.ccx.service.node.registry
        yield until(lambda: all(p.finished for p in registry.all()))
        statuses = sorted(p.outcome for p in registry.all())
        self.assertEqual(statuses, ["cancelled", "completed"])
        for process in registry.all():
            self.assertEqual(ProcessGroup(process.pid).members(), [])

    @inlineCallbacks
    def test_lines_that_are_not_messages(self):
        """Not JSON: ccx's parse error; not UTF-8: a parse error from the bridge; blank lines skipped; CRLF accepted."""
        bridge = yield self.initialized()
        bridge.send(b"this is not json")
        parse = yield bridge.wait_for(lambda m: m.get("error", {}).get("code") == -32700)
        self.assertIsNone(parse["id"])
        self.assertIn("parse error", parse["error"]["message"])
        bridge.send(b"", b"   ", b'{"jsonrpc": "2.0", "id": 5, "method": "ping"}\r')
        pong = yield bridge.response(5)
        self.assertEqual(pong["result"], {})
        bridge.send(b"\xff\xfe not UTF-8")
        bridge.send(request(6, "ping"))
        yield bridge.response(6)
        bridge.transport.closeStdin()
        yield bridge.ended
        self.assertEqual(bridge.status, 0, bridge.err)
        errors = [m for m in bridge.messages if "error" in m]
        self.assertEqual(len(errors), 2, bridge.messages)
        self.assertEqual(
            errors[1],
            {
                "jsonrpc": "2.0",
                "id": None,
                "error": {"code": -32700, "message": "parse error: the message is not valid UTF-8"},
            },
        )
        self.assertEqual(
            bridge.err, b"ccx: a line of standard input is not UTF-8: answered with a parse error\n"
        )
        self.assertEqual([m.get("id") for m in bridge.messages], [1, None, 5, None, 6])

    @inlineCallbacks
    def test_last_line_without_newline(self):
        """A last message with no newline before the end of input is still passed on and answered."""
        bridge = self.spawn()
        bridge.transport.write(json.dumps(request(1, "ping")).encode())
        bridge.transport.closeStdin()
        yield bridge.ended
        self.assertEqual(bridge.status, 0, bridge.err)
        self.assertEqual(bridge.messages, [{"jsonrpc": "2.0", "id": 1, "result": {}}])

    @inlineCallbacks
    def test_url_from_environment(self):
        """$CCX_URL is used when --url is not given."""
        bridge = self.spawn(url=False, environ={"CCX_URL": self.ccx.url()})
        bridge.send(request(1, "ping"))
        yield bridge.response(1)
        bridge.transport.closeStdin()
        yield bridge.ended
        self.assertEqual(bridge.status, 0, bridge.err)


class EndTests(BridgeTestCase):
    @inlineCallbacks
    def test_service_down(self):
        """Nothing listening: exit 2, one line on stderr, nothing on stdout."""
        url = f"ws://127.0.0.1:{free_port()}/ws/mcp"
        bridge = self.spawn(url=url)
        bridge.send(initialize(1))
        yield bridge.ended
        self.assertEqual(bridge.status, 2)
        self.assertEqual((bridge.out, bridge.messages), (b"", []))
        self.assertEqual(
            bridge.err,
            f"ccx: cannot reach the service at {url}: connection refused "
            "(is `twistd ccx` running?)\n".encode(),
        )

    @inlineCallbacks
    def test_not_a_websocket(self):
        """A URL where there is no WebSocket: exit 2 and a line that says so."""
        bridge = self.spawn(url=self.ccx.url("/nothing"))
        yield bridge.ended
        self.assertEqual(bridge.status, 2)
        self.assertEqual(bridge.messages, [])
        self.assertIn(b"has no WebSocket there (HTTP 404", bridge.err)
        self.assertEqual(bridge.err.count(b"\n"), 1, bridge.err)

    @inlineCallbacks
    def test_subprotocol_refused(self):
        """A WebSocket server that does not choose the subprotocol mcp: exit 2, clearly, nothing on stdout."""
        chosen = []

        class Plain(WebSocketServerProtocol):
            def onConnect(self, request):
                chosen.append(request.protocols)
                return None  # no subprotocol

        factory = WebSocketServerFactory()
        factory.protocol = Plain
        port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
        self.addCleanup(port.stopListening)
        url = f"ws://127.0.0.1:{port.getHost().port}/ws/mcp"
        bridge = self.spawn(url=url)
        bridge.send(initialize(1))
        yield bridge.ended
        self.assertEqual(chosen, [["mcp"]])
        self.assertEqual(bridge.status, 2)
        self.assertEqual((bridge.out, bridge.messages), (b"", []))
        self.assertEqual(
            bridge.err,
            f"ccx: the service at {url} did not accept the WebSocket subprotocol 'mcp', so it "
            "does not speak MCP there (check --url: a ccx with MCP serves it at /ws/mcp)\n"
            .encode(),
        )

    @inlineCallbacks
    def test_service_stops(self):
        """The service stops under the bridge: exit 2 with one line on stderr."""
        bridge = yield self.initialized()
        yield self.ccx.service.stopService()
        yield bridge.ended
        self.assertEqual(bridge.status, 2)
        self.assertEqual(
            bridge.err,
            f"ccx: the service at {self.ccx.url()} closed the connection "
            "(ccx is stopping)\n".encode(),
        )
        self.assertEqual([m["id"] for m in bridge.messages], [1])

    @inlineCallbacks
    def test_message_too_large(self):
        """A line over the service's --max-message-size: ccx fails the connection, the bridge says why."""
        bridge = yield self.initialized()
        bridge.send(request(2, "ping", {"pad": "a" * (self.ccx.config.max_message_size + 1)}))
        yield bridge.ended
        self.assertEqual(bridge.status, 2)
        self.assertRegex(
            bridge.err.decode(),
            r"^ccx: lost the connection to the service at \S+: code 1009 \(.+\)\n$",
        )

    @inlineCallbacks
    def test_stdout_closed(self):
        """Nobody reads stdout any more: the bridge closes the WebSocket (its programs are cancelled) and exits 141."""
        bridge = yield self.initialized()
        bridge.send(call_tool(2, "start", {"command": ["sleep", "1000"]}))
        started = yield bridge.response(2)
        pgid = started["result"]["structuredContent"]["pgid"]
        self.ccx.groups.append(pgid)
        bridge.transport.pauseProducing()
        bridge.transport.closeChildFD(1)
        bridge.transport.resumeProducing()
        bridge.send(request(3, "ping"))
        yield bridge.ended
        self.assertEqual(bridge.status, 128 + signal.SIGPIPE, bridge.err)
        yield until(lambda: ProcessGroup(pgid).members() == [])

    @inlineCallbacks
    def sigterm(self) -> Any:
        bridge = yield self.initialized()
        bridge.send(call_tool(2, "execute", {"command": ["sleep", "1000"]}))
        registry = self.ccx.service.node.registry
        yield until(lambda: registry.live_count == 1)
        process = registry.all()[0]
        self.ccx.groups.append(process.pid)  # the group leader
        bridge.transport.closeStdin()  # the bridge waits for the answer...
        bridge.transport.signalProcess("TERM")  # ...until told to go
        yield bridge.ended
        yield until(lambda: process.finished)
        return bridge, process

    @inlineCallbacks
    def test_sigterm(self):
        """SIGTERM (the MCP client's next step after closing stdin): leave at once, quietly; the service cancels."""
        bridge, process = yield self.sigterm()
        self.assertIsNone(bridge.signal)
        self.assertEqual(bridge.err, b"")
        self.assertEqual([m["id"] for m in bridge.messages], [1])
        self.assertEqual(process.outcome, "cancelled")

    @inlineCallbacks
    def test_sigterm_status(self):
        """SIGTERM: exit 143, as docs/cli.md says."""
        bridge, _process = yield self.sigterm()
        self.assertEqual(bridge.status, 128 + signal.SIGTERM)


class TokenTests(BridgeTestCase):
    def settings(self) -> dict:
        return {"token": TOKEN}

    @inlineCallbacks
    def test_token(self):
        """--token-file, $CCX_TOKEN_FILE and $CCX_TOKEN open the connection; none: exit 2 and how to give one."""
        for argv, environ in (
            (["--token-file", self.ccx.token_file], {}),
            ([], {"CCX_TOKEN_FILE": self.ccx.token_file}),
            ([], {"CCX_TOKEN": TOKEN}),
        ):
            bridge = self.spawn(*argv, environ=environ)
            bridge.send(request(1, "ping"))
            bridge.transport.closeStdin()
            yield bridge.ended
            self.assertEqual((bridge.status, bridge.err), (0, b""))
            self.assertEqual(bridge.messages, [{"jsonrpc": "2.0", "id": 1, "result": {}}])
        bridge = self.spawn()
        yield bridge.ended
        self.assertEqual(bridge.status, 2)
        self.assertEqual(bridge.messages, [])
        self.assertIn(b"requires a token", bridge.err)


class BackPressureTests(BridgeTestCase):
    timeout = 120

    def settings(self) -> dict:
        # Answers of 8 MiB each: execute returns at most a sixteenth of
        # --max-message-size per stream, so 64 MiB lets them carry all 4 MiB.
        # A client that leaves its replies unread is dropped after
        # --ping-interval: longer than this test may hold its stdout.
        return {
            "buffer_bytes": 4 * 1024 * 1024,
            "max_message_size": 64 * 1024 * 1024,
            "ping_interval": self.timeout,
        }

    @inlineCallbacks
    def stalled(self, measure: Callable[[], int]) -> Any:
        """
        Fire with C{measure()} once it has stopped changing.
        """
        last = None
        for _ in range(300):
            d: Deferred = Deferred()
            reactor.callLater(0.1, d.callback, None)
            yield d
            value = measure()
            if value == last:
                return value
            last = value
        raise AssertionError("never stalled")

    @inlineCallbacks
    def test_stdout_full_holds_the_service_back(self):
        """While nobody reads the bridge's stdout it does not read the socket: ccx holds what it has to send; then all arrives."""
        bridge = yield self.initialized()
        connection = self.server_connection()
        registry = self.ccx.service.node.registry
        size, calls = 4 * 1024 * 1024, 8
        bridge.transport.pauseProducing()  # stop reading the bridge's stdout
        for i in range(calls):
            bridge.send(call_tool(10 + i, "execute", flood(size)))
        yield until(lambda: len(registry.all()) == calls, timeout=30)
        yield until(lambda: all(p.finished for p in registry.all()), timeout=30)
        held = yield self.stalled(lambda: unsent(connection.transport))
        # Each answer carries the output twice (structuredContent and text):
        # 64 MiB in all, far more than the kernel's buffers and the two
        # messages the bridge may hold.
        self.assertGreater(held, 16 * 1024 * 1024)
        self.assertTrue(connection._paused)
        bridge.transport.resumeProducing()
        for i in range(calls):
            answer = yield bridge.response(10 + i)
            out = answer["result"]["structuredContent"]
            self.assertEqual((out["status"], out["stdout_bytes"]), ("completed", size))
            self.assertEqual(out["stdout"], "a" * size)
        bridge.transport.closeStdin()
        yield bridge.ended
        self.assertEqual(bridge.status, 0, bridge.err)

    @inlineCallbacks
    def test_socket_full_stops_reading_stdin(self):
        """While ccx does not read the socket the bridge stops reading stdin: the writer holds the rest; then all goes through."""
        bridge = yield self.initialized()
        connection = self.server_connection()
        connection.transport.pauseProducing()  # ccx stops reading the bridge
        pad = "a" * (512 * 1024)
        lines = 64  # 32 MiB of notifications (ccx answers none)
        for i in range(lines):
            params = {"n": i, "pad": pad}
            bridge.send({"jsonrpc": "2.0", "method": "notifications/x", "params": params})
        stdin = bridge.transport.pipes[0]
        held = yield self.stalled(lambda: unsent(stdin))
        self.assertGreater(held, 8 * 1024 * 1024)
        connection.transport.resumeProducing()
        bridge.send(request(2, "ping"))
        yield bridge.response(2)
        self.assertEqual(unsent(stdin), 0)
        bridge.transport.closeStdin()
        yield bridge.ended
        self.assertEqual(bridge.status, 0, bridge.err)
        self.assertEqual([m["id"] for m in bridge.messages], [1, 2])


def _sdk_missing() -> Optional[str]:
    try:
        found = importlib.util.find_spec("mcp.client.stdio") is not None
    except ImportError:
        found = False
    return None if found else "needs the mcp package (pip install '.[test]')"


class SdkStdioTests(TestCase):
    timeout = 120
    skip = _sdk_missing()

    @inlineCallbacks
    def test_official_stdio_client(self):
        """The official SDK launches `ccx mcp-stdio` as a stdio server: initialize, list_tools, call_tool, shutdown."""
        ccx = yield ServiceFixture(self, token=TOKEN).start()
        out, err, code = yield getProcessOutputAndValue(
            sys.executable,
            [STDIO_CLIENT, ccx.url(), TOKEN],
            env=dict(os.environ, PYTHONPATH=ROOT, PYTHONWARNINGS="ignore"),
            reactor=reactor,
        )
        self.assertEqual(code, 0, err.decode())
        self.assertEqual(
            out.decode().splitlines(),
            [
                "discover: 2026-07-28 ccx",
                "tools: " + " ".join(TOOLS),
                "execute: completed, exit 0, 1 2 3",
                "refused: isError, not on the allow-list",
                "closed: the bridge exited by itself, nothing on stderr",
            ],
        )
