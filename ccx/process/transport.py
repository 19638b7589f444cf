"""
The transport of a program ccx started itself: its pid, its exit, and its
pipes.
"""

import os
import signal
from typing import Callable, Dict, Iterable, Mapping, Optional, Union

from twisted.internet.error import ProcessDone, ProcessExitedAlready, ProcessTerminated
from twisted.internet.interfaces import (
    IAddress,
    IConsumer,
    IProcessProtocol,
    IProcessTransport,
    IPushProducer,
    IReactorFDSet,
)
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ccx.process.exitwatch import ExitWatcher
from ccx.process.pipes import PipeReader, PipeWriter, TerminalEnd
from ccx.process.terminal import WindowSize

# The signal names Twisted's signalProcess takes besides numbers.
_SIGNAL_NAMES = ("HUP", "STOP", "INT", "KILL", "TERM")


@implementer(IAddress)
class ProcessAddress:
    """
    The address of either end of a process's pipes: there is none.
    """


def exit_reason(returncode: int) -> Failure:
    """
    The reason Twisted gives a process protocol for a child's exit, from a
    return code as L{subprocess.Popen} has it (C{-N} for signal C{N}).
    """
    if returncode == 0:
        return Failure(ProcessDone(0))
    if returncode < 0:
        return Failure(ProcessTerminated(signal=-returncode, status=-returncode))
    return Failure(ProcessTerminated(exitCode=returncode, status=returncode << 8))


class StdinTransport:
    """
    What every ccx process transport does alike with the one pipe it
    writes, standard input (a L{PipeWriter} in C{_stdin}, L{None} once
    closed), and with the rest of C{IProcessTransport} that follows from
    C{closeChildFD}, C{closeStdin} and C{stopProducing}.
    """

    _stdin: Optional[PipeWriter]

    def closeChildFD(self, descriptor: int) -> None:
        raise NotImplementedError()

    def closeStdin(self) -> None:
        raise NotImplementedError()

    def stopProducing(self) -> None:
        raise NotImplementedError()

    def closeStdout(self) -> None:
        self.closeChildFD(1)

    def closeStderr(self) -> None:
        self.closeChildFD(2)

    def loseConnection(self) -> None:
        """
        Close every pipe: standard input once what was written is flushed,
        the output pipes at once.
        """
        self.closeStdin()
        self.stopProducing()

    def write(self, data: bytes) -> None:
        self.writeToChild(0, data)

    def writeSequence(self, data: Iterable[bytes]) -> None:
        self.write(b"".join(data))

    def writeToChild(self, childFD: int, data: bytes) -> None:
        """
        Write to standard input, the one pipe ccx writes; what is written
        after it closed is dropped, as on any closed transport.
        """
        if childFD != 0:
            raise KeyError(childFD)
        if self._stdin is not None:
            self._stdin.write(data)

    def unregisterProducer(self) -> None:
        if self._stdin is not None:
            self._stdin.unregisterProducer()

    def getPeer(self) -> IAddress:
        return ProcessAddress()

    def getHost(self) -> IAddress:
        return ProcessAddress()


