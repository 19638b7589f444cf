"""
Programs as MCP tasks, with raw JSON-RPC over Streamable HTTP: the
stateless era's extension io.modelcontextprotocol/tasks and the handshake
era's experimental tasks (2025-11-25).  A task is a ccx process: its result
equals a plain execute's, tasks/cancel ends its whole group, and it is
fetched from another connection after the first one went.
"""

from typing import Any, Dict

from twisted.internet.defer import inlineCallbacks

from ccx.process.group import group_states
from tests.support import until
from tests.test_mcp import HttpTestCase, request, tool_call
from tests.test_mcp_stateless import envelope

TASKS = {"extensions": {"io.modelcontextprotocol/tasks": {}}}


def stateless_call(request_id: Any, method: str, params: Dict[str, Any], tasks: bool = True) -> dict:
    meta = envelope()
    if tasks:
        meta["io.modelcontextprotocol/clientCapabilities"] = TASKS
    return request(request_id, method, dict(params, _meta=meta))


def comparable(result: Dict[str, Any]) -> Dict[str, Any]:
    """
    A tool result without what differs between two runs of one program.
    """
    out = dict(result["structuredContent"], process_id=None, duration=None)
    text = result["content"][0]["text"].splitlines()
    return {"structured": out, "text": text[2:], "first": text[0].split(" after ")[0]}


class StatelessTaskTests(HttpTestCase):
    def setUp(self):
        return self.start()

    @inlineCallbacks
    def send(self, message: dict) -> Any:
        params = message["params"]
        name = params.get("name", params.get("taskId"))
        headers = {"MCP_Protocol_Version": "2026-07-28", "Mcp_Method": message["method"]}
        if name is not None:
            headers["Mcp_Name"] = name
        response = yield self.post(message, **headers)
        body = yield response.json()
        return response.code, body

    @inlineCallbacks
    def test_task_result_equals_execute(self):
        """A declaring client's execute is a task at once; once it ended, tasks/get holds execute's result."""
        arguments = {"command": ["sh", "-c", "echo out; echo err >&2; exit 2"]}
        _, created = yield self.send(
            stateless_call(1, "tools/call", {"name": "execute", "arguments": arguments})
        )
        task = created["result"]
        self.assertEqual(task["resultType"], "task")
        self.assertIn(task["status"], ("working", "completed"))
        self.assertEqual(task["pollIntervalMs"], 1000)
        process = self.ccx.service.node.registry.get(task["taskId"])
        yield until(lambda: process.finished)
        _, got = yield self.send(stateless_call(2, "tasks/get", {"taskId": task["taskId"]}))
        got = got["result"]
        self.assertEqual((got["resultType"], got["status"]), ("complete", "completed"))
        self.assertTrue(got["statusMessage"].startswith("failed: exit 2 after"))
        self.assertIsInstance(got["ttlMs"], int)
        _, plain = yield self.send(
            stateless_call(3, "tools/call", {"name": "execute", "arguments": arguments}, tasks=False)
        )
        self.assertEqual(comparable(got["result"]), comparable(plain["result"]))

    @inlineCallbacks
    def test_status_message_while_working(self):
        """While it runs: working, how long, the bytes so far and its last line."""
        arguments = {"command": "echo first; echo second; exec sleep 1000", "shell": True}
        _, created = yield self.send(
            stateless_call(1, "tools/call", {"name": "execute", "arguments": arguments})
        )
        task_id = created["result"]["taskId"]
        process = self.ccx.service.node.registry.get(task_id)
        self.ccx.groups.append(process.pid)
        yield until(lambda: process.output.totals()["stdout"] == 13)
        _, got = yield self.send(stateless_call(2, "tasks/get", {"taskId": task_id}))
        self.assertEqual(got["result"]["status"], "working")
        self.assertRegex(
            got["result"]["statusMessage"],
            r"^running for [\d.]+ s; stdout 13 bytes, stderr 0 bytes; last line: second$",
        )
        _, cancelled = yield self.send(stateless_call(3, "tasks/cancel", {"taskId": task_id}))
        self.assertEqual(cancelled["result"], {"resultType": "complete", "_meta": cancelled["result"]["_meta"]})
        yield until(lambda: process.finished)

    @inlineCallbacks
    def test_cancel_ends_the_group(self):
        """tasks/cancel mid-run ends the program and everything it started; the task says cancelled."""
        arguments = {"command": "sleep 1000 & sleep 1000; wait", "shell": True}
        _, created = yield self.send(
            stateless_call(1, "tools/call", {"name": "execute", "arguments": arguments})
        )
        task_id = created["result"]["taskId"]
        process = self.ccx.service.node.registry.get(task_id)
        pgid = process.pid
        self.ccx.groups.append(pgid)
        yield until(lambda: len(group_states(pgid)) == 3)
        yield self.send(stateless_call(2, "tasks/cancel", {"taskId": task_id}))
        yield until(lambda: process.finished)
        self.assertEqual(group_states(pgid), [])
        _, got = yield self.send(stateless_call(3, "tasks/get", {"taskId": task_id}))
        self.assertEqual(got["result"]["status"], "cancelled")
        self.assertNotIn("result", got["result"])

    @inlineCallbacks
    def test_refusals(self):
        """Without the extension: a plain result, and tasks/* are -32021; an unknown task is -32602."""
        _, plain = yield self.send(
            stateless_call(1, "tools/call", {"name": "execute", "arguments": {"command": ["true"]}}, tasks=False)
        )
        self.assertEqual(plain["result"]["resultType"], "complete")
        code, refused = yield self.send(
            stateless_call(2, "tasks/get", {"taskId": plain["result"]["structuredContent"]["process_id"]}, tasks=False)
        )
        self.assertEqual((code, refused["error"]["code"]), (400, -32021))
        self.assertEqual(
            refused["error"]["data"]["requiredCapabilities"], TASKS
        )
        code, unknown = yield self.send(stateless_call(3, "tasks/get", {"taskId": "nope"}))
        self.assertEqual((code, unknown["error"]["code"]), (400, -32602))
        self.assertIn("no task 'nope'", unknown["error"]["message"])
        # A refused program is no task: the call answers its tool error.
        _, failed = yield self.send(
            stateless_call(4, "tools/call", {"name": "execute", "arguments": {"command": ["id"]}})
        )
        self.assertTrue(failed["result"]["isError"])
        _, update = yield self.send(
            stateless_call(5, "tasks/update", {"taskId": plain["result"]["structuredContent"]["process_id"], "inputResponses": {}})
        )
        self.assertEqual(update["result"]["resultType"], "complete")


