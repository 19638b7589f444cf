"""
Tests for L{ccx.process.spawner.spawn}: real programs started without an
interpreter in between, read and written through ccx's own pipes, reaped
through their pidfd; no file descriptor and no child is left behind.
"""

import fcntl
import os
import signal
import stat
import struct
import sys
import termios
from typing import List, Optional

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.error import ProcessDone
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import deferLater
from twisted.internet.interfaces import IConsumer, IProcessTransport, IPushProducer
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from ccx.process import exitwatch, spawner
from ccx.process.command import Command
from ccx.process.errors import SpawnFailed
from ccx.process.group import process_table
from ccx.process.interfaces import IExecReport
from ccx.process.spawner import spawn
from ccx.process.transport import ChildProcess
from tests.fakes import RecordingProducer
from tests.support import fd_count, program, until


@implementer(IExecReport)
class Collector(ProcessProtocol):
    """
    Records the reads of each pipe, and which pipes closed, until the end.
    """

    def __init__(self) -> None:
        self.reads: dict = {}
        self.lost: List[int] = []
        self.exited = False
        self.running = False
        self.ended: Deferred = Deferred()

    def exec_succeeded(self) -> None:
        # Reported once connected, so the pid is known by then.
        self.running = self.transport.pid is not None

    def exec_failed(self, reason: str) -> None:
        raise AssertionError("ccx's own spawner raises instead")

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


def children() -> List[int]:
    """
    This process's children, zombies included: a child not reaped shows.
    """
    return [entry.pid for entry in process_table() if entry.ppid == os.getpid()]


def parent_end(pid: int, child_fd: int) -> int:
    """
    This process's descriptor of the pipe that is C{child_fd} of process
    C{pid} (this process holds only the other end).
    """
    pipe = os.readlink(f"/proc/{pid}/fd/{child_fd}")
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == pipe:
                return int(fd)
        except OSError:
            continue
    raise LookupError(pipe)


