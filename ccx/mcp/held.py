"""
What a tool reads of one stream: the bytes its buffer holds and, before
them, those only the journal still has (a durable program taken back
after a restart of ccx holds nothing in memory of what it wrote before).
"""

from typing import Tuple, Union

from ccx.output.buffer import StreamBuffer
from ccx.output.fanout import ProcessOutput


class HeldStream:
    """
    One stream of a process's output, read as a L{StreamBuffer} is (C{start},
    C{end}, C{closed}, C{held_bytes}, C{read}), from its buffer and store.
    """

    def __init__(self, output: ProcessOutput, name: str) -> None:
        self._output = output
        self._name = name
        self._buffer = output.streams[name]

    @property
    def start(self) -> int:
        return self._output.next_held(self._name, 0)

    @property
    def end(self) -> int:
        return self._buffer.end

    @property
    def closed(self) -> bool:
        return self._buffer.closed

    @property
    def held_bytes(self) -> int:
        return self.end - self.start

    def read(self, offset: int, max_bytes: int) -> Tuple[int, bytes, float]:
        """
        As L{StreamBuffer.read}: a read that begins in the store goes on
        into the buffer, so that one read sees both.
        """
        first, data, when = self._output.read(self._name, offset, max_bytes)
        parts = [data]
        got = len(data)
        while data and got < max_bytes and first + got < self.end:
            at, data, _ = self._output.read(self._name, first + got, max_bytes - got)
            if at != first + got:
                break  # a gap: what follows is not contiguous
            parts.append(data)
            got += len(data)
        return first, b"".join(parts), when


# What the tools' readers take: a stream as a buffer holds it, or as held.
Readable = Union[HeldStream, StreamBuffer]
