"""
Programs on a pseudo-terminal (execute's C{pty}): the window size the
program sees, C{resize} and SIGWINCH, input typed through C{write}, the one
C{pty} stream byte-exact through pause, resume and attach, and nothing left
behind.
"""

from typing import Any

import jsonschema
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from ccx.mcp.session import LATEST_VERSION
from tests.support import ServiceFixture, until


def pty_output(client, process_id: str, start: int = 0) -> bytes:
    return client.output(process_id, "pty", start)


class TerminalServiceTests(TestCase):
    """
    A real service running programs on terminals for a native client.
    """

    timeout = 30

    @inlineCallbacks
    def setUp(self):
        self.ccx = yield ServiceFixture(self).start()
        self.client = yield self.ccx.connect("/ws")

    def output_contains(self, process_id: str, text: bytes):
        return self.client.wait_for(
            lambda m: text in pty_output(self.client, process_id)
        )

    @inlineCallbacks
    def test_program_sees_the_window_size(self):
        """stty size on the terminal shows the rows and columns asked for."""
        started = yield self.ccx.execute(
            self.client,
            {"command": ["sh", "-c", "stty size; tty; printf done"], "pty": {"rows": 30, "cols": 101}},
        )
        done = yield self.client.notification("process.completed", started["process_id"])
        output = pty_output(self.client, started["process_id"])
        self.assertEqual(done["status"], "completed")
        self.assertTrue(output.startswith(b"30 101\r\n/dev/pts/"), output)
        self.assertTrue(output.endswith(b"done"), output)
        self.assertEqual(done["pty_bytes"], len(output))
        self.assertEqual((done["stdout_bytes"], done["stderr_bytes"]), (0, 0))

    @inlineCallbacks
    def test_the_terminal_is_the_controlling_terminal(self):
        """/dev/tty opens (only a controlling terminal makes it), and the program leads its session."""
        started = yield self.ccx.execute(
            self.client,
            {"command": ["sh", "-c", "printf tty-ok >/dev/tty && ps -o sid= -p $$"], "pty": {"rows": 24, "cols": 80}},
        )
        done = yield self.client.notification("process.completed", started["process_id"])
        output = pty_output(self.client, started["process_id"])
        self.assertEqual(done["status"], "completed", output)
        self.assertEqual(output.split(b"\r\n")[0].replace(b" ", b""), b"tty-ok" + str(started["pid"]).encode())

    @inlineCallbacks
    def test_resize_sends_sigwinch_and_the_new_size(self):
        """After resize, a trap on WINCH fires and stty size shows the new size."""
        started = yield self.ccx.execute(
            self.client,
            {
                "command": ["sh", "-c", "trap 'stty size; kill $!; exit 0' WINCH; printf ready; sleep 100 & wait"],
                "pty": {"rows": 24, "cols": 80},
            },
        )
        process_id = started["process_id"]
        yield self.output_contains(process_id, b"ready")
        result = yield self.client.call("resize", {"process_id": process_id, "rows": 50, "cols": 132})
        self.assertEqual(result, {"process_id": process_id, "rows": 50, "cols": 132})
        done = yield self.client.notification("process.completed", process_id)
        self.assertEqual(done["status"], "completed")
        self.assertEqual(pty_output(self.client, process_id), b"ready50 132\r\n")

    @inlineCallbacks
    def test_write_types_and_ctrl_c_interrupts(self):
        """What write sends is typed: a line is read, Ctrl-C (0x03) becomes SIGINT for the program."""
        started = yield self.ccx.execute(
            self.client,
            {
                "command": ["sh", "-c", "trap 'printf INT; exit 3' INT; read x; printf \"got:$x;\"; sleep 100 & wait"],
                "pty": {"rows": 24, "cols": 80},
            },
        )
        process_id = started["process_id"]
        yield self.client.call("write", {"process_id": process_id, "data": "hello\n"})
        yield self.output_contains(process_id, b"got:hello;")
        yield self.client.call("write", {"process_id": process_id, "data": "\u0003"})
        done = yield self.client.notification("process.completed", process_id)
        self.assertEqual((done["status"], done["exit_code"]), ("failed", 3))
        # The terminal echoes what was typed, as it would for a person.
        self.assertEqual(pty_output(self.client, process_id), b"hello\r\ngot:hello;^CINT")

    @inlineCallbacks
    def test_eof_types_ctrl_d(self):
        """write's eof on a terminal types Ctrl-D: cat sees end of input and exits."""
        started = yield self.ccx.execute(
            self.client, {"command": ["cat"], "pty": {"rows": 24, "cols": 80}}
        )
        process_id = started["process_id"]
        yield self.client.call("write", {"process_id": process_id, "data": "abc\n", "eof": True})
        done = yield self.client.notification("process.completed", process_id)
        self.assertEqual(done["status"], "completed")
        self.assertEqual(pty_output(self.client, process_id), b"abc\r\nabc\r\n")

    @inlineCallbacks
    def test_byte_exact_through_pause_resume_and_attach(self):
        """Typed while paused, read on after resume: every byte, in order, live and on attach."""
        started = yield self.ccx.execute(
            self.client,
            {
                "command": ["sh", "-c", "read x; seq 1 3000"],
                "pty": {"rows": 24, "cols": 80},
                "on_disconnect": "keep",
                "encoding": "binary",
            },
        )
        process_id = started["process_id"]
        paused = yield self.client.call("control", {"type": "PAUSE", "process_id": process_id})
        self.assertEqual(paused["status"], "paused")
        yield self.client.call("write", {"process_id": process_id, "data": "go\n"})
        yield self.client.call("control", {"type": "RESUME", "process_id": process_id})
        done = yield self.client.notification("process.completed", process_id)
        expected = b"go\r\n" + b"".join(b"%d\r\n" % n for n in range(1, 3001))
        self.assertEqual(done["pty_bytes"], len(expected))
        self.assertEqual(self.client.output(process_id, "pty", binary=True), expected)
        listed = yield self.client.call("list")
        [entry] = [p for p in listed["processes"] if p["process_id"] == process_id]
        self.assertEqual(
            (entry["pty_bytes"], entry["pty"], entry["stdout_bytes"]),
            (len(expected), {"rows": 24, "cols": 80}, 0),
        )
        other = yield self.ccx.connect("/ws")
        attached = yield other.call(
            "attach", {"process_id": process_id, "offsets": {"pty": 4}, "encoding": "utf-8"}
        )
        self.assertEqual(attached["offsets"], {"pty": 4})
        yield other.notification("process.completed", process_id)
        self.assertEqual(other.output(process_id, "pty", start=4), expected[4:])

    @inlineCallbacks
    def test_refusals(self):
        """resize of a program on pipes, offsets of a stream it lacks, sizes just outside the bounds."""
        started = yield self.ccx.execute(self.client, {"command": ["sleep", "100"]})
        process_id = started["process_id"]
        response = yield self.client.request("resize", {"process_id": process_id, "rows": 10, "cols": 10})
        self.assertEqual(response["error"]["code"], -32004)
        self.assertIn("does not run on a terminal", response["error"]["message"])
        response = yield self.client.request("attach", {"process_id": process_id, "offsets": {"pty": 0}})
        self.assertEqual(response["error"]["code"], -32602)
        self.assertIn("no pty stream", response["error"]["message"])
        for params in ({"rows": 0, "cols": 80}, {"rows": 24, "cols": 1001}, {"rows": 24.0, "cols": 80}):
            response = yield self.client.request("resize", dict(process_id=process_id, **params))
            self.assertEqual(response["error"]["code"], -32602, params)
        for pty in ({"rows": 1001, "cols": 80}, {"rows": 24, "cols": 0}, {"rows": 24}, [24, 80]):
            response = yield self.client.request("execute", {"command": ["true"], "pty": pty})
            self.assertEqual(response["error"]["code"], -32602, pty)
        yield self.client.call("control", {"type": "CANCEL", "process_id": process_id})
        connected = self.client.messages[0]
        self.assertIn("pty", connected["params"]["capabilities"])


