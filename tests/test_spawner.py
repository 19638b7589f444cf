"""
Tests for L{ccx.process.spawner.spawn}: real programs through the trampoline,
read through ccx's own pipes; no file descriptor is left behind.
"""

import os
import signal
import sys
from typing import List

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import deferLater
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from ccx.process.command import Command
from ccx.process.spawner import spawn
from ccx.process.trampoline import STATUS_FD
from ccx.process.transport import PipedProcess
from tests.support import fd_count


class Collector(ProcessProtocol):
    """
    Records the reads of each pipe, and which pipes closed, until the end.
    """

    def __init__(self) -> None:
        self.reads: dict = {}
        self.lost: List[int] = []
        self.exited = False
        self.ended: Deferred = Deferred()

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        self.reads.setdefault(childFD, []).append(data)

    def childConnectionLost(self, childFD: int) -> None:
        self.lost.append(childFD)

    def processExited(self, reason) -> None:
        self.exited = True

    def processEnded(self, reason) -> None:
        self.ended.callback(reason.value)

    def output(self, child_fd: int) -> bytes:
        return b"".join(self.reads.get(child_fd, []))


def python(code: str, stdin: bool = False) -> Command:
    return Command(sys.executable, [sys.executable, "-c", code], os.getcwd(), dict(os.environ), stdin)


class SpawnTests(TestCase):
    """
    Real programs spawned with L{spawn}.
    """

    timeout = 20

    @inlineCallbacks
    def spawn_until_ended(self, command: Command, before_end=None):
        # Counted with the reactor running: it holds descriptors of its own
        # (its child-signal waker) only then.
        yield deferLater(reactor, 0, lambda: None)
        before = fd_count()
        protocol = Collector()
        transport = spawn(reactor, protocol, command)
        self.assertIsInstance(transport, PipedProcess)
        self.assertIs(protocol.transport, transport)
        if before_end is not None:
            before_end(protocol, transport)
        reason = yield protocol.ended
        self.assertEqual(fd_count(), before)
        return protocol, reason

    @inlineCallbacks
    def test_output_in_large_pieces(self):
        """stdout and stderr arrive whole; a flood is read in pieces larger than Twisted's 8 KiB."""
        code = (
            "import os, sys; sys.stderr.write('e'); sys.stderr.flush();"
            "os.write(1, b'a' * 1048576)"
        )
        protocol, reason = yield self.spawn_until_ended(python(code))
        self.assertIsInstance(reason, ProcessDone)
        self.assertEqual(protocol.output(1), b"a" * 1048576)
        self.assertEqual(protocol.output(2), b"e")
        self.assertGreater(max(len(data) for data in protocol.reads[1]), 8192)
        self.assertEqual(sorted(protocol.lost), [1, 2, STATUS_FD])

    @inlineCallbacks
    def test_ended_after_pipes_closed(self):
        """processEnded comes after every pipe closed, even when a grandchild holds stdout past the exit."""
        code = (
            "import os, time\n"
            "if os.fork() == 0:\n"
            "    time.sleep(0.3); os.write(1, b'late'); os._exit(0)\n"
        )
        protocol, reason = yield self.spawn_until_ended(python(code))
        self.assertEqual(protocol.output(1), b"late")
        self.assertEqual(sorted(protocol.lost), [1, 2, STATUS_FD])

    @inlineCallbacks
    def test_exec_failure(self):
        """A program that cannot be run reports why on the status pipe; nothing is left open."""
        command = Command("/nonexistent/program", ["program"], os.getcwd(), {})
        protocol, reason = yield self.spawn_until_ended(command)
        self.assertIn(b"No such file", protocol.output(STATUS_FD))
        self.assertIsInstance(reason, ProcessTerminated)
        self.assertEqual(reason.exitCode, 127)

    @inlineCallbacks
    def test_killed(self):
        """A program killed while writing endlessly leaves nothing open."""

        def kill(protocol, transport):
            reactor.callLater(0.2, os.killpg, transport.pid, signal.SIGKILL)

        protocol, reason = yield self.spawn_until_ended(python("while True: print('y' * 100)"), kill)
        self.assertEqual(reason.signal, signal.SIGKILL)
        self.assertTrue(protocol.output(1).startswith(b"y" * 100))

    @inlineCallbacks
    def test_paused_output(self):
        """While paused nothing is read and the program blocks; resumed, everything arrives."""

        def pause(protocol, transport):
            transport.pauseProducing()

            def resume():
                self.assertNotIn(1, protocol.reads)
                self.assertFalse(protocol.exited)
                transport.resumeProducing()

            reactor.callLater(0.5, resume)

        protocol, reason = yield self.spawn_until_ended(python("import os; os.write(1, b'b' * 300000)"), pause)
        self.assertEqual(protocol.output(1), b"b" * 300000)

    @inlineCallbacks
    def test_standard_input(self):
        """With stdin, Twisted's pipe carries what is written; closing it is the program's end of file."""

        def feed(protocol, transport):
            transport.write(b"hello ")
            transport.writeSequence([b"world"])
            transport.closeStdin()

        command = python("import sys; sys.stdout.write(sys.stdin.read().upper())", stdin=True)
        protocol, reason = yield self.spawn_until_ended(command, feed)
        self.assertEqual(protocol.output(1), b"HELLO WORLD")
        self.assertIn(0, protocol.lost)

    @inlineCallbacks
    def test_drained(self):
        """loseConnection closes the output pipes a grandchild keeps open: the process ends."""
        code = "import os, time\nif os.fork() == 0:\n    time.sleep(30)\n"

        def keep(protocol, transport):
            self.addCleanup(os.killpg, transport.pid, signal.SIGKILL)
            protocol.processExited = lambda reason: transport.loseConnection()

        protocol, reason = yield self.spawn_until_ended(python(code), keep)
        self.assertEqual(sorted(protocol.lost), [1, 2, STATUS_FD])


class FailingReactor(MemoryReactorClock):
    """
    A reactor that cannot spawn.
    """

    def spawnProcess(self, *args, **kwargs):
        raise OSError(24, "Too many open files")


class SpawnFailureTests(SynchronousTestCase):
    """
    A spawn that raises leaves no descriptor open.
    """

    def test_no_fd_left(self) -> None:
        """Every pipe end (and /dev/null for stdin) is closed again; the error propagates."""
        for stdin in (False, True):
            before = fd_count()
            error = self.assertRaises(
                OSError, spawn, FailingReactor(), Collector(), python("", stdin=stdin)
            )
            self.assertEqual(error.errno, 24)
            self.assertEqual(fd_count(), before)
