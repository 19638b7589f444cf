"""
A durable program's output store: the journal the keeper writes, read by
ccx (L{ccx.output.interfaces.IOutputStore}).
"""

import os
from typing import Any, Callable, Dict, Optional, Tuple

from zope.interface import implementer

from ccx.journal.program import STREAMS
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

    @param hold: sends the keeper the offsets not to evict past, by stream.
    @param streams: its streams' names (L{STREAMS}, or
        L{ccx.journal.program.PTY_STREAMS} for a program on a terminal).
    """

    def __init__(
        self,
        directory: str,
        segment_bytes: int,
        hold: Callable[[Dict[str, int]], None],
        streams: Tuple[str, ...] = STREAMS,
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

    def evicted(self, stream: str, start: int, end: int) -> None:
        """
        The keeper evicted C{[start, end)} of C{stream}.
        """
        self.streams[stream] = self._open(stream)
        if self.on_evicted is not None:
            self.on_evicted(stream, start, end)

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
        pass

    def _send_hold(self) -> None:
        wanted = {}
        for name in self.names:
            pin = self._pins[name]
            reading = self._reading[name]
            wanted[name] = reading if pin is None else min(pin, reading)
        sent = self._sent
        if sent is not None and all(
            sent[name] <= wanted[name] < sent[name] + HOLD_STEP for name in self.names
        ):
            return
        self._sent = wanted
        self._hold(wanted)
