"""
Tests for L{KeeperTransport}: a durable program as its protocol sees it,
from the keeper's notices and the journal on disk.
"""

import os

from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.interfaces import IProcessTransport, IPushProducer
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from ccx.durable.transport import KeeperTransport
from ccx.durable.store import HOLD_STEP, DurableStore
from ccx.journal.program import PTY_STREAMS, ProgramJournal
from ccx.journal.statedir import PROGRAMS
from ccx.process.interfaces import IRecordedProcess
from ccx.process.terminal import WindowSize, open_terminal, window_size


class FakeLink:
    def __init__(self):
        self.sent = []

    def hold(self, process_id, offsets, full=False):
        # Only what tests look at: the holds a pause would have sent.
        self.sent.append(("hold", process_id, offsets))

    def total_space(self):
        return None

    def evict(self, process_id, stream, start):
        self.sent.append(("evict", process_id, stream, start))

    def close_stdin(self, process_id):
        self.sent.append(("close_stdin", process_id))

    def forget(self, process_id):
        self.sent.append(("forget", process_id))


class RecordingProtocol:
    """
    What a process protocol is told, in order.
    """

    def __init__(self):
        self.calls = []
        self.data = {1: b"", 2: b""}
        self.transport = None

    def makeConnection(self, transport):
        self.transport = transport
        self.calls.append("connected")

    def exec_succeeded(self):
        self.calls.append("runs")

    def exec_failed(self, reason):
        self.calls.append(("failed", reason))

    def lost(self, reason):
        self.calls.append(("lost", reason))

    def childDataReceived(self, fd, data):
        self.data[fd] += data

    def childConnectionLost(self, fd):
        self.calls.append(("closed", fd))

    def processExited(self, reason):
        self.calls.append(("exited", reason.value))

    def processEnded(self, reason):
        self.calls.append(("ended", reason.value))


