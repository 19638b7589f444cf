"""
Programs that are not durable must not outlive ccx unmanaged.  While one
runs, a small mark in the state dir names it (pid, start time, cgroup);
the mark goes when it ends.  A mark found at start belongs to a program
whose ccx died abruptly (SIGKILL, a crash): the program is ended
(C{cgroup.kill}, or its process group when its leader is still the process
the mark names) and reported failed, with an error that says why.
"""

import json
import os
import signal
from typing import Any, Dict, List, Optional

from twisted.logger import Logger

from ccx.keeper.records import proc_start_time
from ccx.process.cgroup import Cgroup, CgroupError, CgroupTree
from ccx.process.group import ProcessGroup

log = Logger()

MARKS_DIR = "running"
ORPHAN_ERROR = (
    "ccx stopped abruptly while it ran (killed or crashed); the next start ended it"
)
# How long the cgroup of an ended orphan is waited for to empty, and how
# often it is looked at.
_CGROUP_WAIT = 5.0
_CGROUP_POLL = 0.02


class RunningMarks:
    """
    The marks of the programs that are not durable and run now.
    """

    def __init__(self, state_dir: str) -> None:
        self.directory = os.path.join(state_dir, MARKS_DIR)

    def _path(self, process_id: str) -> str:
        return os.path.join(self.directory, process_id + ".json")

    def add(self, process: Any) -> None:
        """
        Mark a program that runs (a L{ccx.process.managed.ManagedProcess}
        with its pid); what cannot be written is logged, never fatal.
        """
        mark = {
            "process_id": process.process_id,
            "pid": process.pid,
            "proc_start": proc_start_time(process.pid),
            "cgroup": process.cgroup_path,
            "argv": list(process.command.argv),
            "executable": process.command.executable,
            "cwd": process.command.cwd,
            "started_at": process.started_at,
            "encoding": process.options.encoding,
            # The ccx that runs it: a mark is an orphan's once that is gone.
            "ccx_pid": os.getpid(),
            "ccx_start": proc_start_time(os.getpid()),
        }
        try:
            os.makedirs(self.directory, mode=0o700, exist_ok=True)
            temporary = self._path(process.process_id) + ".new"
            with open(temporary, "w") as f:
                json.dump(mark, f)
            os.replace(temporary, self._path(process.process_id))
        except OSError as e:
            log.warn(
                "process {process_id}: cannot mark it running in the state dir: {error}",
                process_id=process.process_id,
                error=str(e),
            )

    @staticmethod
    def _discard(path: str) -> None:
        try:
            os.unlink(path)
        except OSError:
            pass

    def remove(self, process_id: str) -> None:
        try:
            os.unlink(self._path(process_id))
        except FileNotFoundError:
            pass
        except OSError as e:
            log.warn("cannot remove the mark of {process_id}: {error}", process_id=process_id, error=str(e))

    def left(self) -> List[Dict[str, Any]]:
        """
        The marks a ccx no longer running left behind (read, and removed);
        those of a ccx that runs (sharing the state dir) are its own.
        """
        try:
            names = sorted(os.listdir(self.directory))
        except FileNotFoundError:
            return []
        marks = []
        for name in names:
            if not name.endswith(".json"):
                continue  # being written
            path = os.path.join(self.directory, name)
            try:
                with open(path) as f:
                    mark = json.load(f)
            except (OSError, ValueError):
                mark = None
            if not isinstance(mark, dict) or not isinstance(mark.get("pid"), int):
                self._discard(path)
                continue
            ccx_pid = mark.get("ccx_pid")
            if isinstance(ccx_pid, int) and proc_start_time(ccx_pid) == mark.get("ccx_start"):
                continue
            self._discard(path)
            marks.append(mark)
        return marks


def end_orphan(mark: Dict[str, Any], reactor: Any, cgroups: Optional[CgroupTree]) -> bool:
    """
    End what is left of a program a dead ccx left running: every process of
    its cgroup, and its process group when its leader is still the process
    the mark names (a recycled pid is never signalled).

    @param cgroups: this ccx's cgroup tree, when it uses one.
    @return: whether anything of it was still running.
    """
    found = False
    path = mark.get("cgroup")
    if path and os.path.isdir(path):
        cgroup = Cgroup(path, cgroups.home if cgroups is not None else "")
        try:
            found = bool(cgroup.procs())
            cgroup.kill()
        except CgroupError as e:
            log.warn("cannot end cgroup {path}: {error}", path=path, error=str(e))
        own = cgroups.base if cgroups is not None else None
        _remove_when_empty(cgroup, reactor, reactor.seconds() + _CGROUP_WAIT, own)
    pid = mark["pid"]
    if mark.get("proc_start") is not None and proc_start_time(pid) == mark["proc_start"]:
        found = ProcessGroup(pid).signal(signal.SIGKILL) or found
    return found


def _remove_when_empty(cgroup: Cgroup, reactor: Any, deadline: float, own: Optional[str]) -> None:
    """
    Remove an orphan's cgroup once its killed processes are gone (SIGKILL
    takes effect asynchronously), and the directory a dead ccx made for
    its programs' cgroups once that is empty (never this ccx's, C{own}).
    """
    if cgroup.remove():
        parent = os.path.dirname(cgroup.path)
        if os.path.basename(parent).startswith("ccx-") and parent != own:
            try:
                os.rmdir(parent)
            except OSError:
                pass  # other programs' cgroups (durable ones) are still in it
        return
    if reactor.seconds() < deadline:
        reactor.callLater(_CGROUP_POLL, _remove_when_empty, cgroup, reactor, deadline, own)
    else:
        log.warn("cgroup {path} is still not empty; left", path=cgroup.path)


def remove_stale_bases(cgroups: Optional[CgroupTree]) -> None:
    """
    Remove the empty directories that ccx processes no longer running made
    for their programs' cgroups beside this one's (C{ccx-PID}, in the
    hierarchy's root): a ccx killed abruptly leaves its own, and the
    durable programs it held in it are ended by a later ccx.
    """
    if cgroups is None or not cgroups.owned:
        return
    parent = os.path.dirname(cgroups.base)
    try:
        names = os.listdir(parent)
    except OSError:
        return
    for name in names:
        if not name.startswith("ccx-") or not name[4:].isdigit():
            continue
        path = os.path.join(parent, name)
        if path == cgroups.base or os.path.exists(f"/proc/{name[4:]}"):
            continue
        try:
            os.rmdir(path)
        except OSError:
            pass  # durable programs' cgroups are still in it
