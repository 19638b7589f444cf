"""
What a subscriber to a process's output is told: typed events, in the
order they happened, that each edge turns into its own format.
"""

from dataclasses import dataclass
from typing import Optional, Tuple

from ccx.protocol import ALL_STREAMS, PTY, STREAMS

__all__ = [
    "ALL_STREAMS",
    "PTY",
    "STREAMS",
    "Completion",
    "OutputChunk",
    "OutputDropped",
    "ProcessStarted",
    "StateChanged",
]


@dataclass(frozen=True)
class ProcessStarted:
    """
    The program runs: told first, to the subscriber that started it.
    """

    process_id: str
    pid: int
    argv: Tuple[str, ...]


@dataclass(frozen=True)
class OutputChunk:
    """
    Bytes a program wrote to one stream.

    @ivar offset: the position of the first byte in the stream.
    @ivar time: when they were read, in seconds since the epoch.
    @ivar final: the stream ends with these bytes.
    """

    process_id: str
    stream: str
    offset: int
    data: bytes
    time: float
    final: bool = False


@dataclass(frozen=True)
class OutputDropped:
    """
    Bytes of one stream this subscriber will never get: they are no longer
    held.
    """

    process_id: str
    stream: str
    offset: int
    size: int


@dataclass(frozen=True)
class StateChanged:
    """
    A client paused, resumed or cancelled the program.

    @ivar change: C{"paused"}, C{"resumed"} or C{"cancelled"}.
    """

    process_id: str
    pid: Optional[int]
    change: str


@dataclass(frozen=True)
class Completion:
    """
    How a program ended, told last, once everything before it was told.

    @ivar status: C{"completed"} (exit status 0), C{"failed"}, C{"cancelled"}
        or C{"timeout"}.
    @ivar exit_code: the exit status; C{-N} when signal N ended it.
    @ivar signal: the name of the signal that ended it, if one did.
    @ivar duration: seconds from spawn to exit.
    @ivar error: what went wrong around the program, if anything.
    @ivar ended_at: when the program exited, in seconds since the epoch
        (while ccx was away, for a durable program re-adopted after it).
    @ivar durable: the program ran under the keeper (C{durable: true}).
    @ivar pty_bytes: the length of its C{pty} stream, for a program on a
        terminal (whose C{stdout_bytes} and C{stderr_bytes} are 0).
    """

    process_id: str
    pid: Optional[int]
    status: str
    exit_code: Optional[int]
    signal: Optional[str]
    duration: float
    stdout_bytes: int
    stderr_bytes: int
    dropped_bytes: int
    error: Optional[str]
    ended_at: Optional[float] = None
    durable: bool = False
    pty_bytes: Optional[int] = None
