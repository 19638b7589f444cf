"""
Tests for L{ccx.process.pipes.PipeReader}, L{ccx.process.pipes.PipeWriter},
L{ccx.process.exitwatch.ExitWatcher} and
L{ccx.process.transport.ChildProcess}: real pipes from C{os.pipe()}, read
and written by hand under a L{MemoryReactorClock} (or, once, by the real
reactor), and a fake exit watcher.
"""

import os
import signal
import subprocess
from typing import Callable, List, Optional, Tuple

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessDone, ProcessExitedAlready, ProcessTerminated
from twisted.internet.interfaces import (
    IConsumer,
    IProcessTransport,
    IPushProducer,
)
from twisted.internet.main import CONNECTION_DONE, CONNECTION_LOST
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from ccx.process import transport as transport_module
from ccx.process.exitwatch import ExitWatcher
from ccx.process.pipes import PIPE_READ_SIZE, PipeReader, PipeWriter
from ccx.process.transport import ChildProcess, exit_reason
from tests.fakes import RecordingProducer
from tests.support import program


class Recorder:
    """
    A process protocol that records what it is told, in order.
    """

    def __init__(self) -> None:
        self.events: List[Tuple] = []
        self.transport = None
        self.lost = Deferred()

    def makeConnection(self, transport) -> None:
        self.transport = transport
        self.events.append(("made",))

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        self.events.append(("data", childFD, data))

    def childConnectionLost(self, childFD: int) -> None:
        self.events.append(("lost", childFD))
        if not self.lost.called:
            self.lost.callback(childFD)

    def processExited(self, reason: Failure) -> None:
        self.events.append(("exited", reason))

    def processEnded(self, reason: Failure) -> None:
        self.events.append(("ended", reason))

    def data(self, child_fd: int) -> bytes:
        return b"".join(e[2] for e in self.events if e[0] == "data" and e[1] == child_fd)


def is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


class PipeTestMixin:
    def pipe(self) -> Tuple[int, int]:
        """
        A real pipe; whichever end a test leaves open is closed after it.
        """
        read_end, write_end = os.pipe()
        inode = os.fstat(read_end).st_ino

        def close_left_open() -> None:
            # Only this pipe's ends: a number the test closed may be reused.
            for fd in (read_end, write_end):
                if is_open(fd) and os.fstat(fd).st_ino == inode:
                    os.close(fd)

        self.addCleanup(close_left_open)
        return read_end, write_end