class TerminalMcpTests(TestCase):
    """
    The MCP tools with pty: execute, start, resize, output, status.
    """

    timeout = 30

    @inlineCallbacks
    def setUp(self):
        self.ccx = yield ServiceFixture(self).start()
        self.client = yield self.ccx.connect("/ws", protocols=("mcp",))
        yield self.client.call("initialize", {
            "protocolVersion": LATEST_VERSION,
            "capabilities": {},
            "clientInfo": {"name": "ccx-tests", "version": "0"},
        })
        self.client.send_json({"jsonrpc": "2.0", "method": "notifications/initialized"})
        listed = yield self.client.call("tools/list")
        self.tools = {tool["name"]: tool for tool in listed["tools"]}

    @inlineCallbacks
    def tool(self, name: str, arguments: dict) -> Any:
        result = yield self.client.call("tools/call", {"name": name, "arguments": arguments})
        if not result.get("isError"):
            jsonschema.validate(result["structuredContent"], self.tools[name]["outputSchema"])
        return result

    @inlineCallbacks
    def test_execute_on_a_terminal(self):
        """execute with pty returns the terminal's text in pty; stdout and stderr are empty."""
        result = yield self.tool(
            "execute", {"command": ["sh", "-c", "stty size; echo err >&2"], "pty": {"rows": 7, "cols": 33}}
        )
        content = result["structuredContent"]
        self.assertEqual(content["pty"], "7 33\r\nerr\r\n")
        self.assertEqual((content["pty_bytes"], content["stdout"], content["stdout_bytes"]), (11, "", 0))

    @inlineCallbacks
    def test_start_resize_output_status(self):
        """start with pty, resize (SIGWINCH), then output and status show the pty stream."""
        started = yield self.tool(
            "start",
            {
                "command": ["sh", "-c", "trap 'stty size; kill $!; exit 0' WINCH; printf ready; sleep 100 & wait"],
                "pty": {"rows": 24, "cols": 80},
            },
        )
        process_id = started["structuredContent"]["process_id"]
        self.ccx.groups.append(started["structuredContent"]["pgid"])
        process = self.ccx.service.node.registry.get(process_id)
        yield until(lambda: process.output.streams["pty"].end >= 5)
        resized = yield self.tool("resize", {"process_id": process_id, "rows": 1000, "cols": 1})
        self.assertEqual(resized["structuredContent"], {"process_id": process_id, "rows": 1000, "cols": 1})
        yield until(lambda: process.finished)
        output = yield self.tool("output", {"process_id": process_id, "offsets": {"pty": 5}})
        self.assertEqual(output["structuredContent"]["pty"]["text"], "1000 1\r\n")
        self.assertTrue(output["structuredContent"]["finished"])
        status = yield self.tool("status", {"process_id": process_id})
        self.assertEqual(status["structuredContent"]["pty"], {"rows": 1000, "cols": 1})
        refused = yield self.tool("resize", {"process_id": process_id, "rows": 1001, "cols": 1})
        self.assertTrue(refused["isError"])
        self.assertIn("from 1 to 1000", refused["content"][0]["text"])