class KeeperTransportTests(SynchronousTestCase):
    def setUp(self):
        self.state_dir = os.path.abspath(self.mktemp())
        # The program's journal, as the keeper writes it.
        self.keeper_journal = ProgramJournal.create(
            os.path.join(self.state_dir, PROGRAMS, "p1"), 1 << 30, 1 << 20
        )
        self.addCleanup(self.keeper_journal.close)
        self.reactor = MemoryReactorClock()
        self.link = FakeLink()
        self.protocol = RecordingProtocol()
        self.transport = KeeperTransport(
            self.reactor, self.link, self.state_dir, "p1", self.protocol
        )

    def journal(self, stream, data):
        self.keeper_journal.append(stream, data, 1000.0)
        return self.keeper_journal.end(stream)

    def test_interfaces(self):
        verifyObject(IProcessTransport, self.transport)
        verifyObject(IPushProducer, self.transport)
        verifyObject(IRecordedProcess, self.transport)

    def test_spawned(self):
        """The protocol is connected, then told the program runs, with its pid and start."""
        self.transport.spawned(42, 1000.5)
        self.assertEqual(self.protocol.calls, ["connected", "runs"])
        self.assertEqual((self.transport.pid, self.transport.started_at), (42, 1000.5))
        self.assertFalse(self.transport.group_gone)

    def test_output_from_the_journal(self):
        """Each new end is read from the journal, exactly up to it."""
        self.transport.spawned(42, 1000.0)
        end = self.journal("stdout", b"hello ")
        self.journal("stdout", b"beyond")
        self.transport.output("stdout", end)
        self.assertEqual(self.protocol.data[1], b"hello ")
        self.transport.output("stdout", end + 6)
        self.transport.output("stdout", end)  # an older end changes nothing
        self.assertEqual(self.protocol.data[1], b"hello beyond")

    def test_pause_and_hold(self):
        """
        What ccx has read is what the keeper may evict before (the hold
        follows the reading); paused, it reads no more, so the hold stays;
        resumed, it reads the rest in the next turn.
        """
        self.transport.spawned(42, 1000.0)
        self.transport.output("stdout", self.journal("stdout", b"a" * 10))
        self.assertEqual(self.link.sent[-1], ("hold", "p1", {"stdout": 10, "stderr": 0}))
        self.transport.pauseProducing()
        self.transport.output("stdout", self.journal("stdout", b"b" * 5))
        self.assertEqual(self.protocol.data[1], b"a" * 10)
        self.transport.resumeProducing()
        self.assertEqual(self.protocol.data[1], b"a" * 10)
        self.reactor.advance(0)
        self.assertEqual(self.protocol.data[1], b"a" * 10 + b"b" * 5)

    def test_pins_held(self):
        """
        The store's pins (what blocking subscribers have not read) are held
        too: the lower of pin and reading, sent at once when it moves back.
        """
        self.transport.spawned(42, 1000.0)
        self.transport.output("stdout", self.journal("stdout", b"a" * 10))
        self.transport.store.pin("stdout", 4)
        self.assertEqual(self.link.sent[-1], ("hold", "p1", {"stdout": 4, "stderr": 0}))
        self.transport.store.pin("stdout", None)
        # Moving on by less than a step is not worth a message (a hold
        # that lags only keeps more).
        self.assertEqual(self.link.sent[-1], ("hold", "p1", {"stdout": 4, "stderr": 0}))

    def test_end_order(self):
        """
        A stream ends once its journal is read; the process ends once it
        exited and both streams ended.
        """
        self.transport.spawned(42, 1000.0)
        self.transport.pauseProducing()
        self.transport.output("stderr", self.journal("stderr", b"err"))
        self.transport.closed("stderr")
        self.transport.exited(0, 1002.0)
        self.transport.closed("stdout")
        # Paused: neither stream is read to its end, so none has ended.
        self.assertEqual([c[0] for c in self.protocol.calls], ["c", "r", "exited"])
        self.assertIsInstance(self.protocol.calls[2][1], ProcessDone)
        self.assertEqual(self.transport.exited_at, 1002.0)
        self.assertIsNone(self.transport.pid)
        self.transport.resumeProducing()
        self.reactor.advance(0)
        self.assertEqual(self.protocol.data[2], b"err")
        self.assertEqual(self.protocol.calls[3:5], [("closed", 1), ("closed", 2)])
        self.assertEqual(self.protocol.calls[5][0], "ended")
        self.assertEqual(len(self.protocol.calls), 6)

    def test_exit_status(self):
        """A signal's return code is reported as Twisted reports it."""
        self.transport.spawned(42, 1000.0, closed=("stdout", "stderr"))
        self.transport.exited(-9, 1001.0)
        kind, value = self.protocol.calls[-1]
        self.assertEqual(kind, "ended")
        self.assertIsInstance(value, ProcessTerminated)
        self.assertEqual(value.signal, 9)

    def test_recorded_end(self):
        """
        A program that ended before ccx connected: its output, then its
        exit, and its group is marked gone.
        """
        self.journal("stdout", b"all of it")
        self.transport.spawned(
            42,
            1000.0,
            ends={"stdout": 9, "stderr": 0},
            closed=("stdout", "stderr"),
            returncode=3,
            exited_at=1005.0,
            group_gone=True,
        )
        self.assertTrue(self.transport.group_gone)
        # Handed on from where the journal ends: what it holds is read from it.
        self.assertEqual(self.transport.offsets, {"stdout": 9, "stderr": 0})
        self.assertEqual(self.protocol.data[1], b"")
        self.assertEqual(self.transport.store.read("stdout", 0, 100)[:2], (0, b"all of it"))
        kind, value = self.protocol.calls[-1]
        self.assertEqual((kind, value.exitCode), ("ended", 3))

    def test_spawn_failed(self):
        """A spawn the keeper refused: exec_failed with its words, then the end."""
        self.transport.spawn_failed("'/x': No such file or directory")
        self.assertEqual(self.protocol.calls[0], ("failed", "'/x': No such file or directory"))
        self.assertEqual(self.protocol.calls[1][0], "ended")
        self.assertEqual(self.link.sent, [("forget", "p1")])

    def test_keeper_lost(self):
        """The keeper gone: the protocol is told why, gets the journal, and ends."""
        self.transport.spawned(42, 1000.0)
        self.journal("stdout", b"kept")
        self.transport.keeper_lost("its keeper is gone")
        self.assertEqual(self.protocol.calls[2], ("lost", "its keeper is gone"))
        self.assertEqual(self.protocol.data[1], b"")  # the last end it heard was 0
        self.assertEqual(self.protocol.calls[-1][0], "ended")
        self.assertIsNone(self.protocol.calls[-1][1].exitCode)

    def test_stdin(self):
        """Standard input goes to ccx's descriptor; closing it tells the keeper too."""
        read_end, write_end = os.pipe()
        self.addCleanup(os.close, read_end)
        self.transport.spawned(42, 1000.0, stdin=write_end)
        self.transport.write(b"typed")
        self.transport._stdin.doWrite()
        self.assertEqual(os.read(read_end, 100), b"typed")
        self.transport.closeStdin()
        self.assertEqual(self.link.sent, [("close_stdin", "p1")])


