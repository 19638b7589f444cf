"""
Tests for L{ccx.journal}: segments, index times, eviction with exact
ranges, limits per program and in total, failures, records, the state dir.
"""

import errno
import os
import shutil

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from ccx.journal.program import ProgramJournal, Space
from ccx.journal.record import RECORD_NAME, Record, RecordError, read_record
from ccx.journal.statedir import (
    FORMAT_VERSION,
    StateDir,
    StateDirError,
    default_state_dir,
)
from ccx.journal.stream import DATA_SUFFIX, INDEX_SUFFIX, StreamJournal, segment_name
from ccx.journal.store import ProgramJournal as StoreJournal
from ccx.output.interfaces import IOutputStore

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "state-v1")


class FailingWrite:
    """
    os.write that fails with C{error} once armed, after writing C{partial}
    bytes of the call that fails.
    """

    def __init__(self, error: int = errno.ENOSPC, partial: int = 0) -> None:
        self.error = error
        self.partial = partial
        self.armed = False

    def __call__(self, fd: int, data: bytes) -> int:
        if self.armed:
            if self.partial:
                written = os.write(fd, bytes(data[: self.partial]))
                self.partial = 0
                return written
            raise OSError(self.error, os.strerror(self.error))
        return os.write(fd, data)


class StreamJournalTests(SynchronousTestCase):
    def journal(self, segment_bytes: int = 10, **kwargs) -> StreamJournal:
        return StreamJournal.create(self.mktemp(), segment_bytes, **kwargs)

    def test_append_and_read_with_offsets_and_times(self):
        """Bytes come back at their offsets with the time they were read."""
        j = self.journal(segment_bytes=100)
        j.append(b"hello ", 1.0)
        j.append(b"world", 2.0)
        self.assertEqual((j.start, j.end), (0, 11))
        self.assertEqual(j.read(0, 100), (0, b"hello world", 1.0))
        self.assertEqual(j.read(6, 100), (6, b"world", 2.0))
        self.assertEqual(j.read(5, 1), (5, b" ", 1.0))
        self.assertEqual(j.read(11, 100), (11, b"", 0.0))

    def test_nothing_on_disk_before_the_first_byte(self):
        """
        A new journal makes no file until its first byte (a program that
        prints nothing costs none), and reads as empty from 0 meanwhile,
        reopened too; the first byte makes its directory and segment.
        """
        j = self.journal(segment_bytes=100)
        self.assertFalse(os.path.exists(j.directory))
        self.assertEqual((j.start, j.end, j.read(0, 10)), (0, 0, (0, b"", 0.0)))
        self.assertEqual(j.evict_oldest(), 0)
        reopened = StreamJournal.open(j.directory, 100)
        self.assertEqual((reopened.start, reopened.end), (0, 0))
        self.assertFalse(os.path.exists(j.directory))
        j.append(b"x", 1.0)
        first = segment_name(0)
        self.assertEqual(
            sorted(os.listdir(j.directory)), sorted([first + DATA_SUFFIX, first + INDEX_SUFFIX])
        )
        self.assertEqual(StreamJournal.open(j.directory, 100).read(0, 10), (0, b"x", 1.0))

    def test_close_reads_within_the_time_resolution_share_an_entry(self):
        """Reads 10 ms apart get entries of their own; closer ones share one."""
        j = self.journal(segment_bytes=100)
        j.append(b"a", 1.0)
        j.append(b"b", 1.009)
        j.append(b"c", 1.019)
        self.assertEqual(list(j.segments[0].offsets), [0, 2])
        self.assertEqual(j.read(1, 1)[2], 1.0)
        self.assertEqual(j.read(2, 1)[2], 1.019)

    def test_segments_named_by_first_offset(self):
        """A segment past its size starts the next, named by its first offset."""
        j = self.journal(segment_bytes=10)
        for i in range(3):
            j.append(b"x" * 10, float(i))
        names = sorted(os.listdir(j.directory))
        self.assertEqual(
            names,
            [f"{n:020d}.{ext}" for n in (0, 10, 20) for ext in ("idx", "out")],
        )
        # A read stops at the end of its segment.
        self.assertEqual(j.read(5, 100), (5, b"x" * 5, 0.0))
        self.assertEqual(j.read(10, 100)[2], 1.0)

    def test_evict_oldest_exact_range(self):
        """Eviction drops whole segments; the start is exact."""
        j = self.journal(segment_bytes=10)
        for i in range(3):
            j.append(bytes([65 + i]) * 10, float(i))
        self.assertEqual(j.evict_oldest(), 10)
        self.assertEqual((j.start, j.end), (10, 30))
        self.assertEqual(j.read(0, 5), (10, b"BBBBB", 1.0))

    def test_evict_the_only_segment_keeps_the_end(self):
        """Evicting the last segment leaves an empty one at the end, which a reopen finds."""
        j = self.journal(segment_bytes=100)
        j.append(b"abc", 1.0)
        self.assertEqual(j.evict_oldest(), 3)
        self.assertEqual(j.evict_oldest(), 0)
        self.assertEqual((j.start, j.end), (3, 3))
        j.append(b"de", 2.0)
        j.close()
        again = StreamJournal.open(j.directory, 100)
        self.assertEqual((again.start, again.end), (3, 5))
        self.assertEqual(again.read(0, 10), (3, b"de", 2.0))

    def test_reopen(self):
        """A journal reopened reads back the same bytes, offsets and times."""
        j = self.journal(segment_bytes=4)
        j.append(b"abcd", 1.0)
        j.append(b"efgh", 2.0)
        j.evict_oldest()
        j.close()
        again = StreamJournal.open(j.directory, 4)
        self.assertEqual((again.start, again.end), (4, 8))
        self.assertEqual(again.read(4, 10), (4, b"efgh", 2.0))

    def test_index_entry_past_the_data_ignored(self):
        """A crash between the data and its index leaves an entry that a reopen ignores."""
        j = self.journal(segment_bytes=100)
        j.append(b"abc", 1.0)
        j.close()
        with open(j.segments[0].index_path, "ab") as f:
            f.write(b"\x03" + b"\0" * 15 + b"\x01\x02")
        again = StreamJournal.open(j.directory, 100)
        self.assertEqual(list(again.segments[0].offsets), [0])
        self.assertEqual(again.read(0, 10), (0, b"abc", 1.0))

    def test_disk_full_counts_what_was_written(self):
        """A write cut short by ENOSPC raises; the end counts the bytes that were written."""
        write = FailingWrite(errno.ENOSPC, partial=2)
        j = self.journal(segment_bytes=100, write=write)
        j.append(b"ab", 1.0)
        write.armed = True
        with self.assertRaises(OSError) as caught:
            j.append(b"cdef", 2.0)
        self.assertEqual(caught.exception.errno, errno.ENOSPC)
        self.assertEqual(j.end, 4)
        self.assertEqual(j.read(0, 10), (0, b"abcd", 1.0))

    def test_eio(self):
        """An I/O error is raised as such, with nothing counted."""
        write = FailingWrite(errno.EIO)
        j = self.journal(segment_bytes=100, write=write)
        write.armed = True
        with self.assertRaises(OSError):
            j.append(b"ab", 1.0)
        self.assertEqual(j.end, 0)


