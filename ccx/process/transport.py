"""
A child process whose output pipes are ccx's own L{PipeReader}s.
"""

from typing import Collection, Dict, Iterable, Mapping, Optional, Union

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

from ccx.process.pipes import PipeReader


@implementer(IProcessProtocol, IProcessTransport, IPushProducer, IConsumer)
class PipedProcess:
    """
    The transport of a child spawned with output pipes of ccx's own.

    Twisted's process keeps what it does well (the pid, signals, standard
    input and its producer); the output pipes are L{PipeReader}s.  Given to
    C{spawnProcess} as the process protocol, this hands everything on to
    C{protocol} with itself as the transport, so C{protocol} sees what
    Twisted's own process would show it: C{processEnded} comes once the
    child has ended I{and} every pipe is closed.

    As a push producer it stops and restarts reading the output pipes, but
    never the C{always_read} ones: a few bytes about the child (the
    trampoline's exec report), not its output.

    @ivar protocol: the protocol of the child.
    @ivar process: Twisted's process transport, once connected.
    """

    log = Logger()

    def __init__(
        self,
        reactor: IReactorFDSet,
        protocol: IProcessProtocol,
        pipes: Mapping[int, int],
        always_read: Collection[int] = (),
    ) -> None:
        """
        @param pipes: the parent's end of each output pipe, by the child's
            descriptor; they are owned (and closed) by this transport once
            C{spawnProcess} has connected it.
        """
        self.protocol = protocol
        self.process: Optional[IProcessTransport] = None
        self._readers: Dict[int, PipeReader] = {
            child_fd: PipeReader(reactor, self, child_fd, fd) for child_fd, fd in pipes.items()
        }
        self._always_read = frozenset(always_read)
        self._ended: Optional[Failure] = None

    @property
    def pid(self) -> Optional[int]:
        return None if self.process is None else self.process.pid

    # -- from Twisted's process and the readers -------------------------

    def makeConnection(self, process: IProcessTransport) -> None:
        self.process = process
        for reader in self._readers.values():
            reader.startReading()
        self.protocol.makeConnection(self)

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        self.protocol.childDataReceived(childFD, data)

    def childConnectionLost(self, childFD: int) -> None:
        self._readers.pop(childFD, None)
        try:
            self.protocol.childConnectionLost(childFD)
        except Exception:
            # As Twisted does: a protocol's error must not keep the process
            # from ending.
            self.log.failure("childConnectionLost({fd}) failed", fd=childFD)
        self._maybe_end()

    def processExited(self, reason: Failure) -> None:
        self.protocol.processExited(reason)

    def processEnded(self, reason: Failure) -> None:
        self._ended = reason
        self._maybe_end()

    def _maybe_end(self) -> None:
        if self._ended is None or self._readers:
            return
        reason, self._ended = self._ended, None
        self.protocol.processEnded(reason)

    # -- to the protocol --------------------------------------------------

    def pauseProducing(self) -> None:
        """
        Stop reading the output pipes: the child blocks once they are full.
        """
        for child_fd, reader in self._readers.items():
            if child_fd not in self._always_read:
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
        reader = self._readers.get(descriptor)
        if reader is not None:
            reader.loseConnection()
        else:
            self.process.closeChildFD(descriptor)

    def closeStdin(self) -> None:
        self.process.closeStdin()

    def closeStdout(self) -> None:
        self.closeChildFD(1)

    def closeStderr(self) -> None:
        self.closeChildFD(2)

    def loseConnection(self) -> None:
        """
        Close every pipe: standard input once what was written is flushed,
        the output pipes at once.
        """
        self.process.closeStdin()
        self.stopProducing()

    def write(self, data: bytes) -> None:
        self.process.write(data)

    def writeSequence(self, data: Iterable[bytes]) -> None:
        self.process.writeSequence(data)

    def writeToChild(self, childFD: int, data: bytes) -> None:
        self.process.writeToChild(childFD, data)

    def registerProducer(self, producer: IPushProducer, streaming: bool) -> None:
        """
        Register the producer of the child's standard input.
        """
        self.process.registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        self.process.unregisterProducer()

    def signalProcess(self, signalID: Union[str, int]) -> None:
        self.process.signalProcess(signalID)

    def getPeer(self) -> IAddress:
        return self.process.getPeer()

    def getHost(self) -> IAddress:
        return self.process.getHost()
