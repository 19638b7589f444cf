"""
The held tail of one output stream.
"""

from bisect import bisect_right
from typing import List, Optional, Tuple

# Small reads are merged into the previous chunk up to this size, so that a
# program printing in small pieces does not leave thousands of tiny chunks...
_COALESCE = 4096
# ...when they were read within this many seconds of its first byte, so that
# a chunk's time stays the time of each byte in it, within this resolution;
_TIME_RESOLUTION = 0.01
# ...or whenever this many chunks are held, which bounds their overhead.
_MAX_CHUNKS = 16384


class StreamBuffer:
    """
    The most recent bytes of one output stream, addressed by byte offset.

    Bytes C{[start, end)} are held.  L{evict} drops the oldest ones once more
    than C{max_bytes} or C{max_lines} are held, but never those at or after
    an offset that a blocking reader still needs.

    @ivar start: the offset of the oldest byte held.
    @ivar end: the offset just after the newest byte (the stream's length so far).
    @ivar closed: whether the stream has ended.
    """

    def __init__(self, max_bytes: int, max_lines: int) -> None:
        self.max_bytes = max_bytes
        self.max_lines = max_lines
        self.start = 0
        self.end = 0
        self.closed = False
        self.held_lines = 0
        self._chunks: List[bytes] = []
        self._starts: List[int] = []
        self._times: List[float] = []
        self._lines: List[int] = []
        self._head = 0

    @property
    def held_bytes(self) -> int:
        return self.end - self.start

    def append(self, data: bytes, when: float) -> None:
        """
        Add bytes read from the stream at time C{when}.
        """
        if not data:
            return
        lines = data.count(b"\n")
        held = len(self._chunks) - self._head
        if (
            held
            and len(self._chunks[-1]) + len(data) <= _COALESCE
            and (when - self._times[-1] < _TIME_RESOLUTION or held >= _MAX_CHUNKS)
        ):
            self._chunks[-1] += data
            self._lines[-1] += lines
        else:
            self._chunks.append(data)
            self._starts.append(self.end)
            self._times.append(when)
            self._lines.append(lines)
        self.end += len(data)
        self.held_lines += lines

    def close(self) -> None:
        self.closed = True

    def is_full(self, keep_from: int) -> bool:
        """
        Whether the buffer is at its limits with nothing it may evict, because
        everything held is at or after C{keep_from}.
        """
        if self.start < keep_from:
            return False
        return self.held_bytes >= self.max_bytes or self.held_lines >= self.max_lines

    def evict(self, keep_from: Optional[int] = None) -> int:
        """
        Drop the oldest bytes while over the limits, never those at or after
        C{keep_from}.

        @return: how many bytes were dropped.
        """
        before = self.start
        limit = self.end if keep_from is None else min(keep_from, self.end)
        while (
            self.held_bytes > self.max_bytes or self.held_lines > self.max_lines
        ) and self._head < len(self._chunks):
            chunk = self._chunks[self._head]
            chunk_end = self._starts[self._head] + len(chunk)
            over_bytes = self.held_bytes > self.max_bytes
            over_lines = self.held_lines > self.max_lines
            if chunk_end <= limit and (
                (over_bytes and self.held_bytes - len(chunk) >= self.max_bytes)
                or (over_lines and self.held_lines - self._lines[self._head] >= self.max_lines)
            ):
                self._drop_head()
            else:
                self._trim_head(limit)
                break
        self._compact()
        return self.start - before

    def _drop_head(self) -> None:
        chunk = self._chunks[self._head]
        self.held_lines -= self._lines[self._head]
        self._chunks[self._head] = b""
        self._head += 1
        self.start += len(chunk)

    def _trim_head(self, limit: int) -> None:
        """
        Cut the front of the oldest chunk just enough to fit the limits.
        """
        chunk = self._chunks[self._head]
        chunk_start = self._starts[self._head]
        if limit <= chunk_start:
            return
        cut = max(0, self.held_bytes - self.max_bytes)
        excess_lines = self.held_lines - self.max_lines
        if excess_lines > 0:
            # Just after the excess_lines-th newline, found in C.
            rest = chunk.split(b"\n", excess_lines)
            cut = max(cut, len(chunk) - len(rest[-1]) if len(rest) > excess_lines else len(chunk))
        self._cut_head(min(cut, limit - chunk_start))

    def _cut_head(self, cut: int) -> None:
        """
        Drop the first C{cut} bytes of the oldest chunk (all of it, at most).
        """
        chunk = self._chunks[self._head]
        chunk_start = self._starts[self._head]
        cut = min(cut, len(chunk))
        if cut <= 0:
            return
        if cut == len(chunk):
            self._drop_head()
            return
        removed_lines = chunk.count(b"\n", 0, cut)
        self._chunks[self._head] = chunk[cut:]
        self._starts[self._head] = chunk_start + cut
        self._lines[self._head] -= removed_lines
        self.held_lines -= removed_lines
        self.start += cut

    @property
    def oldest_time(self) -> float:
        """
        When the oldest byte held was read (infinity when nothing is held).
        """
        if self._head < len(self._chunks):
            return self._times[self._head]
        return float("inf")

    def release_oldest(self, size: int) -> int:
        """
        Drop up to C{size} of the oldest bytes, within the oldest chunk,
        whatever the limits: the service needs the memory back.

        @return: how many bytes were dropped.
        """
        if self._head >= len(self._chunks):
            return 0
        before = self.start
        self._cut_head(size)
        self._compact()
        return self.start - before

    def _compact(self) -> None:
        if self._head > 64 and self._head * 2 > len(self._chunks):
            del self._chunks[: self._head]
            del self._starts[: self._head]
            del self._times[: self._head]
            del self._lines[: self._head]
            self._head = 0

    def read(self, offset: int, max_bytes: int) -> Tuple[int, bytes, float]:
        """
        Read held bytes from C{offset} on.

        @return: C{(first, data, time)}: the offset of the first byte
            returned (later than C{offset} when that part is no longer held),
            at most C{max_bytes} bytes, and when the first of them was read.
        """
        offset = max(offset, self.start)
        if offset >= self.end:
            return offset, b"", 0.0
        index = bisect_right(self._starts, offset, self._head) - 1
        when = self._times[index]
        first = self._chunks[index]
        skip = offset - self._starts[index]
        if len(first) - skip >= max_bytes:
            return offset, first[skip : skip + max_bytes], when
        parts = [first[skip:] if skip else first]
        size = len(parts[0])
        index += 1
        while size < max_bytes and index < len(self._chunks):
            chunk = self._chunks[index]
            if size + len(chunk) > max_bytes:
                chunk = chunk[: max_bytes - size]
            parts.append(chunk)
            size += len(chunk)
            index += 1
        return offset, b"".join(parts), when