class PipeReaderTests(PipeTestMixin, SynchronousTestCase):
    """
    L{PipeReader} reads a real pipe when the (fake) reactor says it may.
    """

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.proc = Recorder()
        self.read_end, self.write_end = self.pipe()

    def reader(self, **kwargs) -> PipeReader:
        return PipeReader(self.reactor, self.proc, 1, self.read_end, **kwargs)

    def test_non_blocking(self) -> None:
        """The parent's end is made non-blocking: an empty pipe reads nothing."""
        reader = self.reader()
        self.assertFalse(os.get_blocking(self.read_end))
        self.assertIsNone(reader.doRead())
        self.assertEqual(self.proc.events, [])

    def test_reads_large_pieces(self) -> None:
        """One read takes up to 64 KiB, not Twisted's 8 KiB."""
        reader = self.reader()
        os.write(self.write_end, b"a" * PIPE_READ_SIZE)
        self.assertIsNone(reader.doRead())
        self.assertEqual(PIPE_READ_SIZE, 64 * 1024)
        self.assertEqual(self.proc.events, [("data", 1, b"a" * PIPE_READ_SIZE)])

    def test_read_size(self) -> None:
        """No read takes more than C{read_size}."""
        reader = self.reader(read_size=3)
        os.write(self.write_end, b"abcdefg")
        reader.doRead()
        reader.doRead()
        self.assertEqual(self.proc.events, [("data", 1, b"abc"), ("data", 1, b"def")])

    def test_not_reading_until_started(self) -> None:
        """A new reader is not watched; startReading and pauseProducing/resumeProducing add and remove it."""
        reader = self.reader()
        self.assertNotIn(reader, self.reactor.getReaders())
        reader.startReading()
        self.assertIn(reader, self.reactor.getReaders())
        reader.pauseProducing()
        self.assertNotIn(reader, self.reactor.getReaders())
        reader.resumeProducing()
        self.assertIn(reader, self.reactor.getReaders())

    def test_end_of_file(self) -> None:
        """At end of file the connection is done: the fd is closed and the child fd reported lost."""
        reader = self.reader()
        reader.startReading()
        os.write(self.write_end, b"last")
        os.close(self.write_end)
        self.assertIsNone(reader.doRead())
        why = reader.doRead()
        self.assertIs(why, CONNECTION_DONE)
        # What the reactor does with what doRead returned:
        self.reactor.removeReader(reader)
        reader.connectionLost(Failure(why))
        self.assertEqual(self.proc.events, [("data", 1, b"last"), ("lost", 1)])
        self.assertFalse(is_open(self.read_end))
        self.assertFalse(reader.connected)

    def test_read_error(self) -> None:
        """A read that fails (other than for no data yet) loses the connection."""
        reader = self.reader()
        os.close(self.read_end)
        self.assertIs(reader.doRead(), CONNECTION_LOST)
        self.assertEqual(self.proc.events, [])

    def test_lose_connection(self) -> None:
        """loseConnection stops reading at once and closes in the next turn, once."""
        reader = self.reader()
        reader.startReading()
        os.write(self.write_end, b"unread")
        reader.loseConnection()
        reader.loseConnection()
        self.assertNotIn(reader, self.reactor.getReaders())
        self.assertTrue(is_open(self.read_end))
        reader.resumeProducing()
        self.assertNotIn(reader, self.reactor.getReaders())
        self.reactor.advance(0)
        self.assertEqual(self.proc.events, [("lost", 1)])
        self.assertFalse(is_open(self.read_end))
        reader.loseConnection()
        self.reactor.advance(0)
        self.assertEqual(self.proc.events, [("lost", 1)])


class PipeReaderReactorTests(PipeTestMixin, TestCase):
    """
    L{PipeReader} under the real reactor.
    """

    timeout = 10

    def test_reads_to_end(self) -> None:
        """Everything written is delivered, in order, then the end."""
        read_end, write_end = self.pipe()
        proc = Recorder()
        PipeReader(reactor, proc, 2, read_end).startReading()
        payload = bytes(range(256)) * 1024
        # More than a pipe holds: written each time the reactor finds the
        # pipe writable, then closed.
        writer = PipeWriter(reactor, Recorder(), 0, write_end)
        writer.write(payload)
        writer.loseConnection()

        def check(child_fd: int) -> None:
            self.assertEqual(child_fd, 2)
            self.assertEqual(proc.data(2), payload)
            self.assertEqual(proc.events[-1], ("lost", 2))
            self.assertFalse(is_open(read_end))

        return proc.lost.addCallback(check)


