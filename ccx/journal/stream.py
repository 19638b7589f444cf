"""
One output stream's journal: append-only segment files named by the offset
of their first byte, each with an index of the time each chunk was read.
"""

import errno
import os
import re
import stat
import struct
from array import array
from bisect import bisect_right
from typing import Callable, List, Optional, Tuple

# An index entry: the offset of a chunk's first byte and when it was read.
INDEX_ENTRY = struct.Struct("<qd")
DATA_SUFFIX = ".out"
INDEX_SUFFIX = ".idx"
# Reads within this many seconds of the last indexed one share its entry,
# as the memory buffer merges them (ccx.output.buffer): a chunk's time is
# that of each of its bytes within this resolution, and a program printing
# line by line does not write an entry per line.
TIME_RESOLUTION = 0.01
# Never through a link: a segment is a file of the state dir's own.
_OPEN_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
_READ_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW
# A segment's name: its first offset in exactly as many ASCII digits as
# segment_name writes (str.isdigit would take "²", int() would not).
_SEGMENT_NAME = re.compile(r"[0-9]{20}")

# How bytes reach a file: os.write's signature (tests give one that fails).
Write = Callable[[int, bytes], int]


def segment_name(first: int) -> str:
    return f"{first:020d}"


class Segment:
    """
    One segment file: bytes C{[first, first + size)} of the stream, and the
    offsets and times of its index.
    """

    def __init__(self, directory: str, first: int) -> None:
        self.first = first
        self.size = 0
        self.offsets = array("q")
        self.times = array("d")
        base = os.path.join(directory, segment_name(first))
        self.data_path = base + DATA_SUFFIX
        self.index_path = base + INDEX_SUFFIX

    @property
    def end(self) -> int:
        return self.first + self.size

    def load(self) -> None:
        """
        Read its size and index from disk; an index entry past the data (a
        crash between the two writes) or cut short is ignored.
        """
        status = os.lstat(self.data_path)
        if not stat.S_ISREG(status.st_mode):
            raise OSError(errno.EINVAL, "a segment is not a regular file", self.data_path)
        if self.first + status.st_size >= 2**63:
            raise OSError(errno.EINVAL, "a segment's offsets are past 2**63", self.data_path)
        self.size = status.st_size
        raw = self._read_index()
        whole = len(raw) - len(raw) % INDEX_ENTRY.size
        for offset, when in INDEX_ENTRY.iter_unpack(raw[:whole]):
            if self.first <= offset < self.end and (
                not self.offsets or offset > self.offsets[-1]
            ):
                self.offsets.append(offset)
                self.times.append(when)
        if self.size and (not self.offsets or self.offsets[0] != self.first):
            # Its first entry was lost: its bytes keep the earliest time known.
            self.offsets.insert(0, self.first)
            self.times.insert(0, self.times[0] if self.times else 0.0)

    def _read_index(self) -> bytes:
        """
        The index's entries, at most one per byte of data: an index that
        is no regular file (a FIFO would block, /dev/zero never end) or
        longer than that is read no further.
        """
        try:
            fd = os.open(self.index_path, _READ_FLAGS | os.O_NONBLOCK)
        except FileNotFoundError:
            return b""
        with open(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise OSError(errno.EINVAL, "an index is not a regular file", self.index_path)
            return f.read((self.size + 1) * INDEX_ENTRY.size)

    def time_at(self, offset: int) -> float:
        index = bisect_right(self.offsets, offset) - 1
        return self.times[max(index, 0)] if self.times else 0.0

    def remove(self) -> None:
        for path in (self.data_path, self.index_path):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass


class StreamJournal:
    """
    The journal of one stream, in its own directory: bytes C{[start, end)}
    are held, in segments of about C{segment_bytes}.  L{evict_oldest} drops
    the oldest whole segment, so C{start} is always exact.  Once anything
    was written there is always at least one segment file, if empty, so
    that the end survives a restart.

    Bytes are handed to the kernel as they are appended (no buffering in
    this process, no fsync): a crash of ccx loses nothing appended; a crash
    of the machine loses what the kernel had not yet written back.

    @param write: how bytes are written (C{os.write}).
    """

    def __init__(self, directory: str, segment_bytes: int, write: Write = os.write) -> None:
        self.directory = directory
        self.segment_bytes = segment_bytes
        self._write = write
        self.segments: List[Segment] = []
        self._data_fd: Optional[int] = None
        self._index_fd: Optional[int] = None
        # The segment's data file opened without O_APPEND, for splice.
        self._splice_fd: Optional[int] = None
        # The segment last read and its file, kept open while the journal is
        # written: a live reader behind the memory buffer reads on, chunk
        # after chunk, from the same segment (one pread, no open per chunk).
        self._read_segment: Optional[Segment] = None
        self._read_fd: Optional[int] = None

    @classmethod
    def create(
        cls, directory: str, segment_bytes: int, start: int = 0, write: Write = os.write
    ) -> "StreamJournal":
        """
        A new, empty journal whose first byte will be at offset C{start}.

        From offset 0, nothing is made on disk until the first byte comes
        (a missing journal reads as an empty one from 0): a program that
        prints nothing costs no files, and most short ones print little.
        """
        journal = cls(directory, segment_bytes, write)
        if start:
            os.makedirs(directory, exist_ok=True)
            journal._new_segment(start)
        else:
            journal.segments.append(Segment(directory, 0))
        return journal

    @classmethod
    def open(
        cls, directory: str, segment_bytes: int, write: Write = os.write
    ) -> "StreamJournal":
        """
        The journal already in C{directory} (an empty one when there is none).
        """
        journal = cls(directory, segment_bytes, write)
        try:
            names = os.listdir(directory)
        except FileNotFoundError:
            return cls.create(directory, segment_bytes, 0, write)
        firsts = sorted(
            int(name[: -len(DATA_SUFFIX)])
            for name in names
            if name.endswith(DATA_SUFFIX) and _SEGMENT_NAME.fullmatch(name[: -len(DATA_SUFFIX)])
        )
        for first in firsts:
            segment = Segment(directory, first)
            if journal.segments and journal.segments[-1].end != first:
                # Never written so (segments are evicted oldest first):
                # offsets read from it would be wrong.
                raise OSError(
                    errno.EINVAL,
                    f"segments do not follow each other: {journal.segments[-1].end} "
                    f"then {first}",
                    directory,
                )
            segment.load()
            journal.segments.append(segment)
        if not journal.segments:
            journal._new_segment(0)
        return journal

    @property
    def start(self) -> int:
        return self.segments[0].first

    @property
    def end(self) -> int:
        return self.segments[-1].end

    @property
    def held_bytes(self) -> int:
        return self.end - self.start

    @property
    def oldest_time(self) -> float:
        """
        When the oldest byte held was read (infinity when nothing is held).
        """
        for segment in self.segments:
            if segment.size:
                return segment.times[0]
        return float("inf")

    def _new_segment(self, first: int) -> Segment:
        self.close()
        segment = Segment(self.directory, first)
        # Created at once (empty): the name alone says where the stream is.
        self._data_fd = os.open(segment.data_path, _OPEN_FLAGS, 0o600)
        self._index_fd = os.open(segment.index_path, _OPEN_FLAGS, 0o600)
        self.segments.append(segment)
        return segment

    def _writing(self) -> Segment:
        segment = self.segments[-1]
        if segment.size >= self.segment_bytes:
            return self._new_segment(segment.end)
        if self._data_fd is None:
            if not self.segments[0].size and len(self.segments) == 1:
                # The first byte of a journal made lazily (L{create}).
                os.makedirs(self.directory, exist_ok=True)
            self._data_fd = os.open(segment.data_path, _OPEN_FLAGS, 0o600)
            self._index_fd = os.open(segment.index_path, _OPEN_FLAGS, 0o600)
        return segment

    def append(self, data: bytes, when: float) -> None:
        """
        Add bytes read at C{when}, at the end.

        @raise OSError: when they could not all be written (disk full, an
            I/O error); C{end} counts those that were.
        """
        if not data:
            return
        segment = self._writing()
        first = segment.end
        view = memoryview(data)
        try:
            while view:
                written = self._write(self._data_fd, view)
                segment.size += written
                view = view[written:]
        finally:
            if segment.end > first and (
                not segment.times or when - segment.times[-1] >= TIME_RESOLUTION
            ):
                segment.offsets.append(first)
                segment.times.append(when)
                self._write(self._index_fd, INDEX_ENTRY.pack(first, when))

    def append_from(self, fd: int, max_bytes: int, when: float) -> int:
        """
        Move up to C{max_bytes} from the pipe C{fd} to the end, read at
        C{when}, in the kernel (C{splice}: the bytes never pass through
        this process).

        @return: how many bytes were moved; 0 at the pipe's end of file.
        @raise BlockingIOError: when the pipe is empty.
        @raise OSError: when the journal cannot be written; nothing was
            taken from the pipe then.
        """
        segment = self._writing()
        if self._splice_fd is None:
            self._splice_fd = os.open(segment.data_path, os.O_WRONLY | os.O_CLOEXEC)
        first = segment.end
        moved = os.splice(
            fd, self._splice_fd, max_bytes, offset_dst=segment.size, flags=os.SPLICE_F_NONBLOCK
        )
        if moved:
            segment.size += moved
            if not segment.times or when - segment.times[-1] >= TIME_RESOLUTION:
                segment.offsets.append(first)
                segment.times.append(when)
                self._write(self._index_fd, INDEX_ENTRY.pack(first, when))
        return moved

    def read(self, offset: int, max_bytes: int) -> Tuple[int, bytes, float]:
        """
        Read held bytes from C{offset} on, within one segment.

        @return: C{(first, data, time)}, as L{ccx.output.buffer.StreamBuffer.read}.
        @raise OSError: when the segment cannot be read.
        """
        offset = max(offset, self.start)
        if offset >= self.end:
            return offset, b"", 0.0
        segment = self._read_segment
        if segment is None or not segment.first <= offset < segment.end:
            firsts = [s.first for s in self.segments]
            segment = self.segments[bisect_right(firsts, offset) - 1]
        size = min(max_bytes, segment.end - offset)
        if segment is self._read_segment and self._read_fd is not None:
            return offset, os.pread(self._read_fd, size, offset - segment.first), segment.time_at(offset)
        fd = os.open(segment.data_path, _READ_FLAGS)
        try:
            data = os.pread(fd, size, offset - segment.first)
        except BaseException:
            os.close(fd)
            raise
        if self._data_fd is None:
            # Nothing is written (a finished program): no file is kept open
            # for a reader that may never come back.
            os.close(fd)
        else:
            self._close_reading()
            self._read_segment, self._read_fd = segment, fd
        return offset, data, segment.time_at(offset)

    def _close_reading(self) -> None:
        if self._read_fd is not None:
            os.close(self._read_fd)
        self._read_segment = self._read_fd = None

    def oldest_segment_end(self) -> int:
        """
        Where the held bytes would start once the oldest segment is evicted.
        """
        return self.segments[0].end

    def evict_oldest(self) -> int:
        """
        Delete the oldest segment (when it is the only one, an empty one
        takes its place at the end).

        @return: how many bytes were dropped.
        """
        segment = self.segments[0]
        if not segment.size and len(self.segments) == 1:
            return 0
        if len(self.segments) == 1:
            self._new_segment(segment.end)
        del self.segments[0]
        if segment is self._read_segment:
            self._close_reading()
        segment.remove()
        return segment.size

    def close(self) -> None:
        """
        Close the files being written, and the one being read (appending
        reopens them).
        """
        for fd in (self._data_fd, self._index_fd, self._splice_fd):
            if fd is not None:
                os.close(fd)
        self._data_fd = self._index_fd = self._splice_fd = None
        self._close_reading()
