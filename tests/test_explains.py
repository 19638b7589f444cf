"""
A service that explains itself: start-up refusals that say what to do, a
start-up log that says where to connect and what is allowed, C{GET /},
C{--version}, the audit trail of programs started and refused, and
C{merge_stderr}.
"""

import errno
import io
import os
import socket
import sys

from twisted.internet import reactor
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.defer import inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.error import CannotListenError
from twisted.internet.utils import getProcessOutputAndValue
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase
from treq.testing import StubTreq

from ccx import __version__
from ccx.config import ConfigError, Options, build_config, listen_refusal, read_toml
from ccx.node import Node
from ccx.process.allowlist import AllowList, runs_anything
from ccx.process.errors import NotAllowed
from ccx.process.launch import LaunchSpec
from ccx.service import CCXService
from ccx.testing.service import SOURCE_ROOT
from ccx.web.site import build_site
from ccx.web.urls import service_urls
from tests.support import Client, ServiceFixture, program, until
from tests.test_mcp import initialize_params

INTERLEAVED = "echo a; echo b >&2; echo c; echo d >&2"


def capture_log(testcase):
    """
    Collect every log event from now until the test ends.
    """
    events = []
    globalLogPublisher.addObserver(events.append)
    testcase.addCleanup(globalLogPublisher.removeObserver, events.append)
    return events


def with_namespace(events, namespace):
    return [e for e in events if e.get("log_namespace") == namespace]


class TomlPlaceTests(SynchronousTestCase):
    """
    A TOML error names the file and the line (and the column where tomllib
    says it).
    """

    def write(self, text):
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_line_and_column(self):
        path = self.write('port = 8003\nkill-grace = \n')
        error = self.assertRaises(ConfigError, read_toml, path)
        self.assertEqual(str(error), f"--config {path}:2:14: not valid TOML: invalid value")

    def test_end_of_document_is_the_last_line(self):
        path = self.write('port = 8003\nallow = ["seq"\n\n')
        error = self.assertRaises(ConfigError, read_toml, path)
        self.assertEqual(str(error), f"--config {path}:3: not valid TOML: unclosed array")

    def test_valid_file_reads(self):
        """The near miss: the same file with its array closed reads."""
        path = self.write('port = 8003\nallow = ["seq"]\n\n')
        self.assertEqual(read_toml(path), {"port": 8003, "allow": ["seq"]})


class ListenRefusalTests(SynchronousTestCase):
    def test_in_use(self):
        error = CannotListenError("127.0.0.1", 8003, OSError(errno.EADDRINUSE, "in use"))
        self.assertEqual(
            str(listen_refusal(error)), "port 8003 is in use; choose another with --port"
        )
        self.assertIsInstance(listen_refusal(error), ConfigError)

    def test_privileged_port(self):
        error = CannotListenError("", 80, OSError(errno.EACCES, "Permission denied"))
        self.assertEqual(
            str(listen_refusal(error)),
            "cannot listen on port 80: permission denied (ports below 1024 need root or "
            "CAP_NET_BIND_SERVICE); choose another with --port",
        )

    def test_no_such_address(self):
        error = CannotListenError("10.9.9.9", 8003, OSError(errno.EADDRNOTAVAIL, "x"))
        self.assertEqual(
            str(listen_refusal(error)),
            "cannot listen on 10.9.9.9:8003: this machine has no such address; choose "
            "another interface in --port",
        )

    def test_other_reason(self):
        error = CannotListenError(None, "/no/dir/s.sock", OSError(errno.ENOENT, "No such file or directory"))
        self.assertEqual(
            str(listen_refusal(error)), "cannot listen on /no/dir/s.sock: No such file or directory"
        )

    def test_anything_else_unchanged(self):
        """What is not a failure to listen is left as it is."""
        error = ValueError("x")
        self.assertIs(listen_refusal(error), error)

    def test_port_in_use_at_start(self):
        """A service whose port is taken refuses to start with that sentence."""
        taken = socket.socket()
        self.addCleanup(taken.close)
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = build_config(
            {"port": str(port), "state_dir": os.path.abspath(self.mktemp()), "journal": False}
        )
        service = CCXService(config, reactor)
        error = self.assertRaises(ConfigError, service.privilegedStartService)
        self.assertEqual(str(error), f"port {port} is in use; choose another with --port")
        self.failureResultOf(service.when_listening(), ConfigError)
        service.node.close_containment()


