"""
A state dir that lies: records and journals corrupted, edited by hand or
planted by someone else must not stop the service, block it, or make it
read or write anything outside the state dir.
"""

import errno
import json
import os

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from ccx.journal.record import MAX_RECORD_BYTES, RECORD_NAME, Record, RecordError, read_record
from ccx.journal.statedir import StateDir, StateDirError
from ccx.journal.stream import (
    DATA_SUFFIX,
    INDEX_ENTRY,
    INDEX_SUFFIX,
    Segment,
    StreamJournal,
    segment_name,
)
from ccx.process.registry import ProcessRegistry

PROCESS_ID = "0123456789abcdef0123456789abcdef"


def good_record(process_id: str = PROCESS_ID, **changes) -> dict:
    raw = Record(
        process_id,
        ["echo", "hi"],
        "/bin/echo",
        "/",
        started_at=1.0,
        status="completed",
        ended_at=2.0,
        exit_code=0,
    ).to_json()
    raw.update(changes)
    return raw


def plant(state: StateDir, raw: object, process_id: str = PROCESS_ID) -> str:
    directory = state.directory(process_id)
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, RECORD_NAME), "w") as f:
        f.write(raw if isinstance(raw, str) else json.dumps(raw))
    return directory


class RecordValuesTests(SynchronousTestCase):
    # Each field, a value of the wrong kind (or out of range) and the near
    # miss just inside that is accepted.
    BAD = [
        ("started_at", "yesterday", 0),
        ("started_at", float("inf"), 1e300),
        ("started_at", float("nan"), -1.5),
        ("ended_at", "x", None),
        ("ended_at", True, 0.0),
        ("duration", None, 0),
        ("stdout_bytes", -1, 0),
        ("stdout_bytes", 1.0, 1),
        ("stderr_bytes", "lots", 2**70),
        ("duration", float("-inf"), -0.0),
        ("dropped_bytes", False, 0),
        ("pid", 0, 1),
        ("pid", -1, 2**22),
        ("exit_code", 1.0, -1),
        ("argv", [1, 2], []),
        ("argv", ["a", None], ["a", ""]),
        ("executable", 5, ""),
        ("cwd", None, "/"),
        ("status", ["completed"], "bogus"),
        ("signal", 15, "SIGTERM"),
        ("encoding", None, "base64"),
        ("durable", 1, False),
        ("cgroup", 0, None),
        ("error", {}, "why"),
        ("pty", "24x80", [24, 80]),
        ("pty", [24, "80"], None),
        ("pty_bytes", -1, 0),
        ("extra", [1], {}),
        ("extra", "ab", {"k": 1}),
    ]

    def test_values_of_the_wrong_kind_refused(self):
        for name, bad, near in self.BAD:
            with self.subTest(field=name, value=bad):
                error = self.assertRaises(RecordError, Record.from_json, good_record(**{name: bad}))
                self.assertIn(name, str(error))
                record = Record.from_json(good_record(**{name: near}))
                self.assertEqual(getattr(record, name), near)

    def test_bad_record_read_is_record_error(self):
        directory = self.mktemp()
        os.mkdir(directory)
        with open(os.path.join(directory, RECORD_NAME), "w") as f:
            f.write('{"process_id": "p", "argv": [], "executable": "", "cwd": "", "started_at": NaN}')
        error = self.assertRaises(RecordError, read_record, directory)
        self.assertIn(RECORD_NAME, str(error))

    def test_huge_record_not_read(self):
        """A record.json past MAX_RECORD_BYTES is refused unread; one byte less is read."""
        directory = self.mktemp()
        os.mkdir(directory)
        text = json.dumps(good_record())
        path = os.path.join(directory, RECORD_NAME)
        with open(path, "w") as f:
            f.write(text + " " * (MAX_RECORD_BYTES - len(text)))
        self.assertEqual(read_record(directory).process_id, PROCESS_ID)
        with open(path, "a") as f:
            f.write(" ")
        error = self.assertRaises(RecordError, read_record, directory)
        self.assertIn("more than", str(error))

    def test_fifo_or_symlink_record_not_opened(self):
        """A FIFO would block the reactor for ever; a symlink could read any file."""
        directory = self.mktemp()
        os.mkdir(directory)
        path = os.path.join(directory, RECORD_NAME)
        os.mkfifo(path)
        error = self.assertRaises(RecordError, read_record, directory)
        self.assertIn("not a regular file", str(error))
        os.unlink(path)
        elsewhere = os.path.abspath(self.mktemp())
        with open(elsewhere, "w") as f:
            json.dump(good_record(), f)
        os.symlink(elsewhere, path)
        self.assertRaises(RecordError, read_record, directory)

    def test_record_never_written_through_a_link(self):
        """A link left at record.json.tmp is replaced, not followed; the record is the owner's alone."""
        state = StateDir(self.mktemp(), 1000, 10000).open()
        journal = state.create(PROCESS_ID)
        victim = os.path.abspath(self.mktemp())
        with open(victim, "w") as f:
            f.write("precious")
        os.symlink(victim, os.path.join(journal.directory, RECORD_NAME + ".tmp"))
        journal.write_record(Record.from_json(good_record()))
        with open(victim) as f:
            self.assertEqual(f.read(), "precious")
        self.assertEqual(journal.read_record().process_id, PROCESS_ID)
        mode = os.stat(os.path.join(journal.directory, RECORD_NAME)).st_mode
        self.assertEqual(mode & 0o077, 0)
        journal.close()


