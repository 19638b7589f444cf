"""
Starting a program in a session (and so a process group) of its own, and
in its cgroup when it has one, with no interpreter between ccx and the
program.
"""

import os
import signal
import subprocess
from typing import Callable, Dict, List, Optional

from twisted.internet.interfaces import IReactorFDSet

from ccx.process.child import start_program
from ccx.process.cgroup import Cgroup, CgroupError
from ccx.process.command import Command
from ccx.process.interfaces import IExecReport
from ccx.process.terminal import open_terminal, take_controlling_terminal
from ccx.process.transport import ChildProcess

# The child's descriptors that are pipes ccx reads.
OUTPUT_FDS = (1, 2)


def start_child(
    command: Command,
    stdin: int,
    stdout: int,
    stderr: int,
    cgroup: Optional[Cgroup] = None,
    preexec: Optional[Callable[[], None]] = None,
) -> subprocess.Popen:
    """
    Start C{command}'s program with C{stdin}, C{stdout} and C{stderr} as its
    descriptors 0, 1 and 2, and nothing else open
    (L{ccx.process.child.start_program}).

    With a C{cgroup}, ccx moves itself into it, spawns and moves back:
    the child starts in the cgroup, so even its first fork is inside
    (see docs/architecture.md, "A cgroup per program").

    C{preexec} runs in the child after C{setsid()}, before the exec (a
    program on a terminal takes it as its controlling terminal there); with
    it, C{subprocess} forks instead of C{vfork}ing.

    @return: the child, running the program.
    @raise SpawnFailed: when the directory could not be entered or the
        program executed; the child is gone (reaped) then.
    @raise OSError: when no child could be made (out of descriptors or
        processes).
    @raise CgroupError: when ccx could not enter the cgroup or leave it;
        no child is left then.
    """
    if cgroup is None:
        return _popen(command, stdin, stdout, stderr, preexec)
    child: Optional[subprocess.Popen] = None
    try:
        with cgroup.joined():
            child = _popen(command, stdin, stdout, stderr, preexec)
    except CgroupError:
        if child is not None:
            # ccx could not leave the cgroup: the program must not run on
            # in one that is not its own alone.
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
        raise
    return child


def _popen(
    command: Command,
    stdin: int,
    stdout: int,
    stderr: int,
    preexec: Optional[Callable[[], None]] = None,
) -> subprocess.Popen:
    return start_program(
        command.argv,
        command.executable,
        command.cwd,
        command.env,
        stdin,
        stdout,
        stderr,
        preexec=preexec,
    )


def spawn(
    reactor: IReactorFDSet,
    protocol: IExecReport,
    command: Command,
    cgroup: Optional[Cgroup] = None,
) -> ChildProcess:
    """
    Spawn C{command} (L{start_child}), in C{cgroup} when given, connect C{protocol} to its
    L{ChildProcess} and tell it the program runs (C{exec_succeeded}).

    Its pipes are ccx's own: output read by L{ccx.process.pipes.PipeReader},
    standard input (when the command has it) written by a
    L{ccx.process.pipes.PipeWriter}, else C{/dev/null}.

    @param protocol: a process protocol that provides L{IExecReport}.
    @raise SpawnFailed: when the program could not be executed; nothing is
        left open and no child is left.
    @raise OSError: when ccx could not make the pipes or the child.
    """
    if command.pty is not None:
        # On a terminal instead of pipes (ccx.process.terminal).
        return spawn_on_terminal(reactor, protocol, command, cgroup)
    # Every descriptor is close-on-exec (os.pipe's and os.open's default):
    # no other child inherits one; the program gets its ends as 0, 1 and 2.
    parent_ends: Dict[int, int] = {}
    child_ends: Dict[int, int] = {}
    transport: Optional[ChildProcess] = None
    try:
        if command.stdin:
            child_ends[0], parent_ends[0] = os.pipe()
        else:
            child_ends[0] = os.open(os.devnull, os.O_RDONLY)
        # merge_stderr: one pipe for both, so that what the program writes
        # to either arrives in the order it wrote it.
        outputs = (1,) if command.merge_stderr else OUTPUT_FDS
        for child_fd in outputs:
            parent_ends[child_fd], child_ends[child_fd] = os.pipe()
        stderr = child_ends[1] if command.merge_stderr else child_ends[2]
        child = start_child(command, child_ends[0], child_ends[1], stderr, cgroup)
        try:
            transport = ChildProcess(
                reactor,
                protocol,
                child.pid,
                child.poll,
                {child_fd: parent_ends[child_fd] for child_fd in outputs},
                parent_ends.get(0),
            )
        except BaseException:
            # No transport will watch it: leave nothing of it behind.
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
            raise
    finally:
        to_close: List[int] = list(child_ends.values())
        if transport is None:
            to_close += parent_ends.values()
        for fd in to_close:
            os.close(fd)
    transport.connect()
    protocol.exec_succeeded()
    return transport


def spawn_on_terminal(
    reactor: IReactorFDSet,
    protocol: IExecReport,
    command: Command,
    cgroup: Optional[Cgroup] = None,
) -> ChildProcess:
    """
    As L{spawn}, for a command with C{pty}: the program runs on a new
    pseudo-terminal of that size, its controlling terminal, whose master
    end the transport reads and writes (L{TerminalEnd}).
    """
    master, slave = open_terminal(command.pty)
    transport: Optional[ChildProcess] = None
    try:
        child = start_child(command, slave, slave, slave, cgroup, take_controlling_terminal)
        try:
            transport = ChildProcess(
                reactor, protocol, child.pid, child.poll, {}, terminal=master
            )
        except BaseException:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
            raise
    finally:
        # The program holds the slave end now: once it (and what it
        # started) closes it, reading the master reports the end.
        os.close(slave)
        if transport is None:
            os.close(master)
    transport.connect()
    protocol.exec_succeeded()
    return transport
