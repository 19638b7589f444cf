"""
One program's directory in the state dir: its record and a journal per
stream, within a limit of bytes.
"""

import errno
import os
import shutil
from typing import Callable, Dict, Iterable, Optional, Tuple

from ccx.journal.record import Record, read_record, write_record
from ccx.journal.stream import StreamJournal, Write

STREAMS = ("stdout", "stderr")
# The one stream of a program on a terminal.
PTY_STREAMS = ("pty",)

# What a full disk (or quota) fails a write with: room is made, then it is tried again.
_FULL = frozenset((errno.ENOSPC, errno.EDQUOT))
# Told of each segment evicted: the stream and the range it held.
Evicted = Callable[[str, int, int], None]


class ProgramJournal:
    """
    A program's record and output on disk.

    The oldest segment goes once the program holds more than C{limit_bytes}
    (or the state dir more than its total), but never one holding bytes at
    or after a stream's pin (what a blocking reader has not read): the
    journal is then full (L{is_full}), and its program is held back.

    @ivar pins: by stream, the oldest offset that must not be evicted, or
        L{None}: set by whoever reads the journal.
    @ivar on_evicted: told of each segment evicted.
    @ivar on_room: called, once, when the state dir's total, which made
        this journal full, has room again (or something may be evicted).
    """

    def __init__(
        self,
        directory: str,
        streams: Dict[str, StreamJournal],
        limit_bytes: int,
        space: Optional["Space"] = None,
    ) -> None:
        self.directory = directory
        self.streams = streams
        self.limit_bytes = limit_bytes
        self.space = space
        self.pins: Dict[str, Optional[int]] = {name: None for name in streams}
        self.on_evicted: Optional[Evicted] = None
        self.on_room: Optional[Callable[[], None]] = None
        # Kept as it changes rather than summed: it is asked after every read
        # of the program's pipes.
        self._held = sum(s.held_bytes for s in streams.values())

    @classmethod
    def create(
        cls,
        directory: str,
        limit_bytes: int,
        segment_bytes: int,
        space: Optional["Space"] = None,
        write: Write = os.write,
        names: Tuple[str, ...] = STREAMS,
    ) -> "ProgramJournal":
        """
        @param names: its streams (L{STREAMS}, or L{PTY_STREAMS} for a
            program on a terminal).
        """
        os.makedirs(directory, exist_ok=True)
        streams = {
            name: StreamJournal.create(os.path.join(directory, name), segment_bytes, 0, write)
            for name in names
        }
        return cls(directory, streams, limit_bytes, space)

    @classmethod
    def open(
        cls,
        directory: str,
        limit_bytes: int,
        segment_bytes: int,
        space: Optional["Space"] = None,
        write: Write = os.write,
        names: Optional[Tuple[str, ...]] = None,
    ) -> "ProgramJournal":
        """
        @param names: its streams, as its record says (L{PTY_STREAMS} for a
            program on a terminal); L{None} to go by what is on disk, which
            cannot tell a program that printed nothing (streams make no
            file before their first byte).
        """
        if names is None:
            # A program on a terminal left a pty stream alone.
            names = PTY_STREAMS if os.path.isdir(os.path.join(directory, "pty")) else STREAMS
        streams = {
            name: StreamJournal.open(os.path.join(directory, name), segment_bytes, write)
            for name in names
        }
        for stream in streams.values():
            # Opened to be read: nothing is appended until asked.
            stream.close()
        return cls(directory, streams, limit_bytes, space)

    @property
    def held_bytes(self) -> int:
        return self._held

    # -- the output's backing store (ccx.output.interfaces.IOutputStore) --

    def start(self, stream: str) -> int:
        return self.streams[stream].start

    def end(self, stream: str) -> int:
        return self.streams[stream].end

    def append(self, stream: str, data: bytes, when: float) -> None:
        """
        Append bytes read from C{stream} at C{when}, then keep within the
        limits.

        @raise OSError: when they could not be written.
        """
        journal = self.streams[stream]
        view = memoryview(data)
        while True:
            before = journal.end
            try:
                journal.append(view, when)
                break
            except OSError as e:
                if e.errno not in _FULL or not self.make_room():
                    raise
            finally:
                added = journal.end - before
                self._held += added
                if self.space is not None:
                    self.space.held_bytes += added
                view = view[added:]
        self.trim()

    def append_from(self, stream: str, fd: int, max_bytes: int, when: float) -> int:
        """
        Move what the pipe C{fd} holds (up to C{max_bytes}) to the end of
        C{stream}, in the kernel (L{StreamJournal.append_from}), then keep
        within the limits.

        @return: how many bytes were moved; 0 at the pipe's end of file.
        @raise BlockingIOError: when the pipe is empty.
        @raise OSError: when they could not be written.
        """
        while True:
            try:
                moved = self.streams[stream].append_from(fd, max_bytes, when)
                break
            except OSError as e:
                # Nothing was taken from the pipe: room is made, and it is
                # tried again.
                if e.errno not in _FULL or not self.make_room():
                    raise
        if moved:
            self._held += moved
            if self.space is not None:
                self.space.held_bytes += moved
            self.trim()
        return moved

    def read(self, stream: str, offset: int, max_bytes: int) -> Tuple[int, bytes, float]:
        return self.streams[stream].read(offset, max_bytes)

    def pin(self, stream: str, keep_from: Optional[int]) -> None:
        self.pins[stream] = keep_from

    def trim(self) -> None:
        """
        Evict the oldest segments while over this program's limit (and the
        state dir's total).
        """
        while self._held > self.limit_bytes and self.evict_oldest():
            pass
        space = self.space
        if space is None:
            return
        # Checked here first: this runs after every read of the program's pipes.
        if space.held_bytes > space.total_bytes:
            space.trim()
        if space.waiting:
            # This journal's pins may have moved: those the total held back
            # may go on (this one judges for itself, after its trim).
            space.waiting.pop(self, None)
            space.wake()

    def is_full(self) -> bool:
        """
        Whether this program must not grow: it is at its limit with nothing
        it may evict, or the state dir is at its total with nothing any
        program may evict (then L{on_room} is called once it has room).
        """
        if self._held >= self.limit_bytes and self.oldest_evictable() is None:
            return True
        space = self.space
        if space is not None and space.is_full():
            space.waiting[self] = None
            return True
        return False

    def finish(self) -> None:
        """
        Nothing more is appended: close the files being written.
        """
        for journal in self.streams.values():
            journal.close()

    # -- eviction ----------------------------------------------------------

    def make_room(self) -> bool:
        """
        The disk is full: evict the oldest segment that may go of another
        program of the state dir (the oldest finished programs' first, being
        the oldest; one whose journal failed before among them), so that a
        full disk does not fail every program's journal from then on.  This
        one's own output is not evicted for it: a disk that others fill
        would take it all for nothing.

        @return: whether anything was evicted (then try again).
        """
        if self.space is None:
            return False
        found = self.space.oldest_evictable(exclude=self)
        if found is None:
            return False
        try:
            return bool(found[1].evict_oldest())
        except OSError:
            # Evicting makes an empty segment where a stream had one only:
            # the disk may refuse even that.
            return False

    def oldest_evictable(self, only: Optional[str] = None) -> Optional[Tuple[float, str]]:
        """
        The time and stream of the oldest segment that may be evicted (of
        the stream C{only}, when given).
        """
        found = None
        for name, journal in self.streams.items():
            if only is not None and name != only:
                continue
            if not journal.held_bytes:
                continue
            pin = self.pins[name]
            if pin is not None and journal.oldest_segment_end() > pin:
                continue
            candidate = (journal.oldest_time, name)
            if found is None or candidate < found:
                found = candidate
        return found

    def evict_oldest(self, only: Optional[str] = None) -> int:
        """
        Evict the oldest segment that may go (of the stream C{only}, when
        given).

        @return: how many bytes were dropped (0 when none may go).
        """
        found = self.oldest_evictable(only)
        if found is None:
            return 0
        name = found[1]
        journal = self.streams[name]
        start = journal.start
        size = journal.evict_oldest()
        self._held -= size
        if self.space is not None:
            self.space.change(-size)
        if self.on_evicted is not None and size:
            self.on_evicted(name, start, start + size)
        return size

    # -- record and directory ---------------------------------------------

    def write_record(self, record: Record) -> None:
        write_record(self.directory, record)

    def read_record(self) -> Record:
        return read_record(self.directory)

    def close(self) -> None:
        self.finish()
        self.on_room = None
        if self.space is not None:
            self.space.forget(self)

    def delete(self) -> None:
        """
        Forget the program: its directory goes.
        """
        self.close()
        shutil.rmtree(self.directory, ignore_errors=True)


