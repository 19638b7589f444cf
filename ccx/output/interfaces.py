"""
The contracts between a process's output and whoever reads it.
"""

from zope.interface import Attribute, Interface

from ccx.output.events import (
    Completion,
    OutputChunk,
    OutputDropped,
    ProcessStarted,
    StateChanged,
)


class IOutputSink(Interface):
    """
    One subscriber's end of a process's output: each edge (a client
    dialect, a journal, another node) implements it and turns the events
    into its own format.  Events come in order: L{started} (to the starter
    only), then output, drops and state changes as they happen, then
    L{completed}, last and once.  A sink never calls back into the output
    it subscribes to from these methods.
    """

    writable = Attribute(
        "True while the sink can take more output; its consumer turns it "
        "False (pauseProducing) when it cannot, and has the sink's output "
        "pumped when it can again."
    )

    max_chunk = Attribute(
        "The most bytes this sink takes in one chunk (an int; "
        "ccx.output.fanout.MAX_CHUNK when it has no smaller limit of its "
        "own): no chunk it is offered is longer."
    )

    def started(event: ProcessStarted) -> None:
        """
        The program runs.
        """

    def output(chunk: OutputChunk) -> int:
        """
        Take output.

        @return: how many bytes from the start of C{chunk.data} were taken;
            the rest is offered again with what follows it.  A sink that
            carries text may leave the tail of a character cut in two
            (never when C{chunk.final}).
        """

    def dropped(event: OutputDropped) -> None:
        """
        A range of output is no longer held: the next chunk starts after it.
        """

    def changed(event: StateChanged) -> None:
        """
        A client paused, resumed or cancelled the program.
        """

    def completed(completion: Completion) -> None:
        """
        The program is over and this sink has had all of its output.
        """


class IReadControl(Interface):
    """
    The upstream end of back-pressure: stops and restarts reading a
    program's pipes (a process transport's pause/resumeProducing).
    """

    def pauseProducing() -> None:
        """
        Stop reading the program's output.
        """

    def resumeProducing() -> None:
        """
        Read the program's output again.
        """


class IOutputStore(Interface):
    """
    Where a process's output is kept beyond its memory buffer (the journal
    on disk): appended to as it is read, read back by offset.  The memory
    buffer is then a cache of it, and only what it no longer holds is lost.
    Each stream holds bytes C{[start, end)}.
    """

    on_evicted = Attribute(
        "Called with (stream, start, end) for each range the store evicts "
        "(to keep within its limits), or None."
    )

    on_room = Attribute(
        "Called with no arguments, once, when a store that was full because "
        "of a limit shared with other stores (the state dir's total) may take "
        "more, or None."
    )

    def start(stream: str) -> int:
        """
        The offset of the oldest byte held.
        """

    def end(stream: str) -> int:
        """
        The offset just after the newest byte held.
        """

    def append(stream: str, data: bytes, when: float) -> None:
        """
        Keep bytes read at C{when}, at the end of C{stream}; evict what the
        limits require.

        @raise OSError: when they could not be kept (disk full, an I/O
            error): C{end} says how many were.
        """

    def read(stream: str, offset: int, max_bytes: int) -> tuple:
        """
        Read held bytes from C{offset} on.

        @return: C{(first, data, time)}, as L{ccx.output.buffer.StreamBuffer.read}.
        @raise OSError: when they cannot be read.
        """

    def pin(stream: str, keep_from: object) -> None:
        """
        Never evict bytes at or after C{keep_from} (an offset, or None for
        no such limit): a blocking subscriber has not read them.
        """

    def trim() -> None:
        """
        Evict what the limits require now.
        """

    def is_full() -> bool:
        """
        Whether the store is at its limit with nothing it may evict.
        """

    def finish() -> None:
        """
        Nothing more will be appended.
        """

    def close() -> None:
        """
        The store is no longer used by this service (what it holds stays).
        """
