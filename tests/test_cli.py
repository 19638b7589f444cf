"""
The C{ccx} command-line client against the real service: in-process (the
whole program as L{run_cli}, with in-memory standard streams) and as a
child process (C{python -m ccx}) for Ctrl-C, pipes and standard input.
"""

import base64
import os
import shutil
import signal
import sys
import tempfile

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.protocol import ProcessProtocol
from twisted.trial.unittest import SynchronousTestCase, TestCase

import ccx.web.websocket
from ccx.cli.client import ConnectionLost, RPCClientProtocol, ServiceError
from ccx.cli.commands import format_table, signal_name
from ccx.cli.context import Context
from ccx.cli.relay import ChunkDecoder, OutputRelay
from ccx.cli.status import exit_status
from ccx.cli.console import MemoryConsole
from ccx.cli.main import run_cli
from ccx.process.group import ProcessGroup, group_states
from ccx.protocol import OutputFrame
from ccx.testing import polling
from ccx.testing.ports import free_port
from tests.support import ServiceFixture, until

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKEN = "cli-test-token"


class CLIProcess(ProcessProtocol):
    """
    C{python -m ccx ...} as a child: its output collected, its end awaited.
    """

    def __init__(self) -> None:
        self._out = []
        self.err = b""
        self.ended: Deferred = Deferred()
        self._waiting = []

    @property
    def out(self) -> bytes:
        return b"".join(self._out)

    def outReceived(self, data: bytes) -> None:
        self._out.append(data)

    def errReceived(self, data: bytes) -> None:
        self.err += data
        for entry in list(self._waiting):
            text, d = entry
            if text in self.err:
                self._waiting.remove(entry)
                d.callback(self.err)

    def said(self, text: bytes) -> Deferred:
        """
        Fire once standard error holds C{text}.
        """
        d: Deferred = Deferred()
        self._waiting.append((text, d))
        self.errReceived(b"")
        return d

    def started_id(self) -> Deferred:
        """
        Fire with the process id once ccx has said C{started <id>}.
        """
        d = self.said(b"started ")
        d.addCallback(lambda err: err.split(b"started ")[1].split()[0].decode())
        return d

    def processEnded(self, reason) -> None:
        self.status = reason.value.exitCode
        self.signal = reason.value.signal
        for _text, d in self._waiting:
            d.errback(AssertionError(f"ccx ended first: {self.err!r}"))
        self._waiting = []
        self.ended.callback(self)


class CLITestCase(TestCase):
    timeout = 60

    @inlineCallbacks
    def setUp(self):
        self.ccx = yield ServiceFixture(self, **self.settings()).start()

    def settings(self):
        return {}

    def cli(self, *argv, stdin=b"", environ=None):
        """
        Run C{ccx ARGV...} in-process; fire with (status, stdout, stderr).
        """
        console = MemoryConsole(reactor, stdin=stdin)
        env = {"CCX_URL": self.ccx.url()}
        env.update(environ or {})
        d = run_cli(reactor, list(argv), console, env)
        d.addCallback(lambda status: (status, console.out.getvalue(), console.err.getvalue()))
        return d

    def spawn(self, *argv, environ=None):
        """
        Start C{python -m ccx ARGV...} as a child process.
        """
        child = CLIProcess()
        env = dict(os.environ, PYTHONPATH=ROOT, CCX_URL=self.ccx.url())
        env.update(environ or {})
        reactor.spawnProcess(
            child, sys.executable, [sys.executable, "-m", "ccx", *argv], env=env
        )

        def stop():
            if not child.ended.called:
                child.transport.signalProcess("KILL")
                return child.ended

        self.addCleanup(stop)
        return child

    @inlineCallbacks
    def started(self, params):
        """
        Start a program with a test client (its group is checked at the end).
        """
        client = yield self.ccx.connect()
        result = yield self.ccx.execute(client, params)
        return client, result

    @inlineCallbacks
    def listed(self, process_id):
        client = yield self.ccx.connect()
        result = yield client.call("list", {})
        yield client.close()
        for process in result["processes"]:
            if process["process_id"] == process_id:
                return process
        return None


