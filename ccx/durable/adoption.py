"""
Taking back, at start, the durable programs of the state dir: those the
keeper still holds, and those that ended while ccx was away.
"""

import os
import shutil
from functools import partial
from typing import Any, Dict, List

from twisted.logger import Logger

from ccx.durable.link import KeeperLink
from ccx.keeper.records import program_dir, read_records
from ccx.process.cgroup import Cgroup
from ccx.process.command import Command
from ccx.process.launch import LaunchSettings
from ccx.process.managed import ManagedProcess, RunOptions
from ccx.process.registry import ProcessRegistry

log = Logger()


def recorded_process(
    record: Dict[str, Any],
    settings: LaunchSettings,
    reactor: Any,
    cgroups: Any = None,
    durable: bool = True,
) -> ManagedProcess:
    """
    The L{ManagedProcess} of a durable program's record (no environment:
    the record does not keep it, nor does ccx need it any more).

    @param cgroups: the service's L{ccx.process.cgroup.CgroupTree}, if it
        holds programs in cgroups: a program's recorded cgroup is taken
        back, ccx going home to the tree's.
    """
    cgroup = None
    path = record.get("cgroup")
    if path and cgroups is not None and os.path.isdir(path):
        cgroup = Cgroup(path, cgroups.home)
    meta = record.get("meta") or {}
    command = Command(
        executable=record["executable"],
        argv=list(record["argv"]),
        cwd=record["cwd"],
        env={},
        stdin=bool(record.get("stdin")),
    )
    options = RunOptions(
        blocking=bool(record.get("blocking", True)),
        cancel_on_disconnect=False,
        encoding=str(meta.get("encoding", "utf-8")),
        kill_grace=settings.kill_grace,
        buffer_bytes=settings.buffer_bytes,
        buffer_lines=settings.buffer_lines,
        durable=durable,
        journal_bytes=int(record.get("journal_bytes", settings.journal_bytes)),
    )
    return ManagedProcess(record["process_id"], command, options, reactor, cgroup=cgroup)


def readopt(
    link: KeeperLink,
    registry: ProcessRegistry,
    settings: LaunchSettings,
    reactor: Any,
    keep_finished: float,
    cgroups: Any = None,
) -> List[ManagedProcess]:
    """
    Track every durable program recorded in the state dir: those that run
    are taken back from the keeper (C{list} shows them at once, their pid
    once the keeper has answered), those that ended are reported with
    their exit status and end time.  Records of programs that ended more
    than C{keep_finished} seconds ago are deleted with their journals.

    @return: the processes now tracked.
    """
    adopted = []
    now = reactor.seconds()
    for record in read_records(link.state_dir):
        ended_at = record.get("ended_at")
        if ended_at is not None and now - ended_at > keep_finished:
            shutil.rmtree(program_dir(link.state_dir, record["process_id"]), ignore_errors=True)
            continue
        if registry.find(record["process_id"]) is not None:
            continue
        try:
            process = recorded_process(record, settings, reactor, cgroups)
        except (KeyError, TypeError, ValueError) as e:
            log.error(
                "cannot re-adopt durable process {process_id}: its record is malformed ({error})",
                process_id=record.get("process_id"),
                error=repr(e),
            )
            continue
        registry.adopt(process, partial(link.adopt, record)).addErrback(lambda _: None)
        adopted.append(process)
    if adopted:
        log.info(
            "re-adopted {count} durable processes from {state_dir}",
            count=len(adopted),
            state_dir=link.state_dir,
        )
    return adopted


def remove_record(state_dir: str, process_id: str) -> None:
    """
    Delete a forgotten durable program's record and journal.
    """
    folder = program_dir(state_dir, process_id)
    if os.path.isdir(folder):
        shutil.rmtree(folder, ignore_errors=True)
