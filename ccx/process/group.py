"""
A process group: signalling it and knowing whether anything of it is left.
"""

import errno
import os
import signal
from typing import Any, Iterator, List, NamedTuple, Optional

from ccx.process.cgroup import Cgroup, CgroupError, Usage, remove_with_stale_parent


class ProcEntry(NamedTuple):
    pid: int
    state: str
    ppid: int
    pgid: int


def process_entry(pid: int) -> Optional[ProcEntry]:
    """
    What /proc shows of one process, or L{None} once it is gone.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # After the command name: state, ppid, pgrp, ...
    return ProcEntry(pid, fields[0].decode(), int(fields[1]), int(fields[2]))


def process_table() -> Iterator[ProcEntry]:
    """
    Every process /proc shows, with its state letter (C{"Z"} for a zombie),
    parent and process group.
    """
    for name in os.listdir("/proc"):
        if name.isdigit():
            entry = process_entry(int(name))
            if entry is not None:
                yield entry


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


# How long a PAUSE waits for its group to stop before freezing the cgroup
# anyway, and how often it looks.
FREEZE_WAIT = 0.5
FREEZE_POLL = 0.002


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

    def __init__(self, group: ProcessGroup, cgroup: Cgroup, clock: Any) -> None:
        """
        @param clock: an C{IReactorTime}, to look again while the group has
            not yet stopped.
        """
        super().__init__(group)
        self.cgroup = cgroup
        self.cgroup_path = cgroup.path
        self._clock = clock
        self._last_usage: Optional[Usage] = None
        self._released = False
        self._freeze_call: Any = None
        self._freeze_deadline = 0.0

    @property
    def label(self) -> str:
        return f"cgroup {self.cgroup.path}"

    def members(self) -> List[int]:
        return self.cgroup.procs()

    def alive(self) -> bool:
        return self.cgroup.populated()

    def pause(self) -> None:
        """
        SIGSTOP to the group, then, once its members have stopped, freeze
        the cgroup: what left the group stops too.
        """
        # The group must be seen stopped (state T: its shell's job control,
        # a parent's waitpid(WUNTRACED), the contract): a task frozen with
        # SIGSTOP still pending shows as sleeping instead, so the freeze
        # waits for the stop (microseconds, a few polls under load).
        super().pause()
        self._freeze_deadline = self._clock.seconds() + FREEZE_WAIT
        self._freeze_when_stopped()

    def _freeze_when_stopped(self) -> None:
        self._freeze_call = None
        if not self._group_stopped() and self._clock.seconds() < self._freeze_deadline:
            self._freeze_call = self._clock.callLater(FREEZE_POLL, self._freeze_when_stopped)
            return
        try:
            self.cgroup.freeze()
        except CgroupError:
            # Gone meanwhile (the program ended while paused is impossible,
            # but its cgroup can be removed from outside): the stop stands.
            pass

    def _group_stopped(self) -> bool:
        pgid = self.group.pgid
        for pid in self.cgroup.procs():
            entry = process_entry(pid)
            if entry is not None and entry.pgid == pgid and entry.state not in "TtZ":
                return False
        return True

    def _cancel_freeze(self) -> None:
        if self._freeze_call is not None:
            self._freeze_call.cancel()
            self._freeze_call = None

    def resume(self) -> None:
        self._cancel_freeze()
        self.cgroup.thaw()
        super().resume()

    def terminate(self) -> None:
        # Frozen processes would not act on SIGTERM until thawed.
        self._cancel_freeze()
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
        self._cancel_freeze()
        self.usage()
        self._released = True
        if not remove_with_stale_parent(self.cgroup, os.getpid()):
            raise CgroupError(f"cannot remove cgroup {self.cgroup.path}: it is not empty")


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