class RunTests(CLITestCase):
    def settings(self):
        return {"allow_env": ["GREETING"]}

    @inlineCallbacks
    def test_streams_apart_and_exit_status(self):
        """stdout goes to stdout and stderr to stderr, and ccx exits with the program's status."""
        status, out, err = yield self.cli(
            "run", "--", "sh", "-c", "echo out; echo err >&2; exit 3"
        )
        self.assertEqual((status, out, err), (3, b"out\n", b"err\n"))

    @inlineCallbacks
    def test_success(self):
        """A program that exits 0 gives 0; its output is exact, in order, whatever its size."""
        status, out, err = yield self.cli("run", "seq", "1", "100000")
        self.assertEqual(status, 0, err)
        self.assertEqual(out, b"".join(b"%d\n" % i for i in range(1, 100001)))
        self.assertEqual(err, b"")

    @inlineCallbacks
    def test_binary_output_exact(self):
        """Bytes that are not UTF-8 arrive unchanged (base64 on the wire)."""
        status, out, _ = yield self.cli("run", "printf", "\\000\\377\\300abc\\n")
        self.assertEqual((status, out), (0, b"\x00\xff\xc0abc\n"))

    @inlineCallbacks
    def test_binary_frames_where_offered(self):
        """run and attach ask for binary frames from a service that announces them."""
        status, out, _ = yield self.cli("run", "--keep", "printf", "\\000\\377")
        self.assertEqual((status, out), (0, b"\x00\xff"))
        [process] = self.ccx.service.node.registry.all()
        self.assertEqual(process.options.encoding, "binary")
        status, out, _ = yield self.cli("attach", "--from-start", process.process_id)
        self.assertEqual((status, out), (0, b"\x00\xff"))

    @inlineCallbacks
    def test_base64_from_a_service_without_binary_frames(self):
        """Against a service that does not announce binary frames, run and attach use base64, exactly."""
        self.patch(
            ccx.web.websocket,
            "CAPABILITIES",
            tuple(c for c in ccx.web.websocket.CAPABILITIES if c != "binary-frames"),
        )
        status, out, err = yield self.cli("run", "--keep", "printf", "\\000\\377\\300")
        self.assertEqual((status, out), (0, b"\x00\xff\xc0"), err)
        [process] = self.ccx.service.node.registry.all()
        self.assertEqual(process.options.encoding, "base64")
        status, out, err = yield self.cli("attach", "--from-start", process.process_id)
        self.assertEqual((status, out), (0, b"\x00\xff\xc0"), err)

    @inlineCallbacks
    def test_killed_by_signal(self):
        """A program killed by signal N gives 128+N."""
        status, _, err = yield self.cli("run", "--", "sh", "-c", "kill -USR1 $$")
        self.assertEqual(status, 128 + signal.SIGUSR1, err)
        self.assertEqual(err, b"")

    @inlineCallbacks
    def test_stdin(self):
        """--stdin passes standard input through, to end of file, in as many writes as it takes."""
        data = bytes(range(256)) * 2000
        status, out, err = yield self.cli("run", "--stdin", "--", "cat", stdin=data)
        self.assertEqual(status, 0, err)
        self.assertEqual(out, data)

    @inlineCallbacks
    def test_drop(self):
        """--drop runs the program with on_full "drop"; a client that keeps up misses nothing."""
        status, out, err = yield self.cli("run", "--drop", "seq", "1", "1000")
        expected = b"".join(b"%d\n" % i for i in range(1, 1001))
        self.assertEqual((status, out, err), (0, expected, b""))

    @inlineCallbacks
    def test_no_stdin(self):
        """Without --stdin the program's stdin is empty."""
        status, out, _ = yield self.cli("run", "cat", stdin=b"not passed")
        self.assertEqual((status, out), (0, b""))

    @inlineCallbacks
    def test_env_cwd(self):
        """--env and --cwd reach the program."""
        directory = os.path.realpath(self.mktemp())
        os.makedirs(directory)
        status, out, err = yield self.cli(
            "run", "--env", "GREETING=hi there", "-C", directory, "--",
            "sh", "-c", 'echo "$GREETING"; pwd',
        )
        self.assertEqual((status, out), (0, f"hi there\n{directory}\n".encode()), err)

    @inlineCallbacks
    def test_env_not_allowed(self):
        """--env with a variable the service does not allow: one line naming --allow-env, exit 126."""
        status, out, err = yield self.cli("run", "--env", "GREETINGS=hi", "true")
        self.assertEqual((status, out), (126, b""))
        self.assertTrue(err.startswith(b"ccx: command not allowed: "), err)
        self.assertIn(b"start ccx with --allow-env GREETINGS to allow it", err)
        self.assertNotIn(b"Traceback", err)
        self.assertEqual(err.count(b"\n"), 1, err)

    @inlineCallbacks
    def test_timeout(self):
        """--timeout cancels the program; ccx exits 124, like timeout(1)."""
        status, _, err = yield self.cli("run", "--timeout", "0.2", "sleep", "10")
        self.assertEqual(status, 124, err)

    @inlineCallbacks
    def test_verbose(self):
        """-v says when the program started and how it ended."""
        status, _, err = yield self.cli("run", "-v", "true")
        self.assertEqual(status, 0)
        self.assertRegex(err.decode(), r"^ccx: started [0-9a-f]+ \(pid \d+\)\nccx: .* completed")

    @inlineCallbacks
    def test_refused_command(self):
        """A program not on the allow-list: the service's message, exit 126, no traceback."""
        status, out, err = yield self.cli("run", "ls", "/")
        self.assertEqual(status, 126)
        self.assertEqual(out, b"")
        self.assertTrue(err.startswith(b"ccx: command not allowed: "), err)
        self.assertIn(b"'ls'", err)
        self.assertNotIn(b"Traceback", err)
        self.assertEqual(err.count(b"\n"), 1, err)

    @inlineCallbacks
    def test_bad_cwd(self):
        """A working directory that does not exist: a message, non-zero, no traceback."""
        status, _, err = yield self.cli("run", "-C", "/nonexistent/dir", "true")
        self.assertNotEqual(status, 0)
        self.assertTrue(err.startswith(b"ccx: "), err)
        self.assertIn(b"/nonexistent/dir", err)
        self.assertNotIn(b"Traceback", err)

    @inlineCallbacks
    def test_keep_runs_on(self):
        """With --keep, the program outlives a client that leaves; ccx says how to attach."""
        child = self.spawn("run", "--keep", "--", "sleep", "1000")
        process_id = yield child.started_id()
        child.transport.signalProcess("KILL")
        yield child.ended
        process = yield self.listed(process_id)
        self.assertEqual(process["state"], "running")
        self.ccx.groups.append(process["pgid"])
        status, out, _ = yield self.cli("cancel", process_id)
        self.assertEqual((status, out), (0, f"cancelled {process_id}\n".encode()))

    @inlineCallbacks
    def test_durable(self):
        """
        --durable runs the program durable: it outlives a client that
        leaves, as with --keep, and says so in list.
        """
        child = self.spawn("run", "--durable", "--", "sleep", "1000")
        process_id = yield child.started_id()
        child.transport.signalProcess("KILL")
        yield child.ended
        process = yield self.listed(process_id)
        self.assertEqual((process["state"], process["durable"]), ("running", True))
        self.ccx.groups.append(process["pgid"])
        status, out, _ = yield self.cli("cancel", process_id)
        self.assertEqual((status, out), (0, f"cancelled {process_id}\n".encode()))
        process = self.ccx.service.node.registry.get(process_id)
        yield process.ended

    @inlineCallbacks
    def test_not_durable_by_default(self):
        """Without --durable, a program is not durable."""
        status, _, _ = yield self.cli("run", "--keep", "true")
        [process] = self.ccx.service.node.registry.all()
        self.assertEqual((status, process.options.durable), (0, False))


