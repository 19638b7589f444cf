"""
Tests for L{ccx.process.pipes.PipeReader} and
L{ccx.process.transport.PipedProcess}: real pipes from C{os.pipe()}, read by
hand under a L{MemoryReactorClock} (or, once, by the real reactor), and a fake
Twisted process.
"""

import os
from typing import List, Tuple

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessDone
from twisted.internet.interfaces import (
    IConsumer,
    IProcessProtocol,
    IProcessTransport,
    IPushProducer,
)
from twisted.internet.main import CONNECTION_DONE, CONNECTION_LOST
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from ccx.process.pipes import PIPE_READ_SIZE, PipeReader
from ccx.process.transport import PipedProcess


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
        # More than a pipe holds: written as the reader makes room.
        os.set_blocking(write_end, False)
        left = [payload]

        def write() -> None:
            try:
                written = os.write(write_end, left[0])
            except BlockingIOError:
                written = 0
            left[0] = left[0][written:]
            if left[0]:
                reactor.callLater(0.001, write)
            else:
                os.close(write_end)

        write()

        def check(child_fd: int) -> None:
            self.assertEqual(child_fd, 2)
            self.assertEqual(proc.data(2), payload)
            self.assertEqual(proc.events[-1], ("lost", 2))
            self.assertFalse(is_open(read_end))

        return proc.lost.addCallback(check)


class FakeTwistedProcess:
    """
    Twisted's process transport, as far as L{PipedProcess} uses it.
    """

    pid = 4242

    def __init__(self) -> None:
        self.calls: List[Tuple] = []

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return lambda *args: self.calls.append((name,) + args)


