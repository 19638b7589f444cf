"""
Starting a program in a process group of its own with C{reactor.spawnProcess}.
"""

import os
import sys
from typing import Dict, List, Tuple, Union

from twisted.internet.interfaces import IProcessTransport, IReactorProcess
from twisted.internet.protocol import ProcessProtocol

from ccx.process.command import Command
from ccx.process.trampoline import STATUS_FD
from ccx.process.transport import PipedProcess

TRAMPOLINE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "trampoline.py")

# The child's descriptors that are pipes ccx reads.
OUTPUT_FDS = (1, 2, STATUS_FD)


def spawn(
    reactor: IReactorProcess, protocol: ProcessProtocol, command: Command
) -> IProcessTransport:
    """
    Spawn C{command} through the trampoline, which makes a new session (so
    C{pgid == pid}) before the program runs: grandchildren started at once
    belong to the group too.  The protocol reads C{STATUS_FD}: end-of-file
    with no data means the program is running, anything else says why it
    could not be started.

    Its output pipes are ccx's own (L{PipedProcess}); standard input, when
    the command has it, is Twisted's.

    @param reactor: a reactor that spawns processes and watches descriptors.
    """
    args = [sys.executable, "-I", "-S", TRAMPOLINE, command.cwd, command.executable]
    args += command.argv
    # Each end is close-on-exec (os.pipe's default), so no other child
    # inherits it; spawnProcess makes the child's ends its 1, 2 and 3.
    pipes: Dict[int, Tuple[int, int]] = {}
    to_close: List[int] = []
    spawned = False
    try:
        if command.stdin:
            stdin: Union[str, int] = "w"
        else:
            stdin = os.open(os.devnull, os.O_RDONLY)
            to_close.append(stdin)
        for child_fd in OUTPUT_FDS:
            pipes[child_fd] = os.pipe()
            to_close.append(pipes[child_fd][1])
        transport = PipedProcess(
            reactor,
            protocol,
            {child_fd: read_end for child_fd, (read_end, _) in pipes.items()},
            always_read=(STATUS_FD,),
        )
        child_fds = {child_fd: write_end for child_fd, (_, write_end) in pipes.items()}
        reactor.spawnProcess(
            transport, sys.executable, args, env=command.env, childFDs={0: stdin, **child_fds}
        )
        spawned = True
    finally:
        if not spawned:
            to_close += [read_end for read_end, _ in pipes.values()]
        for fd in to_close:
            os.close(fd)
    return transport
