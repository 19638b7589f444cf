"""
The service as users start it: C{twistd -n ccx}, C{twistd -ny tac/ccx.tac},
and the plugin that makes C{twistd ccx} exist.
"""

import json
import os
import re
import signal
import socket
import sys

from twisted.application.service import IServiceMaker
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.protocol import ProcessProtocol
from twisted.plugin import IPlugin
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from ccx.process.group import ProcessGroup
from ccx.testing.cgroups import cgroups_left, remove_cgroups
from tests.support import connect_to, program, until
from tests.test_cli import CLIProcess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


class PluginTests(SynchronousTestCase):
    def test_plugin_provides_service_maker(self):
        """twisted/plugins/ccx_plugin.py holds an IPlugin and IServiceMaker named ccx."""
        from twisted.plugins import ccx_plugin

        verifyObject(IPlugin, ccx_plugin.ccx)
        verifyObject(IServiceMaker, ccx_plugin.ccx)
        self.assertEqual(ccx_plugin.ccx.tapname, "ccx")

    def test_make_service(self):
        """makeService builds a service from parsed options."""
        maker = __import__("twisted.plugins.ccx_plugin", fromlist=["ccx"]).ccx
        options = maker.options()
        options.parseOptions(["--port", "0", "--allow", program("seq")])
        service = maker.makeService(options)
        self.assertEqual(service.config.port, "tcp:0:interface=127.0.0.1")


class Twistd(ProcessProtocol):
    """
    A twistd child whose log lines are collected; C{listening} fires with the
    port once the service says it listens.
    """

    def __init__(self):
        self.lines = []
        self._partial = b""
        self.listening = Deferred()
        self.ended = Deferred()

    def outReceived(self, data):
        self._partial += data
        *lines, self._partial = self._partial.split(b"\n")
        for line in lines:
            self.lines.append(line.decode())
            if not self.listening.called and b"listening on" in line:
                self.listening.callback(self._port(line))

    errReceived = outReceived

    def _port(self, line):
        try:
            return json.loads(line)["port"]
        except ValueError:
            return int(re.search(rb"port=(\d+)", line).group(1))

    def processEnded(self, reason):
        self.exit_code = reason.value.exitCode
        self.exit_signal = reason.value.signal
        if not self.listening.called:
            self.listening.errback(AssertionError("\n".join(self.lines)))
        self.ended.callback(self)