class PipedProcessTests(PipeTestMixin, SynchronousTestCase):
    """
    L{PipedProcess} between Twisted's process and a protocol.
    """

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.protocol = Recorder()
        self.ends = {fd: self.pipe() for fd in (1, 2, 3)}
        self.piped = PipedProcess(
            self.reactor,
            self.protocol,
            {fd: read_end for fd, (read_end, _) in self.ends.items()},
            always_read=(3,),
        )
        self.process = FakeTwistedProcess()

    def connect(self) -> "PipedProcessTests":
        self.piped.makeConnection(self.process)
        return self

    def readers(self) -> List[int]:
        return sorted(r.child_fd for r in self.reactor.getReaders())

    def close(self, child_fd: int) -> None:
        """
        The child's end closes: the reader reads end of file.
        """
        os.close(self.ends[child_fd][1])
        reader = [r for r in self.reactor.getReaders() if r.child_fd == child_fd][0]
        self.reactor.removeReader(reader)
        reader.connectionLost(Failure(reader.doRead()))

    def test_interfaces(self) -> None:
        """It is a process protocol to Twisted, and a process transport, producer and consumer to the protocol."""
        self.connect()
        for interface in (IProcessProtocol, IProcessTransport, IPushProducer, IConsumer):
            self.assertTrue(verifyObject(interface, self.piped), interface)

    def test_connection(self) -> None:
        """Once Twisted connects it, it reads every pipe and connects the protocol to itself."""
        self.assertEqual((self.readers(), self.piped.pid), ([], None))
        self.connect()
        self.assertEqual(self.readers(), [1, 2, 3])
        self.assertIs(self.protocol.transport, self.piped)
        self.assertEqual(self.piped.pid, 4242)

    def test_data(self) -> None:
        """What a pipe reads goes to the protocol with the child's descriptor."""
        self.connect()
        os.write(self.ends[2][1], b"err")
        [r for r in self.reactor.getReaders() if r.child_fd == 2][0].doRead()
        self.assertEqual(self.protocol.events[1:], [("data", 2, b"err")])

    def test_ended_waits_for_pipes(self) -> None:
        """Twisted's processEnded reaches the protocol only once every pipe is closed."""
        self.connect()
        reason = Failure(ProcessDone(0))
        self.piped.processExited(reason)
        self.piped.processEnded(reason)
        self.close(1)
        self.close(3)
        self.assertEqual(
            self.protocol.events[1:], [("exited", reason), ("lost", 1), ("lost", 3)]
        )
        self.close(2)
        self.assertEqual(self.protocol.events[-2:], [("lost", 2), ("ended", reason)])

    def test_ended_after_pipes(self) -> None:
        """With every pipe closed already, processEnded is handed on at once."""
        self.connect()
        for fd in (1, 2, 3):
            self.close(fd)
        self.piped.childConnectionLost(0)
        reason = Failure(ProcessDone(0))
        self.piped.processEnded(reason)
        self.assertEqual(
            self.protocol.events[1:],
            [("lost", 1), ("lost", 2), ("lost", 3), ("lost", 0), ("ended", reason)],
        )

    def test_protocol_error_does_not_stop_the_end(self) -> None:
        """A protocol whose childConnectionLost raises still gets processEnded; the error is logged."""

        def broken(child_fd: int) -> None:
            raise ZeroDivisionError()

        self.connect()
        self.protocol.childConnectionLost = broken
        reason = Failure(ProcessDone(0))
        self.piped.processEnded(reason)
        for fd in (1, 2, 3):
            self.close(fd)
        self.assertEqual(self.protocol.events[-1], ("ended", reason))
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 3)

    def test_pause_spares_status_pipe(self) -> None:
        """Pausing stops the output pipes, not the always-read one; resuming restarts them."""
        self.connect()
        self.piped.pauseProducing()
        self.assertEqual(self.readers(), [3])
        self.piped.resumeProducing()
        self.assertEqual(self.readers(), [1, 2, 3])

    def test_pause_of_closed_pipes(self) -> None:
        """Pausing and resuming touch only the pipes still open."""
        self.connect()
        self.close(3)
        self.piped.pauseProducing()
        self.piped.resumeProducing()
        self.assertEqual(self.readers(), [1, 2])

    def test_lose_connection(self) -> None:
        """loseConnection closes standard input and, in the next turn, every output pipe."""
        self.connect()
        os.write(self.ends[1][1], b"unread")
        self.piped.loseConnection()
        self.assertEqual(self.process.calls, [("closeStdin",)])
        self.assertEqual(self.readers(), [])
        self.reactor.advance(0)
        self.assertEqual(
            sorted(e for e in self.protocol.events[1:]), [("lost", 1), ("lost", 2), ("lost", 3)]
        )
        self.assertFalse(any(is_open(read_end) for read_end, _ in self.ends.values()))
        reason = Failure(ProcessDone(0))
        self.piped.processEnded(reason)
        self.assertEqual(self.protocol.events[-1], ("ended", reason))

    def test_resume_after_lose_connection(self) -> None:
        """A pipe being closed is not read again."""
        self.connect()
        self.piped.pauseProducing()
        self.piped.stopProducing()
        self.piped.resumeProducing()
        self.assertEqual(self.readers(), [])
        self.reactor.advance(0)
        self.assertEqual(len(self.protocol.events), 4)

    def test_close_child_fd(self) -> None:
        """An output pipe is closed by its reader; any other descriptor by Twisted's process."""
        self.connect()
        self.piped.closeStdout()
        self.piped.closeStderr()
        self.piped.closeChildFD(0)
        self.piped.closeStdin()
        self.assertEqual(self.readers(), [3])
        self.reactor.advance(0)
        self.assertEqual(self.protocol.events[1:], [("lost", 1), ("lost", 2)])
        self.assertEqual(self.process.calls, [("closeChildFD", 0), ("closeStdin",)])

    def test_standard_input_and_signals(self) -> None:
        """Standard input, its producer and signals are Twisted's process's."""
        self.connect()
        producer = object()
        self.piped.registerProducer(producer, True)
        self.piped.write(b"a")
        self.piped.writeSequence([b"b", b"c"])
        self.piped.writeToChild(0, b"d")
        self.piped.unregisterProducer()
        self.piped.signalProcess("TERM")
        self.assertEqual(
            self.process.calls,
            [
                ("registerProducer", producer, True),
                ("write", b"a"),
                ("writeSequence", [b"b", b"c"]),
                ("writeToChild", 0, b"d"),
                ("unregisterProducer",),
                ("signalProcess", "TERM"),
            ],
        )