class PipeWriterTests(PipeTestMixin, SynchronousTestCase):
    """
    L{PipeWriter} writes a real pipe when the (fake) reactor says it may.
    """

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.proc = Recorder()
        self.read_end, self.write_end = self.pipe()
        self.writer = PipeWriter(self.reactor, self.proc, 0, self.write_end)

    def test_non_blocking(self) -> None:
        """The write end is made non-blocking."""
        self.assertFalse(os.get_blocking(self.write_end))

    def test_write(self) -> None:
        """What is written reaches the pipe once the reactor says it is writable."""
        self.writer.write(b"hello ")
        self.writer.writeSequence([b"world"])
        self.assertIn(self.writer, self.reactor.getWriters())
        self.writer.doWrite()
        self.assertEqual(os.read(self.read_end, 100), b"hello world")

    def test_producer_paused_when_full(self) -> None:
        """A producer is paused once more than the buffer waits, and resumed once it is written."""
        producer = RecordingProducer()
        self.writer.registerProducer(producer, True)
        self.writer.write(b"x" * self.writer.bufferSize)
        self.assertEqual(producer.events, [])
        self.writer.write(b"x")
        self.assertEqual(producer.events, ["pause"])
        while self.writer in self.reactor.getWriters():
            self.writer.doWrite()
            os.read(self.read_end, 1024 * 1024)
        self.assertEqual(producer.events, ["pause", "resume"])

    def test_reader_gone(self) -> None:
        """Once no reader is left the pipe is lost: closed, and the protocol told."""
        self.writer.startReading()
        os.close(self.read_end)
        self.assertIs(self.writer.doRead(), CONNECTION_LOST)
        self.writer.connectionLost(Failure(CONNECTION_LOST))
        self.assertEqual(self.proc.events, [("lost", 0)])
        self.assertFalse(is_open(self.write_end))

    def test_write_after_reader_gone(self) -> None:
        """A write to a pipe with no reader loses it (EPIPE), without a traceback."""
        os.close(self.read_end)
        self.writer.write(b"data")
        self.assertIs(self.writer.doWrite(), CONNECTION_LOST)

    def test_lose_connection_flushes(self) -> None:
        """loseConnection writes what waits, then closes the pipe."""
        self.writer.write(b"last")
        self.writer.loseConnection()
        self.assertEqual(self.proc.events, [])
        why = self.writer.doWrite()
        self.assertEqual(os.read(self.read_end, 100), b"last")
        self.assertIs(why, CONNECTION_DONE)
        self.writer.connectionLost(Failure(why))
        self.assertEqual(self.proc.events, [("lost", 0)])
        self.assertFalse(is_open(self.write_end))


class ExitWatcherTests(TestCase):
    """
    L{ExitWatcher} with a real child and the real reactor.
    """

    def test_readable_once_exited(self) -> None:
        """The pidfd turns readable when the child exits; close stops watching and closes it."""
        child = subprocess.Popen([program("true")])
        done: Deferred = Deferred()

        def readable() -> None:
            returncode = child.poll()
            if returncode is not None:
                watcher.close()
                watcher.close()
                done.callback(returncode)

        watcher = ExitWatcher(reactor, child.pid, readable)
        fd = watcher.fileno()
        watcher.startReading()

        def check(returncode: int) -> None:
            self.assertEqual(returncode, 0)
            self.assertFalse(is_open(fd))
            self.assertNotIn(watcher, reactor.getReaders())

        return done.addCallback(check)


class FakeWatcher:
    """
    Stands in for the pidfd: the test says when it is readable.
    """

    def __init__(self, reactor, pid: int, readable: Callable[[], None]) -> None:
        self.pid = pid
        self.readable = readable
        self.reading = False
        self.closed = 0

    def startReading(self) -> None:
        self.reading = True

    def close(self) -> None:
        self.closed += 1
        self.reading = False


