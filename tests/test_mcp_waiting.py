"""
Waiting instead of polling: the L{Wait} and L{WaitBudget} units with a
Clock, then C{output} with C{wait_seconds} and the C{wait} tool over the
MCP WebSocket against real programs.
"""

from typing import Any

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from ccx.mcp.waiting import MAX_WAITING, Wait, WaitBudget, wait_seconds
from ccx.output.events import Completion
from ccx.output.fanout import ProcessOutput
from ccx.rpc.errors import RPCError
from tests.support import ServiceFixture, until
from tests.test_mcp import initialize_params, tool_call


class FakeProcess:
    def __init__(self) -> None:
        self.output = ProcessOutput("p1", 1024, 1024, blocking=False)
        self.finished = False
        self.ended: Deferred = Deferred()

    def end(self) -> None:
        completion = Completion("p1", 1, "completed", 0, None, 1.0, 0, 0, 0, None)
        self.output.complete(completion)
        self.finished = True
        self.ended.callback(self)


class WaitTests(TestCase):
    def setUp(self):
        self.clock = Clock()
        self.process = FakeProcess()

    def test_new_output_past_the_offsets(self):
        """Output at the offsets already read does not answer; a byte past them does."""
        self.process.output.receive("stdout", b"old", 0.0)
        wait = Wait(self.clock, 10).for_output(self.process, {"stdout": 3, "stderr": 0})
        self.assertFalse(wait.done.called)
        self.process.output.receive("stderr", b"x", 0.0)
        self.assertTrue(wait.done.called)
        self.assertEqual(self.process.output.subscriptions, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_deadline(self):
        """Nothing new: the wait answers at its deadline, not a moment before."""
        wait = Wait(self.clock, 5).for_output(self.process, {"stdout": 0, "stderr": 0})
        self.clock.advance(4.999)
        self.assertFalse(wait.done.called)
        self.clock.advance(0.001)
        self.assertTrue(wait.done.called)
        self.assertEqual(self.process.output.subscriptions, [])

    def test_end(self):
        """A wait for the end ignores output and answers when the process ends."""
        wait = Wait(self.clock, 10).for_end(self.process)
        self.process.output.receive("stdout", b"more", 0.0)
        self.assertFalse(wait.done.called)
        self.process.end()
        self.assertTrue(wait.done.called)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_output_wait_sees_the_end(self):
        wait = Wait(self.clock, 10).for_output(self.process, {"stdout": 0, "stderr": 0})
        self.process.end()
        self.assertTrue(wait.done.called)

    def test_finish_twice(self):
        wait = Wait(self.clock, 10).for_end(self.process)
        wait.finish()
        wait.finish()
        self.assertTrue(wait.done.called)


class BudgetTests(TestCase):
    def test_bound(self):
        """The limit-th waiting request is taken; the next is refused until one answers."""
        budget = WaitBudget(2)
        budget.take()
        budget.take()
        self.assertRaises(RPCError, budget.take)
        budget.give()
        budget.take()

    def test_wait_seconds(self):
        """0 and 60 are accepted; just outside (-0.001, 60.001), a string, a bool are not."""
        self.assertEqual(wait_seconds({}, "output"), 0.0)
        self.assertEqual(wait_seconds({"wait_seconds": 60}, "output"), 60.0)
        self.assertEqual(wait_seconds({"wait_seconds": 0}, "wait", 30.0), 0.0)
        for bad in (-0.001, 60.001, "1", True):
            self.assertRaises(RPCError, wait_seconds, {"wait_seconds": bad}, "output")


class WaitingToolsTests(TestCase):
    timeout = 30

    @inlineCallbacks
    def setUp(self):
        self.ccx = yield ServiceFixture(self).start()
        self.client = yield self.ccx.connect(protocols=("mcp",))
        yield self.client.call("initialize", initialize_params())

    @inlineCallbacks
    def tool(self, name: str, arguments: dict) -> Any:
        result = yield self.client.call("tools/call", {"name": name, "arguments": arguments})
        self.assertFalse(result["isError"], result)
        return result

    @inlineCallbacks
    def started(self, command: Any, **arguments: Any) -> Any:
        result = yield self.tool("start", dict(arguments, command=command))
        self.ccx.groups.append(result["structuredContent"]["pgid"])
        return result["structuredContent"]["process_id"]

    @inlineCallbacks
    def test_output_waits_for_new_output(self):
        """output with wait_seconds answers when output arrives past the offsets, with that output."""
        process_id = yield self.started(["sh", "-c", "read x; echo got $x; read y"], stdin=True)
        self.client.send_json(
            tool_call("w", "output", {"process_id": process_id, "wait_seconds": 20})
        )
        yield self.tool("write", {"process_id": process_id, "data": "it\n"})
        response = yield self.client.wait_for(lambda m: m.get("id") == "w")
        out = response["result"]["structuredContent"]
        self.assertEqual(out["stdout"]["text"], "got it\n")
        self.assertFalse(out["finished"])
        yield self.tool("cancel", {"process_id": process_id})

    @inlineCallbacks
    def test_output_deadline_says_nothing_new(self):
        process_id = yield self.started(["sleep", "1000"])
        result = yield self.tool("output", {"process_id": process_id, "wait_seconds": 0.05})
        self.assertEqual(result["structuredContent"]["stdout"]["text"], "")
        self.assertIn("no new output", result["content"][0]["text"])
        yield self.tool("cancel", {"process_id": process_id})

    @inlineCallbacks
    def test_wait_tool(self):
        """wait answers when the program ends, with execute's result; at the deadline, running."""
        process_id = yield self.started(["sh", "-c", "echo begun; read x; exit 3"], stdin=True)
        early = yield self.tool("wait", {"process_id": process_id, "wait_seconds": 0.05})
        self.assertEqual(early["structuredContent"]["status"], "running")
        self.assertTrue(early["content"][0]["text"].startswith("running for "))
        self.client.send_json(tool_call("w", "wait", {"process_id": process_id}))
        yield self.tool("write", {"process_id": process_id, "data": "\n", "eof": True})
        response = yield self.client.wait_for(lambda m: m.get("id") == "w")
        out = response["result"]["structuredContent"]
        self.assertEqual((out["status"], out["exit_code"], out["stdout"]), ("failed", 3, "begun\n"))
        self.assertTrue(response["result"]["content"][0]["text"].startswith("failed: exit 3 after"))
        again = yield self.tool("wait", {"process_id": process_id})
        self.assertEqual(again["structuredContent"]["exit_code"], 3)

    @inlineCallbacks
    def test_progress_flows_while_waiting(self):
        """
        With a progress token, what the program writes while wait waits
        arrives as progress notifications for that token, before the answer.
        """
        process_id = yield self.started(["sh", "-c", "read x; echo got $x; read y"], stdin=True)
        self.client.send_json(
            tool_call("w", "wait", {"process_id": process_id, "wait_seconds": 20}, token="tw")
        )
        yield self.tool("write", {"process_id": process_id, "data": "it\n"})
        progress = yield self.client.wait_for(
            lambda m: m.get("method") == "notifications/progress"
            and "got it" in m["params"].get("message", "")
        )
        self.assertEqual(progress["params"]["progressToken"], "tw")
        yield self.tool("write", {"process_id": process_id, "data": "\n", "eof": True})
        response = yield self.client.wait_for(lambda m: m.get("id") == "w")
        self.assertEqual(response["result"]["structuredContent"]["status"], "completed")

    @inlineCallbacks
    def test_waiting_requests_are_bounded(self):
        """MAX_WAITING waits are held open; one more is refused; a cancelled one makes room."""
        process_id = yield self.started(["sleep", "1000"])
        for n in range(MAX_WAITING):
            self.client.send_json(
                tool_call(f"w{n}", "wait", {"process_id": process_id, "wait_seconds": 60})
            )
        refused = yield self.client.call(
            "tools/call", {"name": "wait", "arguments": {"process_id": process_id}}
        )
        self.assertTrue(refused["isError"])
        self.assertIn(f"already has {MAX_WAITING} waiting requests", refused["content"][0]["text"])
        self.client.send_json(
            {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": "w0"}}
        )
        room = yield self.tool("wait", {"process_id": process_id, "wait_seconds": 0.01})
        self.assertEqual(room["structuredContent"]["status"], "running")
        yield self.tool("cancel", {"process_id": process_id})
        # Every wait answers once the program ends.
        yield until(lambda: len([m for m in self.client.messages if str(m.get("id")).startswith("w")]) == MAX_WAITING - 1)

    @inlineCallbacks
    def test_closing_ends_the_waits(self):
        """A client that goes leaves no waiting request (timer, subscription) behind."""
        process_id = yield self.started(["sleep", "1000"], on_disconnect="keep")
        self.client.send_json(tool_call("w", "wait", {"process_id": process_id, "wait_seconds": 60}))
        self.client.send_json(tool_call("o", "output", {"process_id": process_id, "wait_seconds": 60}))
        process = self.ccx.service.node.registry.get(process_id)
        yield until(lambda: len(process.output.subscriptions) == 1)
        yield self.client.call("ping")
        yield self.client.close()
        yield until(lambda: process.output.subscriptions == [])
        process.cancel()
        yield until(lambda: process.finished)
