"""
A process group: signalling it and knowing whether anything of it is left.
"""

import errno
import os
import signal
from typing import Iterator, List, NamedTuple, Optional

from ccx.process.cgroup import Cgroup, CgroupError, Usage


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


class GroupContainment:
    """
    How ccx holds a program where no cgroup can be written: its process
    group, which a grandchild that calls C{setsid()} leaves.

    @ivar group: the program's L{ProcessGroup}.
    @ivar kind: the containment's name, as C{/health} reports it.
    """

    kind = "process-group"
    cgroup_path: Optional[str] = None

    def __init__(self, group: ProcessGroup) -> None:
        self.group = group

    @property
    def label(self) -> str:
        """
        What holds the program, in words for a message.
        """
        return f"process group {self.group.pgid}"

    def signal(self, signum: int) -> bool:
        """
        Send C{signum} to the group (what a client's C{signal} does).
        """
        return self.group.signal(signum)

    def members(self) -> List[int]:
        """
        The pids of what is left of the program.
        """
        return self.group.members()

    def alive(self) -> bool:
        return bool(self.members())

    def pause(self) -> None:
        self.group.signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.group.signal(signal.SIGCONT)

    def terminate(self) -> None:
        """
        Ask the program to end: SIGTERM, and SIGCONT so that a stopped one
        gets it.
        """
        self.group.signal(signal.SIGTERM)
        self.group.signal(signal.SIGCONT)

    def kill(self) -> None:
        """
        End what is left, now.
        """
        self.group.signal(signal.SIGKILL)

    def usage(self) -> Optional[Usage]:
        """
        What the program has used, where it can be known (not from a group).
        """
        return None

    def release(self) -> None:
        """
        The program is over: let go of what holds it.
        """


class CgroupContainment(GroupContainment):
    """
    A program's process group inside a cgroup of its own: signals still go
    to the group as the contract says, and the cgroup catches the rest
    (freeze after SIGSTOP, C{cgroup.kill} for the SIGKILL, members and
    usage from its files).

    @ivar cgroup: the program's L{Cgroup}, removed by L{release}.
    """

    kind = "cgroup"

    def __init__(self, group: ProcessGroup, cgroup: Cgroup) -> None:
        super().__init__(group)
        self.cgroup = cgroup
        self.cgroup_path = cgroup.path
        self._last_usage: Optional[Usage] = None
        self._released = False

    @property
    def label(self) -> str:
        return f"cgroup {self.cgroup.path}"

    def members(self) -> List[int]:
        return self.cgroup.procs()

    def alive(self) -> bool:
        return self.cgroup.populated()

    def pause(self) -> None:
        # SIGSTOP first: the group sees the stop it was promised (its
        # shell's job control, a parent's waitpid(WUNTRACED)); then the
        # freeze stops what left the group.
        super().pause()
        self.cgroup.freeze()

    def resume(self) -> None:
        self.cgroup.thaw()
        super().resume()

    def terminate(self) -> None:
        # Frozen processes would not act on SIGTERM until thawed.
        self.cgroup.thaw()
        super().terminate()

    def kill(self) -> None:
        self.cgroup.kill()

    def usage(self) -> Optional[Usage]:
        if not self._released:
            try:
                self._last_usage = self.cgroup.usage()
            except (OSError, CgroupError):
                # Gone from under ccx: the last figures stand.
                pass
        return self._last_usage

    def release(self) -> None:
        """
        Keep the final usage, then remove the cgroup.

        @raise CgroupError: when it could not be removed (something is
            still in it).
        """
        self.usage()
        self._released = True
        if not self.cgroup.remove():
            raise CgroupError(f"cannot remove cgroup {self.cgroup.path}: it is not empty")


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name