class TwistdTests(TestCase):
    timeout = 60

    def start(self, args, env=None):
        twistd = Twistd()
        directory = self.mktemp()
        os.makedirs(directory)
        # A state dir of its own: one service per state dir (ccx.lock), and
        # this process's own services may hold the test run's.
        environment = dict(os.environ, PYTHONPATH=ROOT, XDG_STATE_HOME=os.path.abspath(directory))
        environment.update(env or {})
        transport = reactor.spawnProcess(
            twistd, sys.executable, TWISTD + args, env=environment, path=directory
        )
        self.addCleanup(self.assertNoCgroupLeft, twistd, transport.pid)
        self.addCleanup(self._stop, twistd)
        return twistd

    @inlineCallbacks
    def assertServesThenStops(self, twistd, port):
        """
        The service on C{port} runs C{seq 1 3} for a client, then stops
        cleanly on SIGTERM.
        """
        client = yield connect_to(self, port)
        result = yield client.call("execute", {"command": "seq 1 3"})
        yield client.notification("process.completed", result["process_id"])
        self.assertEqual(client.output(result["process_id"]), b"1\n2\n3\n")
        twistd.transport.signalProcess("TERM")
        yield twistd.ended
        self.assertCleanExit(twistd)

    def assertCleanExit(self, twistd, quiet=False):
        """
        twistd stopped by SIGTERM shuts down, then re-raises SIGTERM on
        itself: its exit status is 'killed by SIGTERM', which systemd counts
        as a clean stop.
        """
        self.assertEqual(
            (twistd.exit_code, twistd.exit_signal), (None, signal.SIGTERM),
            "\n".join(twistd.lines),
        )
        if not quiet:
            self.assertIn("Server Shut Down.", "\n".join(twistd.lines))

    def start_activated(self, interface, args=()):
        """
        twistd ccx on a listening socket handed over as systemd hands it
        (descriptor 3, LISTEN_FDS, LISTEN_FDNAMES, LISTEN_PID).
        """
        listener = socket.socket()
        self.addCleanup(listener.close)
        listener.bind((interface, 0))
        listener.listen()
        twistd = Twistd()
        directory = self.mktemp()
        os.makedirs(directory)
        environment = dict(
            os.environ, PYTHONPATH=ROOT, LISTEN_FDS="1", LISTEN_FDNAMES="ccx",
            XDG_STATE_HOME=os.path.abspath(directory),
        )
        # exec keeps the shell's pid, the one LISTEN_PID must name.
        argv = ["sh", "-c", 'export LISTEN_PID=$$; exec "$@"', "sh"] + TWISTD + [
            "-n", "--pidfile=", "ccx", "--port", "systemd:domain=INET:index=0", *args
        ]
        transport = reactor.spawnProcess(
            twistd, program("sh"), argv, env=environment, path=directory,
            childFDs={0: "w", 1: "r", 2: "r", 3: listener.fileno()},
        )
        # exec: the shell's pid is the service's.
        self.addCleanup(self.assertNoCgroupLeft, twistd, transport.pid)
        self.addCleanup(self._stop, twistd)
        return twistd, listener.getsockname()[1]

    def assertNoCgroupLeft(self, twistd, pid):
        """
        The service (process C{pid}), once ended, left no cgroup; one killed
        by the test's cleanup (L{_stop}) cannot remove its own: they are
        removed.
        """
        left = cgroups_left(pid)
        remove_cgroups(pid)
        if not getattr(twistd, "killed", False):
            self.assertEqual(left, [], "cgroups left behind")

    def _stop(self, twistd):
        if not twistd.ended.called:
            twistd.killed = True
            twistd.transport.signalProcess("KILL")
            return twistd.ended

    @inlineCallbacks
    def test_json_logs_and_clean_stop(self):
        """With --log-format json every line is JSON, twistd's own included; SIGTERM cancels programs and exits."""
        twistd = self.start(
            ["-n", "--pidfile=", "ccx", "--port", "tcp:0:interface=127.0.0.1",
             "--allow", program("sh"), "--log-format", "json", "--kill-grace", "1"]
        )
        port = yield twistd.listening
        client = yield connect_to(self, port)
        result = yield client.call(
            "execute", {"command": ["sh", "-c", "sleep 1000 & sleep 1000"], "on_disconnect": "keep"}
        )
        twistd.transport.signalProcess("TERM")
        yield twistd.ended
        self.assertCleanExit(twistd)
        self.assertEqual(
            ProcessGroup(result["pgid"]).members(), [], "\n".join(twistd.lines)
        )
        records = [json.loads(line) for line in twistd.lines if line]
        messages = [r["message"] for r in records]
        self.assertTrue(any("starting up" in m for m in messages), messages)
        self.assertTrue(any("Main loop terminated" in m for m in messages), messages)
        started = [r for r in records if r.get("process_id") == result["process_id"]]
        self.assertTrue(started, "events about a process carry its process_id")
        self.assertTrue(all(r.get("session_id") for r in started))
        for record in records:
            self.assertEqual(
                set(record) >= {"time", "level", "namespace", "message"}, True, record
            )

    @inlineCallbacks
    def test_log_level_filters(self):
        """--log-level warn leaves out info lines."""
        socket = os.path.abspath(self.mktemp())
        twistd = self.start(
            ["-n", "--pidfile=", "ccx", "--port", f"unix:{socket}",
             "--log-format", "json", "--log-level", "warn", "--allow", program("seq")]
        )
        twistd.listening.addErrback(lambda failure: None)
        yield until(lambda: os.path.exists(socket))
        twistd.transport.signalProcess("TERM")
        yield twistd.ended
        self.assertCleanExit(twistd, quiet=True)
        levels = {json.loads(line)["level"] for line in twistd.lines if line}
        self.assertFalse(levels & {"info", "debug"}, levels)

    @inlineCallbacks
    def test_tac(self):
        """twistd -ny tac/ccx.tac runs the same service, configured from CCX_CONFIG."""
        config = os.path.abspath(self.mktemp())
        with open(config, "w") as f:
            f.write('port = "tcp:0:interface=127.0.0.1"\nallow = ["%s"]\n' % program("seq"))
        twistd = self.start(
            ["-n", "--pidfile=", "-y", os.path.join(ROOT, "tac", "ccx.tac")],
            env={"CCX_CONFIG": config},
        )
        port = yield twistd.listening
        yield self.assertServesThenStops(twistd, port)

    @inlineCallbacks
    def test_socket_activation_on_loopback(self):
        """A loopback socket handed over by systemd is served without a token."""
        twistd, bound = self.start_activated("127.0.0.1", ["--allow", program("seq")])
        port = yield twistd.listening
        self.assertEqual(port, bound)
        yield self.assertServesThenStops(twistd, port)

    @inlineCallbacks
    def test_socket_activation_on_every_interface_needs_a_token(self):
        """A socket handed over by systemd is judged by its real address: 0.0.0.0 needs a token."""
        twistd, _ = self.start_activated("0.0.0.0")
        twistd.listening.addErrback(lambda failure: None)
        yield twistd.ended
        self.assertNotEqual(twistd.exit_code, 0)
        self.assertIn("without a token", "\n".join(twistd.lines))
        self.assertIn("--token-file", "\n".join(twistd.lines))

    @inlineCallbacks
    def test_refuses_public_interface_without_token(self):
        """Listening on 0.0.0.0 without a token is refused with a message saying what to do."""
        twistd = self.start(["-n", "--pidfile=", "ccx", "--port", "tcp:0"])
        twistd.listening.addErrback(lambda failure: None)
        yield twistd.ended
        self.assertNotEqual(twistd.exit_code, 0)
        self.assertIn("--token-file", "\n".join(twistd.lines))

    def start_service(self):
        twistd = self.start(
            ["-n", "--pidfile=", "ccx", "--port", "tcp:0:interface=127.0.0.1",
             "--allow", program("sleep"), "--kill-grace", "1"]
        )
        return twistd, twistd.listening

    @inlineCallbacks
    def test_sigterm_delivers_completion_then_going_away(self):
        """A reading client sees process.completed, then close code 1001, on SIGTERM."""
        twistd, listening = self.start_service()
        port = yield listening
        client = yield connect_to(self, port)
        result = yield client.call("execute", {"command": ["sleep", "1000"]})
        twistd.transport.signalProcess("TERM")
        code = yield client.closed
        yield twistd.ended
        self.assertCleanExit(twistd)
        self.assertEqual((code, client.wasClean), (1001, True), "\n".join(twistd.lines))
        self.assertEqual(client.remoteCloseReason, "ccx is stopping")
        last = client.messages[-1]
        self.assertEqual(last["method"], "process.completed")
        self.assertEqual(last["params"]["process_id"], result["process_id"])
        self.assertEqual(last["params"]["status"], "cancelled")
        self.assertEqual(ProcessGroup(result["pgid"]).members(), [])

    @inlineCallbacks
    def test_sigterm_ends_ccx_run_with_143(self):
        """`ccx run` of a program the service cancels as it stops exits 143, as docs/cli.md says."""
        twistd, listening = self.start_service()
        port = yield listening
        run = CLIProcess()
        env = dict(os.environ, PYTHONPATH=ROOT, CCX_URL=f"ws://127.0.0.1:{port}/ws/mcp")
        reactor.spawnProcess(
            run, sys.executable, [sys.executable, "-m", "ccx", "run", "-v", "--", "sleep", "1000"],
            env=env,
        )
        self.addCleanup(lambda: run.ended.called or run.transport.signalProcess("KILL"))
        yield run.said(b"started ")
        twistd.transport.signalProcess("TERM")
        yield run.ended
        yield twistd.ended
        self.assertCleanExit(twistd)
        self.assertEqual(run.status, 143, run.err)
        self.assertNotIn(b"Traceback", run.err)
