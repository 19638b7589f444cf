"""
Integration tests: the real service, real programs, a real WebSocket client.
"""

import base64
import os

from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase
from zope.interface.verify import verifyObject

from ccx.output.fanout import MAX_CHUNK
from ccx.process.group import ProcessGroup, group_states
from ccx.rpc.interfaces import INotificationChannel
from ccx.web import websocket
from ccx.web.interfaces import IConnection
from tests.support import ServiceFixture, fd_count, until


class ServiceTestCase(TestCase):
    timeout = 30

    @inlineCallbacks
    def setUp(self):
        self.ccx = yield ServiceFixture(self, **self.settings()).start()
        self.client = yield self.ccx.connect()

    def settings(self):
        return {}

    def execute(self, **params):
        return self.ccx.execute(self.client, params)

    def completed(self, process_id, client=None):
        return (client or self.client).notification("process.completed", process_id)


class ConnectTests(ServiceTestCase):
    @inlineCallbacks
    def test_connected(self):
        """The first message is `connected` with a session id, version and capabilities."""
        first = self.client.messages[0] if self.client.messages else None
        if first is None:
            first = yield self.client.wait_for(lambda m: True)
        self.assertEqual(first["method"], "connected")
        params = first["params"]
        self.assertIsInstance(params["session_id"], str)
        self.assertIsInstance(params["version"], str)
        self.assertIn("execute", params["capabilities"])

    def test_connection_interface(self):
        """An open WebSocket is an IConnection the node holds, with its session, and a channel."""
        [connection] = self.ccx.service.node.connections
        self.assertTrue(verifyObject(IConnection, connection))
        self.assertTrue(verifyObject(INotificationChannel, connection))
        self.assertIsNotNone(connection.session)

    @inlineCallbacks
    def test_stop_closes_with_1001_and_reason(self):
        """When the service stops, a WebSocket gets a close frame "going away" (1001) saying why."""
        yield self.ccx.service.stopService()
        code = yield self.client.closed
        self.assertEqual(code, 1001)
        self.assertTrue(self.client.wasClean)
        self.assertEqual(self.client.remoteCloseReason, "ccx is stopping")
        self.assertEqual(self.ccx.service.node.connections, set())

    @inlineCallbacks
    def test_ws_path_is_the_same_endpoint(self):
        """/ws serves the same WebSocket as /ws/mcp."""
        other = yield self.ccx.connect("/ws")
        result = yield other.call("ping")
        self.assertEqual(result, {})

    @inlineCallbacks
    def test_other_paths_are_not_the_websocket(self):
        """Only /ws and /ws/mcp open the WebSocket; other paths below /ws are 404."""
        import treq

        for path in ("/ws/other", "/ws/mcp/extra"):
            response = yield treq.get(
                f"http://127.0.0.1:{self.ccx.port}{path}",
                headers={"Upgrade": "websocket", "Connection": "Upgrade",
                         "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
                         "Sec-WebSocket-Version": "13"},
                persistent=False,
            )
            self.assertEqual(response.code, 404, path)
            yield response.content()

    @inlineCallbacks
    def test_parse_error_keeps_connection(self):
        """A frame that is not JSON gets -32700 with id null; the connection stays open."""
        self.client.sendMessage(b"{nope")
        error = yield self.client.wait_for(lambda m: isinstance(m, dict) and "error" in m)
        self.assertEqual(error["error"]["code"], -32700)
        self.assertIsNone(error["id"])
        result = yield self.client.call("ping")
        self.assertEqual(result, {})

    @inlineCallbacks
    def test_old_pong_notification_ignored(self):
        """A `pong` notification is accepted silently."""
        self.client.send_json({"jsonrpc": "2.0", "method": "pong"})
        result = yield self.client.call("ping")
        self.assertEqual(result, {})
        self.assertFalse([m for m in self.client.messages if "error" in m])

    @inlineCallbacks
    def test_health(self):
        """GET /health reports status, version, uptime, connections, processes and containment."""
        import treq

        response = yield treq.get(f"http://127.0.0.1:{self.ccx.port}/health", persistent=False)
        self.assertEqual(response.code, 200)
        body = yield response.json()
        self.assertEqual(body["status"], "ok")
        self.assertEqual(body["connections"], 1)
        self.assertEqual(body["processes"], 0)
        self.assertEqual(body["durable"], 0)
        self.assertEqual(body["containment"], "cgroup")
        self.assertEqual(
            set(body),
            {
                "status", "version", "uptime", "connections", "processes", "containment",
                "journal", "state_dir_bytes", "journal_errors", "durable",
            },
        )