class AppendFromTests(SynchronousTestCase):
    """
    L{StreamJournal.append_from}: a pipe's bytes moved to the end in the
    kernel (the keeper's way), beside L{StreamJournal.append}.
    """

    def setUp(self):
        self.journal = StreamJournal.create(os.path.abspath(self.mktemp()), 8)
        self.addCleanup(self.journal.close)
        self.read_end, self.write_end = os.pipe()
        os.set_blocking(self.read_end, False)
        self.addCleanup(os.close, self.read_end)

    def test_moves_and_indexes(self):
        """
        Bytes moved land at the end, after appended ones, in segments as
        appended ones do; each read time is indexed; an empty pipe raises
        BlockingIOError; end of file is 0.
        """
        self.journal.append(b"abc", 1.0)
        self.assertRaises(BlockingIOError, self.journal.append_from, self.read_end, 100, 2.0)
        os.write(self.write_end, b"defgh")
        self.assertEqual(self.journal.append_from(self.read_end, 100, 2.0), 5)
        os.write(self.write_end, b"ijklmn")
        # At most what is asked for, the rest left in the pipe.
        self.assertEqual(self.journal.append_from(self.read_end, 4, 3.0), 4)
        self.assertEqual(self.journal.end, 12)
        self.assertEqual(self.journal.read(0, 100), (0, b"abcdefgh", 1.0))
        self.assertEqual(self.journal.read(8, 100), (8, b"ijkl", 3.0))
        self.assertEqual(self.journal.read(5, 100)[2], 2.0)
        os.close(self.write_end)
        self.assertEqual(self.journal.append_from(self.read_end, 100, 4.0), 2)
        self.assertEqual(self.journal.append_from(self.read_end, 100, 4.0), 0)
        reopened = StreamJournal.open(self.journal.directory, 8)
        self.addCleanup(reopened.close)
        self.assertEqual((reopened.start, reopened.end), (0, 14))
        self.assertEqual(reopened.read(12, 100)[:2], (12, b"mn"))