def pipe_full(fd: int) -> bool:
    """
    Whether the pipe of C{fd} holds as much as it can (C{FIONREAD} against
    C{F_GETPIPE_SZ}).
    """
    waiting = struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0" * 4))[0]
    return waiting == fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ)


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
        self.assertIsInstance(transport, ChildProcess)
        self.assertIs(protocol.transport, transport)
        self.assertTrue(protocol.running)
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
        self.assertEqual(sorted(protocol.lost), [1, 2])

    @inlineCallbacks
    def test_ended_after_pipes_closed(self):
        """processEnded comes after every pipe closed, even when a grandchild holds stdout past the exit."""
        # The grandchild writes once the leader has exited (it is then
        # someone else's child).
        code = (
            "import os, time\n"
            "leader = os.getpid()\n"
            "if os.fork() == 0:\n"
            "    while os.getppid() == leader: time.sleep(0.001)\n"
            "    os.write(1, b'late'); os._exit(0)\n"
        )
        exited_before_read = []

        def record(protocol, transport):
            def received(child_fd: int, data: bytes) -> None:
                exited_before_read.append(protocol.exited)
                Collector.childDataReceived(protocol, child_fd, data)

            protocol.childDataReceived = received

        protocol, reason = yield self.spawn_until_ended(python(code), record)
        self.assertEqual(protocol.output(1), b"late")
        self.assertEqual(exited_before_read, [True])
        self.assertEqual(sorted(protocol.lost), [1, 2])

    @inlineCallbacks
    def test_transport(self):
        """The transport provides the interfaces it is used through; its pid is None once reaped."""
        protocol = Collector()
        transport = spawn(reactor, protocol, python("", stdin=True))
        for interface in (IProcessTransport, IPushProducer, IConsumer):
            self.assertTrue(verifyObject(interface, transport))
        pid = transport.pid
        self.assertIsInstance(pid, int)
        transport.closeStdin()
        yield protocol.ended
        self.assertIsNone(transport.pid)
        self.assertNotIn(pid, children())

    @inlineCallbacks
    def test_no_interpreter(self):
        """When spawn returns, the child already is the program: no interpreter runs first."""
        path = os.path.realpath(program("sleep"))

        def look(protocol, transport):
            self.assertEqual(os.readlink(f"/proc/{transport.pid}/exe"), path)
            os.killpg(transport.pid, signal.SIGKILL)

        command = Command(path, ["sleep", "60"], os.getcwd(), {})
        protocol, reason = yield self.spawn_until_ended(command, look)
        self.assertEqual(reason.signal, signal.SIGKILL)

    @inlineCallbacks
    def test_own_session(self):
        """The program runs as the leader of a new session and process group."""
        code = "import os; print(os.getpid(), os.getpgid(0), os.getsid(0))"
        pids = []

        def record(protocol, transport):
            pids.append(transport.pid)

        protocol, reason = yield self.spawn_until_ended(python(code), record)
        self.assertEqual(protocol.output(1).split(), [str(pids[0]).encode()] * 3)

    @inlineCallbacks
    def test_default_signals(self):
        """SIGPIPE and SIGXFSZ, which Python ignores, are not ignored by the program."""
        command = Command(program("cat"), ["cat", "/proc/self/status"], os.getcwd(), {})
        protocol, reason = yield self.spawn_until_ended(command)
        fields = dict(
            line.split(":", 1) for line in protocol.output(1).decode().splitlines() if ":" in line
        )
        ignored = int(fields["SigIgn"], 16)
        self.assertEqual(ignored & (1 << (signal.SIGPIPE - 1)), 0)
        self.assertEqual(ignored & (1 << (signal.SIGXFSZ - 1)), 0)
        self.assertNotEqual(signal.getsignal(signal.SIGPIPE), signal.SIG_DFL)

    @inlineCallbacks
    def test_directory_and_descriptors(self):
        """The program runs in the command's directory with nothing open past 0, 1 and 2."""
        directory = os.path.realpath(self.mktemp())
        os.mkdir(directory)
        code = (
            "import os\n"
            "print(os.getcwd())\n"
            "for fd in range(3, 256):\n"
            "    try: os.fstat(fd)\n"
            "    except OSError: continue\n"
            "    print('open', fd)\n"
        )
        command = Command(sys.executable, [sys.executable, "-I", "-c", code], directory, {})
        protocol, reason = yield self.spawn_until_ended(command)
        self.assertEqual(protocol.output(1).decode().splitlines(), [directory])
        self.assertIsInstance(reason, ProcessDone)

    def assert_spawn_fails(self, command: Command, message: str) -> None:
        before, children_before = fd_count(), children()
        protocol = Collector()
        error = self.assertRaises(SpawnFailed, spawn, reactor, protocol, command)
        self.assertEqual(error.message, message)
        self.assertIsNone(protocol.transport)
        self.assertEqual(fd_count(), before)
        self.assertEqual(children(), children_before)

    def test_exec_failure(self):
        """A program that does not exist fails the spawn with the reason; no child and no descriptor is left."""
        command = Command("/nonexistent/program", ["program"], os.getcwd(), {})
        self.assert_spawn_fails(command, "'/nonexistent/program': No such file or directory")

    def test_exec_permission_denied(self):
        """A file that is not executable fails the spawn with the reason."""
        path = os.path.realpath(self.mktemp())
        with open(path, "w") as f:
            f.write("#!/bin/sh\n")
        os.chmod(path, stat.S_IRUSR)
        command = Command(path, ["prog"], os.getcwd(), {})
        self.assert_spawn_fails(command, f"{path!r}: Permission denied")

    def test_directory_failure(self):
        """A directory that cannot be entered fails the spawn with the reason."""
        command = Command(program("true"), ["true"], "/nonexistent/dir", {})
        self.assert_spawn_fails(
            command, "cannot enter directory '/nonexistent/dir': No such file or directory"
        )

    @inlineCallbacks
    def test_killed(self):
        """A program killed while writing endlessly leaves nothing open."""

        def kill(protocol, transport):
            # Killed once it has written, on the first read (only once: the
            # group is known empty afterwards).
            pgid = transport.pid

            def received(child_fd: int, data: bytes) -> None:
                if not protocol.reads:
                    os.killpg(pgid, signal.SIGKILL)
                Collector.childDataReceived(protocol, child_fd, data)

            protocol.childDataReceived = received

        protocol, reason = yield self.spawn_until_ended(python("while True: print('y' * 100)"), kill)
        self.assertEqual(reason.signal, signal.SIGKILL)
        self.assertTrue(protocol.output(1).startswith(b"y" * 100))

    @inlineCallbacks
    def test_paused_output(self):
        """While paused nothing is read and the program blocks; resumed, everything arrives."""

        checked = []

        def pause(protocol, transport):
            transport.pauseProducing()
            stdout = parent_end(transport.pid, 1)

            def check(_):
                self.assertNotIn(1, protocol.reads)
                self.assertFalse(protocol.exited)

            def resume(result):
                transport.resumeProducing()
                return result

            checked.append(until(lambda: pipe_full(stdout)).addCallback(check).addBoth(resume))

        protocol, reason = yield self.spawn_until_ended(python("import os; os.write(1, b'b' * 300000)"), pause)
        yield checked[0]
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
    def test_standard_input_back_pressure(self):
        """A program that does not read its input pauses the stdin producer; its death ends the pipe."""
        producer = RecordingProducer()

        def flood(protocol, transport):
            transport.registerProducer(producer, True)
            transport.write(b"x" * (1024 * 1024))
            self.assertEqual(producer.events, ["pause"])
            os.killpg(transport.pid, signal.SIGKILL)

        command = python("import time; time.sleep(60)", stdin=True)
        protocol, reason = yield self.spawn_until_ended(command, flood)
        self.assertEqual(reason.signal, signal.SIGKILL)
        self.assertIn(0, protocol.lost)
        self.assertIn("stop", producer.events)

    @inlineCallbacks
    def test_drained(self):
        """loseConnection closes the output pipes a grandchild keeps open: the process ends."""
        code = "import os, time\nif os.fork() == 0:\n    time.sleep(30)\n"

        def keep(protocol, transport):
            self.addCleanup(os.killpg, transport.pid, signal.SIGKILL)
            protocol.processExited = lambda reason: transport.loseConnection()

        protocol, reason = yield self.spawn_until_ended(python(code), keep)
        self.assertEqual(sorted(protocol.lost), [1, 2])