class ExecuteTests(ServiceTestCase):
    def settings(self):
        return {"allow_env": ["CCX_TEST"]}

    @inlineCallbacks
    def test_seq_exact_and_ordered(self):
        """seq 1 400000: result first, then started, every byte in order, completed last."""
        result = yield self.execute(command="seq 1 400000")
        self.assertEqual(result["status"], "started")
        self.assertEqual(result["pid"], result["pgid"])
        done = yield self.completed(result["process_id"])
        expected = "".join(f"{i}\n" for i in range(1, 400001)).encode()
        self.assertEqual(self.client.output(result["process_id"]), expected)
        about = [
            m
            for m in self.client.messages
            if m.get("params", {}).get("process_id") == result["process_id"]
            or m.get("result", {}).get("process_id") == result["process_id"]
        ]
        self.assertIn("result", about[0])
        self.assertEqual(about[1]["method"], "process.started")
        self.assertEqual(about[-1]["method"], "process.completed")
        outputs = [m for m in about if isinstance(m, dict) and m.get("method") == "process.output"]
        self.assertLess(len(outputs), 400000 // 100, "output must come in multi-line chunks")
        self.assertEqual(done["status"], "completed")
        self.assertEqual(done["exit_code"], 0)
        self.assertIsNone(done["signal"])
        self.assertEqual(done["stdout_bytes"], len(expected))
        self.assertEqual(done["dropped_bytes"], 0)
        for key in ("pid", "pgid", "duration", "stderr_bytes", "error"):
            self.assertIn(key, done)

    @inlineCallbacks
    def test_stdout_and_stderr_apart(self):
        """stdout and stderr arrive as separate streams with their own offsets."""
        result = yield self.execute(command=["sh", "-c", "echo out; echo err >&2; exit 3"])
        done = yield self.completed(result["process_id"])
        self.assertEqual(self.client.output(result["process_id"]), b"out\n")
        self.assertEqual(self.client.output(result["process_id"], "stderr"), b"err\n")
        self.assertEqual(done["status"], "failed")
        self.assertEqual(done["exit_code"], 3)

    @inlineCallbacks
    def test_output_fields(self):
        """process.output carries type, data, offset, time and truncated."""
        result = yield self.execute(command="printf hello")
        yield self.completed(result["process_id"])
        output = [m["params"] for m in self.client.messages if isinstance(m, dict) and m.get("method") == "process.output"]
        self.assertEqual(output[0]["data"], "hello")
        self.assertEqual(output[0]["offset"], 0)
        self.assertEqual(output[0]["type"], "stdout")
        self.assertIs(output[0]["truncated"], False)
        self.assertIsInstance(output[0]["time"], float)

    @inlineCallbacks
    def test_utf8_never_split_and_invalid_replaced(self):
        """Multi-byte characters arrive whole; invalid bytes become U+FFFD."""
        script = "printf '\\303\\251\\342\\202\\254'; printf '\\377'"
        result = yield self.execute(command=["sh", "-c", script])
        yield self.completed(result["process_id"])
        text = "".join(
            m["params"]["data"] for m in self.client.messages if isinstance(m, dict) and m.get("method") == "process.output"
        )
        self.assertEqual(text, "é€\ufffd")

    @inlineCallbacks
    def test_utf8_attach_after_the_end(self):
        """
        A client attaching from 0 after the program ended, to non-ASCII output
        over one chunk (128 KiB), gets every character whole, U+FFFD nowhere.
        """
        line = "\u00e9" * 50 + "\n"
        expected = "ab" + line * 2000
        # The 128 KiB chunk limit falls inside an é.
        with self.assertRaises(UnicodeDecodeError):
            expected.encode("utf-8")[:MAX_CHUNK].decode("utf-8")
        result = yield self.execute(
            command=["sh", "-c", f"printf ab; yes {line[:-1]} | head -n 2000"]
        )
        yield self.completed(result["process_id"])
        late = yield self.ccx.connect()
        yield late.call(
            "attach",
            {"process_id": result["process_id"], "offsets": {"stdout": 0}, "encoding": "utf-8"},
        )
        yield self.completed(result["process_id"], late)
        chunks = [
            m["params"]["data"]
            for m in late.messages
            if isinstance(m, dict) and m.get("method") == "process.output"
        ]
        self.assertGreater(len(chunks), 1)
        self.assertNotIn("\ufffd", "".join(chunks))
        self.assertEqual("".join(chunks), expected)

    @inlineCallbacks
    def test_base64(self):
        """encoding base64 carries arbitrary bytes exactly."""
        result = yield self.execute(
            command=["sh", "-c", "printf '\\000\\377\\303'"], encoding="base64"
        )
        yield self.completed(result["process_id"])
        data = b"".join(
            base64.b64decode(m["params"]["data"])
            for m in self.client.messages
            if isinstance(m, dict) and m.get("method") == "process.output"
        )
        self.assertEqual(data, b"\x00\xff\xc3")

    @inlineCallbacks
    def test_long_line_not_truncated(self):
        """A 3 MB line with no newline arrives whole, over several chunks."""
        result = yield self.execute(command=["sh", "-c", "head -c 3000000 /dev/zero | tr '\\0' x"])
        self.ccx.groups.append(result["pgid"])
        done = yield self.completed(result["process_id"])
        self.assertEqual(self.client.output(result["process_id"]), b"x" * 3000000)
        self.assertEqual(done["stdout_bytes"], 3000000)

    @inlineCallbacks
    def test_env_and_cwd(self):
        """env adds to the environment and cwd sets the working directory."""
        directory = os.path.realpath(self.mktemp())
        os.makedirs(directory)
        result = yield self.execute(
            command=["sh", "-c", 'echo "$CCX_TEST $(pwd)"'], env={"CCX_TEST": "yes"}, cwd=directory
        )
        yield self.completed(result["process_id"])
        self.assertEqual(self.client.output(result["process_id"]), f"yes {directory}\n".encode())

    @inlineCallbacks
    def test_shell(self):
        """shell: true runs the string with /bin/sh -c."""
        result = yield self.execute(command="echo a | cat", shell=True)
        yield self.completed(result["process_id"])
        self.assertEqual(self.client.output(result["process_id"]), b"a\n")

    @inlineCallbacks
    def test_stdin_is_devnull_by_default(self):
        """Without stdin: true the program reads end of file at once."""
        result = yield self.execute(command="cat")
        done = yield self.completed(result["process_id"])
        self.assertEqual(done["status"], "completed")

    @inlineCallbacks
    def test_sigpipe_is_default_in_the_program(self):
        """Programs get SIGPIPE's default action, not Python's SIG_IGN."""
        result = yield self.execute(command=["sh", "-c", "seq 1 1000000 | head -1; echo done"])
        done = yield self.completed(result["process_id"])
        self.assertEqual(self.client.output(result["process_id"]), b"1\ndone\n")
        self.assertEqual(done["status"], "completed")

    @inlineCallbacks
    def test_not_allowed(self):
        """A program off the allow-list gets -32002 saying how to allow it; nothing runs."""
        response = yield self.client.request("execute", {"command": "rm -rf /nonexistent"})
        self.assertEqual(response["error"]["code"], -32002)
        self.assertIn("--allow rm", response["error"]["message"])
        listed = yield self.client.call("list")
        self.assertEqual(listed["processes"], [])

    @inlineCallbacks
    def test_spawn_failure(self):
        """A program that cannot be executed gets -32005; no process, no fd is left."""
        script = os.path.realpath(self.mktemp())
        with open(script, "w") as f:
            f.write("#!/nonexistent/interpreter\n")
        os.chmod(script, 0o755)
        self.ccx.service.node.allow_list._allowed[script] = {os.path.basename(script)}
        before = fd_count()
        response = yield self.client.request("execute", {"command": [script]})
        self.assertEqual(response["error"]["code"], -32005)
        self.assertIn("No such file", response["error"]["message"])
        yield until(lambda: self.ccx.service.node.registry.live_count == 0)
        self.assertEqual(fd_count(), before)
        listed = yield self.client.call("list")
        self.assertEqual(listed["processes"], [])

    @inlineCallbacks
    def test_env_that_changes_what_runs_is_refused(self):
        """env may not set LD_PRELOAD and the like: -32002 naming the variable."""
        response = yield self.client.request(
            "execute", {"command": "true", "env": {"LD_PRELOAD": "/tmp/evil.so"}}
        )
        self.assertEqual(response["error"]["code"], -32002)
        self.assertIn("LD_PRELOAD", response["error"]["message"])

    @inlineCallbacks
    def test_bad_params(self):
        """Wrong params get -32602 naming the problem."""
        for params, words in [
            ({}, "needs 'command'"),
            ({"command": 5}, "'command'"),
            ({"command": "seq 1", "on_full": "maybe"}, "'on_full'"),
            ({"command": "seq 1", "bogus": 1}, "'bogus'"),
            ({"command": "seq 1", "timeout": -1}, "'timeout'"),
            ({"command": "seq 1", "cwd": "/nonexistent"}, "'cwd'"),
        ]:
            response = yield self.client.request("execute", params)
            self.assertEqual(response["error"]["code"], -32602, params)
            self.assertIn(words, response["error"]["message"])

    @inlineCallbacks
    def test_batch_result_before_notifications(self):
        """In a batch, the batch reply comes before any notification of its processes."""
        self.client.send_json(
            [
                {"jsonrpc": "2.0", "id": "a", "method": "execute", "params": {"command": "seq 1 3"}},
                {"jsonrpc": "2.0", "id": "b", "method": "ping"},
                {"jsonrpc": "2.0", "method": "ping"},
            ]
        )
        reply = yield self.client.wait_for(lambda m: isinstance(m, list))
        self.assertEqual([r["id"] for r in reply], ["a", "b"])
        process_id = reply[0]["result"]["process_id"]
        self.ccx.groups.append(reply[0]["result"]["pgid"])
        yield self.completed(process_id)
        index = self.client.messages.index(reply)
        started = [i for i, m in enumerate(self.client.messages) if isinstance(m, dict) and m.get("method") == "process.started"]
        self.assertGreater(started[0], index)

    @inlineCallbacks
    def test_method_not_found(self):
        """An unknown method gets -32601."""
        response = yield self.client.request("frobnicate")
        self.assertEqual(response["error"]["code"], -32601)
        self.assertIn("frobnicate", response["error"]["message"])

    @inlineCallbacks
    def test_list(self):
        """list reports every process with the documented fields."""
        result = yield self.execute(command="seq 1 5")
        yield self.completed(result["process_id"])
        listed = yield self.client.call("list")
        entry = listed["processes"][0]
        self.assertEqual(entry["process_id"], result["process_id"])
        self.assertEqual(entry["state"], "exited")
        self.assertEqual(entry["command"], ["seq", "1", "5"])
        self.assertEqual(entry["exit_code"], 0)
        self.assertEqual(entry["stdout_bytes"], 10)
        self.assertEqual(entry["encoding"], "utf-8")
        for key in ("pid", "pgid", "started_at", "stderr_bytes", "dropped_bytes", "subscribers"):
            self.assertIn(key, entry)


class ControlTests(ServiceTestCase):
    # A shell with a child and a grandchild, all in one group, all ignoring TERM.
    STUBBORN = "trap '' TERM; sh -c 'sleep 1000' & sleep 1000 & wait"

    def settings(self):
        return {"kill_grace": 0.5}

    @inlineCallbacks
    def test_pause_resume_cancel_whole_group(self):
        """PAUSE stops every member of the group, RESUME continues them, CANCEL ends them."""
        result = yield self.execute(command=["sh", "-c", "sleep 1000 & sleep 1000 & echo up; wait"])
        pgid = result["pgid"]
        yield self.client.notification("process.output")
        yield until(lambda: len(group_states(pgid)) == 3)
        paused = yield self.client.call("control", {"type": "PAUSE", "process_id": result["process_id"]})
        self.assertEqual(paused["status"], "paused")
        yield until(lambda: set(group_states(pgid)) == {"T"})
        again = yield self.client.call("control", {"type": "PAUSE"})
        self.assertEqual(again["status"], "paused")
        resumed = yield self.client.call("control", {"type": "RESUME"})
        self.assertEqual(resumed["status"], "resumed")
        yield until(lambda: "T" not in group_states(pgid))
        events = yield self.client.notification("process.resumed", result["process_id"])
        self.assertEqual(events["status"], "resumed")
        cancelled = yield self.client.call("control", {"type": "CANCEL"})
        self.assertEqual(cancelled["status"], "cancelled")
        done = yield self.completed(result["process_id"])
        self.assertEqual(done["status"], "cancelled")
        self.assertEqual(ProcessGroup(pgid).members(), [])

    @inlineCallbacks
    def test_cancel_paused_term_ignoring_group(self):
        """A paused group whose members ignore SIGTERM is killed after the grace period."""
        result = yield self.execute(command=["sh", "-c", self.STUBBORN])
        pgid = result["pgid"]
        yield until(lambda: len(group_states(pgid)) >= 3)
        yield self.client.call("control", {"type": "PAUSE"})
        yield self.client.call("control", {"type": "CANCEL"})
        done = yield self.completed(result["process_id"])
        self.assertEqual(done["status"], "cancelled")
        self.assertEqual(done["signal"], "SIGKILL")
        self.assertEqual(ProcessGroup(pgid).members(), [])

    @inlineCallbacks
    def test_leader_exit_ends_the_rest_of_the_group(self):
        """When the program exits, what it left in its group is ended before completed."""
        result = yield self.execute(command=["sh", "-c", "sleep 1000 & echo bye"])
        done = yield self.completed(result["process_id"])
        self.assertEqual(done["status"], "completed")
        self.assertEqual(self.client.output(result["process_id"]), b"bye\n")
        self.assertEqual(ProcessGroup(result["pgid"]).members(), [])

    @inlineCallbacks
    def test_timeout(self):
        """timeout cancels the program with status timeout."""
        result = yield self.execute(command="sleep 1000", timeout=0.2)
        done = yield self.completed(result["process_id"])
        self.assertEqual(done["status"], "timeout")

    @inlineCallbacks
    def test_signal(self):
        """signal sends a named signal to the group; death by it is failed."""
        result = yield self.execute(command="sleep 1000")
        sent = yield self.client.call(
            "signal", {"process_id": result["process_id"], "signal": "SIGUSR1"}
        )
        self.assertEqual(sent["signal"], "SIGUSR1")
        done = yield self.completed(result["process_id"])
        self.assertEqual(done["status"], "failed")
        self.assertEqual(done["signal"], "SIGUSR1")
        self.assertEqual(done["exit_code"], -10)

    @inlineCallbacks
    def test_signal_name_checked(self):
        """An unknown signal name gets -32602."""
        result = yield self.execute(command="sleep 1000")
        response = yield self.client.request(
            "signal", {"process_id": result["process_id"], "signal": "SIGSTOP"}
        )
        self.assertEqual(response["error"]["code"], -32602)

    @inlineCallbacks
    def test_control_errors(self):
        """Unknown or finished processes get -32003."""
        response = yield self.client.request("control", {"type": "PAUSE"})
        self.assertEqual(response["error"]["code"], -32003)
        response = yield self.client.request("control", {"type": "PAUSE", "process_id": "nope"})
        self.assertEqual(response["error"]["code"], -32003)
        result = yield self.execute(command="true")
        yield self.completed(result["process_id"])
        response = yield self.client.request(
            "control", {"type": "CANCEL", "process_id": result["process_id"]}
        )
        self.assertEqual(response["error"]["code"], -32003)

    @inlineCallbacks
    def test_write_stdin(self):
        """write feeds stdin; eof closes it."""
        result = yield self.execute(command="cat", stdin=True)
        written = yield self.client.call(
            "write", {"process_id": result["process_id"], "data": "héllo\n"}
        )
        self.assertEqual(written["bytes"], 7)
        yield self.client.call(
            "write",
            {"process_id": result["process_id"], "data": base64.b64encode(b"\x00!").decode(),
             "encoding": "base64", "eof": True},
        )
        done = yield self.completed(result["process_id"])
        self.assertEqual(done["status"], "completed")
        self.assertEqual(self.client.output(result["process_id"]), "héllo\n\x00!".encode())

    @inlineCallbacks
    def test_write_without_stdin(self):
        """write to a program started without stdin gets -32004."""
        result = yield self.execute(command="sleep 1000")
        response = yield self.client.request(
            "write", {"process_id": result["process_id"], "data": "x"}
        )
        self.assertEqual(response["error"]["code"], -32004)


class LifecycleTests(ServiceTestCase):
    def settings(self):
        return {"kill_grace": 0.5}

    @inlineCallbacks
    def test_disconnect_cancels(self):
        """Closing the connection cancels its on_disconnect: cancel programs."""
        result = yield self.execute(command=["sh", "-c", "sleep 1000 & wait"])
        yield self.client.close()
        process = self.ccx.service.node.registry.get(result["process_id"])
        finished = yield process.ended
        self.assertEqual(finished.outcome, "cancelled")
        self.assertEqual(ProcessGroup(result["pgid"]).members(), [])

    @inlineCallbacks
    def test_keep_runs_on_and_attach_replays(self):
        """A keep program outlives its connection; another attaches and gets everything."""
        result = yield self.execute(command=["sh", "-c", "echo one; read x; echo two"], stdin=True, on_disconnect="keep")
        yield self.client.notification("process.output")
        yield self.client.close()
        other = yield self.ccx.connect()
        attached = yield other.call("attach", {"process_id": result["process_id"], "offsets": {"stdout": 0}})
        self.assertEqual(attached["offsets"], {"stdout": 0, "stderr": 0})
        yield other.call("write", {"process_id": result["process_id"], "data": "\n"})
        done = yield self.completed(result["process_id"], other)
        self.assertEqual(done["status"], "completed")
        self.assertEqual(other.output(result["process_id"]), b"one\ntwo\n")

    @inlineCallbacks
    def test_attach_finished(self):
        """Attaching to a finished process replays what is held, then completed."""
        result = yield self.execute(command="seq 1 1000")
        yield self.completed(result["process_id"])
        other = yield self.ccx.connect()
        yield other.call("attach", {"process_id": result["process_id"], "offsets": {"stdout": 4}})
        yield self.completed(result["process_id"], other)
        expected = "".join(f"{i}\n" for i in range(1, 1001)).encode()
        data = b"".join(
            m["params"]["data"].encode() for m in other.messages if isinstance(m, dict) and m.get("method") == "process.output"
        )
        self.assertEqual(data, expected[4:])

    @inlineCallbacks
    def test_stop_waits_until_completion_and_close_are_delivered(self):
        """stopService fires only once the client has had its process.completed, then the close frame."""
        result = yield self.execute(command=["sleep", "1000"])
        yield self.ccx.service.stopService()
        # The server saw the client answer its close frame: the client had
        # everything before it, and the reactor may stop now.
        self.assertEqual(self.client.remoteCloseCode, 1001)
        methods = [m.get("method") for m in self.client.messages]
        self.assertEqual(methods[-1], "process.completed")
        self.assertEqual(self.client.messages[-1]["params"]["process_id"], result["process_id"])
        self.assertEqual(self.client.messages[-1]["params"]["status"], "cancelled")
        self.assertEqual(self.ccx.service.node.connections, set())
        code = yield self.client.closed
        self.assertEqual(code, 1001)

    @inlineCallbacks
    def test_service_stop_cancels_everything(self):
        """Stopping the service cancels every group and waits for them."""
        result = yield self.execute(command=["sh", "-c", "trap '' TERM; sleep 1000 & wait"], on_disconnect="keep")
        yield until(lambda: len(group_states(result["pgid"])) == 2)
        yield self.ccx.service.stopService()
        self.assertEqual(ProcessGroup(result["pgid"]).members(), [])


class ShutdownFlushTests(ServiceTestCase):
    """
    A client that is behind on its output when the service stops: the held
    buffer is larger than what the sockets on both sides can take.
    """

    def settings(self):
        return {"buffer_bytes": 32 * 1024 * 1024}

    @inlineCallbacks
    def stall(self):
        """
        The client stops reading; fire once the service's side of its
        connection is paused.
        """
        [connection] = self.ccx.service.node.connections
        self.client.transport.pauseProducing()
        yield until(lambda: not connection.writable)

    @inlineCallbacks
    def test_stop_waits_for_a_slow_reader(self):
        """A client behind on its output at shutdown still gets all of it, the completion, then 1001."""
        # Whatever this machine's load, it reads on within the deadline.
        self.patch(websocket, "CLOSE_TIMEOUT", 60.0)
        result = yield self.execute(command=["yes"], on_full="block")
        yield self.stall()
        stopped = self.ccx.service.stopService()
        process = self.ccx.service.node.registry.get(result["process_id"])
        yield process.ended
        self.assertFalse(stopped.called, "stopped before the client had read")
        self.client.transport.resumeProducing()
        yield stopped
        code = yield self.client.closed
        self.assertEqual(code, 1001)
        completed = self.client.messages[-1]
        self.assertEqual(completed["method"], "process.completed")
        output = self.client.output(result["process_id"])
        self.assertEqual(len(output), completed["params"]["stdout_bytes"])
        self.assertEqual(set(output.split(b"\n")), {b"y", b""})

    @inlineCallbacks
    def test_stop_drops_a_client_that_never_reads(self):
        """A client that never reads does not hold up the stop for more than CLOSE_TIMEOUT."""
        self.patch(websocket, "CLOSE_TIMEOUT", 0.5)
        yield self.execute(command=["yes"], on_full="block")
        yield self.stall()
        yield self.ccx.service.stopService()
        self.assertEqual(self.ccx.service.node.connections, set())
        self.client.transport.resumeProducing()
        code = yield self.client.closed
        self.assertNotEqual(code, 1001)


class RateLimitTests(TestCase):
    """
    C{--max-requests} holds end to end on the WebSocket, for both dialects:
    a burst of exactly the limit is answered, one call more is refused.
    """

    timeout = 30

    @inlineCallbacks
    def setUp(self):
        self.ccx = yield ServiceFixture(self, max_requests=5).start()

    @inlineCallbacks
    def burst(self, calls, protocols=()):
        """
        C{calls} pings in one batch (one frame: no time passes between
        them) on a new connection; fire with the error codes, in order.
        """
        client = yield self.ccx.connect(protocols=protocols)
        batch = [{"jsonrpc": "2.0", "id": i, "method": "ping"} for i in range(calls)]
        client.send_json(batch)
        responses = yield client.wait_for(lambda m: isinstance(m, list))
        self.assertEqual(sorted(r["id"] for r in responses), list(range(calls)))
        return [r.get("error", {}).get("code") for r in sorted(responses, key=lambda r: r["id"])]

    @inlineCallbacks
    def test_native_limit_holds(self):
        """Native WebSocket: 5 calls at once pass, the 6th gets -32001."""
        codes = yield self.burst(5)
        self.assertEqual(codes, [None] * 5)
        codes = yield self.burst(6)
        self.assertEqual(codes, [None] * 5 + [-32001])

    @inlineCallbacks
    def test_mcp_limit_holds(self):
        """MCP over the WebSocket (the stdio bridge's way in): 5 calls at once pass, the 6th gets -32001."""
        codes = yield self.burst(5, protocols=("mcp",))
        self.assertEqual(codes, [None] * 5)
        codes = yield self.burst(6, protocols=("mcp",))
        self.assertEqual(codes, [None] * 5 + [-32001])