class HandshakeTaskTests(HttpTestCase):
    def setUp(self):
        return self.start()

    @inlineCallbacks
    def test_experimental_tasks(self):
        """2025-11-25: execute advertises taskSupport; params.task gives a task; tasks/result and tasks/list; cancel of an ended task is -32602."""
        session_id, _ = yield self.initialize()
        _, listed = yield self.call(session_id, request(2, "tools/list"))
        [execute] = [t for t in listed[0]["result"]["tools"] if t["name"] == "execute"]
        self.assertEqual(execute["execution"], {"taskSupport": "optional"})
        message = tool_call(3, "execute", {"command": ["printf", "hi"]})
        message["params"]["task"] = {"ttl": 60000}
        _, created = yield self.call(session_id, message)
        task = created[0]["result"]["task"]
        self.assertEqual(task["pollInterval"], 1000)
        _, result = yield self.call(session_id, request(4, "tasks/result", {"taskId": task["taskId"]}))
        result = result[0]["result"]
        self.assertEqual(result["structuredContent"]["stdout"], "hi")
        self.assertEqual(result["_meta"]["io.modelcontextprotocol/related-task"], {"taskId": task["taskId"]})
        _, got = yield self.call(session_id, request(5, "tasks/get", {"taskId": task["taskId"]}))
        self.assertEqual(got[0]["result"]["status"], "completed")
        _, tasks = yield self.call(session_id, request(6, "tasks/list"))
        self.assertIn(task["taskId"], [t["taskId"] for t in tasks[0]["result"]["tasks"]])
        _, again = yield self.call(session_id, request(7, "tasks/cancel", {"taskId": task["taskId"]}))
        self.assertEqual(again[0]["error"]["code"], -32602)

    @inlineCallbacks
    def test_older_versions_have_no_tasks(self):
        """At 2025-06-18 there is no taskSupport and tasks/list is not a method."""
        session_id, _ = yield self.initialize("2025-06-18")
        _, listed = yield self.call(session_id, request(2, "tools/list"))
        self.assertNotIn("execution", listed[0]["result"]["tools"][0])
        response = yield self.post(request(3, "tasks/list"), session_id)
        self.assertEqual((yield response.json())["error"]["code"], -32601)

    @inlineCallbacks
    def test_task_outlives_its_session(self):
        """A task started in a session that then ends runs on; a new session fetches its result."""
        first, _ = yield self.initialize()
        message = tool_call(2, "execute", {"command": "echo begun; exec sleep 1000", "shell": True})
        message["params"]["task"] = {}
        _, created = yield self.call(first, message)
        task_id = created[0]["result"]["task"]["taskId"]
        process = self.ccx.service.node.registry.get(task_id)
        self.ccx.groups.append(process.pid)
        response = yield self.http.delete(self.url, headers=self.headers(first))
        self.assertEqual(response.code, 204)
        yield response.content()
        self.assertFalse(process.finished)
        second, _ = yield self.initialize()
        _, got = yield self.call(second, request(3, "tasks/get", {"taskId": task_id}))
        self.assertEqual(got[0]["result"]["status"], "working")
        self.client_waits = self.call(second, request(4, "tasks/result", {"taskId": task_id}))
        _, cancelled = yield self.call(second, request(5, "tasks/cancel", {"taskId": task_id}))
        self.assertEqual(cancelled[0]["result"]["status"], "cancelled")
        _, result = yield self.client_waits
        out = result[0]["result"]["structuredContent"]
        self.assertEqual((out["stdout"], out["status"]), ("begun\n", "cancelled"))
        self.assertEqual(group_states(process.pid), [])