class ChildProcessTests(PipeTestMixin, SynchronousTestCase):
    """
    L{ChildProcess} between a child's pipes and pidfd and a protocol.
    """

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.protocol = Recorder()
        self.ends = {fd: self.pipe() for fd in (0, 1, 2)}
        self.returncode: Optional[int] = None
        self.watchers: List[FakeWatcher] = []

        def watch(reactor, pid, readable):
            self.watchers.append(FakeWatcher(reactor, pid, readable))
            return self.watchers[-1]

        self.child = ChildProcess(
            self.reactor,
            self.protocol,
            4242,
            lambda: self.returncode,
            {fd: self.ends[fd][0] for fd in (1, 2)},
            self.ends[0][1],
            watch=watch,
        )

    def connect(self) -> "ChildProcessTests":
        self.child.connect()
        return self

    def readers(self) -> List[int]:
        return sorted(r.child_fd for r in self.reactor.getReaders())

    def close(self, child_fd: int) -> None:
        """
        The child's end closes: the reader reads end of file, the writer
        sees no reader left.
        """
        if child_fd == 0:
            os.close(self.ends[0][0])
        else:
            os.close(self.ends[child_fd][1])
        pipe = [r for r in self.reactor.getReaders() if r.child_fd == child_fd][0]
        self.reactor.removeReader(pipe)
        pipe.connectionLost(Failure(pipe.doRead()))

    def exit(self, returncode: int = 0) -> None:
        self.returncode = returncode
        self.watchers[0].readable()

    def test_interfaces(self) -> None:
        """It is a process transport, producer and consumer to the protocol."""
        self.connect()
        for interface in (IProcessTransport, IPushProducer, IConsumer):
            self.assertTrue(verifyObject(interface, self.child), interface)

    def test_connection(self) -> None:
        """Once connected it reads every output pipe, watches stdin and the exit, and connects the protocol to itself."""
        self.assertEqual((self.readers(), self.watchers[0].reading), ([], False))
        self.assertEqual(self.watchers[0].pid, 4242)
        self.connect()
        self.assertEqual(self.readers(), [0, 1, 2])
        self.assertTrue(self.watchers[0].reading)
        self.assertIs(self.protocol.transport, self.child)
        self.assertEqual(self.child.pid, 4242)

    def test_data(self) -> None:
        """What a pipe reads goes to the protocol with the child's descriptor."""
        self.connect()
        os.write(self.ends[2][1], b"err")
        [r for r in self.reactor.getReaders() if r.child_fd == 2][0].doRead()
        self.assertEqual(self.protocol.events[1:], [("data", 2, b"err")])

    def test_still_running(self) -> None:
        """A readable pidfd whose child has not exited changes nothing."""
        self.connect()
        self.watchers[0].readable()
        self.assertEqual(self.protocol.events[1:], [])
        self.assertEqual((self.child.pid, self.watchers[0].closed), (4242, 0))

    def test_exit_reaped(self) -> None:
        """Once reaped, the pidfd is closed, the pid is forgotten and processExited reaches the protocol."""
        self.connect()
        self.exit(3)
        self.assertEqual(self.watchers[0].closed, 1)
        self.assertIsNone(self.child.pid)
        [(event, reason)] = self.protocol.events[1:]
        self.assertEqual(event, "exited")
        self.assertEqual(reason.value.exitCode, 3)

    def test_ended_waits_for_pipes(self) -> None:
        """processEnded reaches the protocol only once the child is reaped and every pipe is closed."""
        self.connect()
        self.close(1)
        self.close(0)
        self.exit(0)
        self.assertEqual(
            [e[0] for e in self.protocol.events[1:]], ["lost", "lost", "exited"]
        )
        self.close(2)
        self.assertEqual(self.protocol.events[-1][0], "ended")
        self.assertIsInstance(self.protocol.events[-1][1].value, ProcessDone)

    def test_ended_after_pipes(self) -> None:
        """With every pipe closed already, processEnded follows the exit at once."""
        self.connect()
        for fd in (0, 1, 2):
            self.close(fd)
        self.exit(0)
        self.assertEqual(
            [e[:2] for e in self.protocol.events[1:4]], [("lost", 0), ("lost", 1), ("lost", 2)]
        )
        self.assertEqual([e[0] for e in self.protocol.events[4:]], ["exited", "ended"])

    def test_protocol_error_does_not_stop_the_end(self) -> None:
        """A protocol whose childConnectionLost raises still gets processEnded; the error is logged."""

        def broken(child_fd: int) -> None:
            raise ZeroDivisionError()

        self.connect()
        self.protocol.childConnectionLost = broken
        self.exit(0)
        for fd in (0, 1, 2):
            self.close(fd)
        self.assertEqual(self.protocol.events[-1][0], "ended")
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 3)

    def test_pause_spares_standard_input(self) -> None:
        """Pausing stops the output pipes, not the watch on standard input; resuming restarts them."""
        self.connect()
        self.child.pauseProducing()
        self.assertEqual(self.readers(), [0])
        self.child.resumeProducing()
        self.assertEqual(self.readers(), [0, 1, 2])

    def test_pause_of_closed_pipes(self) -> None:
        """Pausing and resuming touch only the pipes still open."""
        self.connect()
        self.close(2)
        self.child.pauseProducing()
        self.child.resumeProducing()
        self.assertEqual(self.readers(), [0, 1])

    def test_lose_connection(self) -> None:
        """loseConnection closes standard input once flushed and, in the next turn, every output pipe."""
        self.connect()
        os.write(self.ends[1][1], b"unread")
        self.child.write(b"in")
        self.child.loseConnection()
        self.assertEqual(self.readers(), [])
        self.reactor.advance(0)
        self.assertEqual(sorted(e for e in self.protocol.events[1:]), [("lost", 1), ("lost", 2)])
        self.assertFalse(any(is_open(self.ends[fd][0]) for fd in (1, 2)))
        writer = self.reactor.getWriters()[0]
        writer.connectionLost(Failure(writer.doWrite()))
        self.assertEqual(os.read(self.ends[0][0], 10), b"in")
        self.assertEqual(self.protocol.events[-1], ("lost", 0))
        self.exit(0)
        self.assertEqual(self.protocol.events[-1][0], "ended")

    def test_resume_after_lose_connection(self) -> None:
        """A pipe being closed is not read again."""
        self.connect()
        self.child.pauseProducing()
        self.child.stopProducing()
        self.child.resumeProducing()
        self.assertEqual(self.readers(), [0])
        self.reactor.advance(0)
        self.assertEqual(len(self.protocol.events), 3)

    def test_close_child_fd(self) -> None:
        """Each pipe is closed by its own reader or writer."""
        self.connect()
        self.child.closeStdout()
        self.child.closeStderr()
        self.child.closeChildFD(0)
        self.child.closeStdin()
        self.reactor.advance(0)
        self.assertEqual(self.protocol.events[1:], [("lost", 1), ("lost", 2)])
        writer = self.reactor.getWriters()[0]
        writer.connectionLost(Failure(writer.doWrite()))
        self.assertEqual(self.protocol.events[-1], ("lost", 0))
        self.assertEqual(self.readers(), [])

    def test_standard_input(self) -> None:
        """write, writeSequence and writeToChild(0) go to the stdin pipe; its producer is paused when full."""
        self.connect()
        producer = RecordingProducer()
        self.child.registerProducer(producer, True)
        self.child.write(b"a")
        self.child.writeSequence([b"b", b"c"])
        self.child.writeToChild(0, b"d")
        self.reactor.getWriters()[0].doWrite()
        self.assertEqual(os.read(self.ends[0][0], 10), b"abcd")
        self.child.write(b"x" * 70000)
        self.assertEqual(producer.events, ["pause"])
        self.child.unregisterProducer()
        self.assertRaises(KeyError, self.child.writeToChild, 1, b"no")

    def test_no_standard_input(self) -> None:
        """Without a stdin pipe, no producer can be registered and writes are dropped."""
        ends = self.pipe()
        child = ChildProcess(
            self.reactor, Recorder(), 4243, lambda: None, {1: ends[0]}, watch=FakeWatcher
        )
        child.connect()
        self.assertRaises(RuntimeError, child.registerProducer, RecordingProducer(), True)
        child.write(b"dropped")
        self.assertEqual(self.reactor.getWriters(), [])

    def test_signals(self) -> None:
        """signalProcess signals the pid (names as Twisted takes them); once reaped it raises."""
        sent = []
        self.patch(transport_module.os, "kill", lambda pid, signum: sent.append((pid, signum)))
        self.connect()
        self.child.signalProcess("TERM")
        self.child.signalProcess(signal.SIGUSR1)
        self.assertEqual(sent, [(4242, signal.SIGTERM), (4242, signal.SIGUSR1)])
        self.exit(0)
        self.assertRaises(ProcessExitedAlready, self.child.signalProcess, "KILL")


class ExitReasonTests(SynchronousTestCase):
    """
    L{exit_reason} gives the reasons Twisted gives.
    """

    def test_reasons(self) -> None:
        """0 is done; a code is terminated with it; -N is terminated by signal N."""
        self.assertIsInstance(exit_reason(0).value, ProcessDone)
        self.assertEqual(exit_reason(0).value.exitCode, 0)
        failed = exit_reason(1).value
        self.assertIsInstance(failed, ProcessTerminated)
        self.assertEqual((failed.exitCode, failed.signal), (1, None))
        killed = exit_reason(-9).value
        self.assertEqual((killed.exitCode, killed.signal), (None, 9))
