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