class WindowParamTests(TestCase):
    """
    pty and resize sizes: the bounds themselves pass, one past them does not.
    """

    def test_bounds(self):
        from ccx.rpc.errors import RPCError
        from ccx.rpc.params import ParamReader, window_size

        for rows, cols in ((1, 1), (1000, 1000)):
            size = ParamReader({"pty": {"rows": rows, "cols": cols}}, "execute", ("pty",)).window("pty")
            self.assertEqual((size.rows, size.cols), (rows, cols))
            size = window_size(ParamReader({"rows": rows, "cols": cols}, "resize", ("rows", "cols")), "resize")
            self.assertEqual((size.rows, size.cols), (rows, cols))
        for bad in ({"rows": 0, "cols": 1}, {"rows": 1, "cols": 1001}, {"rows": True, "cols": 1},
                    {"rows": 1, "cols": 1, "x": 1}, {"rows": 1}):
            with self.assertRaises(RPCError):
                ParamReader({"pty": bad}, "execute", ("pty",)).window("pty")
        for bad in ({"rows": 1001, "cols": 1}, {"rows": 1, "cols": 0}, {"rows": "1", "cols": 1}):
            with self.assertRaises(RPCError):
                window_size(ParamReader(bad, "resize", ("rows", "cols")), "resize")


class TerminalBackPressureTests(TestCase):
    timeout = 60

    @inlineCallbacks
    def test_a_client_that_stops_reading_holds_the_program_back(self):
        """Blocking output stops reading the terminal: the program is held back; cancel ends it."""
        ccx = yield ServiceFixture(self, buffer_bytes=64 * 1024, journal=False).start()
        client = yield ccx.connect("/ws")
        client.transport.pauseProducing()
        client.send_json({"jsonrpc": "2.0", "id": 1, "method": "execute",
                          "params": {"command": ["yes"], "pty": {"rows": 24, "cols": 80}}})
        registry = ccx.service.node.registry
        yield until(lambda: len(registry.live()) == 1)
        process = registry.live()[0]
        ccx.groups.append(process.pid)
        yield until(lambda: process.output.reading_paused)
        held = process.output.streams["pty"].end
        self.assertLessEqual(process.output.streams["pty"].held_bytes, 64 * 1024 + 64 * 1024)
        process.cancel()
        client.transport.resumeProducing()
        yield until(lambda: process.finished)
        self.assertEqual(process.outcome, "cancelled")
        self.assertGreater(held, 0)
