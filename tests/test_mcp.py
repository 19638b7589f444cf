"""
MCP: the lifecycle, the tools, Streamable HTTP at /mcp and the WebSocket
subprotocol C{mcp}, checked against the real service, with raw messages and
with the official MCP Python SDK as the client.
"""

import dataclasses
import importlib.util
import io
import json
import os
import re
import sys
from typing import Any, Callable, List, Optional, Tuple

import treq
from treq.client import HTTPClient
from autobahn.twisted.websocket import WebSocketClientFactory
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.task import Clock
from twisted.internet.utils import getProcessOutputAndValue
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool
from zope.interface import implementer
from zope.interface.verify import verifyObject

from ccx.mcp.progress import MAX_MESSAGE, ProgressReporter
from ccx.mcp.session import LATEST_VERSION, SUPPORTED_VERSIONS, at_least, negotiate
from ccx.mcp.tools import EXECUTE_OUTPUT, read_text
from ccx.output.buffer import StreamBuffer
from ccx.output.fanout import ProcessOutput
from ccx.output.interfaces import IOutputSink
from ccx.process.group import ProcessGroup, group_states
from ccx.rpc.interfaces import INotificationChannel
from ccx.web.interfaces import IConnection
from tests.support import Client, ServiceFixture, until

try:
    import jsonschema
except ImportError:  # pragma: no cover
    jsonschema = None

HERE = os.path.dirname(os.path.abspath(__file__))
HTTP_CLIENT = os.path.join(HERE, "clients", "mcp_http_client.py")
WS_CLIENT = os.path.join(HERE, "clients", "mcp_ws_client.py")
TOKEN = "mcp-test-token"
ORIGIN = "http://app.example"
TOOLS = [
    "cancel",
    "execute",
    "forget",
    "list",
    "output",
    "pause",
    "resize",
    "resume",
    "start",
    "status",
    "wait",
    "write",
]


def _sdk_missing() -> Optional[str]:
    try:
        found = importlib.util.find_spec("mcp.client.streamable_http") is not None
    except ImportError:
        found = False
    return None if found else "needs the mcp package (pip install '.[test]')"


def request(request_id: Any, method: str, params: Optional[dict] = None) -> dict:
    message = {"jsonrpc": "2.0", "id": request_id, "method": method}
    if params is not None:
        message["params"] = params
    return message


def initialize_params(version: str = LATEST_VERSION) -> dict:
    return {
        "protocolVersion": version,
        "capabilities": {},
        "clientInfo": {"name": "ccx-tests", "version": "0"},
    }


def tool_call(request_id: Any, name: str, arguments: dict, token: Any = None) -> dict:
    params: dict = {"name": name, "arguments": arguments}
    if token is not None:
        params["_meta"] = {"progressToken": token}
    return request(request_id, "tools/call", params)



def mcp_headers(
    session_id: Optional[str] = None,
    token: Optional[str] = TOKEN,
    accept: str = "application/json, text/event-stream",
    content_type: str = "application/json",
    **extra: str,
) -> dict:
    """
    The headers of a request to C{/mcp}; in C{extra} names, C{_} stands for C{-}.
    """
    headers = {"Accept": [accept], "Content-Type": [content_type]}
    if token is not None:
        headers["Authorization"] = [f"Bearer {token}"]
    if session_id is not None:
        headers["Mcp-Session-Id"] = [session_id]
    for name, value in extra.items():
        headers[name.replace("_", "-")] = [value]
    return headers

class EventReader:
    """
    Collects the JSON-RPC messages of an SSE body as it arrives, and lets a
    test wait for the next one that matches.
    """

    def __init__(self) -> None:
        self.raw = b""
        self.messages: List[dict] = []
        self._buffer = b""
        self._waiting: List[Tuple[Callable[[dict], bool], Deferred]] = []

    def __call__(self, data: bytes) -> None:
        self.raw += data
        self._buffer += data
        while b"\n\n" in self._buffer:
            block, self._buffer = self._buffer.split(b"\n\n", 1)
            lines = [
                line[len(b"data: ") :]
                for line in block.split(b"\n")
                if line.startswith(b"data: ")
            ]
            if not lines:
                continue
            message = json.loads(b"\n".join(lines))
            self.messages.append(message)
            for entry in list(self._waiting):
                if entry[0](message):
                    self._waiting.remove(entry)
                    entry[1].callback(message)

    def wait_for(self, matches: Callable[[dict], bool]) -> Deferred:
        for message in self.messages:
            if matches(message):
                return succeed(message)
        d: Deferred = Deferred()
        self._waiting.append((matches, d))
        return d


class HttpTestCase(TestCase):
    """
    A running service with a token, and a raw HTTP client for /mcp.
    """

    timeout = 30

    @inlineCallbacks
    def start(self, **settings: Any) -> Any:
        settings.setdefault("token", TOKEN)
        settings.setdefault("allow_origin", [ORIGIN])
        self.ccx = yield ServiceFixture(self, **settings).start()
        pool = HTTPConnectionPool(reactor, persistent=False)
        self.addCleanup(pool.closeCachedConnections)
        self.http = HTTPClient(Agent(reactor, pool=pool))
        self.url = f"http://127.0.0.1:{self.ccx.port}/mcp"

    def headers(self, session_id: Optional[str] = None, **options: Any) -> dict:
        return mcp_headers(session_id, **options)

    def post(self, message: Any, session_id: Optional[str] = None, **options: Any) -> Deferred:
        body = message if isinstance(message, bytes) else json.dumps(message).encode()
        return self.http.post(self.url, data=body, headers=self.headers(session_id, **options))

    @inlineCallbacks
    def initialize(self, version: str = LATEST_VERSION) -> Any:
        """
        Start a session; return its id and the initialize result.
        """
        response = yield self.post(request(1, "initialize", initialize_params(version)))
        self.assertEqual(response.code, 200)
        body = yield response.json()
        session_id = response.headers.getRawHeaders("mcp-session-id")[0]
        response = yield self.post(
            {"jsonrpc": "2.0", "method": "notifications/initialized"}, session_id
        )
        self.assertEqual(response.code, 202)
        yield response.content()
        return session_id, body["result"]

    @inlineCallbacks
    def call(self, session_id: str, message: dict) -> Any:
        """
        POST a request; return the response's content type and messages
        (the notifications before the response, then the response).
        """
        response = yield self.post(message, session_id)
        self.assertEqual(response.code, 200)
        kind = response.headers.getRawHeaders("content-type")[0]
        if kind == "application/json":
            return kind, [(yield response.json())]
        reader = EventReader()
        yield treq.collect(response, reader)
        return kind, reader.messages

    @inlineCallbacks
    def tool(self, session_id: str, name: str, arguments: dict) -> Any:
        """
        Call a tool; return its structured result, checked against its output schema.
        """
        kind, messages = yield self.call(session_id, tool_call(9, name, arguments))
        result = messages[-1]["result"]
        self.assertFalse(result["isError"], result)
        if jsonschema is not None:
            _, listed = yield self.call(session_id, request(10, "tools/list"))
            [tool] = [t for t in listed[0]["result"]["tools"] if t["name"] == name]
            jsonschema.validate(result["structuredContent"], tool["outputSchema"])
        return result["structuredContent"]


