"""
Starting a program in a process group of its own with C{reactor.spawnProcess}.
"""

import os
import sys

from twisted.internet.interfaces import IProcessTransport, IReactorProcess
from twisted.internet.protocol import ProcessProtocol

from ccx.process.command import Command
from ccx.process.trampoline import STATUS_FD

TRAMPOLINE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "trampoline.py")

# How much one read of an output pipe may take; Twisted reads 8 KiB at a time,
# which costs a reactor turn for every 8 KiB of a flood.
PIPE_READ_SIZE = 64 * 1024


def spawn(
    reactor: IReactorProcess, protocol: ProcessProtocol, command: Command
) -> IProcessTransport:
    """
    Spawn C{command} through the trampoline, which makes a new session (so
    C{pgid == pid}) before the program runs: grandchildren started at once
    belong to the group too.  The protocol reads C{STATUS_FD}: end-of-file
    with no data means the program is running, anything else says why it
    could not be started.
    """
    args = [sys.executable, "-I", "-S", TRAMPOLINE, command.cwd, command.executable]
    args += command.argv
    devnull = None
    if command.stdin:
        stdin = "w"
    else:
        devnull = stdin = os.open(os.devnull, os.O_RDONLY)
    try:
        transport = reactor.spawnProcess(
            protocol,
            sys.executable,
            args,
            env=command.env,
            childFDs={0: stdin, 1: "r", 2: "r", STATUS_FD: "r"},
        )
    finally:
        if devnull is not None:
            os.close(devnull)
    _read_in_large_pieces(transport)
    return transport


def _read_in_large_pieces(transport: IProcessTransport) -> None:
    """
    Let each read of an output pipe take up to L{PIPE_READ_SIZE} bytes.
    """
    from twisted.internet import fdesc
    from twisted.internet.process import ProcessReader

    for reader in getattr(transport, "pipes", {}).values():
        if isinstance(reader, ProcessReader):
            fd = reader.fd

            def doRead(reader=reader, fd=fd):
                try:
                    data = os.read(fd, PIPE_READ_SIZE)
                except BlockingIOError:
                    return None
                except InterruptedError:
                    return None
                except OSError:
                    return fdesc.CONNECTION_LOST
                if not data:
                    return fdesc.CONNECTION_DONE
                reader.dataReceived(data)
                return None

            reader.doRead = doRead
