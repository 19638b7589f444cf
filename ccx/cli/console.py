"""
The client's own standard input, output and error.

On a terminal, pipe or file they are non-blocking descriptors watched by the
reactor, so that a slow reader of C{ccx}'s output pauses the WebSocket (and,
through TCP, the service) instead of blocking the reactor; in tests they are
in-memory files.
"""

import fcntl
import io
import os
from typing import Any, Dict, Optional

from twisted.internet import abstract, fdesc, main
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IPushProducer
from twisted.python.failure import Failure
from zope.interface import implementer

READ_SIZE = 64 * 1024


class FDWriter(abstract.FileDescriptor):
    """
    Non-blocking writes to a file descriptor, buffered by Twisted. As a
    consumer it pauses its registered streaming producer while more than
    C{bufferSize} bytes wait to be written.

    @ivar broken: the descriptor failed (EPIPE: nobody reads it any more).
    """

    broken = False

    def __init__(self, reactor: Any, fd: int) -> None:
        super().__init__(reactor)
        self.fd = fd
        fdesc.setNonBlocking(fd)
        self.connected = 1
        self._lost: Deferred = Deferred()

    def fileno(self) -> int:
        return self.fd

    def writeSomeData(self, data: bytes) -> Any:
        return fdesc.writeToFD(self.fd, data)

    def connectionLost(self, reason: Failure) -> None:
        self.broken = not reason.check(ConnectionDone)
        super().connectionLost(reason)
        if not self._lost.called:
            self._lost.callback(None)

    def flush(self) -> Deferred:
        """
        Write what is buffered, then stop.

        @return: a Deferred that fires once everything was written (or the
            descriptor failed).
        """
        if self.disconnected:
            return succeed(None)
        self.unregisterProducer()
        self.loseConnection()
        return self._lost


class FDReader(abstract.FileDescriptor):
    """
    Non-blocking reads of a file descriptor, handed to C{receiver}'s
    C{data_received(bytes)} and, at the end, C{input_ended()}. It is an
    L{IPushProducer}: C{pauseProducing} stops reading.
    """

    def __init__(self, reactor: Any, fd: int, receiver: Any) -> None:
        super().__init__(reactor)
        self.fd = fd
        self._receiver = receiver
        fdesc.setNonBlocking(fd)
        self.connected = 1

    def fileno(self) -> int:
        return self.fd

    def start(self) -> None:
        self.startReading()

    def doRead(self) -> Any:
        try:
            data = os.read(self.fd, READ_SIZE)
        except BlockingIOError:
            return None
        except OSError:
            return main.CONNECTION_LOST
        if not data:
            return main.CONNECTION_DONE
        self._receiver.data_received(data)
        return None

    def connectionLost(self, reason: Failure) -> None:
        super().connectionLost(reason)
        self._receiver.input_ended()

    def stop(self) -> None:
        if self.connected:
            self.stopReading()
            self.connected = 0


class MemoryWriter:
    """
    An in-memory output: everything is written at once, so it never pauses
    its producer.
    """

    broken = False

    def __init__(self, file: io.BytesIO) -> None:
        self.file = file

    def write(self, data: bytes) -> None:
        self.file.write(data)

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        pass

    def unregisterProducer(self) -> None:
        pass

    def flush(self) -> Deferred:
        return succeed(None)


@implementer(IPushProducer)
class MemoryReader:
    """
    An in-memory input, delivered in chunks from the reactor.
    """

    # As a file descriptor's, for protocols that check their transport's
    # (LineOnlyReceiver): it never stops delivering half way.
    disconnecting = False

    def __init__(self, reactor: Any, data: bytes, receiver: Any, chunk: int = READ_SIZE) -> None:
        self._reactor = reactor
        self._data = data
        self._receiver = receiver
        self._chunk = chunk
        self._paused = False
        self._stopped = False
        self._call: Any = None

    def start(self) -> None:
        self._schedule()

    def _schedule(self) -> None:
        if self._call is None and not self._paused and not self._stopped:
            self._call = self._reactor.callLater(0, self._deliver)

    def _deliver(self) -> None:
        self._call = None
        if self._paused or self._stopped:
            return
        if not self._data:
            self._stopped = True
            self._receiver.input_ended()
            return
        data, self._data = self._data[: self._chunk], self._data[self._chunk :]
        self._receiver.data_received(data)
        self._schedule()

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        self._schedule()

    def stopProducing(self) -> None:
        self.stop()

    def stop(self) -> None:
        self._stopped = True
        if self._call is not None:
            self._call.cancel()
            self._call = None


class Console:
    """
    Where a command reads and writes: C{stdout} and C{stderr} are consumers
    (C{write}, C{registerProducer}, C{flush}).
    """

    stdout: Any
    stderr: Any

    def say(self, text: str) -> None:
        """
        Tell the person something on standard error, as C{ccx: TEXT}.
        """
        self.stderr.write(f"ccx: {text}\n".encode("utf-8", "replace"))

    def read_stdin(self, receiver: Any) -> Any:
        """
        Start reading standard input into C{receiver} (C{data_received},
        C{input_ended}).

        @return: the reader, an L{IPushProducer} with a C{stop()} method.
        """
        raise NotImplementedError()

    def close(self) -> Deferred:
        """
        Write out what is buffered and put the descriptors back as they were.
        """
        raise NotImplementedError()


class TerminalConsole(Console):
    """
    The process's own descriptors 0, 1 and 2.
    """

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor
        # Saved before any is made non-blocking: 1 and 2 often share one
        # open file description (a terminal), and so its flags.
        self._flags: Dict[int, int] = {}
        for fd in (0, 1, 2):
            try:
                self._flags[fd] = fcntl.fcntl(fd, fcntl.F_GETFL)
            except OSError:
                pass
        self.stdout = self._writer(1)
        self.stderr = self._writer(2)
        self._stdin: Optional[Any] = None

    def _writer(self, fd: int) -> Any:
        if fd not in self._flags:
            return MemoryWriter(io.BytesIO())
        return FDWriter(self._reactor, fd)

    def read_stdin(self, receiver: Any) -> Any:
        if 0 not in self._flags:
            reader: Any = MemoryReader(self._reactor, b"", receiver)
        else:
            reader = FDReader(self._reactor, 0, receiver)
        self._stdin = reader
        reader.start()
        return reader

    def close(self) -> Deferred:
        if self._stdin is not None:
            self._stdin.stop()
        d = self.stdout.flush()
        d.addCallback(lambda _: self.stderr.flush())
        d.addCallback(lambda _: self._restore())
        return d

    def _restore(self) -> None:
        for fd, flags in self._flags.items():
            try:
                fcntl.fcntl(fd, fcntl.F_SETFL, flags)
            except OSError:
                pass


class MemoryConsole(Console):
    """
    In-memory standard streams, for tests.

    @ivar out: what was written to standard output.
    @ivar err: what was written to standard error.
    """

    def __init__(
        self,
        reactor: Any,
        stdin: bytes = b"",
        out: Optional[io.BytesIO] = None,
        err: Optional[io.BytesIO] = None,
    ) -> None:
        self._reactor = reactor
        self._stdin_data = stdin
        self.out = out if out is not None else io.BytesIO()
        self.err = err if err is not None else io.BytesIO()
        self.stdout = MemoryWriter(self.out)
        self.stderr = MemoryWriter(self.err)

    def read_stdin(self, receiver: Any) -> Any:
        reader = MemoryReader(self._reactor, self._stdin_data, receiver)
        reader.start()
        return reader

    def close(self) -> Deferred:
        return succeed(None)