@implementer(IProcessTransport, IPushProducer, IConsumer)
class ChildProcess(StdinTransport):
    """
    A running program: the pipes ccx made for it and its pidfd.

    It tells C{protocol} what Twisted's own process transport would:
    C{childDataReceived}, C{childConnectionLost} for each pipe,
    C{processExited} once the program has exited and been reaped, and
    C{processEnded} once it has I{and} every pipe is closed.

    As a push producer it stops and restarts reading the output pipes; as
    a consumer it takes the producer of the program's standard input.

    @ivar protocol: the protocol of the child.
    @ivar pid: the program's pid until it is reaped, then L{None}.
    """

    log = Logger()

    def __init__(
        self,
        reactor: IReactorFDSet,
        protocol: IProcessProtocol,
        pid: int,
        poll: Callable[[], Optional[int]],
        outputs: Mapping[int, int],
        stdin: Optional[int] = None,
        watch: Callable[[IReactorFDSet, int, Callable[[], None]], ExitWatcher] = ExitWatcher,
        terminal: Optional[int] = None,
    ) -> None:
        """
        @param pid: the pid of a child not reaped yet.
        @param poll: reaps the child if it has exited, returning its return
            code (C{-N} for signal C{N}), or L{None} while it runs
            (L{subprocess.Popen.poll}).
        @param outputs: the parent's end of each output pipe, by the child's
            descriptor; owned (and closed) by this transport.
        @param stdin: the parent's end of the standard input pipe, if any;
            owned by this transport too.
        @param watch: makes what tells this transport the child may have
            exited (L{ExitWatcher}, given the reactor, the pid and what to
            call); it has C{startReading} and C{close}.
        @param terminal: the master end of the program's terminal, if it
            runs on one (instead of pipes): its output and its input, as a
            L{TerminalEnd}; owned by this transport too.
        @raise OSError: when the pidfd cannot be opened; the caller still
            owns the pipes and the child then.
        """
        self.protocol = protocol
        self.pid: Optional[int] = pid
        self._poll = poll
        self._readers: Dict[int, PipeReader] = {
            child_fd: PipeReader(reactor, self, child_fd, fd) for child_fd, fd in outputs.items()
        }
        self._stdin: Optional[PipeWriter] = (
            None if stdin is None else PipeWriter(reactor, self, 0, stdin)
        )
        self.terminal: Optional[TerminalEnd] = None
        if terminal is not None:
            self.terminal = TerminalEnd(reactor, self, terminal)
            self._readers[self.terminal.child_fd] = self.terminal
            self._stdin = self.terminal
        self._exit: Optional[Failure] = None
        self._ended = False
        # Last: nothing after it can fail and leave the pidfd open.
        self._watcher = watch(reactor, pid, self._reap)

    def connect(self) -> None:
        """
        Connect the protocol and start watching the pipes and the exit.
        """
        self.protocol.makeConnection(self)
        for reader in self._readers.values():
            reader.startReading()
        if self._stdin is not None:
            self._stdin.startReading()
        self._watcher.startReading()

    # -- from the pipes and the pidfd ------------------------------------

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        self.protocol.childDataReceived(childFD, data)

    def childConnectionLost(self, childFD: int) -> None:
        if childFD == 0:
            self._stdin = None
        else:
            self._readers.pop(childFD, None)
        try:
            self.protocol.childConnectionLost(childFD)
        except Exception:
            # As Twisted does: a protocol's error must not keep the process
            # from ending.
            self.log.failure("childConnectionLost({fd}) failed", fd=childFD)
        self._maybe_end()

    def _reap(self) -> None:
        returncode = self._poll()
        if returncode is None:
            return
        # Reaped: from now on the pid may be another process's.
        self.pid = None
        self._watcher.close()
        self._exit = exit_reason(returncode)
        try:
            self.protocol.processExited(self._exit)
        except Exception:
            self.log.failure("processExited failed")
        self._maybe_end()

    def _maybe_end(self) -> None:
        if self._exit is None or self._readers or self._stdin is not None or self._ended:
            return
        self._ended = True
        self.protocol.processEnded(self._exit)

    # -- to the protocol --------------------------------------------------

    def pauseProducing(self) -> None:
        """
        Stop reading the output pipes: the child blocks once they are full.
        """
        for reader in self._readers.values():
            reader.pauseProducing()

    def resumeProducing(self) -> None:
        for reader in self._readers.values():
            reader.resumeProducing()

    def stopProducing(self) -> None:
        """
        Close the output pipes, whatever is still in them.
        """
        for reader in list(self._readers.values()):
            reader.loseConnection()

    def closeChildFD(self, descriptor: int) -> None:
        if descriptor == 0:
            self.closeStdin()
            return
        reader = self._readers.get(descriptor)
        if reader is not None:
            reader.loseConnection()

    def closeStdin(self) -> None:
        """
        Close standard input once what was written to it is flushed.
        """
        if self._stdin is not None:
            self._stdin.loseConnection()

    def registerProducer(self, producer: IPushProducer, streaming: bool) -> None:
        """
        Register the producer of the child's standard input: it is paused
        while more than the pipe's buffer waits to be written.
        """
        if self._stdin is None:
            raise RuntimeError("the standard input of this process is not open")
        self._stdin.registerProducer(producer, streaming)

    def signalProcess(self, signalID: Union[str, int]) -> None:
        """
        Send a signal to the program alone (ccx signals its group with
        L{ccx.process.group.ProcessGroup}).

        @raise ProcessExitedAlready: once the program has been reaped.
        """
        if signalID in _SIGNAL_NAMES:
            signalID = getattr(signal, "SIG" + signalID)
        if self.pid is None:
            raise ProcessExitedAlready()
        os.kill(self.pid, signalID)

    def resize(self, size: WindowSize) -> None:
        """
        Change the window size of the program's terminal.

        @raise RuntimeError: when the program has no terminal, or it is
            closed.
        """
        if self.terminal is None or self.terminal.disconnected:
            raise RuntimeError("the program has no open terminal")
        self.terminal.resize(size)
