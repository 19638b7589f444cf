"""
The parent's ends of a program's pipes.

Twisted reads a child's pipes 8 KiB at a time and has no setting to change
that: a flood then costs a reactor turn for every 8 KiB.  So ccx makes the
pipes itself, hands the child's ends to the program when it starts, reads
the parent's ends of the output pipes with L{PipeReader} and writes its
standard input with L{PipeWriter}.
"""

import os

from twisted.internet import fdesc
from twisted.internet.abstract import FileDescriptor
from twisted.internet.interfaces import IProcessProtocol, IReactorFDSet
from twisted.internet.main import CONNECTION_DONE, CONNECTION_LOST
from twisted.python.failure import Failure

# How much one read of an output pipe may take: a full pipe's worth.
PIPE_READ_SIZE = 64 * 1024


class PipeReader(FileDescriptor):
    """
    The parent's end of one of a child's output pipes, with the semantics of
    Twisted's own C{ProcessReader}: what it reads goes to
    C{proc.childDataReceived(child_fd, data)}; at end of file, on a read
    error, or after L{loseConnection}, it closes its descriptor and calls
    C{proc.childConnectionLost(child_fd)}.

    It does not read until C{startReading}; as a push producer
    (C{pauseProducing}, C{resumeProducing}) it stops and restarts reading.

    @ivar child_fd: the child's descriptor this pipe is connected to.
    @ivar fd: the parent's end, which this reader owns.
    """

    connected = 1

    def __init__(
        self,
        reactor: IReactorFDSet,
        proc: IProcessProtocol,
        child_fd: int,
        fd: int,
        read_size: int = PIPE_READ_SIZE,
    ) -> None:
        """
        @param proc: what is told of the data and of the end.
        """
        super().__init__(reactor)
        os.set_blocking(fd, False)
        self.proc = proc
        self.child_fd = child_fd
        self.fd = fd
        self.read_size = read_size

    def fileno(self) -> int:
        return self.fd

    def doRead(self) -> object:
        try:
            data = os.read(self.fd, self.read_size)
        except (BlockingIOError, InterruptedError):
            return None
        except OSError:
            return CONNECTION_LOST
        if not data:
            return CONNECTION_DONE
        self.proc.childDataReceived(self.child_fd, data)
        return None

    def loseConnection(self) -> None:
        """
        Stop reading and close the pipe (in the next reactor turn, as
        Twisted's readers do), whatever is still in it.
        """
        if self.connected and not self.disconnecting:
            self.disconnecting = 1
            self.stopReading()
            self.reactor.callLater(0, self.connectionLost, Failure(CONNECTION_DONE))

    def connectionLost(self, reason: Failure) -> None:
        super().connectionLost(reason)
        os.close(self.fd)
        self.proc.childConnectionLost(self.child_fd)


class PipeWriter(FileDescriptor):
    """
    The parent's end of a child's standard input, with the semantics of
    Twisted's own C{ProcessWriter}: what is written waits in the buffer of
    L{FileDescriptor} (which pauses a registered producer past its
    C{bufferSize}); when the child's end is closed by everything holding it,
    or after L{loseConnection} and the buffer flushed, it closes its
    descriptor and calls C{proc.childConnectionLost(child_fd)}.

    It does not watch for the reading end going away until C{startReading}.

    @ivar child_fd: the child's descriptor this pipe is connected to.
    @ivar fd: the parent's end, which this writer owns.
    """

    connected = 1

    def __init__(
        self, reactor: IReactorFDSet, proc: IProcessProtocol, child_fd: int, fd: int
    ) -> None:
        super().__init__(reactor)
        os.set_blocking(fd, False)
        self.proc = proc
        self.child_fd = child_fd
        self.fd = fd

    def fileno(self) -> int:
        return self.fd

    def writeSomeData(self, data: bytes) -> object:
        return fdesc.writeToFD(self.fd, data)

    def doRead(self) -> object:
        # A pipe's write end never has data to read: it is reported
        # readable (POLLERR) only once no reader is left.
        return CONNECTION_LOST

    def connectionLost(self, reason: Failure) -> None:
        super().connectionLost(reason)
        os.close(self.fd)
        self.proc.childConnectionLost(self.child_fd)
