"""
The C{forget} method (native) and tool (MCP): a finished process's record,
held output and journal go at once; a live one is refused.
"""

import os

from autobahn.twisted.websocket import WebSocketClientFactory
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.trial.unittest import TestCase

from tests.support import Client, ServiceFixture
from tests.test_mcp import initialize_params


class ForgetTests(TestCase):
    timeout = 30

    @inlineCallbacks
    def setUp(self):
        self.ccx = yield ServiceFixture(self).start()
        self.registry = self.ccx.service.node.registry

    @inlineCallbacks
    def finished(self, client):
        result = yield self.ccx.execute(client, {"command": ["sh", "-c", "echo kept"]})
        yield client.notification("process.completed", result["process_id"])
        return result["process_id"]

    @inlineCallbacks
    def test_forget_finished(self):
        """A finished process is forgotten with its journal; list no longer shows it."""
        client = yield self.ccx.connect()
        process_id = yield self.finished(client)
        directory = self.registry.state_dir.directory(process_id)
        self.assertTrue(os.path.isdir(directory))
        result = yield client.call("forget", {"process_id": process_id})
        self.assertEqual(result, {"process_id": process_id, "status": "forgotten"})
        self.assertFalse(os.path.exists(directory))
        listed = yield client.call("list", {})
        self.assertEqual(listed["processes"], [])
        # Forgotten: a second forget does not find it.
        response = yield client.request("forget", {"process_id": process_id})
        self.assertEqual(response["error"]["code"], -32003)

    @inlineCallbacks
    def test_forget_live_refused(self):
        """A live process is refused with -32004 and runs on; so is a paused one."""
        client = yield self.ccx.connect()
        result = yield self.ccx.execute(client, {"command": ["sleep", "1000"]})
        process_id = result["process_id"]
        yield client.call("control", {"type": "PAUSE", "process_id": process_id})
        response = yield client.request("forget", {"process_id": process_id})
        self.assertEqual(response["error"]["code"], -32004)
        self.assertIn("still running", response["error"]["message"])
        self.assertIsNotNone(self.registry.find(process_id))
        yield client.call("control", {"type": "CANCEL", "process_id": process_id})
        yield client.notification("process.completed", process_id)
        yield client.call("forget", {"process_id": process_id})
        self.assertIsNone(self.registry.find(process_id))

    @inlineCallbacks
    def test_forget_bad_params(self):
        """No process_id, or another member: -32602."""
        client = yield self.ccx.connect()
        for params in ({}, {"process_id": "x", "extra": 1}):
            response = yield client.request("forget", params)
            self.assertEqual(response["error"]["code"], -32602, params)

    @inlineCallbacks
    def test_mcp_tool(self):
        """The MCP forget tool: structured result; a live process is a tool error."""
        native = yield self.ccx.connect()
        process_id = yield self.finished(native)
        live = yield self.ccx.execute(native, {"command": ["sleep", "1000"]})
        factory = WebSocketClientFactory(self.ccx.url(), protocols=["mcp"])
        factory.protocol = Client
        client = yield TCP4ClientEndpoint(reactor, "127.0.0.1", self.ccx.port).connect(factory)
        self.ccx.clients.append(client)
        yield client.opened
        yield client.call("initialize", initialize_params())
        client.send_json({"jsonrpc": "2.0", "method": "notifications/initialized"})
        result = yield client.call(
            "tools/call", {"name": "forget", "arguments": {"process_id": process_id}}
        )
        self.assertFalse(result.get("isError"))
        self.assertEqual(
            result["structuredContent"], {"process_id": process_id, "status": "forgotten"}
        )
        self.assertIsNone(self.registry.find(process_id))
        result = yield client.call(
            "tools/call", {"name": "forget", "arguments": {"process_id": live["process_id"]}}
        )
        self.assertTrue(result["isError"])
        self.assertIn("still running", result["content"][0]["text"])
        yield native.call("control", {"type": "CANCEL", "process_id": live["process_id"]})