class HttpAccessTests(HttpTestCase):
    @inlineCallbacks
    def test_token_required(self):
        """Without the token, or with a wrong one, /mcp answers 401 as the WebSocket does."""
        yield self.start()
        for token in (None, "wrong"):
            response = yield self.post(request(1, "initialize", initialize_params()), token=token)
            self.assertEqual(response.code, 401)
            self.assertEqual(response.headers.getRawHeaders("www-authenticate"), ['Bearer realm="ccx"'])
            body = yield response.json()
            self.assertEqual(body["error"]["message"], "a valid bearer token is required")
        response = yield self.http.get(self.url, headers={"Accept": ["text/event-stream"]})
        self.assertEqual(response.code, 401)
        yield response.content()

    @inlineCallbacks
    def test_query_token(self):
        """?token= is accepted, as on the WebSocket."""
        yield self.start()
        response = yield self.http.post(
            self.url + "?token=" + TOKEN,
            data=json.dumps(request(1, "initialize", initialize_params())).encode(),
            headers=self.headers(token=None),
        )
        self.assertEqual(response.code, 200)
        yield response.content()

    @inlineCallbacks
    def test_token_never_logged(self):
        """At debug level, the service's log never shows the token, given in a header or the URL."""
        yield self.start(log_level="debug", log_format="json")
        out = io.StringIO()
        observer = self.ccx.service.log_observer_to(out)
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        message = json.dumps(request(1, "initialize", initialize_params())).encode()
        for url, token in ((self.url + "?token=" + TOKEN, None), (self.url, TOKEN + "x")):
            response = yield self.http.post(url, data=message, headers=self.headers(token=token))
            yield response.content()
        self.assertIn("MCP session", out.getvalue())
        self.assertIn("missing or wrong token", out.getvalue())
        self.assertNotIn(TOKEN, out.getvalue())

    @inlineCallbacks
    def test_origin(self):
        """A foreign origin gets 403; an allowed one gets CORS headers and a preflight."""
        yield self.start()
        message = request(1, "initialize", initialize_params())
        response = yield self.post(message, Origin="http://evil.example")
        self.assertEqual(response.code, 403)
        body = yield response.json()
        self.assertIn("origin http://evil.example is not allowed", body["error"]["message"])

        response = yield self.post(message, Origin=ORIGIN)
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headers.getRawHeaders("access-control-allow-origin"), [ORIGIN])
        self.assertEqual(
            response.headers.getRawHeaders("access-control-expose-headers"), ["Mcp-Session-Id"]
        )
        yield response.content()

        response = yield self.http.request(
            "OPTIONS", self.url, headers={"Origin": [ORIGIN]}
        )
        self.assertEqual(response.code, 204)
        self.assertIn("mcp-session-id", response.headers.getRawHeaders("access-control-allow-headers")[0])
        yield response.content()
        response = yield self.http.request(
            "OPTIONS", self.url, headers={"Origin": ["http://evil.example"]}
        )
        self.assertEqual(response.code, 403)
        yield response.content()

    @inlineCallbacks
    def test_session_limit(self):
        """Past --max-http-sessions, initialize gets 503 naming the option; sessions show in /health."""
        yield self.start(max_http_sessions=1)
        yield self.initialize()
        response = yield self.post(request(1, "initialize", initialize_params()))
        self.assertEqual(response.code, 503)
        body = yield response.json()
        self.assertEqual(body["error"]["code"], -32001)
        self.assertIn("--max-http-sessions 1", body["error"]["message"])
        # With a token configured, /health shows its figures to the token only.
        health = yield self.http.get(
            f"http://127.0.0.1:{self.ccx.port}/health",
            headers={"Authorization": [f"Bearer {TOKEN}"]},
        )
        self.assertEqual((yield health.json())["connections"], 1)

    @inlineCallbacks
    def test_sessions_leave_websockets_room(self):
        """HTTP sessions hold no socket: as many as --max-connections leave WebSockets their places."""
        yield self.start(max_connections=2)
        for _ in range(3):
            yield self.initialize()
        first = yield self.ccx.connect(headers={"Authorization": f"Bearer {TOKEN}"})
        second = yield self.ccx.connect(headers={"Authorization": f"Bearer {TOKEN}"})
        self.assertEqual((yield first.call("ping")), {})
        self.assertEqual((yield second.call("ping")), {})
        self.assertEqual(len(self.ccx.service.node.connections), 5)