class UsageTests(CLITestCase):
    @inlineCallbacks
    def test_help(self):
        """--help prints the usage on stdout and exits 0."""
        status, out, _ = yield self.cli("--help")
        self.assertEqual(status, 0)
        self.assertIn(b"Usage: ccx", out)
        status, out, _ = yield self.cli("run", "--help")
        self.assertEqual(status, 0)
        self.assertIn(b"--keep", out)

    @inlineCallbacks
    def test_bad_usage(self):
        """Wrong arguments: a message and exit 2."""
        for argv in (
            [], ["frobnicate"], ["run"], ["signal", "x"], ["run", "--env", "X", "true"],
            ["run", "--timeout", "abc", "true"], ["attach", "--from-start"],
            ["run", "-t", "-i", "--", "true"],
        ):
            status, out, err = yield self.cli(*argv)
            self.assertEqual(status, 2, argv)
            self.assertTrue(err.startswith(b"ccx: "), err)
            self.assertNotIn(b"Traceback", err)

    @inlineCallbacks
    def test_bad_url(self):
        """A URL that is not ws:// or wss:// is refused before connecting."""
        status, _, err = yield self.cli("ls", "--url", "http://127.0.0.1:1/")
        self.assertEqual(status, 2)
        self.assertIn(b"not for WebSocket", err)


class SmallBufferTests(CLITestCase):
    def settings(self):
        # Output held in memory alone, so that the service no longer holds
        # its start.
        return {"buffer_lines": 10, "journal": False}

    @inlineCallbacks
    def test_attach_from_start_says_what_is_gone(self):
        """attach --from-start tells, on stderr, which bytes the service no longer held."""
        client, result = yield self.started(
            {"command": ["seq", "1", "100"], "on_full": "drop"}
        )
        yield client.notification("process.completed", result["process_id"])
        status, out, err = yield self.cli("attach", "--from-start", result["process_id"])
        self.assertEqual(status, 0)
        expected = b"".join(b"%d\n" % i for i in range(1, 101))
        self.assertTrue(expected.endswith(out), out)
        self.assertEqual(
            err,
            f"ccx: {len(expected) - len(out)} bytes of the program's stdout (from byte 0) "
            "were dropped: the service no longer held them\n".encode(),
        )


class RateLimitTests(CLITestCase):
    def settings(self):
        return {"max_requests": 5.0}

    @inlineCallbacks
    def test_stdin_outlasts_the_rate_limit(self):
        """Writes refused by the request rate limit (-32001) are sent again: no input is lost."""
        data = os.urandom(64 * 1024 * 12 + 5)
        status, out, err = yield self.cli("run", "--stdin", "--", "cat", stdin=data)
        self.assertEqual((status, err), (0, b""))
        self.assertEqual(out, data)


