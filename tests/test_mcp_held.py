"""
Tests for L{HeldStream}: what MCP's results read of a stream, from its
memory buffer and, before it, its journal.
"""

from types import SimpleNamespace

from twisted.trial.unittest import SynchronousTestCase

from ccx.journal.program import ProgramJournal
from ccx.mcp.held import HeldStream
from ccx.mcp.tasks import _last_line
from ccx.mcp.text import stream_view
from tests.test_fanout import make_output


class HeldStreamTests(SynchronousTestCase):
    def held(self, limit: int = 40) -> HeldStream:
        output, _ = make_output(False, max_bytes=10)
        output.set_store(ProgramJournal.create(self.mktemp(), limit, 10))
        for i in range(4):
            output.receive("stdout", bytes([65 + i]) * 10, float(i))
        # The buffer holds [30, 40); the journal [0, 40).
        self.assertEqual(output.streams["stdout"].start, 30)
        return HeldStream(output, "stdout")

    def test_reads_the_journal_then_the_buffer(self):
        """One read from 0 gets the journal's bytes and the buffer's after them, at their offset and time."""
        held = self.held()
        self.assertEqual((held.start, held.end, held.held_bytes), (0, 40, 40))
        first, data, when = held.read(0, 40)
        self.assertEqual((first, when), (0, 0.0))
        self.assertEqual(data, b"A" * 10 + b"B" * 10 + b"C" * 10 + b"D" * 10)

    def test_read_stops_at_max_bytes_across_the_seam(self):
        """A read that crosses from the journal into the buffer stops at max_bytes, one byte past the seam."""
        held = self.held()
        self.assertEqual(held.read(25, 6), (25, b"CCCCCD", 2.0))
        self.assertEqual(held.read(29, 1), (29, b"C", 2.0))

    def test_start_is_the_journals_oldest(self):
        """When the journal evicted the oldest bytes, the stream starts at what it still holds."""
        held = self.held(limit=20)
        self.assertEqual((held.start, held.held_bytes), (20, 20))
        self.assertEqual(held.read(0, 100)[:2], (20, b"C" * 10 + b"D" * 10))

    def test_stream_view_shows_all(self):
        """The text of a result shows every byte the journal and buffer hold, not the buffer's alone."""
        view = stream_view("stdout", self.held(), 100)
        self.assertEqual((view.head, view.tail), (b"A" * 10 + b"B" * 10 + b"C" * 10 + b"D" * 10, b""))


class TaskLastLineTests(SynchronousTestCase):
    def test_last_line_from_the_journal(self):
        """
        A task's status names its last line even when only the journal holds
        it (a durable program taken back after a restart, silent since).
        """
        journal = ProgramJournal.create(self.mktemp(), 1 << 20, 1 << 16)
        journal.append("stdout", b"first\nsecond\n", 1.0)
        output, _ = make_output(False, max_bytes=10)
        output.restore(journal, {"stdout": 13}, 0)
        self.assertEqual(output.streams["stdout"].held_bytes, 0)
        self.assertEqual(_last_line(SimpleNamespace(output=output)), "second")
