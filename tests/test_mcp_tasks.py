"""
Programs as MCP tasks, with raw JSON-RPC over Streamable HTTP: the
stateless era's extension io.modelcontextprotocol/tasks and the handshake
era's experimental tasks (2025-11-25).  A task is a ccx process: its result
equals a plain execute's, tasks/cancel ends its whole group, and it is
fetched from another connection after the first one went.
"""

import json
import os
from typing import Any, Dict, Optional

from treq.client import HTTPClient
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.trial.unittest import TestCase as TrialTestCase
from twisted.web.client import Agent, HTTPConnectionPool

from ccx.journal.record import Record, read_record
from ccx.journal.statedir import PROGRAMS
from ccx.mcp.tasks import RELATED_TASK_KEY
from ccx.process.group import group_states
from ccx.testing.polling import until as until_on
from ccx.testing.service import ServiceProcess
from tests.support import program, until
from tests.test_durable import ServiceRestarts, waiting_for
from tests.test_mcp import TOKEN, HttpTestCase, initialize_params, mcp_headers, request, tool_call
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


class DurableTaskTests(ServiceRestarts, TrialTestCase):
    """
    A durable task (C{durable: true} on a task-augmented C{execute}) with a
    real twistd: it outlives a SIGKILL or a stop of ccx, and the next start
    reports it to a new connection with the result a plain execute gives.
    """

    async def start_service(self, **settings: Any) -> ServiceProcess:
        token_file = os.path.abspath(self.mktemp())
        with open(token_file, "w") as f:
            f.write(TOKEN)
        service = await super().start_service(token_file=token_file, **settings)
        pool = HTTPConnectionPool(reactor, persistent=False)
        self.addCleanup(pool.closeCachedConnections)
        self.http = HTTPClient(Agent(reactor, pool=pool))
        self.url = f"http://127.0.0.1:{service.port}/mcp"
        return service

    async def post(self, message: dict, session_id: Optional[str] = None, **headers: str) -> Any:
        response = await self.http.post(
            self.url, data=json.dumps(message).encode(), headers=mcp_headers(session_id, **headers)
        )
        return response, await response.json()

    async def send(self, message: dict) -> Dict[str, Any]:
        """
        A stateless-era request, on a connection of its own; its result.
        """
        params = message["params"]
        headers = {"MCP_Protocol_Version": "2026-07-28", "Mcp_Method": message["method"]}
        if "name" in params or "taskId" in params:
            headers["Mcp_Name"] = params.get("name", params.get("taskId"))
        response, body = await self.post(message, **headers)
        self.assertEqual(response.code, 200, body)
        return body["result"]

    async def initialize(self) -> str:
        response, _ = await self.post(request(1, "initialize", initialize_params("2025-11-25")))
        session_id = response.headers.getRawHeaders("mcp-session-id")[0]
        response = await self.http.post(
            self.url,
            data=json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}).encode(),
            headers=mcp_headers(session_id),
        )
        self.assertEqual(response.code, 202)
        await response.content()
        return session_id

    async def call(self, session_id: str, message: dict) -> Dict[str, Any]:
        _, body = await self.post(message, session_id)
        return body

    def arguments(self, script: str, **more: Any) -> Dict[str, Any]:
        return {"command": [program("sh"), "-c", script], "cwd": self.flags, **more}

    def record(self, task_id: str) -> Record:
        """
        The program's record in the state dir: a durable one is noted
        there, with its process group.
        """
        record = read_record(os.path.join(self.state_dir, PROGRAMS, task_id))
        self.groups.append(record.pid)
        return record

    async def test_stateless_task_across_sigkill(self):
        """
        SIGKILL ccx while a durable task runs: the next ccx answers tasks/get
        from a new connection (working, then completed when it ends), with
        the CallToolResult a plain execute gives.
        """
        first = await self.start_service()
        script = f"echo before; {waiting_for('go')}; echo after >&2; exit 5"
        task = await self.send(
            stateless_call(1, "tools/call", {"name": "execute", "arguments": self.arguments(script, durable=True)})
        )
        self.assertEqual(task["resultType"], "task")
        task_id = task["taskId"]
        self.assertTrue(self.record(task_id).durable)
        await until_on(reactor, lambda: self.journaled(task_id) == len(b"before\n"), what="its first line")
        await self.kill(first)

        await self.start_service()
        got = await self.send(stateless_call(2, "tasks/get", {"taskId": task_id}))
        self.assertEqual((got["taskId"], got["status"]), (task_id, "working"))
        self.flag("go")

        async def completed() -> Optional[Dict[str, Any]]:
            got = await self.send(stateless_call(3, "tasks/get", {"taskId": task_id}))
            return got if got["status"] == "completed" else None

        got = await until_on(
            reactor, lambda: Deferred.fromCoroutine(completed()), interval=0.05, what="completed"
        )
        self.assertTrue(got["statusMessage"].startswith("failed: exit 5 after"))
        plain = await self.send(
            stateless_call(4, "tools/call", {"name": "execute", "arguments": self.arguments(script)}, tasks=False)
        )
        self.assertEqual(comparable(got["result"]), comparable(plain))
        self.assertEqual(
            (got["result"]["structuredContent"]["stdout"], got["result"]["structuredContent"]["stderr"]),
            ("before\n", "after\n"),
        )

    async def test_handshake_task_across_stop(self):
        """
        Stop ccx (SIGTERM) while a durable 2025-11-25 task runs: a session
        of the next ccx gets it working, tasks/cancel ends its whole group,
        and the waiting tasks/result then gives its cancelled result.
        """
        first = await self.start_service()
        session_id = await self.initialize()
        message = tool_call(2, "execute", self.arguments(f"echo begun; {waiting_for('never')}", durable=True))
        message["params"]["task"] = {}
        created = await self.call(session_id, message)
        task_id = created["result"]["task"]["taskId"]
        pgid = self.record(task_id).pid
        await until_on(reactor, lambda: self.journaled(task_id) == len(b"begun\n"), what="its first line")
        await first.stopped(reactor)
        self.assertNotEqual(group_states(pgid), [])

        await self.start_service()
        session_id = await self.initialize()
        got = await self.call(session_id, request(3, "tasks/get", {"taskId": task_id}))
        self.assertEqual(got["result"]["status"], "working")
        listed = await self.call(session_id, request(4, "tasks/list"))
        self.assertIn(task_id, [t["taskId"] for t in listed["result"]["tasks"]])
        waiting = Deferred.fromCoroutine(self.call(session_id, request(5, "tasks/result", {"taskId": task_id})))
        cancelled = await self.call(session_id, request(6, "tasks/cancel", {"taskId": task_id}))
        self.assertEqual(cancelled["result"]["status"], "cancelled")
        result = (await waiting)["result"]
        out = result["structuredContent"]
        self.assertEqual((out["stdout"], out["status"]), ("begun\n", "cancelled"))
        self.assertEqual(result["_meta"][RELATED_TASK_KEY], {"taskId": task_id})
        self.assertEqual(group_states(pgid), [])

    async def test_task_not_durable_across_stop(self):
        """
        A task that is not durable is cancelled when ccx stops; the next
        ccx reports it cancelled (its record is kept), not running.
        """
        first = await self.start_service()
        task = await self.send(
            stateless_call(1, "tools/call", {"name": "execute", "arguments": self.arguments(waiting_for("never"))})
        )
        task_id = task["taskId"]
        pgid = self.record(task_id).pid
        await first.stopped(reactor)
        self.assertEqual(group_states(pgid), [])
        await self.start_service()
        got = await self.send(stateless_call(2, "tasks/get", {"taskId": task_id}))
        self.assertEqual(got["status"], "cancelled")