class SettingsCheckedLaterTests(SynchronousTestCase):
    """
    Settings are checked when C{config} is asked for (by C{makeService}),
    so that twistd shows a wrong one as a line, not with its whole usage.
    """

    def test_missing_token_file(self):
        options = Options()
        path = os.path.abspath(self.mktemp())
        options.parseOptions(["--token-file", path])
        error = self.assertRaises(ConfigError, lambda: options.config)
        self.assertEqual(str(error), f"--token-file {path}: No such file or directory")

    def test_token_file_present(self):
        """The near miss: the file there, the token read."""
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("s3cret\n")
        options = Options()
        options.parseOptions(["--token-file", path])
        self.assertEqual(options.config.token, "s3cret")
        self.assertIs(options.config, options.config)

    def test_allow_names_no_program(self):
        config = build_config(
            {"allow": ["ccx-no-such-program"], "state_dir": os.path.abspath(self.mktemp())}
        )
        error = self.assertRaises(ConfigError, Node, config, reactor)
        self.assertTrue(
            str(error).startswith("--allow ccx-no-such-program: no executable program of that name"),
            str(error),
        )

    def test_version(self):
        out = io.StringIO()
        self.patch(__import__("sys"), "stdout", out)
        error = self.assertRaises(SystemExit, Options().parseOptions, ["--version"])
        self.assertEqual(error.code, 0)
        self.assertEqual(out.getvalue(), f"ccx {__version__}\n")


class RunsAnythingTests(SynchronousTestCase):
    def test_names(self):
        for name in ("sh", "bash", "dash", "python3", "python3.11", "perl", "env", "node", "xargs"):
            self.assertTrue(runs_anything(name), name)

    def test_near_misses(self):
        for name in ("seq", "shellcheck", "python3x", "envsubst", "ssh-keygen", "cat"):
            self.assertFalse(runs_anything(name), name)

    def test_allow_list(self):
        """An allowed program runs anything by its allowed name or its file's (sh is dash)."""
        allowed = AllowList([program("seq"), "sh"])
        self.assertEqual(allowed.runs_anything(), ["sh"])
        self.assertEqual(AllowList([program("seq"), program("cat")]).runs_anything(), [])
        self.assertEqual(
            [names for path, names in allowed.entries()],
            [names for path, names in sorted(allowed.entries())],
        )


class ServiceUrlsTests(SynchronousTestCase):
    def test_ipv4(self):
        self.assertEqual(
            service_urls(IPv4Address("TCP", "127.0.0.1", 8003)),
            {
                "websocket": "ws://127.0.0.1:8003/ws",
                "websocket_mcp": "ws://127.0.0.1:8003/ws/mcp",
                "mcp": "http://127.0.0.1:8003/mcp",
                "health": "http://127.0.0.1:8003/health",
                "metrics": "http://127.0.0.1:8003/metrics",
            },
        )

    def test_ipv6_tls(self):
        urls = service_urls(IPv6Address("TCP", "::1", 8443), tls=True)
        self.assertEqual(urls["websocket"], "wss://[::1]:8443/ws")
        self.assertEqual(urls["health"], "https://[::1]:8443/health")

    def test_unix(self):
        urls = service_urls(UNIXAddress("/run/ccx/s.sock"))
        self.assertEqual(urls["websocket_mcp"], "ws://unix:/run/ccx/s.sock:/ws/mcp")
        self.assertEqual(urls["mcp"], "http+unix://%2Frun%2Fccx%2Fs.sock/mcp")


