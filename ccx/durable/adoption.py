"""
Taking back, at start, the durable programs the keeper holds: those whose
records in the state dir are not finished.  (Those that ended while ccx was
away have finished records, which the registry takes up like any
finished program's.)
"""

import os
from functools import partial
from typing import Any, List

from twisted.logger import Logger

from ccx.durable.link import KeeperLink
from ccx.journal.record import Record
from ccx.process.cgroup import Cgroup
from ccx.process.command import Command
from ccx.process.launch import LaunchSettings
from ccx.process.managed import ManagedProcess, RunOptions
from ccx.process.registry import ProcessRegistry
from ccx.process.terminal import WindowSize

log = Logger()


def recorded_process(
    record: Record, settings: LaunchSettings, reactor: Any, cgroups: Any = None
) -> ManagedProcess:
    """
    The L{ManagedProcess} of a durable program's record (no environment:
    the record does not keep it, nor does ccx need it any more).

    @param cgroups: the service's L{ccx.process.cgroup.CgroupTree}, if it
        holds programs in cgroups: a program's recorded cgroup is taken
        back, ccx going home to the tree's.
    """
    cgroup = None
    if record.cgroup and cgroups is not None and os.path.isdir(record.cgroup):
        cgroup = Cgroup(record.cgroup, cgroups.home)
    window = None
    if record.pty is not None:
        try:
            window = WindowSize(*record.pty)
        except (TypeError, ValueError):
            # Still on a terminal (one stream, pty); the keeper tells its
            # real size when it answers.
            window = WindowSize(24, 80)
    command = Command(
        executable=record.executable,
        argv=list(record.argv),
        cwd=record.cwd,
        env={},
        # A terminal is always open for input.
        stdin=bool(record.extra.get("stdin")) or window is not None,
        pty=window,
    )
    options = RunOptions(
        blocking=bool(record.extra.get("blocking", True)),
        cancel_on_disconnect=False,
        encoding=record.encoding,
        kill_grace=settings.kill_grace,
        buffer_bytes=settings.buffer_bytes,
        buffer_lines=settings.buffer_lines,
        durable=True,
    )
    return ManagedProcess(record.process_id, command, options, reactor, cgroup=cgroup)


def readopt(
    link: KeeperLink,
    registry: ProcessRegistry,
    settings: LaunchSettings,
    reactor: Any,
    cgroups: Any = None,
) -> List[ManagedProcess]:
    """
    Track every durable program whose record is not finished: taken back
    from the keeper (C{list} shows them at once, their pid once the keeper
    has answered); one the keeper no longer holds is reported from its
    record (ended meanwhile, or lost with its keeper).

    @return: the processes now tracked.
    """
    adopted = []
    for record in registry.unfinished_records():
        if not record.durable or registry.find(record.process_id) is not None:
            continue
        process = recorded_process(record, settings, reactor, cgroups)
        registry.adopt(process, partial(link.adopt, record)).addErrback(lambda _: None)
        adopted.append(process)
    if adopted:
        log.info(
            "re-adopted {count} durable processes from {state_dir}",
            count=len(adopted),
            state_dir=link.state_dir,
        )
    return adopted