class Space:
    """
    The total held by every journal of a state dir, bounded by
    C{total_bytes}: past it, the oldest evictable segment of any program
    goes; when none may go (every byte pinned by a blocking reader), the
    programs that would add to it are held back (L{ProgramJournal.is_full})
    until there is room again.

    @ivar waiting: the journals held back by the total, to be told when
        there is room.
    """

    def __init__(self, total_bytes: int) -> None:
        self.total_bytes = total_bytes
        self.held_bytes = 0
        self.journals: Dict[ProgramJournal, None] = {}
        self.waiting: Dict[ProgramJournal, None] = {}
        self._trimming = False
        self._waking = False

    def add(self, journal: ProgramJournal) -> None:
        self.journals[journal] = None
        self.held_bytes += journal.held_bytes

    def forget(self, journal: ProgramJournal) -> None:
        self.waiting.pop(journal, None)
        if journal in self.journals:
            del self.journals[journal]
            self.held_bytes -= journal.held_bytes
            self.wake()

    def change(self, delta: int) -> None:
        self.held_bytes += delta

    def oldest_evictable(
        self, exclude: Optional[ProgramJournal] = None
    ) -> Optional[Tuple[Tuple[float, str], ProgramJournal]]:
        """
        The oldest segment any program (but C{exclude}) may evict: its time
        and stream, and its journal.
        """
        candidates: Iterable = (
            (found, journal)
            for journal in self.journals
            if journal is not exclude
            for found in [journal.oldest_evictable()]
            if found is not None
        )
        return min(candidates, key=lambda item: item[0], default=None)

    def is_full(self) -> bool:
        """
        Whether the total is reached with nothing any program may evict.
        """
        return self.held_bytes >= self.total_bytes and self.oldest_evictable() is None

    def wake(self) -> None:
        """
        Tell the journals held back by the total that they may go on, once
        it has room (or something may be evicted); those still held back
        wait again (L{ProgramJournal.is_full}).
        """
        if self._waking or not self.waiting or self.is_full():
            return
        self._waking = True
        try:
            waiting, self.waiting = self.waiting, {}
            for journal in waiting:
                if journal.on_room is not None:
                    journal.on_room()
        finally:
            self._waking = False

    def trim(self) -> None:
        if self._trimming:
            return
        self._trimming = True
        try:
            while self.held_bytes > self.total_bytes:
                oldest = self.oldest_evictable()
                if oldest is None or not oldest[1].evict_oldest():
                    break
        finally:
            self._trimming = False
