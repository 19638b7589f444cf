"""
The contracts between the process layer's pieces.
"""

from zope.interface import Attribute, Interface


class IExecReport(Interface):
    """
    What a spawner tells the protocol of a child it connected besides what
    Twisted's C{IProcessProtocol} carries: whether the program itself runs.

    Between C{makeConnection} and one of these the program is I{starting}:
    ccx's own spawner knows at once and calls C{exec_succeeded} before it
    returns (it raises L{ccx.process.errors.SpawnFailed} when the exec
    failed: there is no child to connect then); a spawner that asks
    another process to start the program reports when that one answers.
    """

    def exec_succeeded() -> None:
        """
        The program runs: its output may start to arrive.
        """

    def exec_failed(reason: str) -> None:
        """
        The program could not be started, for C{reason} (a sentence such
        as C{"'/x': No such file or directory"}); the child's exit and the
        end of its pipes follow as usual.
        """


class IRecordedProcess(Interface):
    """
    A process transport for a program ccx may not have seen start or end
    (a durable program, re-adopted after a restart): it says when the
    program started and ended, which the protocol reports instead of the
    times it saw.
    """

    started_at = Attribute("When the program started, in seconds since the epoch.")

    exited_at = Attribute(
        "When the program exited, in seconds since the epoch, once known; else None."
    )

    group_gone = Attribute(
        "True when the program had ended before this ccx connected to it: "
        "nothing of its process group may be signalled (its id may be "
        "another's by now)."
    )

    store = Attribute(
        "The store (ccx.output.interfaces.IOutputStore) that holds the "
        "program's output, written by whoever holds its pipes, or None."
    )

    window = Attribute(
        "For a program on a terminal, the terminal's size as found when "
        "taken back (a ccx.process.terminal.WindowSize); else None."
    )

    offsets = Attribute(
        "Where, in each stream, what this transport hands on begins (the "
        "store holds what came before): a dict of stream name to offset."
    )
