"""
Programs that are not durable must not outlive ccx unmanaged.  The journal
keeps a record of each program from the moment it runs (its pid, start
time, cgroup) until it ends; an unfinished record of a program that is not
durable, found at start, belongs to a program whose ccx died abruptly
(SIGKILL, a crash).  The program is ended (C{cgroup.kill}, or its process
group when its leader is still the process the record names) and its
record finished as failed, with an error that says why: the registry then
lists it like any finished program.
"""

import os
import signal
from dataclasses import replace
from typing import Any, List, Optional

from twisted.logger import Logger

from ccx.journal.record import Record, write_record
from ccx.journal.statedir import StateDir
from ccx.process.cgroup import Cgroup, CgroupError, remove_stale
from ccx.process.group import ProcessGroup

log = Logger()

ORPHAN_ERROR = (
    "ccx stopped abruptly while it ran (killed or crashed); the next start ended it"
)
# How far a process's start, as /proc has it, may be from the start its
# record says for it to be the same process: the record is written once
# the program runs, milliseconds after it started; a recycled pid started
# later.
START_TOLERANCE = 2.0
# How long the cgroup of an ended orphan is waited for to empty, and how
# often it is looked at.
_CGROUP_WAIT = 5.0
_CGROUP_POLL = 0.02


def process_started_at(pid: int) -> Optional[float]:
    """
    When process C{pid} started, in seconds since the epoch (from
    C{/proc}: the boot time and the process's start in clock ticks), or
    L{None} when there is no such process.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            ticks = int(f.read().rsplit(b")", 1)[1].split()[19])
        with open("/proc/stat", "rb") as f:
            boot = next(int(line.split()[1]) for line in f if line.startswith(b"btime "))
    except (OSError, IndexError, ValueError, StopIteration):
        return None
    return boot + ticks / os.sysconf("SC_CLK_TCK")


def is_same_process(pid: int, started_at: Optional[float]) -> bool:
    """
    Whether C{pid} is still the process that started at C{started_at}.
    """
    began = process_started_at(pid)
    return began is not None and started_at is not None and abs(began - started_at) <= START_TOLERANCE


def end_orphan(record: Record, reactor: Any) -> bool:
    """
    End what is left of a program a dead ccx left running: every process of
    its cgroup, and its process group when its leader is still the process
    the record names (a recycled pid is never signalled).

    @return: whether anything of it was still running.
    """
    found = False
    if record.cgroup and os.path.isdir(record.cgroup):
        cgroup = Cgroup(record.cgroup, "")
        try:
            found = bool(cgroup.procs())
            cgroup.kill()
        except CgroupError as e:
            log.warn("cannot end cgroup {path}: {error}", path=record.cgroup, error=str(e))
        _remove_when_empty(cgroup, reactor, reactor.seconds() + _CGROUP_WAIT)
    if record.pid is not None and is_same_process(record.pid, record.started_at):
        found = ProcessGroup(record.pid).signal(signal.SIGKILL) or found
    return found


def end_orphans(state_dir: StateDir, reactor: Any) -> List[str]:
    """
    End every program that is not durable and that a ccx no longer
    running left unfinished in C{state_dir}, and finish its record (failed,
    with L{ORPHAN_ERROR}), so that the registry takes it up as finished.

    @return: the ids of those programs.
    """
    ended = []
    for record in state_dir.unfinished_records():
        if record.durable:
            continue  # the keeper's
        now = reactor.seconds()
        ran = end_orphan(record, reactor)
        log.warn(
            "process {process_id} ({argv}) was left by a ccx that stopped abruptly; {what}",
            process_id=record.process_id,
            argv=record.argv,
            what="ended it" if ran else "it had ended",
        )
        finished = replace(
            record,
            status="failed",
            ended_at=record.ended_at or now,
            error=ORPHAN_ERROR,
        )
        try:
            write_record(state_dir.directory(record.process_id), finished)
        except OSError as e:
            log.error(
                "process {process_id}: cannot write its record: {error}",
                process_id=record.process_id,
                error=e.strerror,
            )
            continue
        ended.append(record.process_id)
    return ended


def _remove_when_empty(cgroup: Cgroup, reactor: Any, deadline: float) -> None:
    """
    Remove an orphan's cgroup once its killed processes are gone (SIGKILL
    takes effect asynchronously), and the directory a dead ccx made for
    its programs' cgroups once that is empty (L{remove_stale}).
    """
    if cgroup.remove():
        # The killed ccx's own directory too, once nothing is left in it.
        remove_stale(os.path.dirname(os.path.dirname(cgroup.path)), os.getpid())
        return
    if reactor.seconds() < deadline:
        reactor.callLater(_CGROUP_POLL, _remove_when_empty, cgroup, reactor, deadline)
    else:
        log.warn("cgroup {path} is still not empty; left", path=cgroup.path)