class TerminalKeeperTransportTests(SynchronousTestCase):
    """
    L{KeeperTransport} of a program on a terminal the keeper holds: one
    stream, C{pty}; the descriptor it is given is a duplicate of the master.
    """

    def setUp(self):
        self.state_dir = os.path.abspath(self.mktemp())
        self.keeper_journal = ProgramJournal.create(
            os.path.join(self.state_dir, PROGRAMS, "p1"), 1 << 30, 1 << 20, names=PTY_STREAMS
        )
        self.addCleanup(self.keeper_journal.close)
        self.reactor = MemoryReactorClock()
        self.link = FakeLink()
        self.protocol = RecordingProtocol()
        self.transport = KeeperTransport(
            self.reactor, self.link, self.state_dir, "p1", self.protocol, terminal=True
        )
        master, self.slave = open_terminal(WindowSize(24, 80))
        self.addCleanup(os.close, self.slave)
        # The transport owns its duplicate of the master.
        self.master = master

    def test_streams_and_output(self):
        """Its one stream is pty, handed on as child descriptor 1."""
        self.transport.spawned(42, 1000.0, stdin=self.master)
        self.assertEqual(self.transport.streams, ("pty",))
        self.keeper_journal.append("pty", b"\x1b[1mhi\r\n", 1000.0)
        self.transport.output("pty", self.keeper_journal.end("pty"))
        self.assertEqual(self.protocol.data[1], b"\x1b[1mhi\r\n")
        self.assertEqual(self.transport.offsets, {"pty": 0})

    def test_typing_and_resize_through_the_master(self):
        """
        Writes reach the terminal through the master; resize sets its size;
        the master is never read here (its output is the keeper's).
        """
        self.transport.spawned(42, 1000.0, stdin=self.master)
        writer = self.transport._stdin
        self.assertNotIn(writer, self.reactor.getReaders())
        self.transport.write(b"typed\n")
        writer.doWrite()
        self.assertEqual(os.read(self.slave, 100), b"typed\n")
        self.transport.resize(WindowSize(50, 120))
        self.assertEqual(window_size(self.slave), WindowSize(50, 120))

    def test_terminal_closed_closes_input(self):
        """
        When the keeper says the pty stream closed, ccx's master goes too:
        descriptors 0 and 1 are lost, and the end follows the exit; a
        resize after that is refused.
        """
        self.transport.spawned(42, 1000.0, stdin=self.master)
        self.transport.closed("pty")
        # As a terminal ccx holds reports it: input, then output.
        self.assertEqual(self.protocol.calls[2:4], [("closed", 0), ("closed", 1)])
        self.assertRaises(OSError, os.fstat, self.master)
        self.assertRaises(RuntimeError, self.transport.resize, WindowSize(10, 10))
        self.transport.exited(0, 1001.0)
        self.assertEqual(self.protocol.calls[-1][0], "ended")

    def test_window_from_the_keeper(self):
        """The size the keeper found is the transport's window; a bad one is ignored."""
        self.transport.spawned(42, 1000.0, stdin=self.master, window=[40, 132])
        self.assertEqual(self.transport.window, WindowSize(40, 132))
        other = KeeperTransport(
            self.reactor, self.link, self.state_dir, "p1", RecordingProtocol(), terminal=True
        )
        other.spawned(42, 1000.0, window=[0, 80])
        self.assertIsNone(other.window)

    def test_no_descriptor_input_closed(self):
        """
        Taken back after its terminal closed (no descriptor): registering
        the input's producer tells the protocol its input is closed.
        """
        os.close(self.master)
        self.transport.spawned(42, 1000.0, closed=["pty"])
        self.transport.registerProducer(object(), True)
        self.assertIn(("closed", 0), self.protocol.calls)

    def test_pipes_still_refuse(self):
        """On pipes, no descriptor still makes registering a producer an error; no resize."""
        os.close(self.master)
        transport = KeeperTransport(
            self.reactor, self.link, self.state_dir, "p2", RecordingProtocol()
        )
        transport.spawned(42, 1000.0)
        self.assertRaises(RuntimeError, transport.registerProducer, object(), True)
        self.assertRaises(RuntimeError, transport.resize, WindowSize(10, 10))


class DurableStoreHoldTests(SynchronousTestCase):
    """
    How far ccx's hold may lag what it read.
    """

    def holds(self, segment_bytes, moves):
        sent = []
        store = DurableStore(self.mktemp(), segment_bytes, sent.append)
        for offset in moves:
            store.reading("stdout", offset)
        return [hold["stdout"] for hold in sent]

    def test_within_a_segment(self):
        """
        With segments smaller than L{HOLD_STEP}, the hold is sent again
        once ccx read a segment past it, not a byte before: a lag longer
        than a small journal's limit would leave the keeper nothing to
        evict.
        """
        self.assertEqual(self.holds(4096, [100, 4195, 4196]), [100, 4196])
        self.assertEqual(self.holds(4096, [0, 4095, 4096]), [0, 4096])

    def test_large_segments(self):
        """
        With larger segments, L{HOLD_STEP} at most.
        """
        big = 4 * HOLD_STEP
        self.assertEqual(self.holds(big, [0, HOLD_STEP - 1, HOLD_STEP]), [0, HOLD_STEP])


class DurableStoreRefreshTests(SynchronousTestCase):
    def test_refresh_a_terminal_program(self):
        """
        After a dropped connection, the store of a program on a terminal
        looks again at its one stream, pty (not stdout and stderr).
        """
        sent = []
        store = DurableStore(self.mktemp(), 4096, sent.append, streams=("pty",))
        store.refresh()
        self.assertEqual(list(store.streams), ["pty"])