class ProgramAppendFromTests(SynchronousTestCase):
    def test_counted_and_trimmed(self):
        """
        What append_from moves counts in the program's held bytes, and the
        limit evicts the oldest segments as for append.
        """
        journal = ProgramJournal.create(os.path.abspath(self.mktemp()), 8, 4)
        self.addCleanup(journal.close)
        read_end, write_end = os.pipe()
        self.addCleanup(os.close, read_end)
        self.addCleanup(os.close, write_end)
        for chunk in (b"abcd", b"efgh", b"ijkl"):
            os.write(write_end, chunk)
            self.assertEqual(journal.append_from("stdout", read_end, 100, 1.0), 4)
        self.assertEqual(journal.held_bytes, 8)
        self.assertEqual((journal.start("stdout"), journal.end("stdout")), (4, 12))


class ProgramJournalTests(SynchronousTestCase):
    def program(self, limit: int, segment: int = 10, space=None) -> ProgramJournal:
        return ProgramJournal.create(self.mktemp(), limit, segment, space)

    def test_provides_the_store_interface(self):
        """A program's journal is the output's IOutputStore."""
        self.assertIs(StoreJournal, ProgramJournal)
        self.assertTrue(verifyObject(IOutputStore, self.program(100)))

    def test_limit_evicts_oldest_segments_with_exact_ranges(self):
        """Past its limit the oldest segment of either stream goes, and is reported exactly."""
        j = self.program(limit=30)
        evicted = []
        j.on_evicted = lambda *r: evicted.append(r)
        j.append("stdout", b"a" * 10, 1.0)
        j.append("stderr", b"b" * 10, 2.0)
        j.append("stdout", b"c" * 10, 3.0)
        self.assertEqual(evicted, [])
        j.append("stderr", b"d" * 1, 4.0)
        self.assertEqual(evicted, [("stdout", 0, 10)])
        self.assertEqual(j.start("stdout"), 10)
        self.assertEqual(j.held_bytes, 21)

    def test_limit_exactly_reached_evicts_nothing(self):
        """At its limit exactly, nothing goes (the near miss: one byte more does)."""
        j = self.program(limit=20)
        j.append("stdout", b"a" * 10, 1.0)
        j.append("stdout", b"b" * 10, 2.0)
        self.assertEqual(j.start("stdout"), 0)
        j.append("stdout", b"c", 3.0)
        self.assertEqual(j.start("stdout"), 10)

    def test_pin_blocks_eviction_and_is_full(self):
        """Bytes a blocking reader has not read are never evicted: the journal is full instead."""
        j = self.program(limit=20)
        j.pin("stdout", 0)
        for i in range(3):
            j.append("stdout", b"x" * 10, float(i))
        self.assertEqual(j.start("stdout"), 0)
        self.assertTrue(j.is_full())
        # The reader moves past the first segment: it may go.
        j.pin("stdout", 10)
        self.assertFalse(j.is_full())
        j.trim()
        self.assertEqual(j.start("stdout"), 10)

    def test_pin_inside_a_segment(self):
        """A pin one byte before a segment's end keeps the segment (the near miss)."""
        j = self.program(limit=10)
        j.append("stdout", b"x" * 10, 1.0)
        j.pin("stdout", 9)
        j.append("stdout", b"y" * 10, 2.0)
        self.assertEqual(j.start("stdout"), 0)
        j.pin("stdout", 10)
        j.trim()
        self.assertEqual(j.start("stdout"), 10)

    def test_total_over_programs(self):
        """Past the state dir's total, the oldest segment of any program goes."""
        space = Space(total_bytes=30)
        first = self.program(limit=100, space=space)
        second = self.program(limit=100, space=space)
        space.add(first)
        space.add(second)
        evicted = []
        first.on_evicted = lambda *r: evicted.append(("first",) + r)
        second.on_evicted = lambda *r: evicted.append(("second",) + r)
        first.append("stdout", b"a" * 10, 1.0)
        second.append("stdout", b"b" * 10, 2.0)
        first.append("stdout", b"c" * 10, 3.0)
        self.assertEqual(evicted, [])
        second.append("stdout", b"d", 4.0)
        self.assertEqual(evicted, [("first", "stdout", 0, 10)])
        self.assertEqual(space.held_bytes, 21)
        first.delete()
        self.assertEqual(space.held_bytes, 11)
        self.assertFalse(os.path.exists(first.directory))

    def test_total_full_of_pinned_bytes_holds_programs_back(self):
        """
        Past the total with every byte pinned, nothing is evicted: the
        programs are full instead, and told once there is room (a reader
        moved past a segment), the way their own limit holds them back.
        """
        space = Space(total_bytes=30)
        first = self.program(limit=100, space=space)
        second = self.program(limit=100, space=space)
        space.add(first)
        space.add(second)
        rooms = []
        first.on_room = lambda: rooms.append("first")
        second.on_room = lambda: rooms.append("second")
        first.pin("stdout", 0)
        second.pin("stdout", 0)
        first.append("stdout", b"a" * 10, 1.0)
        second.append("stdout", b"b" * 10, 2.0)
        first.append("stdout", b"c" * 9, 3.0)
        # One byte short of the total: neither is full (the near miss).
        self.assertEqual(space.held_bytes, 29)
        self.assertFalse(first.is_full())
        self.assertFalse(second.is_full())
        first.append("stdout", b"c", 3.5)
        self.assertEqual(space.held_bytes, 30)
        self.assertTrue(first.is_full())
        self.assertTrue(second.is_full())
        self.assertEqual((first.start("stdout"), second.start("stdout")), (0, 0))
        self.assertEqual(rooms, [])
        # The first program's reader moves on: its oldest segment may go,
        # and the second program, held back by the total, is told.
        first.pin("stdout", 10)
        first.trim()
        self.assertEqual(rooms, ["second"])
        self.assertFalse(second.is_full())
        second.append("stdout", b"d", 4.0)
        self.assertEqual(first.start("stdout"), 10)
        self.assertEqual(space.held_bytes, 21)

    def test_forgetting_a_program_makes_room_in_the_total(self):
        """A program forgotten (its journal deleted) frees the total for those it held back."""
        space = Space(total_bytes=20)
        first = self.program(limit=100, space=space)
        second = self.program(limit=100, space=space)
        space.add(first)
        space.add(second)
        rooms = []
        second.on_room = lambda: rooms.append("second")
        first.pin("stdout", 0)
        second.pin("stdout", 0)
        first.append("stdout", b"a" * 10, 1.0)
        second.append("stdout", b"b" * 10, 2.0)
        self.assertTrue(second.is_full())
        first.delete()
        self.assertEqual(rooms, ["second"])
        self.assertFalse(second.is_full())

    def test_held_bytes_follow_appends_and_evictions(self):
        """The held count kept as bytes come and go matches what the streams hold."""
        j = self.program(limit=25)
        for i in range(5):
            j.append("stdout" if i % 2 else "stderr", b"z" * 7, float(i))
            self.assertEqual(j.held_bytes, sum(s.held_bytes for s in j.streams.values()))
        self.assertLessEqual(j.held_bytes, 25)

    def test_record_written_atomically(self):
        """A record replaces the old one whole, through a temporary file renamed."""
        j = self.program(limit=100)
        record = Record("p1", ["echo", "hi"], "/bin/echo", "/tmp", started_at=1.5, pid=42)
        j.write_record(record)
        self.assertEqual(j.read_record(), record)
        done = Record("p1", ["echo", "hi"], "/bin/echo", "/tmp", status="completed", exit_code=0)
        j.write_record(done)
        self.assertEqual(read_record(j.directory), done)
        # No temporary file is left (and no stream printed anything).
        self.assertEqual(sorted(os.listdir(j.directory)), [RECORD_NAME])

    def test_record_not_written_when_the_disk_is_full(self):
        """A failed write leaves the old record in place."""
        j = self.program(limit=100)
        old = Record("p1", ["true"], "/bin/true", "/")
        j.write_record(old)
        os.mkdir(os.path.join(j.directory, RECORD_NAME + ".tmp"))
        with self.assertRaises(OSError):
            j.write_record(Record("p1", ["true"], "/bin/true", "/", status="failed"))
        self.assertEqual(j.read_record(), old)


