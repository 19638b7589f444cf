"""
Tests for a process's output kept in its journal (L{ProcessOutput} with an
L{IOutputStore}): the memory buffer as a cache, drops only for what the
journal evicted, block mode held back only at the journal's limit, a
failing disk.
"""

import errno
import os

from twisted.trial.unittest import SynchronousTestCase

from ccx.journal.program import ProgramJournal, Space
from ccx.output.budget import OutputBudget
from tests.fakes import COMPLETION, FakeSink
from tests.test_fanout import make_output, spans, subscribe
from tests.test_journal import FailingWrite


class JournaledOutputTests(SynchronousTestCase):
    def journaled(self, blocking, limit=40, segment=10, max_bytes=10, write=None):
        output, reader = make_output(blocking, max_bytes=max_bytes)
        kwargs = {} if write is None else {"write": write}
        self.journal = ProgramJournal.create(self.mktemp(), limit, segment, **kwargs)
        output.set_store(self.journal)
        return output, reader

    def test_attach_from_zero_replays_from_disk(self):
        """Past the memory buffer, a subscriber from offset 0 gets every byte at its offset and time."""
        output, _ = self.journaled(blocking=False)
        for i in range(4):
            output.receive("stdout", bytes([65 + i]) * 10, float(i))
        self.assertEqual(output.streams["stdout"].start, 30)
        sink = subscribe(output, blocking=False, offsets={"stdout": 0})
        self.assertEqual(sink.data(), b"A" * 10 + b"B" * 10 + b"C" * 10 + b"D" * 10)
        chunks = sink.params("process.output", "stdout")
        self.assertEqual([(c["offset"], c["time"]) for c in chunks], [(0, 0.0), (10, 1.0), (20, 2.0), (30, 3.0)])
        self.assertEqual(sink.params("process.dropped"), [])
        self.assertEqual(output.dropped_bytes, 0)

    def test_default_offset_is_the_oldest_in_the_journal(self):
        output, _ = self.journaled(blocking=False)
        for i in range(3):
            output.receive("stdout", b"x" * 10, float(i))
        sink = FakeSink()
        subscription = output.subscribe(sink, False)
        self.assertEqual(subscription.cursors["stdout"], 0)

    def test_drop_observer_loses_only_what_the_journal_evicted(self):
        """A stalled drop-mode observer gets process.dropped for exactly the journal's eviction."""
        output, reader = self.journaled(blocking=False, limit=30)
        sink = subscribe(output, blocking=False, writable=False)
        for i in range(5):
            output.receive("stdout", bytes([65 + i]) * 10, float(i))
        # 50 bytes written, the journal holds 30: [0, 20) are lost.
        self.assertEqual(self.journal.start("stdout"), 20)
        self.assertEqual(output.dropped_bytes, 20)
        self.assertEqual(reader.pauses, 0)
        sink.writable = True
        output.pump_all()
        self.assertEqual(
            spans(sink, "stdout"),
            [("process.dropped", 0, 20), ("process.output", 20, 30), ("process.output", 30, 40), ("process.output", 40, 50)],
        )

    def test_drop_near_miss_nothing_lost_at_the_limit(self):
        """A journal exactly at its limit loses nothing (one segment more would)."""
        output, _ = self.journaled(blocking=False, limit=30)
        sink = subscribe(output, blocking=False, writable=False)
        for i in range(3):
            output.receive("stdout", b"x" * 10, float(i))
        self.assertEqual(output.dropped_bytes, 0)
        sink.writable = True
        output.pump_all()
        self.assertEqual(sink.params("process.dropped"), [])

    def test_block_held_back_only_when_the_journal_is_full(self):
        """A blocking subscriber that does not read holds the program back at the journal's limit, not the buffer's."""
        output, reader = self.journaled(blocking=True, limit=30)
        sink = subscribe(output, blocking=True, writable=False)
        output.receive("stdout", b"x" * 20, 0.0)
        self.assertEqual(reader.pauses, 0, "past the memory buffer, not held back")
        output.receive("stdout", b"x" * 9, 1.0)
        self.assertEqual(reader.pauses, 0, "one byte short of the limit")
        output.receive("stdout", b"x", 2.0)
        self.assertEqual(reader.pauses, 1)
        self.assertEqual(self.journal.start("stdout"), 0, "never evicted")
        sink.writable = True
        output.pump_all()
        self.assertEqual(reader.resumes, 1)
        self.assertEqual(sink.data(), b"x" * 30)
        self.assertEqual(output.dropped_bytes, 0)

    def test_block_without_subscriber_keeps_the_journal(self):
        """With nobody reading, block mode holds the program back once the journal is full."""
        output, reader = self.journaled(blocking=True, limit=20)
        for i in range(3):
            output.receive("stdout", b"x" * 10, float(i))
        self.assertEqual(reader.pauses, 1)
        self.assertEqual(self.journal.start("stdout"), 0)

    def test_total_full_of_unread_bytes_holds_programs_back(self):
        """
        The state dir's total full of bytes blocking subscribers have not
        read: block programs are held back (nothing is evicted, nothing
        dropped) until a reader moves on; the total is never passed by more
        than the read that reached it.
        """
        space = Space(total_bytes=40)
        outputs, readers, sinks = [], [], []
        for _ in range(2):
            output, reader = make_output(True, max_bytes=10)
            journal = ProgramJournal.create(self.mktemp(), 100, 10, space)
            space.add(journal)
            output.set_store(journal)
            sinks.append(subscribe(output, blocking=True, writable=False))
            outputs.append(output)
            readers.append(reader)
        outputs[0].receive("stdout", b"a" * 20, 0.0)
        outputs[1].receive("stdout", b"b" * 19, 1.0)
        self.assertEqual([r.pauses for r in readers], [0, 0], "one byte short of the total")
        outputs[1].receive("stdout", b"b", 2.0)
        self.assertEqual(space.held_bytes, 40)
        self.assertEqual([r.pauses for r in readers], [0, 1])
        # The first program is held back at its next read.
        outputs[0].receive("stdout", b"a", 3.0)
        self.assertEqual([r.pauses for r in readers], [1, 1])
        self.assertEqual(space.held_bytes, 41)
        self.assertEqual([o.dropped_bytes for o in outputs], [0, 0])
        # The first program's reader reads everything: its segments may go,
        # and both programs go on.
        sinks[0].writable = True
        outputs[0].pump_all()
        self.assertEqual([r.resumes for r in readers], [1, 1])
        self.assertEqual(sinks[0].data(), b"a" * 21)
        outputs[1].receive("stdout", b"b" * 10, 4.0)
        self.assertLessEqual(space.held_bytes, 40)
        sinks[1].writable = True
        outputs[1].pump_all()
        self.assertEqual(sinks[1].data(), b"b" * 30)
        self.assertEqual([o.dropped_bytes for o in outputs], [0, 0])

    def test_disk_full_goes_on_in_memory(self):
        """ENOSPC: the error is kept, output goes on in memory, and what the journal held is still read."""
        write = FailingWrite(errno.ENOSPC)
        output, reader = self.journaled(blocking=False, limit=100, write=write)
        sink = subscribe(output, blocking=False, writable=False)
        output.receive("stdout", b"a" * 10, 0.0)
        output.receive("stdout", b"b" * 10, 1.0)
        write.armed = True
        output.receive("stdout", b"c" * 10, 2.0)
        self.assertIn("No space left on device", output.store_error)
        self.assertFalse(output.journaling)
        output.receive("stdout", b"d" * 10, 3.0)
        # Memory (10 bytes) now bounds what is held past the journal: [20, 30) lost.
        self.assertEqual(output.dropped_bytes, 10)
        sink.writable = True
        output.pump_all()
        self.assertEqual(
            spans(sink, "stdout"),
            [("process.output", 0, 10), ("process.output", 10, 20), ("process.dropped", 20, 30), ("process.output", 30, 40)],
        )

    def test_read_error_drops_exactly(self):
        """A journal that cannot be read: the subscriber is told the range it lost, and the output goes on."""
        output, _ = self.journaled(blocking=False)
        for i in range(3):
            output.receive("stdout", b"x" * 10, float(i))
        for segment in self.journal.streams["stdout"].segments[:2]:
            segment.remove()
        sink = subscribe(output, blocking=False, offsets={"stdout": 0})
        self.assertIn("journal reading failed", output.store_error)
        self.assertEqual(spans(sink, "stdout"), [("process.dropped", 0, 20), ("process.output", 20, 30)])
        self.assertEqual(output.dropped_bytes, 20)
        self.assertEqual(output.totals()["dropped"], 20)

    def test_read_error_counts_what_only_the_journal_held_once(self):
        """
        A segment that cannot be read: what only the journal held, of both
        streams, counts in dropped_bytes once, whoever is told; bytes the
        slowest reader already had do not count (the near miss: it read up
        to one byte before the buffer).
        """
        output, _ = self.journaled(blocking=False, limit=100)
        for i in range(3):
            output.receive("stdout", b"x" * 10, float(i))
            output.receive("stderr", b"y" * 10, float(i))
        self.assertEqual(output.streams["stderr"].start, 20)
        behind = subscribe(output, blocking=False, writable=False, offsets={"stdout": 0, "stderr": 19})
        other = subscribe(output, blocking=False, writable=False, offsets={"stdout": 0, "stderr": 19})
        for segment in self.journal.streams["stdout"].segments[:2]:
            segment.remove()
        behind.writable = True
        output.pump_all()
        self.assertIn("journal reading failed", output.store_error)
        # stdout [0, 20) and stderr [19, 20): 21 bytes, told to both readers.
        self.assertEqual(output.dropped_bytes, 21)
        other.writable = True
        output.pump_all()
        self.assertEqual(output.dropped_bytes, 21)
        for sink in (behind, other):
            self.assertEqual(spans(sink, "stdout")[0], ("process.dropped", 0, 20))
            self.assertEqual(spans(sink, "stderr")[0], ("process.dropped", 19, 20))

    def test_read_error_unpins_the_journal(self):
        """A journal given up after a read error no longer holds back other programs' eviction."""
        output, _ = self.journaled(blocking=True, limit=100)
        subscribe(output, blocking=True, writable=False)
        output.receive("stdout", b"x" * 10, 0.0)
        output.receive("stdout", b"x" * 10, 1.0)
        self.assertEqual(self.journal.pins["stdout"], 0)
        self.journal.streams["stdout"].segments[0].remove()
        subscribe(output, blocking=False, offsets={"stdout": 0})
        self.assertIsNone(output.store)
        self.assertEqual(self.journal.pins, {"stdout": None, "stderr": None})

    def test_live_reader_behind_the_buffer_reads_one_open_file(self):
        """
        A reader behind the memory buffer of a running program reads on from
        the segment file it opened (no open per chunk); once the program is
        over, no file is kept open for a reader.
        """
        output, _ = self.journaled(blocking=False, limit=100, segment=40)
        sink = subscribe(output, blocking=False, writable=False)
        for i in range(4):
            output.receive("stdout", bytes([65 + i]) * 10, float(i))
        stream = self.journal.streams["stdout"]
        opened = []
        real_open = os.open
        self.patch(os, "open", lambda *a, **k: opened.append(a[0]) or real_open(*a, **k))
        sink.max_chunk = 10
        sink.writable = True
        output.pump_all()
        self.assertEqual(sink.data(), b"A" * 10 + b"B" * 10 + b"C" * 10 + b"D" * 10)
        self.assertEqual(opened, [stream.segments[0].data_path])
        output.complete(COMPLETION)
        self.assertIsNone(stream._read_fd)
        opened.clear()
        for _ in range(2):
            late = subscribe(output, blocking=False, offsets={"stdout": 0})
            self.assertEqual(late.data()[:10], b"A" * 10)
        self.assertEqual(len(opened), 2)
        self.assertIsNone(stream._read_fd)

    def test_budget_releases_memory_only(self):
        """The held-output budget releases a finished program's memory: nothing is dropped that the journal holds."""
        output, _ = self.journaled(blocking=False, limit=100, max_bytes=100)
        output.budget = OutputBudget(5)
        sink = subscribe(output, blocking=False, writable=False)
        output.receive("stdout", b"x" * 30, 0.0)
        output.complete(COMPLETION)
        self.assertEqual(output.held_bytes, 5)
        self.assertEqual(output.budget.released_bytes, 25)
        self.assertEqual(output.dropped_bytes, 0)
        sink.writable = True
        output.pump_all()
        self.assertEqual(sink.data(), b"x" * 30)
        self.assertEqual(sink.methods()[-1], "process.completed")

    def test_retire_drops_what_only_the_journal_held(self):
        """A forgotten process's subscriber behind gets exact drops for the journal's bytes too."""
        output, _ = self.journaled(blocking=False, limit=100)
        sink = subscribe(output, blocking=False, writable=False)
        for i in range(3):
            output.receive("stdout", b"x" * 10, float(i))
        output.complete(COMPLETION)
        output.retire()
        self.assertEqual(output.dropped_bytes, 30)
        sink.writable = True
        output.pump_all()
        self.assertEqual(spans(sink, "stdout"), [("process.dropped", 0, 30)])