class ConnectionTests(CLITestCase):
    @inlineCallbacks
    def test_service_down(self):
        """Nothing listening: a clear message and exit 2."""
        url = f"ws://127.0.0.1:{free_port()}/ws/mcp"
        status, _, err = yield self.cli("run", "true", environ={"CCX_URL": url})
        self.assertEqual(status, 2)
        self.assertEqual(
            err,
            f"ccx: cannot reach the service at {url}: connection refused "
            "(is `twistd ccx` running?)\n".encode(),
        )

    @inlineCallbacks
    def test_url_option_wins(self):
        """--url overrides $CCX_URL, before or after the command."""
        down = f"ws://127.0.0.1:{free_port()}/ws/mcp"
        status, _, _ = yield self.cli("--url", self.ccx.url(), "ls", environ={"CCX_URL": down})
        self.assertEqual(status, 0)
        status, _, _ = yield self.cli("ls", "--url", self.ccx.url(), environ={"CCX_URL": down})
        self.assertEqual(status, 0)

    @inlineCallbacks
    def test_not_a_websocket(self):
        """A URL path that is not the WebSocket says so."""
        url = self.ccx.url("/nothing-here")
        status, _, err = yield self.cli("ls", environ={"CCX_URL": url})
        self.assertEqual(status, 2)
        self.assertIn(b"404", err)


class TokenTests(CLITestCase):
    def settings(self):
        path = os.path.abspath(self.mktemp())
        with open(path, "w") as f:
            f.write(TOKEN + "\n")
        self.token_file = path
        return {"token_file": path}

    def write_token(self, token):
        path = os.path.abspath(self.mktemp())
        with open(path, "w") as f:
            f.write(token + "\n")
        return path

    @inlineCallbacks
    def test_wrong_token(self):
        """A wrong token: the service refused it, exit 2."""
        wrong = self.write_token("wrong")
        status, _, err = yield self.cli("ls", "--token-file", wrong)
        self.assertEqual(status, 2)
        self.assertEqual(err, b"ccx: the service refused the token (see --token-file)\n")
        status, _, err = yield self.cli("ls", environ={"CCX_TOKEN": "wrong"})
        self.assertEqual(err, b"ccx: the service refused the token (see --token-file)\n")

    @inlineCallbacks
    def test_missing_token(self):
        """No token at all: ccx says how to give one."""
        status, _, err = yield self.cli("ls")
        self.assertEqual(status, 2)
        self.assertIn(b"requires a token", err)

    @inlineCallbacks
    def test_right_token(self):
        """The token from --token-file, $CCX_TOKEN_FILE or $CCX_TOKEN opens the connection."""
        for argv, environ in (
            (["--token-file", self.token_file], {}),
            ([], {"CCX_TOKEN_FILE": self.token_file}),
            ([], {"CCX_TOKEN": TOKEN}),
        ):
            status, out, err = yield self.cli(*argv, "run", "printf", "ok", environ=environ)
            self.assertEqual((status, out, err), (0, b"ok", b""))

    @inlineCallbacks
    def test_unreadable_token_file(self):
        """A token file that cannot be read is named."""
        status, _, err = yield self.cli("ls", "--token-file", "/nonexistent/token")
        self.assertEqual(status, 2)
        self.assertEqual(err, b"ccx: --token-file /nonexistent/token: No such file or directory\n")