class RegistryTakesUpTests(SynchronousTestCase):
    def test_bad_records_skipped_at_start(self):
        """
        Records whose times are not numbers (they were sorted, and aged,
        with a TypeError) and whose byte counts are not counts are skipped:
        the good one beside them is listed.
        """
        state = StateDir(self.mktemp(), 1000, 10000).open()
        plant(state, good_record(ended_at=1000.0))
        plant(state, good_record("a" * 32, started_at="yesterday"), "a" * 32)
        plant(state, good_record("b" * 32, ended_at="x"), "b" * 32)
        plant(state, good_record("c" * 32, stdout_bytes="lots"), "c" * 32)
        clock = Clock()
        clock.advance(1001.0)
        registry = ProcessRegistry(clock, max_processes=4, keep_finished=300)
        registry.use_state_dir(state)
        self.assertEqual([p.process_id for p in registry.all()], [PROCESS_ID])
        # Skipped, not deleted: they are someone's to look at.
        self.assertTrue(os.path.isdir(state.directory("c" * 32)))
        registry.forget(PROCESS_ID)


def write(path: str, data: bytes = b"hello\n") -> None:
    with open(path, "wb") as f:
        f.write(data)


class SegmentLiesTests(SynchronousTestCase):
    def stream_dir(self) -> str:
        directory = self.mktemp()
        os.makedirs(directory)
        return directory

    def test_names_not_written_by_ccx_ignored(self):
        """
        "²" passes str.isdigit() but not int(); 21 digits is no name ccx
        writes: both ignored (they stopped the start with a ValueError).
        The near miss: 20 ASCII digits is a segment.
        """
        directory = self.stream_dir()
        write(os.path.join(directory, "²" + DATA_SUFFIX))
        write(os.path.join(directory, "1" * 21 + DATA_SUFFIX))
        write(os.path.join(directory, segment_name(0) + DATA_SUFFIX))
        journal = StreamJournal.open(directory, 4096)
        self.assertEqual((journal.start, journal.end), (0, 6))
        journal.close()

    def test_offsets_past_what_an_index_holds(self):
        """A first offset whose end passes 2**63 (an OverflowError at start) is an OSError; just below is read."""
        directory = self.stream_dir()
        write(os.path.join(directory, segment_name(2**63 - 6) + DATA_SUFFIX))
        error = self.assertRaises(OSError, StreamJournal.open, directory, 4096)
        self.assertEqual(error.errno, errno.EINVAL)
        os.rename(
            os.path.join(directory, segment_name(2**63 - 6) + DATA_SUFFIX),
            os.path.join(directory, segment_name(2**63 - 7) + DATA_SUFFIX),
        )
        journal = StreamJournal.open(directory, 4096)
        self.assertEqual(journal.end, 2**63 - 1)
        self.assertEqual(journal.read(2**63 - 7, 100)[1], b"hello\n")
        journal.close()

    def test_gap_or_overlap_refused(self):
        """Segments that do not follow each other would give wrong offsets; touching ones are read."""
        for second in (7, 5):
            with self.subTest(second=second):
                directory = self.stream_dir()
                write(os.path.join(directory, segment_name(0) + DATA_SUFFIX))
                write(os.path.join(directory, segment_name(second) + DATA_SUFFIX))
                error = self.assertRaises(OSError, StreamJournal.open, directory, 4096)
                self.assertIn("do not follow", error.strerror)
        directory = self.stream_dir()
        write(os.path.join(directory, segment_name(0) + DATA_SUFFIX))
        write(os.path.join(directory, segment_name(6) + DATA_SUFFIX), b"world\n")
        journal = StreamJournal.open(directory, 4096)
        self.assertEqual(journal.read(6, 100)[1], b"world\n")
        journal.close()

    def test_segment_not_a_regular_file(self):
        """A directory counted as 4096 bytes of output; a symlink read any file as output."""
        secret = os.path.abspath(self.mktemp())
        write(secret, b"secret\n")
        for plant_it in (os.mkdir, lambda path: os.symlink(secret, path)):
            directory = self.stream_dir()
            plant_it(os.path.join(directory, segment_name(0) + DATA_SUFFIX))
            error = self.assertRaises(OSError, StreamJournal.open, directory, 4096)
            self.assertIn("not a regular file", error.strerror)

    def test_symlink_swapped_in_after_open_not_read(self):
        """A segment replaced by a symlink once opened is not read through it."""
        secret = os.path.abspath(self.mktemp())
        write(secret, b"secret\n")
        directory = self.stream_dir()
        path = os.path.join(directory, segment_name(0) + DATA_SUFFIX)
        write(path)
        journal = StreamJournal.open(directory, 4096)
        os.unlink(path)
        os.symlink(secret, path)
        self.assertRaises(OSError, journal.read, 0, 100)
        journal.close()

    def test_index_that_never_ends_or_blocks(self):
        """An index that is a FIFO (blocked the reactor) or a link to /dev/zero (read for ever) is refused."""
        for plant_it in (os.mkfifo, lambda path: os.symlink("/dev/zero", path)):
            directory = self.stream_dir()
            write(os.path.join(directory, segment_name(0) + DATA_SUFFIX))
            plant_it(os.path.join(directory, segment_name(0) + INDEX_SUFFIX))
            self.assertRaises(OSError, StreamJournal.open, directory, 4096)

    def test_index_read_no_further_than_the_data(self):
        """An index far longer than its data has is read only as far as entries could be."""
        directory = self.stream_dir()
        write(os.path.join(directory, segment_name(0) + DATA_SUFFIX))
        entries = [INDEX_ENTRY.pack(i, float(i)) for i in range(100000)]
        write(os.path.join(directory, segment_name(0) + INDEX_SUFFIX), b"".join(entries))
        read = []
        real_read = Segment._read_index
        self.patch(Segment, "_read_index", lambda segment: read.append(real_read(segment)) or read[-1])
        journal = StreamJournal.open(directory, 4096)
        self.assertEqual(len(read[0]), 7 * INDEX_ENTRY.size)
        self.assertEqual(list(journal.segments[0].offsets), [0, 1, 2, 3, 4, 5])
        journal.close()

    def test_registry_skips_a_lying_journal(self):
        """A journal that cannot be read is logged and skipped at start; its neighbour is listed."""
        state = StateDir(self.mktemp(), 1000, 10000).open()
        plant(state, good_record(ended_at=1000.0))
        lying = plant(state, good_record("a" * 32, ended_at=1000.0), "a" * 32)
        os.makedirs(os.path.join(lying, "stdout"))
        os.mkfifo(os.path.join(lying, "stdout", segment_name(0) + INDEX_SUFFIX))
        write(os.path.join(lying, "stdout", segment_name(0) + DATA_SUFFIX))
        clock = Clock()
        clock.advance(1001.0)
        registry = ProcessRegistry(clock, max_processes=4, keep_finished=300)
        registry.use_state_dir(state)
        self.assertEqual([p.process_id for p in registry.all()], [PROCESS_ID])
        registry.forget(PROCESS_ID)