class HttpTransportTests(HttpTestCase):
    @inlineCallbacks
    def setUp(self):
        yield self.start()

    @inlineCallbacks
    def test_initialize(self):
        """initialize answers the client's version when supported, the newest otherwise, and a session id."""
        for asked, answered in (
            ("2025-11-25", "2025-11-25"),
            ("2025-06-18", "2025-06-18"),
            ("2024-11-05", "2024-11-05"),
            ("2026-07-28", LATEST_VERSION),
            ("1.0", LATEST_VERSION),
        ):
            session_id, result = yield self.initialize(asked)
            self.assertEqual(result["protocolVersion"], answered)
            self.assertTrue(re.fullmatch(r"[\x21-\x7e]{16,}", session_id), session_id)
        self.assertEqual(result["serverInfo"]["name"], "ccx")
        # 2025-11-25 adds its experimental tasks (tests/test_mcp_tasks.py).
        capabilities = dict(result["capabilities"])
        self.assertEqual(
            capabilities.pop("tasks"), {"list": {}, "cancel": {}, "requests": {"tools": {"call": {}}}}
        )
        self.assertEqual(capabilities, {"tools": {"listChanged": False}, "logging": {}})
        _, older = yield self.initialize("2025-06-18")
        self.assertEqual(older["capabilities"], {"tools": {"listChanged": False}, "logging": {}})
        self.assertIn("sleep", result["instructions"])

    @inlineCallbacks
    def test_initialize_needs_a_version(self):
        """An initialize without protocolVersion is a JSON-RPC error, and starts no session."""
        response = yield self.post(request(1, "initialize", {"capabilities": {}}))
        body = yield response.json()
        self.assertEqual(body["error"]["code"], -32602)
        self.assertIsNone(response.headers.getRawHeaders("mcp-session-id"))

    @inlineCallbacks
    def test_session_required(self):
        """Without a session 400, with an unknown one 404; a server/discover without capabilities is -32602 (tests/test_mcp_stateless.py)."""
        response = yield self.post(request(5, "tools/list"))
        self.assertEqual(response.code, 400)
        self.assertEqual((yield response.json())["id"], 5)
        probe = request(
            0,
            "server/discover",
            {"_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28"}},
        )
        response = yield self.post(probe, MCP_Protocol_Version="2026-07-28")
        self.assertEqual(response.code, 400)
        self.assertEqual((yield response.json())["error"]["code"], -32602)
        response = yield self.post(request(5, "tools/list"), "no-such-session")
        self.assertEqual(response.code, 404)
        yield response.content()

    @inlineCallbacks
    def test_protocol_version_header(self):
        """An unsupported MCP-Protocol-Version header gets 400."""
        session_id, _ = yield self.initialize()
        response = yield self.post(request(2, "ping"), session_id, MCP_Protocol_Version="1999-01-01")
        self.assertEqual(response.code, 400)
        yield response.content()
        response = yield self.post(request(2, "ping"), session_id, MCP_Protocol_Version=LATEST_VERSION)
        self.assertEqual((yield response.json()), {"jsonrpc": "2.0", "id": 2, "result": {}})

    @inlineCallbacks
    def test_malformed_posts(self):
        """Batches, non-JSON bodies and other media types are refused at the HTTP level."""
        session_id, _ = yield self.initialize()
        response = yield self.post([request(2, "ping")], session_id)
        self.assertEqual(response.code, 400)
        yield response.content()
        response = yield self.post(b"{not json", session_id)
        self.assertEqual(response.code, 400)
        self.assertEqual((yield response.json())["error"]["code"], -32700)
        response = yield self.http.post(
            self.url,
            data=b"{}",
            headers=dict(self.headers(session_id), **{"Content-Type": ["text/plain"]}),
        )
        self.assertEqual(response.code, 415)
        yield response.content()
        response = yield self.post({"jsonrpc": "2.0", "id": 3, "result": {}}, session_id)
        self.assertEqual(response.code, 202)
        yield response.content()

    @inlineCallbacks
    def test_tools_list(self):
        """tools/list lists the nine tools."""
        session_id, _ = yield self.initialize()
        kind, messages = yield self.call(session_id, request(2, "tools/list"))
        self.assertEqual(kind, "application/json")
        self.assertEqual(sorted(t["name"] for t in messages[0]["result"]["tools"]), TOOLS)

    @inlineCallbacks
    def test_tool_schemas(self):
        """Every tool has a valid JSON Schema for its input and its output (from 2025-06-18)."""
        session_id, _ = yield self.initialize()
        _, messages = yield self.call(session_id, request(2, "tools/list"))
        tools = messages[0]["result"]["tools"]
        for tool in tools:
            self.assertEqual(tool["inputSchema"]["type"], "object")
            self.assertEqual(tool["outputSchema"]["type"], "object")
            self.assertTrue(tool["title"] and tool["description"])
            if jsonschema is not None:
                jsonschema.Draft202012Validator.check_schema(tool["inputSchema"])
                jsonschema.Draft202012Validator.check_schema(tool["outputSchema"])
        old_session, _ = yield self.initialize("2025-03-26")
        _, messages = yield self.call(old_session, request(2, "tools/list"))
        for tool in messages[0]["result"]["tools"]:
            self.assertNotIn("outputSchema", tool)
        _, messages = yield self.call(
            old_session, tool_call(3, "execute", {"command": ["true"]})
        )
        self.assertNotIn("structuredContent", messages[0]["result"])

    @inlineCallbacks
    def test_execute(self):
        """execute answers with JSON: the output, the exit status, structured as its schema says."""
        session_id, _ = yield self.initialize()
        kind, messages = yield self.call(
            session_id,
            tool_call(2, "execute", {"command": "sh -c 'printf out; printf err >&2; exit 3'"}),
        )
        self.assertEqual(kind, "application/json")
        result = messages[0]["result"]
        out = result["structuredContent"]
        # The text is for a model to read: the outcome, then labelled output.
        self.assertRegex(
            result["content"][0]["text"],
            r"^failed: exit 3 after \d+\.\d s\nprocess \w+: sh -c 'printf out; printf err >&2; exit 3'\n"
            r"--- stdout: 3 bytes ---\nout\n--- stderr: 3 bytes ---\nerr$",
        )
        self.assertFalse(result["isError"])
        self.assertEqual(
            (out["stdout"], out["stderr"], out["status"], out["exit_code"]),
            ("out", "err", "failed", 3),
        )
        self.assertEqual((out["stdout_truncated"], out["stdout_bytes"]), (False, 3))
        if jsonschema is not None:
            jsonschema.validate(out, EXECUTE_OUTPUT)

    @inlineCallbacks
    def test_execute_input_and_limit(self):
        """input is fed to stdin; max_output_bytes keeps the end of the output and says so."""
        session_id, _ = yield self.initialize()
        out = yield self.tool(
            session_id, "execute", {"command": ["cat"], "input": "abcdef", "max_output_bytes": 2}
        )
        self.assertEqual((out["stdout"], out["stdout_truncated"], out["stdout_bytes"]), ("ef", True, 6))

    @inlineCallbacks
    def test_refused_is_a_tool_error(self):
        """A program not on the allow-list is a tool result with isError, not a protocol error."""
        session_id, _ = yield self.initialize()
        _, messages = yield self.call(session_id, tool_call(2, "execute", {"command": ["id"]}))
        result = messages[0]["result"]
        self.assertTrue(result["isError"])
        self.assertIn("command not allowed: 'id'", result["content"][0]["text"])
        self.assertIn("is not on the allow-list", result["content"][0]["text"])
        _, messages = yield self.call(session_id, tool_call(3, "execute", {"cmd": "true"}))
        self.assertTrue(messages[0]["result"]["isError"])
        self.assertIn("has no parameter 'cmd'", messages[0]["result"]["content"][0]["text"])
        _, messages = yield self.call(session_id, tool_call(4, "no-such-tool", {}))
        self.assertEqual(messages[0]["error"]["code"], -32602)

    @inlineCallbacks
    def test_progress_streams_over_sse(self):
        """With a progress token, execute answers with an SSE stream: progress, then the result."""
        session_id, _ = yield self.initialize()
        script = "for i in 1 2 3; do echo $i; sleep 0.05; done"
        kind, messages = yield self.call(
            session_id, tool_call(2, "execute", {"command": script, "shell": True}, token="tok")
        )
        self.assertEqual(kind, "text/event-stream")
        *progress, response = messages
        self.assertEqual(response["id"], 2)
        self.assertEqual(response["result"]["structuredContent"]["stdout"], "1\n2\n3\n")
        self.assertTrue(all(m["method"] == "notifications/progress" for m in progress))
        self.assertEqual({m["params"]["progressToken"] for m in progress}, {"tok"})
        values = [m["params"]["progress"] for m in progress]
        self.assertEqual(values, sorted(set(values)))
        self.assertEqual(values[0], 0)
        self.assertIn("started sh -c", progress[0]["params"]["message"])
        self.assertEqual("".join(m["params"]["message"] for m in progress[1:]), "1\n2\n3\n")

    @inlineCallbacks
    def test_logging(self):
        """After logging/setLevel, log messages travel on the request's stream (which becomes SSE)."""
        session_id, _ = yield self.initialize()
        _, messages = yield self.call(session_id, request(2, "logging/setLevel", {"level": "loud"}))
        self.assertEqual(messages[0]["error"]["code"], -32602)
        _, messages = yield self.call(session_id, request(3, "logging/setLevel", {"level": "info"}))
        self.assertEqual(messages[0]["result"], {})
        kind, messages = yield self.call(session_id, tool_call(4, "execute", {"command": ["true"]}))
        self.assertEqual(kind, "text/event-stream")
        self.assertEqual(
            [(m.get("method"), m.get("params", {}).get("data", {}).get("event")) for m in messages[:2]],
            [("notifications/message", "started"), ("notifications/message", "finished")],
        )
        self.assertEqual(messages[2]["id"], 4)
        _, messages = yield self.call(session_id, request(5, "logging/setLevel", {"level": "error"}))
        kind, messages = yield self.call(session_id, tool_call(6, "execute", {"command": ["true"]}))
        self.assertEqual(kind, "application/json")

    @inlineCallbacks
    def test_cancelled_notification_cancels_the_program(self):
        """notifications/cancelled ends the program's whole group, and the request gets no response."""
        session_id, _ = yield self.initialize()
        response = yield self.post(
            tool_call(
                7, "execute", {"command": "sleep 1000 & sleep 1000; wait", "shell": True}, token=1
            ),
            session_id,
        )
        reader = EventReader()
        body = treq.collect(response, reader)
        started = yield reader.wait_for(lambda m: m.get("method") == "notifications/progress")
        pgid = int(re.search(r"pid (\d+)", started["params"]["message"]).group(1))
        self.ccx.groups.append(pgid)
        yield until(lambda: len(ProcessGroup(pgid).members()) == 3)
        cancel = {
            "jsonrpc": "2.0",
            "method": "notifications/cancelled",
            "params": {"requestId": 7, "reason": "test"},
        }
        answer = yield self.post(cancel, session_id)
        self.assertEqual(answer.code, 202)
        yield answer.content()
        yield body
        self.assertEqual([m for m in reader.messages if "id" in m], [])
        self.assertEqual(ProcessGroup(pgid).members(), [])
        _, messages = yield self.call(session_id, tool_call(8, "list", {}))
        listed = messages[0]["result"]["structuredContent"]["processes"]
        [process] = [p for p in listed if p["pid"] == pgid]
        status = yield self.tool(session_id, "status", {"process_id": process["process_id"]})
        self.assertEqual(status["status"], "cancelled")
        # Cancelling what is unknown or done is ignored.
        answer = yield self.post(cancel, session_id)
        self.assertEqual(answer.code, 202)
        yield answer.content()

    @inlineCallbacks
    def test_status_shows_journal_error(self):
        """status says why a program's journal failed, as list does; and nothing while it has not."""
        session_id, _ = yield self.initialize()
        started = yield self.tool(session_id, "start", {"command": ["cat"], "stdin": True})
        self.ccx.groups.append(started["pgid"])
        process_id = started["process_id"]
        status = yield self.tool(session_id, "status", {"process_id": process_id})
        self.assertNotIn("journal_error", status)
        process = self.ccx.service.node.registry.get(process_id)
        process.output.store_error = "journal writing failed: No space left on device"
        status = yield self.tool(session_id, "status", {"process_id": process_id})
        self.assertEqual(status["journal_error"], "journal writing failed: No space left on device")
        yield self.tool(session_id, "write", {"process_id": process_id, "data": "", "eof": True})
        yield until(lambda: process.finished)

    @inlineCallbacks
    def test_start_write_output(self):
        """start returns at once; write feeds stdin; output reads from offsets; status tells the end."""
        session_id, _ = yield self.initialize()
        started = yield self.tool(session_id, "start", {"command": ["cat"], "stdin": True})
        self.assertEqual(started["status"], "started")
        process_id = started["process_id"]
        self.ccx.groups.append(started["pgid"])
        written = yield self.tool(
            session_id, "write", {"process_id": process_id, "data": "héllo\n", "eof": True}
        )
        self.assertEqual(written["bytes"], 7)
        process = self.ccx.service.node.registry.get(process_id)
        yield until(lambda: process.finished)
        out = yield self.tool(session_id, "output", {"process_id": process_id})
        self.assertEqual(out["stdout"]["text"], "héllo\n")
        self.assertEqual((out["stdout"]["next_offset"], out["finished"]), (7, True))
        out = yield self.tool(
            session_id,
            "output",
            {"process_id": process_id, "offsets": {"stdout": 3}, "max_bytes": 2},
        )
        self.assertEqual((out["stdout"]["text"], out["finished"]), ("ll", False))
        status = yield self.tool(session_id, "status", {"process_id": process_id})
        self.assertEqual((status["status"], status["exit_code"]), ("completed", 0))
        _, messages = yield self.call(
            session_id, tool_call(5, "write", {"process_id": process_id, "data": "x"})
        )
        self.assertTrue(messages[0]["result"]["isError"])

    @inlineCallbacks
    def test_pause_resume_cancel(self):
        """pause stops the whole group, resume continues it, cancel ends it."""
        session_id, _ = yield self.initialize()
        started = yield self.tool(
            session_id, "start", {"command": "sleep 1000 & sleep 1000; wait", "shell": True}
        )
        pgid, process_id = started["pgid"], started["process_id"]
        self.ccx.groups.append(pgid)
        yield until(lambda: len(group_states(pgid)) == 3)
        yield self.tool(session_id, "pause", {"process_id": process_id})
        yield until(lambda: set(group_states(pgid)) == {"T"})
        yield self.tool(session_id, "resume", {"process_id": process_id})
        yield until(lambda: "T" not in group_states(pgid))
        result = yield self.tool(session_id, "cancel", {"process_id": process_id})
        self.assertEqual(result, {"process_id": process_id, "status": "cancelled"})
        process = self.ccx.service.node.registry.get(process_id)
        yield until(lambda: process.finished)
        self.assertEqual(ProcessGroup(pgid).members(), [])

    @inlineCallbacks
    def test_cancel_a_finished_process(self):
        """cancel is idempotent: on a finished process it succeeds, says how it ended and changes nothing."""
        session_id, _ = yield self.initialize()
        ran = yield self.tool(session_id, "execute", {"command": ["sh", "-c", "exit 4"]})
        _, messages = yield self.call(
            session_id, tool_call(3, "cancel", {"process_id": ran["process_id"]})
        )
        result = messages[0]["result"]
        self.assertFalse(result["isError"])
        self.assertEqual(
            result["structuredContent"], {"process_id": ran["process_id"], "status": "failed"}
        )
        self.assertTrue(result["content"][0]["text"].startswith("failed: exit 4 after "))
        self.assertIn("had already ended", result["content"][0]["text"])
        again = yield self.tool(session_id, "cancel", {"process_id": ran["process_id"]})
        self.assertEqual(again["status"], "failed")
        # The native control keeps its contract: a finished process is an error.
        client = yield self.ccx.connect(headers={"Authorization": f"Bearer {TOKEN}"})
        response = yield client.request(
            "control", {"process_id": ran["process_id"], "type": "CANCEL"}
        )
        self.assertIn("error", response)

    @inlineCallbacks
    def test_pty_program_is_readable(self):
        """A program on a terminal: its text shows what a terminal would, without escape sequences; pty keeps them."""
        session_id, _ = yield self.initialize()
        script = r"printf '\033[1;31mred\033[0m\n'; printf 'step 1\rstep 2\n'"
        _, messages = yield self.call(
            session_id,
            tool_call(2, "execute", {"command": ["sh", "-c", script], "pty": {"rows": 24, "cols": 80}}),
        )
        result = messages[0]["result"]
        self.assertIn("\x1b[1;31m", result["structuredContent"]["pty"])
        text = result["content"][0]["text"]
        self.assertIn("--- pty: ", text)
        self.assertIn("\nred\nstep 2", text)
        self.assertNotIn("\x1b", text)
        self.assertNotIn("\r", text)

    @inlineCallbacks
    def test_unknown_process_says_where_to_look(self):
        """An unknown id is a tool error that names the list tool; a finished one for write says so."""
        session_id, _ = yield self.initialize()
        for name in ("status", "output", "cancel", "write", "forget"):
            _, messages = yield self.call(session_id, tool_call(3, name, {"process_id": "nope"}))
            result = messages[0]["result"]
            self.assertTrue(result["isError"], name)
            self.assertIn("no process 'nope'; the list tool shows", result["content"][0]["text"])

    @inlineCallbacks
    def test_allowed_programs_named(self):
        """execute's description and a refusal name what is allowed; a word that is no program is not told --allow."""
        session_id, _ = yield self.initialize()
        _, listed = yield self.call(session_id, request(2, "tools/list"))
        [execute] = [t for t in listed[0]["result"]["tools"] if t["name"] == "execute"]
        self.assertIn("Allowed programs: cat, head, printf, seq, sh, sleep, true, yes.", execute["description"])
        _, messages = yield self.call(session_id, tool_call(3, "execute", {"command": ["id"]}))
        text = messages[0]["result"]["content"][0]["text"]
        self.assertIn("start ccx with --allow id to allow it", text)
        self.assertIn("the programs allowed are: cat, head, printf", text)
        _, messages = yield self.call(session_id, tool_call(4, "execute", {"command": "cd /tmp"}))
        text = messages[0]["result"]["content"][0]["text"]
        self.assertTrue(messages[0]["result"]["isError"])
        self.assertNotIn("--allow", text)
        self.assertIn("no program of that name exists", text)
        self.assertIn("the programs allowed are: cat, head, printf", text)

    @inlineCallbacks
    def test_event_stream_and_delete(self):
        """GET opens the session's one event stream; DELETE ends the session, its stream and its programs."""
        session_id, _ = yield self.initialize()
        started = yield self.tool(session_id, "start", {"command": ["sleep", "1000"]})
        self.ccx.groups.append(started["pgid"])
        kept = yield self.tool(
            session_id, "start", {"command": ["sleep", "1000"], "on_disconnect": "keep"}
        )
        self.ccx.groups.append(kept["pgid"])

        response = yield self.http.get(self.url, headers=self.headers(session_id, accept="application/json"))
        self.assertEqual(response.code, 406)
        yield response.content()
        stream = yield self.http.get(self.url, headers=self.headers(session_id, accept="text/event-stream"))
        self.assertEqual(stream.code, 200)
        self.assertEqual(stream.headers.getRawHeaders("content-type"), ["text/event-stream"])
        reader = EventReader()
        body = treq.collect(stream, reader)
        second = yield self.http.get(self.url, headers=self.headers(session_id, accept="text/event-stream"))
        self.assertEqual(second.code, 409)
        yield second.content()

        # The standalone stream carries what belongs to no request.
        yield self.call(session_id, request(2, "logging/setLevel", {"level": "info"}))
        registry = self.ccx.service.node.registry
        yield self.tool(session_id, "cancel", {"process_id": started["process_id"]})
        finished = yield reader.wait_for(lambda m: m.get("method") == "notifications/message")
        self.assertEqual(finished["params"]["data"]["status"], "cancelled")
        again = yield self.tool(session_id, "start", {"command": ["sleep", "1000"]})
        self.ccx.groups.append(again["pgid"])

        response = yield self.http.delete(self.url, headers=self.headers(session_id))
        self.assertEqual(response.code, 204)
        yield response.content()
        yield body
        self.assertTrue(reader.raw.startswith(b": ccx event stream\n\n"))
        process = registry.get(again["process_id"])
        yield until(lambda: process.finished)
        self.assertEqual(process.outcome, "cancelled")
        self.assertFalse(registry.get(kept["process_id"]).finished)
        response = yield self.post(request(3, "ping"), session_id)
        self.assertEqual(response.code, 404)
        yield response.content()

    @inlineCallbacks
    def test_idle_session_expires(self):
        """A session with nothing in flight and no stream ends after the idle timeout."""
        node = self.ccx.service.node
        node.config = dataclasses.replace(node.config, http_session_idle=0.2)
        session_id, _ = yield self.initialize()
        started = yield self.tool(session_id, "start", {"command": ["sleep", "1000"]})
        self.ccx.groups.append(started["pgid"])
        process = self.ccx.service.node.registry.get(started["process_id"])
        yield until(lambda: process.finished)
        self.assertEqual(process.outcome, "cancelled")
        response = yield self.post(request(3, "ping"), session_id)
        self.assertEqual(response.code, 404)
        yield response.content()

    @inlineCallbacks
    def test_session_is_a_connection(self):
        """A session is an IConnection the node holds; stopping the service closes it."""
        session_id, _ = yield self.initialize()
        resource = self.ccx.service.site.resource.children[b"mcp"]
        session = resource.sessions[session_id]
        self.assertTrue(verifyObject(IConnection, session))
        self.assertEqual(self.ccx.service.node.connections, {session})
        yield self.ccx.service.stopService()
        self.assertTrue(session.closed)
        self.assertTrue(session.session.closed)
        self.assertEqual(resource.sessions, {})
        self.assertEqual(self.ccx.service.node.connections, set())