class ProcessCommandTests(CLITestCase):
    def settings(self):
        return {"keep_finished": 30.0}

    @inlineCallbacks
    def test_ls(self):
        """ls shows a table with a row per process."""
        _, result = yield self.started({"command": ["sleep", "1000"]})
        status, out, err = yield self.cli("ls")
        self.assertEqual(status, 0, err)
        lines = out.decode().splitlines()
        self.assertEqual(
            lines[0].split(),
            ["ID", "PID", "STATE", "STARTED", "DURATION", "EXIT", "STDOUT", "STDERR", "COMMAND"],
        )
        row = [line for line in lines if line.startswith(result["process_id"][:12])]
        self.assertEqual(len(row), 1, out)
        cells = row[0].split()
        del cells[3:5]  # when it started, for how long
        self.assertEqual(
            cells,
            [result["process_id"][:12], str(result["pid"]), "running", "-", "0B", "0B", "sleep", "1000"],
        )

    @inlineCallbacks
    def test_ls_empty(self):
        """ls with nothing to show says so."""
        status, out, err = yield self.cli("ls")
        self.assertEqual((status, out, err), (0, b"", b"ccx: no processes\n"))

    @inlineCallbacks
    def test_pause_resume_cancel(self):
        """pause stops the group, resume continues it, cancel ends it; an id prefix is enough."""
        client, result = yield self.started({"command": ["sleep", "1000"]})
        process_id, pgid = result["process_id"], result["pgid"]
        status, out, err = yield self.cli("pause", process_id[:10])
        self.assertEqual((status, out), (0, f"paused {process_id}\n".encode()), err)
        yield until(lambda: group_states(pgid) == ["T"])
        status, out, _ = yield self.cli("resume", process_id)
        self.assertEqual((status, out), (0, f"resumed {process_id}\n".encode()))
        yield until(lambda: "T" not in group_states(pgid))
        status, out, _ = yield self.cli("cancel", process_id)
        self.assertEqual((status, out), (0, f"cancelled {process_id}\n".encode()))
        done = yield client.notification("process.completed", process_id)
        self.assertEqual(done["status"], "cancelled")
        self.assertEqual(ProcessGroup(pgid).members(), [])

    @inlineCallbacks
    def test_signal(self):
        """signal ID NAME sends the signal to the group, with or without SIG."""
        client, result = yield self.started({"command": ["sleep", "1000"]})
        process_id = result["process_id"]
        status, out, err = yield self.cli("signal", process_id, "usr1")
        self.assertEqual((status, out), (0, f"sent SIGUSR1 to {process_id}\n".encode()), err)
        done = yield client.notification("process.completed", process_id)
        self.assertEqual((done["exit_code"], done["signal"]), (-signal.SIGUSR1, "SIGUSR1"))

    @inlineCallbacks
    def test_errors(self):
        """Unknown or finished processes and bad signal names: the service's message, exit 1."""
        status, _, err = yield self.cli("pause", "nosuchprocess")
        self.assertEqual(status, 1)
        self.assertTrue(err.startswith(b"ccx: process not found"), err)
        client, result = yield self.started({"command": ["true"]})
        yield client.notification("process.completed", result["process_id"])
        status, _, err = yield self.cli("cancel", result["process_id"])
        self.assertEqual(status, 1)
        self.assertIn(b"already finished", err)
        _, result = yield self.started({"command": ["sleep", "1000"]})
        status, _, err = yield self.cli("signal", result["process_id"], "STOP")
        self.assertEqual(status, 1)
        self.assertTrue(err.startswith(b"ccx: "), err)
        self.assertNotIn(b"Traceback", err)

    @inlineCallbacks
    def test_attach_from_start_replays(self):
        """attach --from-start replays what is held of a finished process; exits with its status."""
        for encoding in ("utf-8", "base64"):
            client, result = yield self.started(
                {"command": ["sh", "-c", "seq 1 500; echo oops >&2; exit 4"], "encoding": encoding}
            )
            yield client.notification("process.completed", result["process_id"])
            status, out, err = yield self.cli("attach", "--from-start", result["process_id"])
            self.assertEqual(status, 4, encoding)
            self.assertEqual(out, b"".join(b"%d\n" % i for i in range(1, 501)), encoding)
            self.assertEqual(err, b"oops\n", encoding)

    @inlineCallbacks
    def test_attach_live_end(self):
        """attach without --from-start relays only what comes after it attached."""
        client, result = yield self.started({"command": ["cat"], "stdin": True})
        process_id = result["process_id"]
        yield client.call("write", {"process_id": process_id, "data": "before\n"})
        yield until_listed(self, process_id, lambda p: p["stdout_bytes"] == 7)
        attached = self.cli("attach", process_id[:6])
        yield until_listed(self, process_id, lambda p: p["subscribers"] == 2)
        yield client.call("write", {"process_id": process_id, "data": "after\n", "eof": True})
        status, out, err = yield attached
        self.assertEqual((status, out, err), (0, b"after\n", b""))

    @inlineCallbacks
    def test_attach_unknown(self):
        """attach to a process the service does not know: a message, exit 1."""
        status, _, err = yield self.cli("attach", "nosuchprocess")
        self.assertEqual(status, 1)
        self.assertEqual(err, b"ccx: no process 'nosuchprocess' (see `ccx ls`)\n")


def until_listed(case, process_id, predicate, timeout=10.0):
    """
    Fire once the process's C{list} entry satisfies C{predicate}.
    """

    async def listed():
        process = await case.listed(process_id)
        return process if process is not None and predicate(process) else None

    return Deferred.fromCoroutine(polling.until(reactor, listed, timeout, 0.02))