class StartupLogTests(TestCase):
    timeout = 30

    @inlineCallbacks
    def started(self, allow):
        events = capture_log(self)
        fixture = ServiceFixture(self, allow=allow)
        yield fixture.start()
        return fixture, with_namespace(events, "ccx.service.CCXService")

    @inlineCallbacks
    def test_where_to_connect_and_what_is_allowed(self):
        fixture, events = yield self.started([program("seq")])
        port = fixture.port
        connect = [e for e in events if e["log_format"].startswith("connect:")]
        self.assertEqual(len(connect), 1)
        self.assertEqual(connect[0]["websocket"], f"ws://127.0.0.1:{port}/ws")
        self.assertEqual(connect[0]["mcp"], f"http://127.0.0.1:{port}/mcp")
        self.assertEqual(connect[0]["health"], f"http://127.0.0.1:{port}/health")
        self.assertEqual(connect[0]["metrics"], f"http://127.0.0.1:{port}/metrics")
        allowed = [e for e in events if e["log_format"].startswith("allowed:")]
        self.assertEqual(allowed[0]["allow"], [os.path.realpath(program("seq"))])
        self.assertEqual([e for e in events if e["log_level"].name == "warn"], [])

    @inlineCallbacks
    def test_warns_of_a_shell(self):
        _, events = yield self.started([program("seq"), "sh"])
        warnings = [e for e in events if e["log_level"].name == "warn"]
        self.assertEqual([e["program"] for e in warnings], ["sh"])
        self.assertEqual(formatEvent(warnings[0]), "sh is allowed: any command can run")


class IndexPageTests(SynchronousTestCase):
    def get(self, path="/", headers=None, **settings):
        values = {"state_dir": os.path.abspath(self.mktemp()), "journal": False, **settings}
        node = Node(build_config(values), reactor)
        treq = StubTreq(build_site(node).resource)
        response = self.successResultOf(treq.get(f"http://127.0.0.1:8003{path}", headers=headers))
        body = self.successResultOf(response.text())
        return response, body

    def token_file(self, token):
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(token)
        return path

    def test_page(self):
        response, body = self.get()
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headers.getRawHeaders("content-type"), ["text/html; charset=utf-8"])
        self.assertIn("default-src 'none'", response.headers.getRawHeaders("content-security-policy")[0])
        for text in ("/ws/mcp", "/mcp", "/health", "/metrics", "docs/protocol.md", "docs/mcp.md"):
            self.assertIn(text, body)
        self.assertIn(f"<h1>ccx {__version__}</h1>", body)

    def test_version_only_with_the_token(self):
        """With a token set, the page names no version to a request without it, nor with a prefix of it."""
        path = self.token_file("s3cret")
        _, body = self.get(token_file=path)
        self.assertIn("<h1>ccx</h1>", body)
        self.assertNotIn(__version__, body)
        _, body = self.get(token_file=path, headers={"Authorization": "Bearer s3cre"})
        self.assertNotIn(__version__, body)
        _, body = self.get(token_file=path, headers={"Authorization": "Bearer s3cret"})
        self.assertIn(f"<h1>ccx {__version__}</h1>", body)

    def test_other_paths_unchanged(self):
        """Only / is the page: a path below it is still not found."""
        response, _ = self.get("/nothing")
        self.assertEqual(response.code, 404)

    def test_not_for_a_websocket(self):
        """A WebSocket handshake sent to / is not found: / is no WebSocket."""
        response, body = self.get(headers={"Upgrade": "websocket", "Connection": "Upgrade"})
        self.assertEqual(response.code, 404)
        self.assertNotIn("/ws/mcp", body)