class RecordTests(SynchronousTestCase):
    def test_unknown_fields_kept(self):
        """Fields a later release wrote survive a read and a rewrite."""
        raw = Record("p", ["a"], "/a", "/").to_json()
        raw["future"] = 1
        record = Record.from_json(raw)
        self.assertEqual(record.extra, {"future": 1})
        self.assertEqual(Record.from_json(record.to_json()).extra, {"future": 1})

    def test_not_a_record(self):
        for raw in ([], {"argv": []}, {"process_id": 1, "argv": [], "executable": "", "cwd": ""}):
            self.assertRaises(RecordError, Record.from_json, raw)

    def test_unreadable(self):
        directory = self.mktemp()
        os.mkdir(directory)
        self.assertRaises(RecordError, read_record, directory)
        with open(os.path.join(directory, RECORD_NAME), "w") as f:
            f.write("{")
        self.assertRaises(RecordError, read_record, directory)


class StateDirTests(SynchronousTestCase):
    def test_default(self):
        """$STATE_DIRECTORY (systemd), else $XDG_STATE_HOME/ccx, else ~/.local/state/ccx."""
        self.assertEqual(default_state_dir({"STATE_DIRECTORY": "/var/lib/a:/b"}), "/var/lib/a")
        self.assertEqual(default_state_dir({"XDG_STATE_HOME": "/x"}), "/x/ccx")
        # A relative XDG_STATE_HOME is invalid by the spec: ignored.
        self.assertEqual(
            default_state_dir({"XDG_STATE_HOME": "x"}),
            os.path.expanduser("~/.local/state/ccx"),
        )
        self.assertEqual(default_state_dir({}), os.path.expanduser("~/.local/state/ccx"))

    def test_tests_never_use_the_users_state_dir(self):
        """The test run has a state dir of its own."""
        self.assertNotEqual(default_state_dir(), os.path.expanduser("~/.local/state/ccx"))
        self.assertNotIn("STATE_DIRECTORY", os.environ)

    def test_created_with_format(self):
        path = self.mktemp()
        StateDir(path, 100, 1000).open()
        with open(os.path.join(path, "format")) as f:
            self.assertEqual(f.read(), f"ccx-state {FORMAT_VERSION}\n")

    def test_later_format_refused(self):
        """A state dir of a later format is refused, plainly (one version more: the near miss)."""
        path = self.mktemp()
        os.makedirs(path)
        with open(os.path.join(path, "format"), "w") as f:
            f.write(f"ccx-state {FORMAT_VERSION + 1}\n")
        error = self.assertRaises(StateDirError, StateDir(path, 100, 1000).open)
        self.assertIn("later ccx", str(error))
        with open(os.path.join(path, "format"), "w") as f:
            f.write(f"ccx-state {FORMAT_VERSION}\n")
        StateDir(path, 100, 1000).open()

    def test_not_a_state_dir(self):
        path = self.mktemp()
        os.makedirs(path)
        with open(os.path.join(path, "format"), "w") as f:
            f.write("something else\n")
        self.assertRaises(StateDirError, StateDir(path, 100, 1000).open)

    def test_unwritable(self):
        path = self.mktemp()
        with open(path, "w"):
            pass
        error = self.assertRaises(StateDirError, StateDir(path, 100, 1000).open)
        self.assertIn(path, str(error))

    def test_records_finished_and_unfinished(self):
        state = StateDir(self.mktemp(), 100, 1000).open()
        running = state.create("a")
        running.write_record(Record("a", ["sleep"], "/bin/sleep", "/", started_at=1.0))
        done = state.create("b")
        done.write_record(Record("b", ["true"], "/bin/true", "/", started_at=2.0, status="completed"))
        # A directory without a readable record is skipped, not deleted.
        os.makedirs(state.directory("c"))
        self.assertEqual([r.process_id for r in state.finished_records()], ["b"])
        self.assertEqual([r.process_id for r in state.unfinished_records()], ["a"])
        state.remove("b")
        self.assertEqual(state.finished_records(), [])
        self.assertTrue(os.path.isdir(state.directory("c")))

    def test_fixture_of_format_1(self):
        """
        What this release (format 1) left is read by every later one: a
        committed state dir lists its program and replays its output with
        the offsets and times it was read at.
        """
        path = self.mktemp()
        shutil.copytree(FIXTURE, path)
        state = StateDir(path, 1024, 4096).open()
        [record] = state.finished_records()
        self.assertEqual(record.process_id, "0123456789abcdef0123456789abcdef")
        self.assertEqual(record.argv, ["sh", "-c", "echo one; echo two >&2; echo three"])
        self.assertEqual((record.status, record.exit_code), ("completed", 0))
        self.assertEqual((record.stdout_bytes, record.stderr_bytes), (10, 4))
        self.assertEqual(state.unfinished_records()[0].process_id, "fedcba9876543210fedcba9876543210")
        journal = state.load(record.process_id)
        self.assertEqual(journal.read("stdout", 0, 100), (0, b"one\n", 1700000000.0))
        self.assertEqual(journal.read("stdout", 4, 100), (4, b"three\n", 1700000000.5))
        self.assertEqual(journal.read("stdout", 0, 100)[1] + journal.read("stdout", 4, 100)[1], b"one\nthree\n")
        self.assertEqual(journal.start("stdout"), 0)
        self.assertEqual(journal.end("stderr"), 4)
        self.assertEqual(journal.read("stderr", 0, 100), (0, b"two\n", 1700000000.25))