class ChildProcessTests(CLITestCase):
    def settings(self):
        # A slow reader holds a program back once its journal is full.
        return {"journal_bytes": 1024 * 1024}

    @inlineCallbacks
    def test_ctrl_c_cancels(self):
        """Ctrl-C cancels the program and waits for it: nothing of its group is left; exit 130."""
        child = self.spawn("run", "-v", "--", "sh", "-c", "sleep 1000 & sleep 1000")
        process_id = yield child.started_id()
        process = yield self.listed(process_id)
        pgid = process["pgid"]
        self.ccx.groups.append(pgid)
        self.assertTrue(ProcessGroup(pgid).members())
        child.transport.signalProcess("INT")
        yield child.ended
        self.assertEqual(child.status, 130, child.err)
        self.assertIn(b"cancelling", child.err)
        self.assertNotIn(b"Traceback", child.err)
        self.assertEqual(ProcessGroup(pgid).members(), [])

    @inlineCallbacks
    def test_second_ctrl_c_leaves_at_once(self):
        """A second Ctrl-C leaves without waiting for a program that ignores SIGTERM."""
        child = self.spawn("run", "-v", "--", "sh", "-c", "trap '' TERM; sleep 1000")
        process_id = yield child.started_id()
        process = yield self.listed(process_id)
        self.ccx.groups.append(process["pgid"])
        child.transport.signalProcess("INT")
        yield child.said(b"cancelling")
        child.transport.signalProcess("INT")
        yield child.ended
        self.assertEqual(child.status, 130, child.err)
        # The service still ends it (SIGKILL after its grace period).
        yield until(lambda: ProcessGroup(process["pgid"]).members() == [])

    @inlineCallbacks
    def test_stdin_pipe(self):
        """--stdin reads a real pipe to its end."""
        child = self.spawn("run", "--stdin", "--", "head", "-c", "100000")
        data = os.urandom(150000)
        child.transport.write(data)
        child.transport.closeStdin()
        yield child.ended
        self.assertEqual(child.status, 0, child.err)
        self.assertEqual(child.out, data[:100000])

    @inlineCallbacks
    def test_exit_status_and_streams(self):
        """The real command: separate streams and the program's exit status."""
        child = self.spawn("run", "--", "sh", "-c", "echo out; echo err >&2; exit 7")
        yield child.ended
        self.assertEqual((child.status, child.out, child.err), (7, b"out\n", b"err\n"))

    @inlineCallbacks
    def test_slow_reader_holds_the_program_back(self):
        """While nobody reads ccx's output the program blocks; then all of it arrives, exactly."""
        count = 2000000
        child = self.spawn("run", "-v", "seq", "1", str(count))
        process_id = yield child.started_id()
        child.transport.pauseProducing()
        first = yield until_stalled(self, process_id)
        total = len(b"".join(b"%d\n" % i for i in range(1, count + 1)))
        self.assertLess(first["stdout_bytes"], total)
        self.assertEqual(first["state"], "running")
        child.transport.resumeProducing()
        yield child.ended
        self.assertEqual(child.status, 0, child.err)
        self.assertEqual(len(child.out), total)
        self.assertTrue(child.out.endswith(b"%d\n%d\n" % (count - 1, count)))

    @inlineCallbacks
    def test_broken_pipe(self):
        """When nobody reads ccx's output any more, it cancels the program, waits, and exits 141."""
        child = self.spawn("run", "-v", "seq", "1", "100000000")
        process_id = yield child.started_id()
        process = yield self.listed(process_id)
        self.ccx.groups.append(process["pgid"])
        child.transport.pauseProducing()
        child.transport.closeChildFD(1)
        child.transport.resumeProducing()
        yield child.ended
        self.assertEqual(child.status, 128 + signal.SIGPIPE, child.err)
        self.assertEqual(ProcessGroup(process["pgid"]).members(), [])
        process = yield self.listed(process_id)
        self.assertEqual((process["state"], process["exit_code"]), ("exited", -signal.SIGTERM))


@inlineCallbacks
def until_stalled(case, process_id):
    """
    Fire with the process's C{list} entry once its output stopped growing.
    """
    last = None
    for _ in range(500):
        d: Deferred = Deferred()
        reactor.callLater(0.1, d.callback, None)
        yield d
        process = yield case.listed(process_id)
        if last is not None and process["stdout_bytes"] == last["stdout_bytes"] > 0:
            return process
        last = process
    raise AssertionError("the output never stopped growing")


class TLSTests(TestCase):
    timeout = 30

    @inlineCallbacks
    def test_wss(self):
        """wss:// works, verified against --cacert; an untrusted certificate is refused clearly."""
        from tests.test_tls import make_certificate

        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        key_path, cert_path = make_certificate(directory)
        port = f"ssl:0:interface=127.0.0.1:privateKey={key_path}:certKey={cert_path}"
        ccx = yield ServiceFixture(self, port=port).start()
        url = f"wss://localhost:{ccx.port}/ws/mcp"
        console = MemoryConsole(reactor)
        status = yield run_cli(
            reactor, ["run", "--cacert", cert_path, "seq", "1", "3"], console, {"CCX_URL": url}
        )
        self.assertEqual(
            (status, console.out.getvalue()), (0, b"1\n2\n3\n"), console.err.getvalue()
        )
        console = MemoryConsole(reactor)
        status = yield run_cli(reactor, ["ls"], console, {"CCX_URL": url})
        self.assertEqual(status, 2)
        err = console.err.getvalue()
        self.assertTrue(err.startswith(f"ccx: cannot open a WebSocket to {url}: ".encode()), err)
        self.assertIn(b"certificate verify failed", err)


