"""
What the kernel says about a service and the programs it started.

Figures about one process (memory, CPU time, open files, stopped or not)
come from psutil.  Questions about the whole process table (the members of
a process group, the children of a process) go through the one walk of
C{/proc} the service itself uses, L{ccx.process.group.process_table}: the
service cannot depend on psutil, and a check of "is anything of this group
left" must see the table exactly as the service does, or the two could
disagree about the same group.
"""

import os
from typing import Dict, Iterable, List, Optional

import psutil

from ccx.process.group import ProcessGroup, process_table

MIB = 1024 * 1024


def rss_mib(pid: int) -> Optional[float]:
    """
    The resident memory of process C{pid}, in MiB; None when it is gone.
    """
    try:
        return psutil.Process(pid).memory_info().rss / MIB
    except psutil.NoSuchProcess:
        return None


def peak_rss_mib(pid: int) -> Optional[float]:
    """
    The highest resident memory process C{pid} has had (C{VmHWM}), in MiB;
    None when it is gone.  psutil does not report it: read from C{/proc}.
    """
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def cpu_seconds(pid: int) -> float:
    """
    User plus system CPU time of process C{pid} itself (not its children).
    """
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def open_fds(pid: int) -> Optional[int]:
    """
    How many file descriptors process C{pid} has open; None when it is gone
    (or not ours to look at).
    """
    try:
        return psutil.Process(pid).num_fds()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def stopped(pid: int) -> Optional[bool]:
    """
    Whether process C{pid} is stopped (by SIGSTOP and the like); None when
    it is gone.
    """
    try:
        return psutil.Process(pid).status() == psutil.STATUS_STOPPED
    except psutil.NoSuchProcess:
        return None


def children_of(pid: int) -> List[int]:
    """
    The live processes whose parent is C{pid} (zombies do not count).
    """
    return [p.pid for p in process_table() if p.ppid == pid and p.state != "Z"]


def leftovers(pgids: Iterable[int]) -> Dict[int, List[int]]:
    """
    The process groups among C{pgids} that still have live members, with
    their pids.
    """
    left = {pgid: ProcessGroup(pgid).members() for pgid in pgids}
    return {pgid: pids for pgid, pids in left.items() if pids}


def keeper_pids(state_dir: str) -> List[int]:
    """
    The pids of the keepers (C{python -m ccx.keeper}) of C{state_dir}.
    """
    found = []
    for entry in process_table():
        if entry.state == "Z":
            continue
        try:
            with open(f"/proc/{entry.pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if b"ccx.keeper" in argv and os.fsencode(state_dir) in argv:
            found.append(entry.pid)
    return found