def out_of_files(*args, **kwargs):
    raise OSError(24, "Too many open files")


class SpawnFailureTests(SynchronousTestCase):
    """
    A spawn that raises leaves no descriptor and no child behind.
    """

    def test_no_fd_left(self) -> None:
        """When no child can be made, every pipe end (and /dev/null for stdin) is closed again; the error propagates."""
        self.patch(spawner, "start_child", out_of_files)
        for stdin in (False, True):
            before = fd_count()
            error = self.assertRaises(
                OSError, spawn, MemoryReactorClock(), Collector(), python("", stdin=stdin)
            )
            self.assertEqual(error.errno, 24)
            self.assertEqual(fd_count(), before)

    def test_no_child_left(self) -> None:
        """When the child cannot be watched (no pidfd), it is killed and reaped, and nothing is left open."""
        self.patch(exitwatch.os, "pidfd_open", out_of_files)
        started: List[Optional[int]] = []
        real_start = spawner.start_child

        def start_child(*args):
            child = real_start(*args)
            started.append(child.pid)
            return child

        self.patch(spawner, "start_child", start_child)
        for stdin in (False, True):
            before = fd_count()
            protocol = Collector()
            command = python("import time; time.sleep(60)", stdin=stdin)
            error = self.assertRaises(OSError, spawn, MemoryReactorClock(), protocol, command)
            self.assertEqual(error.errno, 24)
            self.assertIsNone(protocol.transport)
            self.assertEqual(fd_count(), before)
            self.assertNotIn(started[-1], children())
