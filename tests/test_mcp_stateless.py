"""
The stateless era (MCP 2026-07-28) beside the handshake era: server/discover,
the per-request envelope in _meta, the routing headers, resultType, the
refusal of an unknown version with the list ccx speaks; over /mcp with raw
requests and over the WebSocket subprotocol mcp.
"""

import json
from typing import Any, Optional

import treq
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from tests.support import ServiceFixture, until
from tests.test_mcp import TOKEN, EventReader, HttpTestCase, request

MODERN = "2026-07-28"


def envelope(version: str = MODERN, **extra: Any) -> dict:
    meta = {
        "io.modelcontextprotocol/protocolVersion": version,
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "ccx-tests", "version": "0"},
    }
    meta.update(extra)
    return meta


def modern(request_id: Any, method: str, params: Optional[dict] = None, **meta: Any) -> dict:
    params = dict(params or {})
    params["_meta"] = envelope(**meta)
    return request(request_id, method, params)


class StatelessHttpTests(HttpTestCase):
    def setUp(self):
        return self.start()

    def send(self, message: dict, name: Optional[str] = None, **headers: str) -> Any:
        """
        POST a stateless-era request with the routing headers it needs
        (each overridable; None leaves one out).
        """
        params = message.get("params") or {}
        version = params.get("_meta", {}).get("io.modelcontextprotocol/protocolVersion")
        chosen = {"MCP_Protocol_Version": version, "Mcp_Method": message.get("method")}
        if name is not None:
            chosen["Mcp_Name"] = name
        chosen.update(headers)
        return self.post(message, **{k: v for k, v in chosen.items() if v is not None})

    @inlineCallbacks
    def answer(self, response: Any) -> Any:
        kind = response.headers.getRawHeaders("content-type")[0]
        if kind == "application/json":
            return [(yield response.json())]
        reader = EventReader()
        yield treq.collect(response, reader)
        return reader.messages

    @inlineCallbacks
    def test_discover(self):
        """server/discover needs no session, opens none, and says what ccx speaks and offers."""
        response = yield self.send(modern(1, "server/discover"))
        self.assertEqual(response.code, 200)
        self.assertIsNone(response.headers.getRawHeaders("mcp-session-id"))
        result = (yield response.json())["result"]
        self.assertEqual(result["supportedVersions"], [MODERN])
        self.assertEqual(result["resultType"], "complete")
        self.assertEqual(result["_meta"]["io.modelcontextprotocol/serverInfo"]["name"], "ccx")
        self.assertEqual(result["capabilities"]["extensions"], {"io.modelcontextprotocol/tasks": {}})
        self.assertIn("tools", result["capabilities"])
        self.assertIn("sleep", result["instructions"])
        self.assertEqual((result["cacheScope"], result["ttlMs"]), ("private", 0))

    @inlineCallbacks
    def test_unsupported_version(self):
        """An unknown version, and a handshake-era one without a handshake, get -32022 and the list."""
        for version in ("2026-07-29", "2025-11-25"):
            response = yield self.send(modern(1, "server/discover", version=version))
            self.assertEqual(response.code, 400)
            error = (yield response.json())["error"]
            self.assertEqual(error["code"], -32022)
            self.assertEqual(error["data"]["requested"], version)
            self.assertEqual(error["data"]["supported"][:2], [MODERN, "2025-11-25"])

    @inlineCallbacks
    def test_envelope_required(self):
        """Without the client's capabilities, or with a version that is no string: -32602."""
        message = modern(1, "tools/list")
        del message["params"]["_meta"]["io.modelcontextprotocol/clientCapabilities"]
        response = yield self.send(message)
        self.assertEqual(response.code, 400)
        self.assertEqual((yield response.json())["error"]["code"], -32602)
        message = modern(1, "tools/list", version=20260728)
        response = yield self.send(message, MCP_Protocol_Version=MODERN)
        self.assertEqual(response.code, 400)
        self.assertEqual((yield response.json())["error"]["code"], -32602)

    @inlineCallbacks
    def test_routing_headers(self):
        """Each routing header must repeat the body; each one just off is -32020; all right is answered."""
        call = modern(1, "tools/call", {"name": "list", "arguments": {}})
        for headers in (
            {"MCP_Protocol_Version": None},
            {"MCP_Protocol_Version": "2026-07-27"},
            {"Mcp_Method": "tools/list"},
            {"Mcp_Method": None},
        ):
            response = yield self.send(call, "list", **headers)
            self.assertEqual(response.code, 400, headers)
            self.assertEqual((yield response.json())["error"]["code"], -32020, headers)
        response = yield self.send(call, "lis")
        self.assertEqual((yield response.json())["error"]["code"], -32020)
        response = yield self.send(call, "=?base64?bGlzdA==?=")
        self.assertEqual(response.code, 200)
        yield response.content()
        response = yield self.send(call, "list")
        self.assertEqual(response.code, 200)
        result = (yield response.json())["result"]
        self.assertEqual(result["resultType"], "complete")
        self.assertIn("processes", result["structuredContent"])

    @inlineCallbacks
    def test_tools(self):
        """tools/list and a tools/call of execute, each on its own, with resultType."""
        response = yield self.send(modern(1, "tools/list"))
        listed = (yield response.json())["result"]
        self.assertEqual(listed["resultType"], "complete")
        self.assertIn("outputSchema", listed["tools"][0])
        call = modern(2, "tools/call", {"name": "execute", "arguments": {"command": "seq 2"}})
        response = yield self.send(call, "execute")
        result = (yield response.json())["result"]
        self.assertEqual(result["structuredContent"]["stdout"], "1\n2\n")
        self.assertTrue(result["content"][0]["text"].startswith("completed: exit 0 after"))
        self.assertEqual(result["resultType"], "complete")

    @inlineCallbacks
    def test_errors_have_their_status(self):
        """An unknown method is 404, an unknown tool 400, both JSON-RPC errors."""
        response = yield self.send(modern(1, "no/such"))
        self.assertEqual(response.code, 404)
        self.assertEqual((yield response.json())["error"]["code"], -32601)
        call = modern(2, "tools/call", {"name": "nope", "arguments": {}})
        response = yield self.send(call, "nope")
        self.assertEqual(response.code, 400)
        self.assertEqual((yield response.json())["error"]["code"], -32602)

    @inlineCallbacks
    def test_log_level_per_request(self):
        """A request asks for log messages in its own _meta; the next one, without, gets none."""
        call = modern(
            1,
            "tools/call",
            {"name": "execute", "arguments": {"command": ["true"]}},
            **{"io.modelcontextprotocol/logLevel": "info"},
        )
        messages = yield self.answer((yield self.send(call, "execute")))
        events = [m["params"]["data"]["event"] for m in messages if m.get("method") == "notifications/message"]
        self.assertEqual(events, ["started", "finished"])
        call = modern(2, "tools/call", {"name": "execute", "arguments": {"command": ["true"]}})
        messages = yield self.answer((yield self.send(call, "execute")))
        self.assertEqual(len(messages), 1)

    @inlineCallbacks
    def test_programs_outlive_the_request(self):
        """start's program runs on after its request is answered (no session holds it), even with on_disconnect cancel."""
        call = modern(
            1,
            "tools/call",
            {"name": "start", "arguments": {"command": ["sleep", "1000"], "on_disconnect": "cancel"}},
        )
        response = yield self.send(call, "start")
        started = (yield response.json())["result"]["structuredContent"]
        self.ccx.groups.append(started["pgid"])
        process = self.ccx.service.node.registry.get(started["process_id"])
        call = modern(2, "tools/call", {"name": "status", "arguments": {"process_id": started["process_id"]}})
        response = yield self.send(call, "status")
        self.assertEqual((yield response.json())["result"]["structuredContent"]["status"], "running")
        self.assertFalse(process.finished)
        process.cancel()
        yield until(lambda: process.finished)

    @inlineCallbacks
    def test_notifications_get_and_delete(self):
        """A notification is accepted (202); GET and DELETE have no stateless form (405)."""
        note = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 1}}
        response = yield self.post(note, MCP_Protocol_Version=MODERN, Mcp_Method="notifications/cancelled")
        self.assertEqual(response.code, 202)
        response = yield self.post(note, MCP_Protocol_Version="2027-01-01")
        self.assertEqual(response.code, 400)
        self.assertEqual((yield response.json())["error"]["code"], -32022)
        for method in ("GET", "DELETE"):
            response = yield self.http.request(
                method, self.url, headers=self.headers(MCP_Protocol_Version=MODERN)
            )
            self.assertEqual(response.code, 405, method)
            self.assertEqual(response.headers.getRawHeaders("allow"), ["POST"])
            yield response.content()

    @inlineCallbacks
    def test_handshake_era_still_works(self):
        """initialize and a session work beside the stateless era, unchanged."""
        session_id, result = yield self.initialize()
        self.assertEqual(result["protocolVersion"], "2025-11-25")
        self.assertNotIn("resultType", result)
        _, messages = yield self.call(session_id, request(2, "tools/list"))
        self.assertNotIn("resultType", messages[0]["result"])


class StatelessWebSocketTests(TestCase):
    timeout = 30

    @inlineCallbacks
    def test_no_handshake_needed(self):
        """Over the WebSocket subprotocol mcp (and so the stdio bridge) a request with an envelope needs no initialize."""
        ccx = yield ServiceFixture(self, token=TOKEN).start()
        client = yield ccx.connect(headers={"Authorization": f"Bearer {TOKEN}"}, protocols=("mcp",))
        found = yield client.call("server/discover", {"_meta": envelope()})
        self.assertEqual(found["supportedVersions"], [MODERN])
        response = yield client.request(
            "tools/call", {"name": "execute", "arguments": {"command": "seq 1"}, "_meta": envelope()}
        )
        self.assertEqual(response["result"]["structuredContent"]["stdout"], "1\n")
        self.assertEqual(response["result"]["resultType"], "complete")
        refused = yield client.request("tools/list", {"_meta": envelope(version="9")})
        self.assertEqual(refused["error"]["code"], -32022)
        # Without an envelope, the handshake era's rule holds.
        response = yield client.request("tools/list")
        self.assertEqual(response["error"]["code"], -32600)
        self.assertEqual(json.loads(json.dumps(found))["resultType"], "complete")