class WebSocketMcpTests(TestCase):
    timeout = 30

    @inlineCallbacks
    def setUp(self):
        self.ccx = yield ServiceFixture(self).start()

    @inlineCallbacks
    def connect(self, protocols: Tuple[str, ...] = ("mcp",)) -> Any:
        factory = WebSocketClientFactory(self.ccx.url(), protocols=list(protocols))
        factory.protocol = Client
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.ccx.port)
        client = yield endpoint.connect(factory)
        self.ccx.clients.append(client)
        yield client.opened
        return client

    @inlineCallbacks
    def initialized(self) -> Any:
        client = yield self.connect()
        result = yield client.call("initialize", initialize_params())
        self.assertEqual(result["protocolVersion"], LATEST_VERSION)
        client.send_json({"jsonrpc": "2.0", "method": "notifications/initialized"})
        return client

    @inlineCallbacks
    def test_subprotocol(self):
        """A client that offers "mcp" gets it and no connected notification; others get the native dialect."""
        client = yield self.connect(("mcp",))
        self.assertEqual(client.websocket_protocol_in_use, "mcp")
        self.assertEqual((yield client.call("ping")), {})
        self.assertEqual([m.get("method") for m in client.messages], [None])
        native = yield self.connect(("other",))
        self.assertIsNone(native.websocket_protocol_in_use)
        connected = yield native.notification("connected")
        self.assertIn("execute", connected["capabilities"])
        response = yield native.request("tools/list")
        self.assertEqual(response["error"]["code"], -32601)

    @inlineCallbacks
    def test_initialize_first(self):
        """MCP methods before initialize are invalid requests; a second initialize too."""
        client = yield self.connect()
        response = yield client.request("tools/list")
        self.assertEqual(response["error"]["code"], -32600)
        yield client.call("initialize", initialize_params())
        response = yield client.request("initialize", initialize_params())
        self.assertEqual(response["error"]["code"], -32600)

    @inlineCallbacks
    def test_tools(self):
        """tools/list and tools/call work as over HTTP, and send no process.* notifications."""
        client = yield self.initialized()
        listed = yield client.call("tools/list")
        self.assertEqual(sorted(t["name"] for t in listed["tools"]), TOOLS)
        response = yield client.request(
            "tools/call", {"name": "execute", "arguments": {"command": "seq 3"}}
        )
        self.assertEqual(response["result"]["structuredContent"]["stdout"], "1\n2\n3\n")
        refused = yield client.call("tools/call", {"name": "execute", "arguments": {"command": "id"}})
        self.assertTrue(refused["isError"])
        self.assertEqual([m for m in client.messages if "method" in m], [])

    @inlineCallbacks
    def test_progress_and_cancel(self):
        """Progress comes over the socket; notifications/cancelled ends the program and withholds the response."""
        client = yield self.initialized()
        client.send_json(
            tool_call(
                "long", "execute", {"command": "echo ready; sleep 1000", "shell": True}, token="p"
            )
        )
        ready = yield client.wait_for(
            lambda m: m.get("method") == "notifications/progress"
            and m["params"]["message"] == "ready\n"
        )
        self.assertEqual(ready["params"]["progressToken"], "p")
        process = [p for p in self.ccx.service.node.registry.all() if p.command.argv[0] == "sh"][0]
        self.ccx.groups.append(process.pid)
        client.send_json(
            {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": "long"}}
        )
        yield until(lambda: process.finished)
        self.assertEqual(process.outcome, "cancelled")
        yield client.call("ping")
        self.assertEqual([m for m in client.messages if m.get("id") == "long"], [])

    @inlineCallbacks
    def test_native_methods_beside_mcp(self):
        """Native methods keep working on an MCP connection, with the notifications they ask for."""
        client = yield self.initialized()
        started = yield self.ccx.execute(client, {"command": "printf hi"})
        completed = yield client.notification("process.completed", started["process_id"])
        self.assertEqual(completed["status"], "completed")
        self.assertEqual(client.output(started["process_id"]), b"hi")

    @inlineCallbacks
    def test_disconnect_cancels(self):
        """Closing the WebSocket cancels what its MCP calls started."""
        client = yield self.initialized()
        started = yield client.call(
            "tools/call", {"name": "start", "arguments": {"command": ["sleep", "1000"]}}
        )
        structured = started["structuredContent"]
        self.ccx.groups.append(structured["pgid"])
        process = self.ccx.service.node.registry.get(structured["process_id"])
        yield client.close()
        yield until(lambda: process.finished)
        self.assertEqual(process.outcome, "cancelled")

    @inlineCallbacks
    def test_durable_start(self):
        """
        start with durable: true outlives the session that started it (and
        the service); with on_disconnect "cancel" it is refused.
        """
        client = yield self.initialized()
        refused = yield client.call(
            "tools/call",
            {
                "name": "start",
                "arguments": {"command": ["sleep", "1000"], "durable": True, "on_disconnect": "cancel"},
            },
        )
        self.assertTrue(refused["isError"])
        self.assertIn("'on_disconnect': 'cancel' cannot go with 'durable'", refused["content"][0]["text"])
        started = yield client.call(
            "tools/call",
            {"name": "start", "arguments": {"command": ["sleep", "1000"], "durable": True}},
        )
        structured = started["structuredContent"]
        self.ccx.groups.append(structured["pgid"])
        process = self.ccx.service.node.registry.get(structured["process_id"])
        self.assertTrue(process.options.durable)
        yield client.close()
        self.assertFalse(process.finished)
        status = (yield self.initialized())
        result = yield status.call(
            "tools/call", {"name": "status", "arguments": {"process_id": process.process_id}}
        )
        self.assertIs(result["structuredContent"]["durable"], True)
        process.cancel()
        yield process.ended


class SdkHttpTests(TestCase):
    timeout = 120
    skip = _sdk_missing()

    @inlineCallbacks
    def run_client(self, mode: str) -> Any:
        ccx = yield ServiceFixture(self, token=TOKEN).start()
        out, err, code = yield getProcessOutputAndValue(
            sys.executable,
            [HTTP_CLIENT, f"http://127.0.0.1:{ccx.port}/mcp", TOKEN, mode],
            env=dict(os.environ, PYTHONWARNINGS="ignore"),
            reactor=reactor,
        )
        self.assertEqual(code, 0, err.decode())
        lines = out.decode().splitlines()
        self.assertRegex(lines[4], r"^progress: \d+ increasing notifications")
        return lines

    def expected(self, first: str, lines: List[str]) -> List[str]:
        return [
            first,
            "tools: " + " ".join(TOOLS),
            "execute: completed, exit 0, 2 lines",
            "refused: isError, not on the allow-list",
            lines[4],
            "logging: started and finished messages",
            "cancel: the program and its children are gone",
            "start + output wait_seconds + wait: exit 5",
            "cancel after the end: its final status",
        ]

    @inlineCallbacks
    def test_official_client(self):
        """The official SDK in its default mode takes server/discover: the stateless era, all the checks."""
        lines = yield self.run_client("auto")
        self.assertEqual(lines, self.expected("discover: 2026-07-28 ccx", lines))

    @inlineCallbacks
    def test_official_client_handshake(self):
        """The same SDK forced to the handshake era: initialize at 2025-11-25, all the checks."""
        lines = yield self.run_client("legacy")
        self.assertEqual(lines, self.expected("initialize: 2025-11-25 ccx", lines))


# -- units -------------------------------------------------------------------


class NegotiationTests(TestCase):
    def test_negotiate(self):
        """A supported version is answered as asked; anything else with the newest."""
        for version in SUPPORTED_VERSIONS:
            self.assertEqual(negotiate(version), version)
        self.assertEqual(negotiate("2026-07-28"), "2025-11-25")
        self.assertEqual(negotiate("x"), "2025-11-25")

    def test_at_least(self):
        self.assertTrue(at_least("2025-11-25", "2025-06-18"))
        self.assertTrue(at_least("2025-06-18", "2025-06-18"))
        self.assertFalse(at_least("2025-03-26", "2025-06-18"))
        self.assertFalse(at_least(None, "2024-11-05"))


@implementer(INotificationChannel)
class FakeChannel:
    def __init__(self) -> None:
        self.writable = True
        self.sent: List[Tuple[str, dict]] = []

    def send_notification(self, method: str, params: dict) -> None:
        self.sent.append((method, params))

    @property
    def messages(self) -> List[Tuple[Any, str]]:
        return [(p["progress"], p["message"]) for _, p in self.sent]


class ProgressReporterTests(TestCase):
    def setUp(self):
        self.clock = Clock()
        self.channel = FakeChannel()
        self.output = ProcessOutput("p", 100, 100, blocking=False)
        self.reporter = ProgressReporter(self.channel, "tok", self.clock, interval=1.0)
        self.reporter.subscription = self.output.subscribe(self.reporter, blocking=False)
        self.reporter.subscription.activate()

    def test_interface(self):
        self.assertTrue(verifyObject(IOutputSink, self.reporter))

    def test_rate(self):
        """Output is reported in a moment, then at most once per interval, all of it, in order."""
        self.reporter.announce("started")
        self.assertEqual(self.channel.messages, [(0, "started")])
        self.output.receive("stdout", b"a", 0)
        self.output.receive("stderr", b"b", 0)
        self.clock.advance(0.5)
        self.assertEqual(len(self.channel.sent), 1)
        self.clock.advance(0.5)
        self.assertEqual(self.channel.messages[1:], [(2, "ab")])
        self.output.receive("stdout", b"c", 0)
        self.clock.advance(0.5)
        self.assertEqual(len(self.channel.sent), 2)
        self.clock.advance(0.5)
        self.assertEqual(self.channel.messages[2:], [(3, "c")])
        self.clock.advance(5)
        self.output.receive("stdout", b"d", 0)
        self.clock.advance(0)
        self.assertEqual(self.channel.messages[3:], [(4, "d")])
        self.assertEqual({p["progressToken"] for _, p in self.channel.sent}, {"tok"})

    def test_channel_back_pressure(self):
        """While the channel cannot take more nothing is sent; what it missed is reported as skipped."""
        self.channel.writable = False
        self.output.receive("stdout", b"x" * 150, 0)
        self.clock.advance(10)
        self.assertEqual(self.channel.sent, [])
        self.channel.writable = True
        self.output.pump(self.reporter.subscription)
        self.clock.advance(0)
        [(progress, message)] = self.channel.messages
        self.assertEqual(progress, 150)
        self.assertIn("[50 bytes of stdout skipped]", message)
        self.assertTrue(message.endswith("x" * 100))

    def test_finish_and_close(self):
        """finish sends what is left at once; after it nothing more is sent."""
        self.reporter.announce("started")
        self.output.receive("stdout", b"last", 0)
        self.reporter.finish()
        self.assertEqual(self.channel.messages, [(0, "started"), (4, "last")])
        self.output.receive("stdout", b"more", 0)
        self.clock.advance(10)
        self.assertEqual(len(self.channel.sent), 2)
        self.assertEqual(self.clock.getDelayedCalls(), [])


    def test_long_output_keeps_its_tail(self):
        """
        Output taken within one moment shows its last MAX_MESSAGE characters,
        after an ellipsis only when more came; no more than that is kept.
        """
        for size, message in (
            (MAX_MESSAGE, "y" * MAX_MESSAGE),
            (MAX_MESSAGE + 1, "\u2026" + "y" * MAX_MESSAGE),
            (100000, "\u2026" + "y" * MAX_MESSAGE),
        ):
            clock = Clock()
            channel = FakeChannel()
            output = ProcessOutput("p", 10**6, 10**6, blocking=False)
            reporter = ProgressReporter(channel, "tok", clock)
            reporter.subscription = output.subscribe(reporter, blocking=False)
            reporter.subscription.activate()
            for start in range(0, size, 1000):
                output.receive("stdout", b"y" * min(1000, size - start), 0)
            self.assertLess(reporter._pending_chars, MAX_MESSAGE + 1000)
            clock.advance(0)
            self.assertEqual(channel.messages, [(size, message)])


class ReadTextTests(TestCase):
    def test_utf8_boundaries(self):
        """Reads never split a character: the start skips a cut one, the end stops before one."""
        buffer = StreamBuffer(4, 100)
        buffer.append("aé€".encode("utf-8"), 0)  # 1 + 2 + 3 bytes; the first 2 are evicted
        buffer.evict()
        self.assertEqual(buffer.start, 2)
        self.assertEqual(read_text(buffer, 0, 100), (3, "€", 6))
        buffer = StreamBuffer(100, 100)
        buffer.append("é€".encode("utf-8"), 0)
        self.assertEqual(read_text(buffer, 0, 4), (0, "é", 2))
        self.assertEqual(read_text(buffer, 2, 100), (2, "€", 5))
        buffer.append(b"\xe2", 0)
        self.assertEqual(read_text(buffer, 5, 100), (5, "", 5))
        buffer.close()
        self.assertEqual(read_text(buffer, 5, 100), (5, "\ufffd", 6))

    def test_closed_stream_read_in_pages(self):
        """Once the stream has ended, a page that stops inside a character still stops before it."""
        buffer = StreamBuffer(100, 100)
        buffer.append("é€".encode("utf-8"), 0)
        buffer.close()
        self.assertEqual(read_text(buffer, 0, 4), (0, "é", 2))
        self.assertEqual(read_text(buffer, 2, 2), (2, "", 2))
        self.assertEqual(read_text(buffer, 2, 3), (2, "€", 5))


def cut_server_connections(port: int) -> int:
    """
    Drop every server-side connection of the service on C{port} the way the
    reactor does when it stops (C{disconnectAll}): what Twisted still holds
    for them is never sent.

    @return: how many were dropped.
    """
    from twisted.internet import main, tcp
    from twisted.python.failure import Failure

    cut = 0
    for selectable in set(reactor.getReaders()) | set(reactor.getWriters()):
        if isinstance(selectable, tcp.Server) and selectable.getHost().port == port:
            reactor.removeReader(selectable)
            reactor.removeWriter(selectable)
            selectable.connectionLost(Failure(main.CONNECTION_LOST))
            cut += 1
    return cut


class HttpShutdownTests(HttpTestCase):
    """
    When the service stops, MCP clients over HTTP get their calls' last
    progress and answers and their event streams end cleanly, before the
    reactor stops (which cuts whatever connection is left).
    """

    @inlineCallbacks
    def test_answers_flushed_before_the_reactor_stops(self):
        """stopService fires only once the answer (the program cancelled) and the end of the event stream were sent."""
        yield self.start()
        session_id, _ = yield self.initialize()
        stream = yield self.http.get(self.url, headers=self.headers(session_id, accept="text/event-stream"))
        events = EventReader()
        stream_body = treq.collect(stream, events)
        response = yield self.post(
            tool_call(7, "execute", {"command": ["sh", "-c", "echo hi; exec sleep 1000"]}, token=1),
            session_id,
        )
        answer = EventReader()
        answer_body = treq.collect(response, answer)
        started = yield answer.wait_for(lambda m: m.get("method") == "notifications/progress")
        self.ccx.groups.append(int(re.search(r"pid (\d+)", started["params"]["message"]).group(1)))
        # Its output has been read: the answer must carry it.
        yield answer.wait_for(
            lambda m: m.get("method") == "notifications/progress"
            and m["params"]["message"].startswith("hi")
        )
        stopped = self.ccx.service.stopService()
        # As the reactor would once the service has stopped.
        stopped.addCallback(lambda _: cut_server_connections(self.ccx.port))
        cut = yield stopped
        self.assertEqual(cut, 0, "connections left for the reactor to cut")
        yield answer_body
        [result] = [m for m in answer.messages if m.get("id") == 7]
        self.assertEqual(result["result"]["structuredContent"]["status"], "cancelled")
        self.assertEqual(result["result"]["structuredContent"]["stdout"], "hi\n")
        yield stream_body
        self.assertTrue(events.raw.startswith(b": ccx event stream\n\n"))
