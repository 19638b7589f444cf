"""
Programs that misbehave: each is handled, reported and cleaned up.
"""

import dataclasses
import os

from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from ccx.process.group import ProcessGroup, group_states
from tests.support import ServiceFixture, until


class FaultTests(TestCase):
    timeout = 60

    @inlineCallbacks
    def setUp(self):
        self.ccx = yield ServiceFixture(self, kill_grace=0.5).start()
        self.client = yield self.ccx.connect()

    def execute(self, **params):
        return self.ccx.execute(self.client, params)

    def completed(self, process_id):
        return self.client.notification("process.completed", process_id)

    @inlineCallbacks
    def test_closes_stdout_and_keeps_running(self):
        """A program that closes its output and runs on is still followed to its end."""
        result = yield self.execute(
            command=["sh", "-c", "echo bye; exec >&- 2>&-; read x"], stdin=True
        )
        yield self.client.notification("process.output", result["process_id"])
        yield until(lambda: self.ccx.service.node.registry.get(result["process_id"]).output.streams["stdout"].closed)
        yield self.client.call("write", {"process_id": result["process_id"], "data": "\n"})
        done = yield self.completed(result["process_id"])
        self.assertEqual((done["status"], done["stdout_bytes"]), ("completed", 4))

    @inlineCallbacks
    def test_exits_while_paused(self):
        """A program that dies while paused is reported, and control then says it finished."""
        result = yield self.execute(command="sleep 1000")
        yield self.client.call("control", {"type": "PAUSE"})
        yield self.client.call("signal", {"process_id": result["process_id"], "signal": "SIGKILL"})
        done = yield self.completed(result["process_id"])
        self.assertEqual((done["status"], done["signal"]), ("failed", "SIGKILL"))
        response = yield self.client.request(
            "control", {"type": "RESUME", "process_id": result["process_id"]}
        )
        self.assertEqual(response["error"]["code"], -32003)

    @inlineCallbacks
    def test_forks_a_hundred_children(self):
        """Cancelling a program with 100 children ends every one of them."""
        result = yield self.execute(
            command=["sh", "-c", "for i in $(seq 100); do sleep 1000 & done; echo ready; wait"]
        )
        yield self.client.notification("process.output", result["process_id"])
        yield until(lambda: len(group_states(result["pgid"])) == 101)
        yield self.client.call("control", {"type": "CANCEL"})
        done = yield self.completed(result["process_id"])
        self.assertEqual(done["status"], "cancelled")
        self.assertEqual(ProcessGroup(result["pgid"]).members(), [])

    @inlineCallbacks
    def test_nul_and_invalid_utf8(self):
        """NUL bytes pass as U+0000 and invalid UTF-8 as U+FFFD; byte counts stay exact."""
        result = yield self.execute(command=["sh", "-c", "printf 'a\\000b\\377c'"])
        done = yield self.completed(result["process_id"])
        text = "".join(
            m["params"]["data"] for m in self.client.messages
            if isinstance(m, dict) and m.get("method") == "process.output"
        )
        self.assertEqual(text, "a\x00b\ufffdc")
        self.assertEqual(done["stdout_bytes"], 5)

    @inlineCallbacks
    def test_huge_line_without_newline(self):
        """64 MiB with no newline arrives whole over many chunks, with bounded buffers."""
        size = 64 * 1024 * 1024
        result = yield self.execute(command=["sh", "-c", f"head -c {size} /dev/zero | tr '\\0' x"])
        done = yield self.completed(result["process_id"])
        received = sum(
            len(m["params"]["data"]) for m in self.client.messages
            if isinstance(m, dict) and m.get("method") == "process.output"
        )
        self.assertEqual((received, done["stdout_bytes"], done["dropped_bytes"]), (size, size, 0))

    @inlineCallbacks
    def test_executable_vanishes_between_check_and_spawn(self):
        """A program removed after the allow-list check gets -32005 and leaves nothing behind."""
        directory = os.path.realpath(self.mktemp())
        os.makedirs(directory)
        script = os.path.join(directory, "tool")
        with open(script, "w") as f:
            f.write("#!/bin/sh\necho hi\n")
        os.chmod(script, 0o755)
        allowed = self.ccx.service.node.allow_list._allowed
        allowed[script] = {"tool"}
        launcher = self.ccx.service.node.launcher
        real_spawn = launcher.spawn

        def spawn_after_removal(reactor, protocol, command, **where):
            os.remove(script)
            return real_spawn(reactor, protocol, command, **where)

        self.patch(launcher, "spawn", spawn_after_removal)
        response = yield self.client.request("execute", {"command": [script]})
        self.assertEqual(response["error"]["code"], -32005)
        self.assertIn("No such file", response["error"]["message"])
        yield until(lambda: self.ccx.service.node.registry.live_count == 0)
        self.assertEqual((yield self.client.call("list"))["processes"], [])

    @inlineCallbacks
    def test_process_limit(self):
        """Past --max-processes, execute gets -32001 and running programs are untouched."""
        self.ccx.service.node.registry.max_processes = 2
        first = yield self.execute(command="sleep 1000")
        yield self.execute(command="sleep 1000")
        response = yield self.client.request("execute", {"command": "sleep 1000"})
        self.assertEqual(response["error"]["code"], -32001)
        self.assertIn("--max-processes", response["error"]["message"])
        listed = yield self.client.call("list")
        self.assertEqual({p["state"] for p in listed["processes"]}, {"running"})
        self.assertIn(first["process_id"], {p["process_id"] for p in listed["processes"]})

    @inlineCallbacks
    def test_oversized_message_closes_with_1009(self):
        """A message over the size limit closes the connection with code 1009; the service stays up."""
        self.client.sendMessage(b'{"jsonrpc":"2.0","method":"ping","params":["' + b"x" * (1024 * 1024) + b'"]}')
        code = yield self.client.closed
        self.assertEqual(code, 1009)
        other = yield self.ccx.connect()
        self.assertEqual((yield other.call("ping")), {})

    @inlineCallbacks
    def test_burst_of_requests(self):
        """Thousands of requests in a burst each get an answer: a result or -32001."""
        count = 3000
        for i in range(count):
            self.client.send_json({"jsonrpc": "2.0", "id": f"b{i}", "method": "ping"})
        yield self.client.wait_for(lambda m: isinstance(m, dict) and m.get("id") == f"b{count - 1}")
        answers = [m for m in self.client.messages if isinstance(m, dict) and str(m.get("id", "")).startswith("b")]
        self.assertEqual(len(answers), count)
        codes = {m["error"]["code"] for m in answers if "error" in m}
        self.assertLessEqual(codes, {-32001})
        self.assertTrue(any("result" in m for m in answers))

    @inlineCallbacks
    def test_dotdot_refused(self):
        """A program path that climbs with '..' is refused, even if it reaches an allowed program."""
        response = yield self.client.request("execute", {"command": ["../../../../../../bin/sh", "-c", "true"]})
        self.assertEqual(response["error"]["code"], -32002)
        self.assertIn("..", response["error"]["message"])

    @inlineCallbacks
    def test_reply_larger_than_a_message_becomes_an_error(self):
        """A reply too large for one WebSocket message is answered with an error, not lost."""
        node = self.ccx.service.node
        node.config = dataclasses.replace(node.config, max_message_size=2048)
        small = yield self.ccx.connect()
        for _ in range(20):
            yield self.execute(command="true")
        response = yield small.request("list")
        self.assertEqual(response["error"]["code"], -32603)
        self.assertIn("--max-message-size", response["error"]["message"])

    @inlineCallbacks
    def test_stdin_not_read_is_not_buffered_without_bound(self):
        """Writing to a program that never reads its stdin is refused with -32001 once its pipe is full."""
        result = yield self.execute(command="sleep 1000", stdin=True)
        self.ccx.service.node.config = dataclasses.replace(
            self.ccx.service.node.config, max_requests=10_000
        )
        chunk = "x" * 65536
        codes = []
        for _ in range(64):
            response = yield self.client.request(
                "write", {"process_id": result["process_id"], "data": chunk}
            )
            codes.append(response.get("error", {}).get("code"))
            if codes[-1] is not None:
                break
        self.assertEqual(codes[-1], -32001)
        self.assertLess(len(codes), 64)

    @inlineCallbacks
    def test_command_too_long_to_report_back(self):
        """A command whose process.started would not fit in a message is refused with -32602."""
        node = self.ccx.service.node
        node.config = dataclasses.replace(node.config, max_message_size=4096)
        response = yield self.client.request("execute", {"command": ["true"] + ["a" * 1000] * 3})
        self.assertEqual(response["error"]["code"], -32602)
        self.assertIn("too long", response["error"]["message"])
