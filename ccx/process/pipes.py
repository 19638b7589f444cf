"""
The parent's ends of a program's pipes.

Twisted reads a child's pipes 8 KiB at a time and has no setting to change
that: a flood then costs a reactor turn for every 8 KiB.  So ccx makes the
pipes itself, hands the child's ends to the program when it starts, reads
the parent's ends of the output pipes with L{PipeReader} and writes its
standard input with L{PipeWriter}.  A program on a terminal has one end
instead, the terminal's master, read and written by L{TerminalEnd}.
"""

import errno
import os

from twisted.internet import fdesc
from twisted.internet.abstract import FileDescriptor
from twisted.internet.interfaces import IProcessProtocol, IReactorFDSet
from twisted.internet.main import CONNECTION_DONE, CONNECTION_LOST
from twisted.python.failure import Failure

from ccx.process.terminal import WindowSize, set_window_size

# How much one read of an output pipe may take: a full pipe's worth.
PIPE_READ_SIZE = 64 * 1024

# The child descriptor a terminal's output is reported on (as Twisted's
# own PTY processes do): everything the program writes arrives there.
TERMINAL_FD = 1


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
        except OSError as e:
            return self._read_failed(e)
        if not data:
            return CONNECTION_DONE
        self.proc.childDataReceived(self.child_fd, data)
        return None

    def _read_failed(self, error: OSError) -> object:
        """
        How a failed read ends the connection.
        """
        return CONNECTION_LOST

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


class TerminalEnd(PipeReader):
    """
    The master end of a program's terminal, in the reactor: what it reads
    is the program's output (C{proc.childDataReceived(TERMINAL_FD, data)}),
    what is written to it is the program's input, buffered as a
    L{twisted.internet.abstract.FileDescriptor} does (pausing a registered
    producer past its C{bufferSize}).

    It stands for both the program's standard input and its output: when
    it closes (every holder of the slave end gone, which Linux reports as
    C{EIO}; or L{loseConnection}), it tells C{proc} that descriptors 0 and
    L{TERMINAL_FD} are lost.  Closing it hangs the terminal up, so end of
    input is the EOF character written
    (L{ccx.process.terminal.EOF_CHARACTER}), never a close.
    """

    def __init__(self, reactor: IReactorFDSet, proc: IProcessProtocol, fd: int) -> None:
        super().__init__(reactor, proc, TERMINAL_FD, fd)

    def resize(self, size: WindowSize) -> None:
        """
        Change the window size: the program gets SIGWINCH.

        @raise OSError: when the terminal is gone.
        """
        set_window_size(self.fd, size)

    def _read_failed(self, error: OSError) -> object:
        # EIO: no process holds the slave end any more (the end of
        # output, as end of file is for a pipe).
        return CONNECTION_DONE if error.errno == errno.EIO else CONNECTION_LOST

    def writeSomeData(self, data: bytes) -> object:
        return fdesc.writeToFD(self.fd, data)

    def loseConnection(self) -> None:
        """
        Close the terminal now, whatever is still to be read or written
        (the program is hung up on).
        """
        # Not writing either: a flush ending later would close it twice.
        self.stopWriting()
        super().loseConnection()

    def connectionLost(self, reason: Failure) -> None:
        if self.disconnected:
            return
        # The input side is gone with the output side: one descriptor.
        self.proc.childConnectionLost(0)
        super().connectionLost(reason)
