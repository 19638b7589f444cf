"""
What can go wrong when a client asks the process layer for something.

Each exception says what happened in plain words.  The edge (L{ccx.rpc.errors})
turns it into an error code and adds the service option a person could change:
the process layer knows its settings by name, never how they are spelled on
a command line or a wire.
"""

from typing import Any, Optional


class ProcessError(Exception):
    """
    A refusal the client can understand and act on.

    @ivar message: what happened, in a sentence.
    @ivar setting: the name of the service setting behind the refusal
        (C{"max_processes"}, C{"allow"}, ...), or L{None}.
    @ivar value: that setting's value, or what a person would set it to.
    @ivar parameter: the name of the request parameter that would have
        avoided the refusal (C{"stdin"}), or L{None}.
    """

    def __init__(
        self,
        message: str,
        setting: Optional[str] = None,
        value: Any = None,
        parameter: Optional[str] = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.setting = setting
        self.value = value
        self.parameter = parameter


class InvalidCommand(ProcessError):
    """
    The command, its directory or its environment is malformed.
    """


class LimitsUnavailable(InvalidCommand):
    """
    The program's C{limits} cannot be applied: ccx runs programs in process
    groups, or the cgroup controllers a limit needs are not enabled.
    """


class NotAllowed(ProcessError):
    """
    The program, or what the command would make it run, is not allowed.

    @ivar nothing_allowed: the allow-list is empty.
    """

    def __init__(
        self,
        message: str,
        setting: Optional[str] = None,
        value: Any = None,
        nothing_allowed: bool = False,
    ) -> None:
        super().__init__(message, setting, value)
        self.nothing_allowed = nothing_allowed


class LimitReached(ProcessError):
    """
    A limit stops the request now; it may succeed later.
    """


class ProcessNotFound(ProcessError):
    """
    There is no such process, or it has finished.

    @ivar process_id: the id asked for, or L{None} when none was given.
    @ivar finished: it exists but has finished.
    """

    def __init__(self, process_id: Optional[str], finished: bool = False) -> None:
        if process_id is None:
            message = "this connection has no unfinished process"
        elif finished:
            message = f"{process_id!r} has already finished"
        else:
            message = f"no process {process_id!r}"
        super().__init__(message, parameter="process_id")
        self.process_id = process_id
        self.finished = finished


class InvalidState(ProcessError):
    """
    The process cannot do that in its present state.
    """


class SpawnFailed(ProcessError):
    """
    The program could not be started.
    """