class AuditTests(TestCase):
    """
    Every program started is logged at info, every refusal at warn, with
    the session, the peer, argv and the reason.
    """

    timeout = 30

    @inlineCallbacks
    def setUp(self):
        self.events = capture_log(self)
        self.fixture = yield ServiceFixture(self).start()
        self.node = self.fixture.service.node

    def audit(self):
        return with_namespace(self.events, "ccx.session")

    @inlineCallbacks
    def test_started(self):
        session = self.node.new_session()
        session.peer = "tcp4:127.0.0.1:5555"
        process, started = session.launch(LaunchSpec([program("seq"), "1"]))
        yield started
        yield process.ended
        [event] = self.audit()
        self.assertEqual(event["log_level"].name, "info")
        self.assertEqual(
            (event["session_id"], event["peer"], event["argv"], event["process_id"]),
            (session.session_id, "tcp4:127.0.0.1:5555", [program("seq"), "1"], process.process_id),
        )

    def test_refused(self):
        session = self.node.new_session()
        session.peer = "tcp4:127.0.0.1:5556"
        self.assertRaises(NotAllowed, session.launch, LaunchSpec(["id"]))
        [event] = self.audit()
        self.assertEqual(event["log_level"].name, "warn")
        self.assertEqual(
            (event["session_id"], event["peer"], event["argv"]),
            (session.session_id, "tcp4:127.0.0.1:5556", ["id"]),
        )
        self.assertIn("is not on the allow-list", event["reason"])

    def test_refused_under_another_name(self):
        """The near miss: an allowed program under a name it was not allowed under."""
        session = self.node.new_session()
        session.peer = "tcp4:127.0.0.1:5557"
        link = os.path.abspath(self.mktemp())
        os.symlink(program("seq"), link)
        self.assertRaises(NotAllowed, session.launch, LaunchSpec([link, "1"]))
        [event] = self.audit()
        self.assertEqual(event["log_level"].name, "warn")
        self.assertIn("allowed only under the name", event["reason"])

    @inlineCallbacks
    def test_over_the_wire(self):
        """A WebSocket client's programs are logged with its address."""
        client = yield self.fixture.connect("/ws")
        result = yield self.fixture.execute(client, {"command": ["seq", "1"]})
        yield client.notification("process.completed", result["process_id"])
        [event] = [e for e in self.audit() if e["log_level"].name == "info"]
        self.assertEqual(event["argv"], ["seq", "1"])
        self.assertTrue(event["peer"].startswith("tcp4:127.0.0.1:"), event["peer"])


class MergeStderrTests(TestCase):
    timeout = 30

    @inlineCallbacks
    def setUp(self):
        self.ccx = yield ServiceFixture(self).start()

    @inlineCallbacks
    def executed(self, **params):
        client = yield self.ccx.connect("/ws")
        result = yield self.ccx.execute(client, {"command": ["sh", "-c", INTERLEAVED], **params})
        process_id = result["process_id"]
        yield client.notification("process.completed", process_id)
        return client.output(process_id, "stdout"), client.output(process_id, "stderr")

    @inlineCallbacks
    def test_native_execute(self):
        out, err = yield self.executed(merge_stderr=True)
        self.assertEqual((out, err), (b"a\nb\nc\nd\n", b""))

    @inlineCallbacks
    def test_native_execute_without(self):
        """The near miss: merge_stderr false keeps two streams."""
        out, err = yield self.executed(merge_stderr=False)
        self.assertEqual((out, err), (b"a\nc\n", b"b\nd\n"))

    @inlineCallbacks
    def test_not_a_boolean(self):
        client = yield self.ccx.connect("/ws")
        response = yield client.request("execute", {"command": ["true"], "merge_stderr": "true"})
        self.assertEqual(response["error"]["code"], -32602)
        self.assertIn("'merge_stderr' must be true or false", response["error"]["message"])

    @inlineCallbacks
    def mcp_client(self):
        from autobahn.twisted.websocket import WebSocketClientFactory

        factory = WebSocketClientFactory(self.ccx.url(), protocols=["mcp"])
        factory.protocol = Client
        client = yield TCP4ClientEndpoint(reactor, "127.0.0.1", self.ccx.port).connect(factory)
        self.ccx.clients.append(client)
        yield client.opened
        yield client.call("initialize", initialize_params())
        client.send_json({"jsonrpc": "2.0", "method": "notifications/initialized"})
        return client

    @inlineCallbacks
    def tool(self, client, name, arguments):
        result = yield client.call("tools/call", {"name": name, "arguments": arguments})
        self.assertFalse(result["isError"], result)
        return result["structuredContent"]

    @inlineCallbacks
    def test_mcp_execute(self):
        client = yield self.mcp_client()
        out = yield self.tool(
            client, "execute", {"command": ["sh", "-c", INTERLEAVED], "merge_stderr": True}
        )
        self.assertEqual((out["stdout"], out["stderr"]), ("a\nb\nc\nd\n", ""))

    @inlineCallbacks
    def test_mcp_start(self):
        client = yield self.mcp_client()
        started = yield self.tool(
            client, "start", {"command": ["sh", "-c", INTERLEAVED], "merge_stderr": True}
        )
        process_id = started["process_id"]
        process = self.ccx.service.node.registry.get(process_id)
        yield until(lambda: process.finished)
        out = yield self.tool(client, "output", {"process_id": process_id})
        self.assertEqual((out["stdout"]["text"], out["stderr"]["text"]), ("a\nb\nc\nd\n", ""))

    @inlineCallbacks
    def test_mcp_schemas_name_it(self):
        client = yield self.mcp_client()
        tools = (yield client.call("tools/list"))["tools"]
        schemas = {tool["name"]: tool["inputSchema"].get("properties", {}) for tool in tools}
        self.assertEqual(schemas["execute"]["merge_stderr"]["type"], "boolean")
        self.assertEqual(schemas["start"]["merge_stderr"]["type"], "boolean")
        self.assertNotIn("merge_stderr", schemas["write"])