class StateDirOwnerTests(SynchronousTestCase):
    """
    A state dir someone else can write to is refused: they could plant
    links this service (root here) writes through, or records it serves.
    """

    def test_another_users_state_dir_refused(self):
        path = self.mktemp()
        StateDir(path, 100, 1000).open()
        os.chown(path, 65534, -1)
        error = self.assertRaises(StateDirError, StateDir(path, 100, 1000).open)
        self.assertIn("belongs to uid 65534", str(error))
        # The near miss: ours again, it opens.
        os.chown(path, os.geteuid(), -1)
        StateDir(path, 100, 1000).open()

    def test_another_users_programs_refused(self):
        state = StateDir(self.mktemp(), 100, 1000).open()
        os.chown(state.programs, 65534, -1)
        error = self.assertRaises(StateDirError, StateDir(state.path, 100, 1000).open)
        self.assertIn(state.programs, str(error))

    def test_world_writable_refused(self):
        """o+w (as /tmp) is refused, with what to do; g+w, the near miss, is a choice left to the owner."""
        for which in ("path", "programs"):
            state = StateDir(self.mktemp(), 100, 1000).open()
            os.chmod(getattr(state, which), 0o1777)
            error = self.assertRaises(StateDirError, StateDir(state.path, 100, 1000).open)
            self.assertIn("chmod o-w", str(error))
            os.chmod(getattr(state, which), 0o775)
            StateDir(state.path, 100, 1000).open()

    def test_programs_a_symlink_refused(self):
        """programs/ a link to elsewhere: every journal would be written there."""
        state = StateDir(self.mktemp(), 100, 1000).open()
        elsewhere = os.path.abspath(self.mktemp())
        os.rename(state.programs, elsewhere)
        os.symlink(elsewhere, state.programs)
        error = self.assertRaises(StateDirError, StateDir(state.path, 100, 1000).open)
        self.assertIn("not a directory", str(error))

    def test_the_state_dir_itself_may_be_a_link(self):
        """The near miss: --state-dir naming a link to a directory of ours is fine."""
        target = self.mktemp()
        StateDir(target, 100, 1000).open()
        link = os.path.abspath(self.mktemp())
        os.symlink(os.path.abspath(target), link)
        StateDir(link, 100, 1000).open()