class FakeClient:
    """
    The part of L{RPCClientProtocol} that L{OutputRelay} uses.
    """

    transport = None

    def __init__(self):
        self.listeners = []
        self.frame_listeners = []
        self.closing = Deferred()

    def add_listener(self, listener):
        self.listeners.append(listener)

    def remove_listener(self, listener):
        self.listeners.remove(listener)

    def add_frame_listener(self, listener):
        self.frame_listeners.append(listener)

    def remove_frame_listener(self, listener):
        self.frame_listeners.remove(listener)

    def frame(self, frame):
        for listener in list(self.frame_listeners):
            listener(frame)

    def when_closed(self):
        return self.closing

    def notify(self, method, params):
        for listener in list(self.listeners):
            listener(method, params)


class RelayTests(SynchronousTestCase):
    def setUp(self):
        self.console = MemoryConsole(reactor)
        self.context = Context(reactor, self.console, "ws://example/ws")
        self.client = FakeClient()
        self.relay = OutputRelay(self.context, self.client, encoding="base64")

    def output(self, stream, data, offset=0, process_id="p1"):
        self.client.notify(
            "process.output",
            {"process_id": process_id, "type": stream, "offset": offset,
             "data": base64.b64encode(data).decode()},
        )

    def test_relays_one_process(self):
        """
        Output of the followed process goes to its stream; what came before
        its id was known waits for it.
        """
        self.output("stdout", b"early\n")
        self.relay.follow("p1")
        self.output("stderr", b"\xff")
        self.output("stdout", b"other", process_id="p2")
        completed = {"process_id": "p1", "status": "completed", "exit_code": 0, "error": None}
        self.client.notify("process.completed", completed)
        self.assertEqual(self.successResultOf(self.relay.finished), completed)
        self.assertEqual(self.console.out.getvalue(), b"early\n")
        self.assertEqual(self.console.err.getvalue(), b"\xff")
        self.assertEqual(self.client.listeners, [])

    def test_binary_frames(self):
        """
        Binary frames of the followed process go to their stream as they
        are, in order with the notifications around them, early ones too.
        """
        self.client.frame(OutputFrame("p1", "stdout", 0, 1.0, b"\x00early"))
        self.output("stdout", b"-json-")
        self.relay.follow("p1")
        self.client.frame(OutputFrame("p1", "stderr", 0, 2.0, b"\xff\xfe"))
        self.client.frame(OutputFrame("p2", "stdout", 0, 2.0, b"other"))
        self.client.frame(OutputFrame("p1", "stdout", 12, 3.0, b"late"))
        completed = {"process_id": "p1", "status": "completed", "exit_code": 0, "error": None}
        self.client.notify("process.completed", completed)
        self.client.frame(OutputFrame("p1", "stdout", 16, 4.0, b"after the end"))
        self.assertEqual(self.successResultOf(self.relay.finished), completed)
        self.assertEqual(self.console.out.getvalue(), b"\x00early-json-late")
        self.assertEqual(self.console.err.getvalue(), b"\xff\xfe")
        self.assertEqual((self.client.listeners, self.client.frame_listeners), ([], []))

    def test_output_received(self):
        """
        Bytes handed to output_received go to their stream as they are,
        whatever carried them; an unknown stream is left out.  (A program on
        a terminal has only the pty stream, shown on standard output.)
        """
        self.relay.follow("p1")
        self.relay.output_received("stdout", 0, b"out\xff")
        self.relay.output_received("stderr", 0, b"err")
        self.relay.output_received("tty", 0, b"nowhere")
        self.relay.output_received("stdout", 4, b"\n")
        self.assertEqual(self.console.out.getvalue(), b"out\xff\n")
        self.assertEqual(self.console.err.getvalue(), b"err")
        self.relay.output_received("pty", 0, b"screen")
        self.assertEqual(self.console.out.getvalue(), b"out\xff\nscreen")

    def test_output_received_after_the_end(self):
        """Once the process completed, late output is not written."""
        self.relay.follow("p1")
        completed = {"process_id": "p1", "status": "completed", "exit_code": 0, "error": None}
        self.client.notify("process.completed", completed)
        self.relay.output_received("stdout", 0, b"late")
        self.assertEqual(self.console.out.getvalue(), b"")

    def test_dropped_is_told(self):
        """process.dropped becomes a note on standard error."""
        self.relay.follow("p1")
        self.client.notify(
            "process.dropped", {"process_id": "p1", "type": "stdout", "offset": 10, "bytes": 300}
        )
        self.assertEqual(
            self.console.err.getvalue(),
            b"ccx: 300 bytes of the program's stdout (from byte 10) were dropped: "
            b"the service no longer held them\n",
        )

    def test_connection_lost(self):
        """A connection that closes before process.completed fails the relay with a ServiceError."""
        self.relay.follow("p1")
        self.client.closing.callback(ServiceError("the service closed the connection"))
        failure = self.failureResultOf(self.relay.finished, ServiceError)
        self.assertEqual(
            failure.value.message,
            "the connection to the service at ws://example/ws closed before the program "
            "ended (did the service stop?)",
        )
        self.assertEqual(failure.value.status, 143)