class RefusedStartTests(TestCase):
    """
    A real C{twistd -n ccx} refused at start: exit status 1 and one line
    saying what to do, never a traceback.
    """

    timeout = 60

    @inlineCallbacks
    def refused(self, *options):
        state_dir = os.path.abspath(self.mktemp())
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [SOURCE_ROOT, env.get("PYTHONPATH")]))
        argv = ["-c", "from twisted.scripts.twistd import run; run()", "-n", "--pidfile=", "ccx"]
        argv += ["--state-dir", state_dir, *options]
        out, err, code = yield getProcessOutputAndValue(
            sys.executable, argv, env=env, path=SOURCE_ROOT, reactor=reactor
        )
        lines = [line for line in (out + err).decode().splitlines() if line.strip()]
        return code, lines

    def assertOneLine(self, code, lines, expected):
        text = "\n".join(lines)
        self.assertEqual(code, 1, text)
        self.assertNotIn("Traceback", text)
        # One line says why, as "ccx: WHY" (twistd's log may stamp it).
        said = [line for line in lines if "ccx: " in line]
        self.assertEqual(len(said), 1, text)
        self.assertIn(f"ccx: {expected}", said[0])

    @inlineCallbacks
    def test_port_in_use(self):
        taken = socket.socket()
        self.addCleanup(taken.close)
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, lines = yield self.refused("--port", str(port), "--allow", program("seq"))
        self.assertOneLine(code, lines, f"port {port} is in use; choose another with --port")

    @inlineCallbacks
    def test_allow_names_no_program(self):
        code, lines = yield self.refused("--allow", "ccx-no-such-program")
        self.assertOneLine(code, lines, "--allow ccx-no-such-program: no executable program of that name")

    @inlineCallbacks
    def test_toml_error(self):
        path = os.path.abspath(self.mktemp())
        with open(path, "w") as f:
            f.write('port = 8003\nkill-grace = \n')
        code, lines = yield self.refused("--config", path)
        self.assertOneLine(code, lines, f"--config {path}:2:14: not valid TOML: invalid value")

    @inlineCallbacks
    def test_missing_token_file(self):
        path = os.path.abspath(self.mktemp())
        code, lines = yield self.refused("--token-file", path)
        self.assertOneLine(code, lines, f"--token-file {path}: No such file or directory")

    @inlineCallbacks
    def test_version(self):
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [SOURCE_ROOT, env.get("PYTHONPATH")]))
        out, err, code = yield getProcessOutputAndValue(
            sys.executable,
            ["-c", "from twisted.scripts.twistd import run; run()", "ccx", "--version"],
            env=env,
            path=SOURCE_ROOT,
            reactor=reactor,
        )
        self.assertEqual((out, err, code), (f"ccx {__version__}\n".encode(), b"", 0))
