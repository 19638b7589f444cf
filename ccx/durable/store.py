"""
A durable program's output store: the journal the keeper writes, read by
ccx (L{ccx.output.interfaces.IOutputStore}).
"""

import os
from typing import Any, Callable, Dict, Optional, Tuple

from zope.interface import implementer

from ccx.journal.program import STREAMS, Space
from ccx.journal.stream import StreamJournal
from ccx.output.interfaces import IOutputStore

# How far ccx's reading may move on before the keeper is told (a hold
# that lags only keeps more): one message per this many bytes at most.
HOLD_STEP = 1024 * 1024


@implementer(IOutputStore)
class DurableStore:
    """
    The journal of a durable program, in the state dir's layout, as ccx
    sees it: the keeper appends and evicts; ccx learns of it from the
    keeper's notices (L{grew}, L{evicted}) and reads.  Nothing is appended
    here: the bytes ccx's output takes in came from this very journal.

    What must not be evicted goes to the keeper as a hold: the pins
    (what blocking subscribers have not read) and what ccx itself has not
    yet read (L{reading}).

    With a C{space} (the state dir's total, L{Space}), its held bytes count
    in the total as a journal ccx writes: past the total, its oldest
    segment that may go is asked of the keeper (C{evict}; counted as gone
    from the moment it is asked, an answer C{kept} counts it again), and
    when nothing of any program may go the keeper is told to hold a
    blocking program back (L{full}, sent with the hold).  Once the keeper
    has forgotten the program (it ended), ccx evicts itself.

    @param hold: sends the keeper the offsets not to evict past, by stream
        (and L{full}).
    @param streams: its streams' names (L{STREAMS}, or
        L{ccx.journal.program.PTY_STREAMS} for a program on a terminal).
    @param space: the state dir's total, when the keeper can keep it.
    @param evict: asks the keeper to evict a stream's oldest segment,
        given where it starts.
    @param blocking: the program is held back, not its output dropped.
    @ivar full: the keeper holds the program back for the total.
    """

    def __init__(
        self,
        directory: str,
        segment_bytes: int,
        hold: Callable[[Dict[str, int]], None],
        streams: Tuple[str, ...] = STREAMS,
        space: Optional[Space] = None,
        evict: Optional[Callable[[str, int], None]] = None,
        blocking: bool = True,
    ) -> None:
        self.names = streams
        self.directory = directory
        self.segment_bytes = segment_bytes
        self._hold = hold
        self.on_evicted: Optional[Callable[[str, int, int], None]] = None
        self.streams: Dict[str, StreamJournal] = {name: self._open(name) for name in streams}
        self._pins: Dict[str, Optional[int]] = {name: None for name in streams}
        self._reading: Dict[str, int] = {name: self.streams[name].end for name in streams}
        self._sent: Optional[Dict[str, int]] = None
        # Within a segment: a hold that lags more than the journal's limit
        # would keep the keeper from evicting anything ccx has read (and a
        # blocking program held back for good).
        self._hold_step = min(HOLD_STEP, segment_bytes)
        self.space = space
        self._evict = evict
        self.blocking = blocking
        self.full = False
        self._on_room: Optional[Callable[[], None]] = None
        # By stream, the segment asked of the keeper: where it starts, its size.
        self._asked: Dict[str, Tuple[int, int]] = {}
        # The keeper forgot the program: the journal is ccx's to evict.
        self._gone = False
        # By stream, where the segment the keeper refused starts: not asked
        # again until ccx learns more of the stream (it grew, or was evicted).
        self._refused: Dict[str, int] = {}
        self._held = self._counted()
        if space is not None:
            space.add(self)

    def _open(self, stream: str) -> StreamJournal:
        journal = StreamJournal.open(os.path.join(self.directory, stream), self.segment_bytes)
        journal.close()
        return journal

    # -- from the keeper --------------------------------------------------

    def grew(self, stream: str, end: int) -> None:
        """
        The keeper appended to C{stream} up to C{end}.
        """
        journal = self.streams[stream]
        if end <= journal.end:
            return
        last = journal.segments[-1]
        try:
            last.size = os.stat(last.data_path).st_size
        except FileNotFoundError:
            pass
        if journal.end < end:
            # It started a segment (or more) since.
            self.streams[stream] = self._open(stream)
        self._refused.pop(stream, None)
        self._sync()
        space = self.space
        if space is None:
            return
        if space.held_bytes > space.total_bytes:
            space.trim()
        if self.blocking and not self.full and space.is_full():
            space.waiting[self] = None
            self.full = True
            self._send_hold(force=True)

    def evicted(self, stream: str, start: int, end: int) -> None:
        """
        The keeper evicted C{[start, end)} of C{stream}.
        """
        self.streams[stream] = self._open(stream)
        self._refused.pop(stream, None)
        asked = self._asked.get(stream)
        if asked is not None and asked[0] <= start:
            del self._asked[stream]
        self._sync()
        if self.on_evicted is not None:
            self.on_evicted(stream, start, end)
        self._after_change()

    def kept(self, stream: str, start: int, gone: bool) -> None:
        """
        The keeper did not evict the segment of C{stream} at C{start}: it
        is held, or the keeper forgot the program (C{gone}: ccx evicts from
        now on).
        """
        asked = self._asked.get(stream)
        if asked is not None and asked[0] == start:
            del self._asked[stream]
            if not gone:
                self._refused[stream] = start
        if gone:
            self.take_over()
        self._sync()
        self._after_change()

    def take_over(self) -> None:
        """
        The keeper forgot the program (it ended, and ccx saw all it said of
        it): the journal is ccx's to evict from now on, and what was asked
        of the keeper will not be answered (nothing is evicted after it forgot).
        """
        if self._gone:
            return
        self._gone = True
        self._asked.clear()
        self._refused.clear()
        for name in self.names:
            self.streams[name] = self._open(name)
        self._sync()
        self._after_change()

    def refresh(self) -> None:
        """
        Look at the journal again (the connection to the keeper dropped:
        its notices meanwhile were lost), and send the hold again.
        """
        for name in self.names:
            before = self.streams[name].start
            self.streams[name] = self._open(name)
            after = self.streams[name].start
            if after > before and self.on_evicted is not None:
                # Evicted meanwhile (what ccx had read: its hold stood).
                self.on_evicted(name, before, after)
        # What was asked of the keeper meanwhile may not have reached it.
        self._asked.clear()
        self._sync()
        self._sent = None
        self._send_hold()
        self._after_change()

    def reading(self, stream: str, offset: int) -> None:
        """
        ccx has read C{stream} up to C{offset}: the keeper may evict before it.
        """
        self._reading[stream] = offset
        self._send_hold()

    # -- IOutputStore -------------------------------------------------------

    def start(self, stream: str) -> int:
        return self.streams[stream].start

    def end(self, stream: str) -> int:
        return self.streams[stream].end

    def append(self, stream: str, data: bytes, when: float) -> None:
        """
        Nothing to do: the keeper wrote them, and ccx read them from here.
        """

    def read(self, stream: str, offset: int, max_bytes: int) -> Tuple[int, bytes, float]:
        try:
            return self.streams[stream].read(offset, max_bytes)
        except FileNotFoundError:
            # Evicted under this reader: look again.
            self.streams[stream] = self._open(stream)
            return self.streams[stream].read(offset, max_bytes)

    def pin(self, stream: str, keep_from: Any) -> None:
        self._pins[stream] = keep_from
        self._send_hold()

    def trim(self) -> None:
        """
        The keeper keeps the limits.
        """

    def is_full(self) -> bool:
        """
        Never: the keeper holds the program back, not ccx.
        """
        return False

    def finish(self) -> None:
        pass

    def close(self) -> None:
        self.on_room = None
        if self.space is not None:
            self.space.forget(self)
            self.space = None

    # -- the state dir's total (as L{ccx.journal.program.ProgramJournal}) --

    @property
    def held_bytes(self) -> int:
        return self._held

    def _counted(self) -> int:
        """
        What it holds, less what was asked of the keeper to evict.
        """
        held = sum(journal.held_bytes for journal in self.streams.values())
        return held - sum(size for _, size in self._asked.values())

    def _sync(self) -> None:
        counted = self._counted()
        if self.space is not None:
            self.space.change(counted - self._held)
        self._held = counted

    def _after_change(self) -> None:
        """
        Something went (or was kept): keep the total, and let those it held
        back go on once it has room.
        """
        space = self.space
        if space is None:
            return
        if space.held_bytes > space.total_bytes:
            space.trim()
        if space.waiting:
            space.wake()

    @property
    def on_room(self) -> Callable[[], None]:
        """
        Called by the total (L{Space.wake}) once it has room: the keeper is
        told, then whoever set it (the output, as for any store).
        """
        return self._room

    @on_room.setter
    def on_room(self, callback: Optional[Callable[[], None]]) -> None:
        self._on_room = callback

    def _room(self) -> None:
        self.room()
        if self._on_room is not None:
            self._on_room()

    def room(self) -> None:
        """
        The total has room again (L{Space.wake}): the keeper reads on.
        """
        if self.full:
            self.full = False
            self._send_hold(force=True)

    def oldest_evictable(self) -> Optional[Tuple[float, str]]:
        """
        The time and stream of the oldest segment that may be evicted: one
        before what ccx holds now (sent to the keeper with the request),
        neither asked already nor refused by the keeper since ccx last
        learnt more of the stream.
        """
        if self._evict is None and not self._gone:
            return None
        holds = self._wanted()
        found = None
        for name, journal in self.streams.items():
            if name in self._asked or not journal.held_bytes:
                continue
            if self._refused.get(name) == journal.start:
                continue
            if journal.oldest_segment_end() > holds[name]:
                continue
            try:
                when = journal.oldest_time
            except IndexError:
                # Grown (L{grew} looks at the data's size alone) since its
                # index was read: read again; its index may still be being
                # written (then it is looked at again when it grows).
                journal = self.streams[name] = self._open(name)
                try:
                    when = journal.oldest_time
                except IndexError:
                    continue
            candidate = (when, name)
            if found is None or candidate < found:
                found = candidate
        return found

    def evict_oldest(self) -> int:
        """
        Evict the oldest segment that may go: ask the keeper (counted as
        gone at once), or, once it forgot the program, evict it here.

        @return: how many bytes go (0 when none may go).
        """
        found = self.oldest_evictable()
        if found is None:
            return 0
        name = found[1]
        journal = self.streams[name]
        start = journal.start
        size = journal.oldest_segment_end() - start
        if self._gone:
            size = journal.evict_oldest()
            # Evicting the only segment opened an empty one to write.
            journal.close()
            self._sync()
            if self.on_evicted is not None and size:
                self.on_evicted(name, start, start + size)
            return size
        self._asked[name] = (start, size)
        self._sync()
        # The keeper evicts nothing past its hold: it gets ccx's own first.
        if self._sent != self._wanted():
            self._send_hold(force=True)
        assert self._evict is not None
        self._evict(name, start)
        return size

    def _wanted(self) -> Dict[str, int]:
        wanted = {}
        for name in self.names:
            pin = self._pins[name]
            reading = self._reading[name]
            wanted[name] = reading if pin is None else min(pin, reading)
        return wanted

    def _send_hold(self, force: bool = False) -> None:
        wanted = self._wanted()
        sent = self._sent
        if not force and sent is not None and all(
            sent[name] <= wanted[name] < sent[name] + self._hold_step for name in self.names
        ):
            return
        self._sent = wanted
        self._hold(wanted)
