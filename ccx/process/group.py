"""
A process group: signalling it and knowing whether anything of it is left.
"""

import errno
import os
import signal
from typing import Iterator, List, NamedTuple


class ProcEntry(NamedTuple):
    pid: int
    state: str
    ppid: int
    pgid: int


def process_table() -> Iterator[ProcEntry]:
    """
    Every process /proc shows, with its state letter (C{"Z"} for a zombie),
    parent and process group.
    """
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat:
                fields = stat.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        # After the command name: state, ppid, pgrp, ...
        yield ProcEntry(int(entry), fields[0].decode(), int(fields[1]), int(fields[2]))


def _members_from_proc(pgid: int) -> List[int]:
    return [p.pid for p in process_table() if p.pgid == pgid and p.state != "Z"]


def group_states(pgid: int) -> List[str]:
    """
    The state letter (C{R}, C{S}, C{T}, ...) of each live (non-zombie)
    member of a process group.
    """
    return [p.state for p in process_table() if p.pgid == pgid and p.state != "Z"]


class ProcessGroup:
    """
    The process group a program runs in (its id is the program's pid).

    @ivar pgid: the process group id.
    """

    def __init__(self, pgid: int) -> None:
        self.pgid = pgid

    def signal(self, signum: int) -> bool:
        """
        Send C{signum} to every member of the group.

        @return: whether the group still existed.
        """
        try:
            os.killpg(self.pgid, signum)
        except ProcessLookupError:
            return False
        except PermissionError:
            return False
        return True

    def members(self) -> List[int]:
        """
        The pids of the group's members that have not exited (zombies, which
        only wait to be reaped, do not count).
        """
        try:
            os.killpg(self.pgid, 0)
        except OSError as e:
            if e.errno in (errno.ESRCH, errno.EPERM):
                return []
            raise
        if os.path.isdir("/proc/self"):
            return _members_from_proc(self.pgid)
        return [self.pgid]

    def alive(self) -> bool:
        return bool(self.members())


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name


class EndedGroup(ProcessGroup):
    """
    The group of a program that ended before ccx connected to it: it is
    never signalled and counts as empty, since its id may be another
    group's by now.
    """

    def signal(self, signum: int) -> bool:
        return False

    def members(self) -> List[int]:
        return []