class UnixSocketTests(TestCase):
    timeout = 30

    @inlineCallbacks
    def test_unix_socket(self):
        """ws://unix:/PATH[:/RESOURCE] reaches a service listening on a UNIX socket."""
        directory = tempfile.mkdtemp(prefix="ccx-cli-")
        self.addCleanup(shutil.rmtree, directory)
        path = os.path.join(directory, "ccx.sock")
        ccx = ServiceFixture(self, port=f"unix:{path}")
        ccx.service.startService()
        self.addCleanup(ccx.stop)
        yield ccx.service.when_listening()
        for url in (f"ws://unix:{path}", f"ws://unix:{path}:/ws"):
            console = MemoryConsole(reactor)
            status = yield run_cli(reactor, ["run", "printf", "hi"], console, {"CCX_URL": url})
            self.assertEqual((status, console.out.getvalue()), (0, b"hi"), console.err.getvalue())
        console = MemoryConsole(reactor)
        url = f"ws://unix:{path}.missing"
        status = yield run_cli(reactor, ["ls"], console, {"CCX_URL": url})
        self.assertEqual(status, 2)
        self.assertEqual(
            console.err.getvalue(),
            f"ccx: cannot reach the service at {url}: no such socket "
            "(is `twistd ccx` running?)\n".encode(),
        )


class UnitTests(SynchronousTestCase):
    def test_exit_status(self):
        """How process.completed maps to ccx's exit status."""
        cases = [
            ({"status": "completed", "exit_code": 0}, False, 0),
            ({"status": "failed", "exit_code": 3}, False, 3),
            ({"status": "failed", "exit_code": -9}, False, 137),
            ({"status": "timeout", "exit_code": -15}, False, 124),
            ({"status": "cancelled", "exit_code": -15}, True, 130),
            ({"status": "cancelled", "exit_code": -15}, False, 143),
            ({"status": "cancelled", "exit_code": -9}, False, 137),
            ({"status": "cancelled", "exit_code": 0}, False, 143),
        ]
        for completed, interrupted, expected in cases:
            self.assertEqual(exit_status(completed, interrupted), expected, completed)

    def test_signal_name(self):
        for given in ("INT", "int", "SIGINT", "2"):
            self.assertEqual(signal_name(given), "SIGINT")

    def test_chunk_decoder(self):
        """Known base64; unknown: base64 if it reads as such, else text from then on."""
        encoded = base64.b64encode(b"\xff\x00").decode()
        self.assertEqual(ChunkDecoder("base64")(encoded), b"\xff\x00")
        decode = ChunkDecoder()
        self.assertEqual(decode("1\n2\n"), b"1\n2\n")
        self.assertEqual(decode("abcd"), b"abcd")
        decode = ChunkDecoder()
        self.assertEqual(decode("aGk="), b"hi")
        self.assertEqual(decode("é\n"), "é\n".encode())
        self.assertEqual(decode("aGk="), b"aGk=")

    def test_output_encoding_after_close(self):
        """Asked before or after the connection closed ungreeted, output_encoding fails with ConnectionLost."""
        client = RPCClientProtocol()
        client.onOpen()
        before = client.output_encoding()
        client.onClose(False, 1006, "gone")
        self.failureResultOf(before, ConnectionLost)
        self.failureResultOf(client.output_encoding(), ConnectionLost)

    def test_output_encoding_for_every_caller(self):
        """Every caller waiting for the greeting gets the encoding."""
        client = RPCClientProtocol()
        client.onOpen()
        waiting = [client.output_encoding(), client.output_encoding()]
        client.onMessage(b'{"jsonrpc": "2.0", "method": "connected", "params": {}}', False)
        self.assertEqual([self.successResultOf(d) for d in waiting], ["base64", "base64"])
        self.assertEqual(self.successResultOf(client.output_encoding()), "base64")

    def test_table(self):
        table = format_table(
            [
                {"process_id": "b", "pid": 12, "state": "exited", "exit_code": -15,
                 "stdout_bytes": 3, "stderr_bytes": 0, "command": ["sh", "-c", "a b"],
                 "started_at": 2},
                {"process_id": "a", "pid": 1234, "state": "running", "exit_code": None,
                 "stdout_bytes": 0, "stderr_bytes": 10, "command": ["sleep", "9"],
                 "started_at": 1},
            ],
            now=1.5,
        )
        # ls shows short ids, start times, durations and human sizes now
        # (tests/test_cli_commands.py); the rest is as it was.
        rows = [line.split() for line in table.splitlines()]
        for row in rows:
            del row[3:5]
        self.assertEqual(
            rows,
            [
                ["ID", "PID", "STATE", "EXIT", "STDOUT", "STDERR", "COMMAND"],
                ["a", "1234", "running", "-", "0B", "10B", "sleep", "9"],
                ["b", "12", "exited", "SIGTERM", "3B", "0B", "sh", "-c", "'a", "b'"],
            ],
        )
