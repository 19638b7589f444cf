"""
C{ccx run -t} and C{ccx attach -t} as a person uses them: the command runs
on a real pseudo-terminal (started by ccx's own L{spawn_on_terminal}, so
it is the command's controlling terminal and a window change sends it
SIGWINCH), and the test types into it and reads the screen.
"""

import os
import sys
import termios
from typing import Any, List, Tuple

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.protocol import ProcessProtocol
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from ccx.cli.rawmode import DetachKeys
from ccx.process.command import Command
from ccx.process.interfaces import IExecReport
from ccx.process.spawner import spawn
from ccx.process.terminal import WindowSize
from tests.test_cli import ROOT, CLITestCase


@implementer(IExecReport)
class Screen(ProcessProtocol):
    """
    A command on a terminal: what it shows, its end.
    """

    def __init__(self) -> None:
        self.shown = b""
        self.ended: Deferred = Deferred()
        self._waiting: List[Tuple[bytes, int, Deferred]] = []

    def exec_succeeded(self) -> None:
        pass

    def exec_failed(self, reason: str) -> None:
        raise AssertionError(reason)

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        self.shown += data
        for entry in list(self._waiting):
            text, after, d = entry
            if text in self.shown[after:]:
                self._waiting.remove(entry)
                d.callback(self.shown)

    def seen(self, text: bytes) -> Deferred:
        """
        Fire once the screen shows C{text} after what it shows now.
        """
        d: Deferred = Deferred()
        self._waiting.append((text, len(self.shown), d))
        return d

    def processEnded(self, reason) -> None:
        self.status = reason.value.exitCode
        for text, _, d in self._waiting:
            d.errback(AssertionError(f"ended before {text!r} was shown: {self.shown!r}"))
        self._waiting = []
        self.ended.callback(self.status)

    def lflag(self) -> int:
        # On a pty master, termios reads the slave's modes: the command's.
        return termios.tcgetattr(self.transport.terminal.fd)[3]


class TerminalCommandTests(CLITestCase):
    def settings(self):
        return {"keep_finished": 30.0}

    def on_terminal(self, size: WindowSize, *argv: str) -> Screen:
        screen = Screen()
        env = dict(os.environ, PYTHONPATH=ROOT, CCX_URL=self.ccx.url())
        command = Command(sys.executable, [sys.executable, "-m", "ccx", *argv], ROOT, env, pty=size)
        spawn(reactor, screen, command)

        def stop() -> Any:
            if not screen.ended.called:
                screen.transport.signalProcess("KILL")
                return screen.ended

        self.addCleanup(stop)
        return screen

    @inlineCallbacks
    def test_run_tty_raw_resize_ctrl_c(self):
        """run -t: raw mode, the window size at start and on SIGWINCH, Ctrl-C to the program; the terminal restored."""
        script = (
            "trap 'stty size' WINCH; trap 'kill $!; printf INT; exit 5' INT; "
            "stty size; printf ready; sleep 100 & while :; do wait $!; done"
        )
        screen = self.on_terminal(WindowSize(30, 90), "run", "-t", "--", "sh", "-c", script)
        yield screen.seen(b"ready")
        self.assertIn(b"30 90\r\n", screen.shown)
        self.assertFalse(screen.lflag() & (termios.ICANON | termios.ECHO | termios.ISIG))
        resized = screen.seen(b"40 100\r\n")
        screen.transport.resize(WindowSize(40, 100))
        yield resized
        screen.transport.write(b"\x03")
        status = yield screen.ended
        self.assertEqual(status, 5, screen.shown)
        self.assertTrue(screen.shown.endswith(b"INT"), screen.shown)

    @inlineCallbacks
    def test_detach_and_attach_tty(self):
        """Ctrl-P Ctrl-Q leaves the program running; attach -t gives the terminal back and makes it redraw."""
        script = "trap 'stty size' WINCH; printf ready; sleep 100 & while :; do wait $!; done"
        screen = self.on_terminal(WindowSize(24, 80), "run", "-t", "--", "sh", "-c", script)
        yield screen.seen(b"ready")
        # The keys in two writes; the terminal's modes read as soon as the
        # message shows (the terminal is still open then).
        modes = []
        screen.seen(b"detached").addCallback(lambda _: modes.append(screen.lflag()))
        screen.transport.write(b"\x10")
        screen.transport.write(b"\x11")
        status = yield screen.ended
        self.assertEqual(status, 0, screen.shown)
        # The local terminal was back in its own mode before the message.
        self.assertTrue(modes[0] & termios.ICANON)
        process_id = screen.shown.split(b"ccx attach -t ")[1].split()[0].decode()
        process = yield self.listed(process_id)
        self.ccx.groups.append(process["pgid"])
        self.assertEqual(process["state"], "running")

        again = self.on_terminal(WindowSize(25, 70), "attach", "-t", process_id[:12])
        yield again.seen(b"25 70\r\n")
        self.assertFalse(again.lflag() & termios.ICANON)
        again.transport.write(b"\x10\x11")
        status = yield again.ended
        self.assertEqual(status, 0, again.shown)
        process = yield self.listed(process_id)
        self.assertEqual(process["state"], "running")
        status, _, err = yield self.cli("cancel", process_id)
        self.assertEqual(status, 0, err)

    @inlineCallbacks
    def test_attach_tty_needs_a_terminal_program(self):
        """attach -t to a program on pipes is refused in one line."""
        _, started = yield self.started({"command": ["sleep", "100"], "on_disconnect": "keep"})
        status, _, err = yield self.cli("attach", "-t", started["process_id"])
        self.assertEqual(status, 2)
        self.assertIn(b"does not run on a terminal", err)
        status, _, _ = yield self.cli("cancel", started["process_id"])
        self.assertEqual(status, 0)


class DetachKeysTests(SynchronousTestCase):
    def test_keys(self):
        """The sequence is found across reads; a Ctrl-P that does not begin it is sent on, in order."""
        keys = DetachKeys()
        self.assertEqual(keys.feed(b"ab\x10"), (b"ab", False))
        self.assertEqual(keys.feed(b"\x11rest"), (b"", True))
        keys = DetachKeys()
        self.assertEqual(keys.feed(b"\x10x"), (b"\x10x", False))
        self.assertEqual(keys.feed(b"\x10\x10"), (b"\x10", False))
        self.assertEqual(keys.feed(b"\x11"), (b"", True))
        self.assertEqual(DetachKeys().feed(b"\x11\x10"), (b"\x11", False))
