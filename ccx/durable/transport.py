"""
The process transport of a durable program: the keeper holds its pipes (or
its terminal) and writes its output to its journal; ccx reads the journal
as the keeper says it grows, writes to its standard input (or types into
its terminal, and sets the terminal's size) through a descriptor the keeper
passed, and signals its group itself.
"""

import os
import signal
import time
from typing import Any, Dict, Iterable, List, Optional, Set, Tuple, Union

from twisted.internet.error import ProcessExitedAlready, ProcessTerminated
from twisted.internet.interfaces import (
    IConsumer,
    IProcessProtocol,
    IProcessTransport,
    IPushProducer,
)
from twisted.internet.main import CONNECTION_DONE
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ccx.durable.store import DurableStore
from ccx.journal.statedir import PROGRAMS
from ccx.process.interfaces import IRecordedProcess
from ccx.process.pipes import TERMINAL_FD, PipeWriter
from ccx.process.terminal import WindowSize, set_window_size
from ccx.process.transport import StdinTransport, exit_reason

# The child descriptor each stream is reported on, as for any program.
STREAM_FDS = {"stdout": 1, "stderr": 2}
TERMINAL_STREAM_FDS = {"pty": TERMINAL_FD}
# The most read from a journal at once: one chunk as a subscriber takes it
# (ccx.output.fanout.MAX_CHUNK).  Larger reads measured slower: each is a
# fresh buffer of its own (glibc maps large ones), faulted in page by page.
READ_SIZE = 128 * 1024


@implementer(IProcessTransport, IPushProducer, IConsumer, IRecordedProcess)
class KeeperTransport(StdinTransport):
    """
    A program the keeper holds, as its protocol sees it: what Twisted's own
    process transport would tell (C{childDataReceived}, C{childConnectionLost},
    C{processExited}, C{processEnded}), from the keeper's notices and the
    journal.

    As a push producer it stops and restarts reading the journal, and tells
    the keeper how far it has read (a C{hold}): the keeper stops reading
    the program's pipes once the journal holds its limit past that.

    @ivar pid: the program's pid once it runs, until it has exited.
    @ivar started_at: when it started (epoch seconds), once known.
    @ivar exited_at: when it exited (epoch seconds), once known.
    @ivar group_gone: it had ended before this ccx connected to it.
    @ivar window: for a program on a terminal taken back from the keeper,
        the terminal's size as the keeper found it; else L{None}.
    """

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        link: Any,
        state_dir: str,
        process_id: str,
        protocol: IProcessProtocol,
        segment_bytes: int = 8 * 1024 * 1024,
        terminal: bool = False,
    ) -> None:
        """
        @param link: the L{ccx.durable.link.KeeperLink} that carries this
            program's messages (C{hold}, C{close_stdin}).
        @param segment_bytes: the size of the journal's segments.
        @param terminal: the program runs on a terminal the keeper holds:
            one stream, C{pty}, and the descriptor passed is a duplicate of
            the terminal's master (written, never read: the keeper reads).
        """
        self.terminal = terminal
        self._fds = TERMINAL_STREAM_FDS if terminal else STREAM_FDS
        self.window: Optional[WindowSize] = None
        self.segment_bytes = segment_bytes
        self.reactor = reactor
        self.link = link
        self.state_dir = state_dir
        self.process_id = process_id
        self.protocol = protocol
        self.pid: Optional[int] = None
        self.started_at: Optional[float] = None
        self.exited_at: Optional[float] = None
        self.group_gone = False
        self.paused_seconds = 0.0
        self.paused_at: Optional[float] = None
        self.store: Optional[DurableStore] = None
        self.offsets: Dict[str, int] = {s: 0 for s in self._fds}
        self._read: Dict[str, int] = {s: 0 for s in self._fds}
        self._ends: Dict[str, int] = {s: 0 for s in self._fds}
        self._closing: Set[str] = set()
        self._open: Set[str] = set(self._fds)
        self._stdin: Optional[PipeWriter] = None
        self._paused = False
        self._exit: Optional[Failure] = None
        self._ended = False
        self._connected = False

    @property
    def streams(self) -> Tuple[str, ...]:
        """
        Its streams: C{stdout} and C{stderr}, or C{pty} alone.
        """
        return tuple(self._fds)

    # -- from the keeper --------------------------------------------------

    def spawned(
        self,
        pid: int,
        started_at: float,
        stdin: Optional[int] = None,
        ends: Optional[Dict[str, int]] = None,
        closed: Iterable[str] = (),
        returncode: Optional[int] = None,
        exited_at: Optional[float] = None,
        group_gone: bool = False,
        window: Optional[List[int]] = None,
    ) -> None:
        """
        The program runs (or ran): connect the protocol, tell it the program
        runs, then what is already known of it.

        @param stdin: ccx's own descriptor for the program's standard input
            (the keeper keeps another), owned by this transport from now on;
            for a program on a terminal, a duplicate of its master.
        @param window: the terminal's size, C{[rows, cols]}, as the keeper
            found it (a program taken back).
        """
        if window is not None and self.terminal:
            try:
                self.window = WindowSize(*window)
            except (TypeError, ValueError):
                self.log.warn(
                    "durable process {process_id}: the keeper gave the window size {window!r}",
                    process_id=self.process_id,
                    window=window,
                )
        self.pid = pid
        self.started_at = started_at
        self.group_gone = group_gone
        # Its journal is its output's store; in memory it starts where the
        # journal ends now (what came before is read from the journal).
        options = getattr(self.protocol, "options", None)
        self.store = DurableStore(
            os.path.join(self.state_dir, PROGRAMS, self.process_id),
            self.segment_bytes,
            lambda offsets: self.link.hold(self.process_id, offsets, self.store.full),
            tuple(self._fds),
            self.link.total_space(),
            lambda stream, start: self.link.evict(self.process_id, stream, start),
            options is None or options.blocking,
        )
        self.offsets = {s: self.store.end(s) for s in self._fds}
        self._read = dict(self.offsets)
        self._ends = dict(self.offsets)
        if stdin is not None:
            self._stdin = PipeWriter(self.reactor, self, 0, stdin)
        self._connected = True
        self.protocol.makeConnection(self)
        if self._stdin is not None and not self.terminal:
            # Readable only once no reader is left.  Never for a terminal's
            # master: readable means output, which is the keeper's to read.
            self._stdin.startReading()
        self.protocol.exec_succeeded()
        for stream, end in (ends or {}).items():
            if stream in self._ends:
                self._ends[stream] = max(self._ends[stream], int(end))
        self._closing.update(s for s in closed if s in self._fds)
        self._pump()
        if returncode is not None:
            self.exited(returncode, exited_at)

    def paused(self, at: Optional[float]) -> None:
        """
        Paused at C{at}, or resumed (L{None}): the keeper writes it in the
        program's record, which the next ccx reads.
        """
        if at is not None:
            if self.paused_at is None:
                self.paused_at = at
        elif self.paused_at is not None:
            # The wall clock: the record's times are its.
            self.paused_seconds += max(0.0, time.time() - self.paused_at)
            self.paused_at = None
        self.link.note(
            self.process_id,
            {"paused_at": self.paused_at, "paused_seconds": round(self.paused_seconds, 6)},
        )

    @property
    def connected(self) -> bool:
        """
        Whether its protocol was told the program runs (L{spawned}).
        """
        return self._connected

    def readopted(
        self,
        ends: Dict[str, int],
        closed: Iterable[str],
        stdin: bool,
        returncode: Optional[int],
        exited_at: Optional[float],
    ) -> None:
        """
        Taken back from the keeper after the connection to it dropped: what
        happened meanwhile (what was written, closed, evicted, the exit).
        The keeper kept ccx's holds meanwhile, so nothing ccx had not read
        is gone; the hold is sent again (one sent meanwhile was lost).
        """
        if self._ended or self.store is None:
            return
        self.store.refresh()
        if self._stdin is None and stdin:
            # A close ccx sent while the connection was down was lost.
            self.link.close_stdin(self.process_id)
        for stream in self._fds:
            self.output(stream, max(int(ends.get(stream, 0)), self.store.end(stream)))
        for stream in closed:
            self.closed(stream)
        if returncode is not None:
            self.exited(returncode, exited_at)

    def ended_unseen(self, returncode: int, exited_at: Optional[float]) -> None:
        """
        The program ended (and its keeper forgot it) while the connection to
        the keeper was down: its journal holds all it wrote, its record how
        it ended.
        """
        if self._ended or self.store is None:
            return
        self.store.refresh()
        for stream in self._fds:
            self.output(stream, self.store.end(stream))
            self.closed(stream)
        self.exited(returncode, exited_at)

    def spawn_failed(self, reason: str) -> None:
        """
        The keeper could not start the program: nothing of it is left.
        """
        self._ended = True
        self.link.forget(self.process_id)
        self.protocol.exec_failed(reason)
        self.protocol.processEnded(Failure(ProcessTerminated(exitCode=None)))

    def output(self, stream: str, end: int) -> None:
        """
        The stream's journal now ends at offset C{end}.
        """
        if self.store is not None and end > self._ends[stream]:
            self.store.grew(stream, end)
            self._ends[stream] = end
            self._pump()

    def evicted(self, stream: str, start: int, end: int) -> None:
        """
        The keeper evicted C{[start, end)} of the stream's journal.
        """
        if self.store is not None:
            self.store.evicted(stream, start, end)

    def kept(self, stream: str, start: int, gone: bool) -> None:
        """
        The keeper did not evict what the state dir's total asked of it.
        """
        if self.store is not None:
            self.store.kept(stream, start, gone)

    def closed(self, stream: str) -> None:
        """
        The stream's pipe is closed: once its journal is read, it is over.
        """
        self._closing.add(stream)
        self._pump()

    def exited(self, returncode: int, exited_at: Optional[float]) -> None:
        """
        The program exited (the keeper reaped it): from now on its pid may
        be another's.
        """
        if self._exit is not None:
            return
        self.pid = None
        self.exited_at = exited_at
        self._exit = exit_reason(returncode)
        try:
            self.protocol.processExited(self._exit)
        except Exception:
            self.log.failure("processExited failed")
        self._maybe_end()

    def keeper_lost(self, reason: str) -> None:
        """
        The keeper is gone while the program was not over: its pipes went
        with it, and how it ends cannot be known.  It is reported failed
        with C{reason}, after what the journal holds.
        """
        if self._ended:
            return
        self.protocol.lost(reason)
        self._closing.update(self._fds)
        self._pump()
        self._stop_reading()
        if self._stdin is not None:
            self._stdin.loseConnection()
        if self._exit is None:
            self.pid = None
            self._exit = Failure(ProcessTerminated(exitCode=None))
            self.protocol.processExited(self._exit)
        self._maybe_end()

    # -- the journal ------------------------------------------------------

    def _pump(self) -> None:
        """
        Hand the protocol what the journal holds past what it was given,
        until it pauses this transport; end each closed stream once read.
        """
        if not self._connected:
            return
        moved = True
        while moved and not self._paused:
            moved = False
            for stream, child_fd in self._fds.items():
                if self._paused or stream not in self._open:
                    continue
                position, end = self._read[stream], self._ends[stream]
                if position < end:
                    first, data, _ = self.store.read(
                        stream, position, min(READ_SIZE, end - position)
                    )
                    if first != position or not data:
                        # Never, while ccx holds what it has not read: the
                        # journal was cut or evicted under it.
                        self.log.error(
                            "durable process {process_id}: its {stream} journal no longer "
                            "holds offset {position}; its output stops there",
                            process_id=self.process_id,
                            stream=stream,
                            position=position,
                        )
                        self._closing.add(stream)
                        self._ends[stream] = position
                        continue
                    self._read[stream] = position + len(data)
                    self.store.reading(stream, self._read[stream])
                    self.protocol.childDataReceived(child_fd, data)
                    moved = True
                elif stream in self._closing:
                    self._end_stream(stream)
                    moved = True

    def _end_stream(self, stream: str) -> None:
        self._open.discard(stream)
        if self.terminal and self._stdin is not None and not self._stdin.disconnected:
            # The terminal is closed (the keeper read its end): so is its
            # input, and ccx's duplicate of the master goes now (nothing
            # still to be written could reach the program).
            self._stdin.connectionLost(Failure(CONNECTION_DONE))
        try:
            self.protocol.childConnectionLost(self._fds[stream])
        except Exception:
            self.log.failure("childConnectionLost failed")
        self._maybe_end()

    def _stop_reading(self) -> None:
        for stream in list(self._open):
            self._end_stream(stream)

    def _maybe_end(self) -> None:
        if self._exit is None or self._open or self._stdin is not None or self._ended:
            return
        self._ended = True
        if self.store is not None:
            # The keeper has forgotten it (or is gone): its notices about it
            # go nowhere from now on, and ccx keeps the total with its journal.
            self.store.take_over()
        self.link.forget(self.process_id)
        self.protocol.processEnded(self._exit)

    # -- to the protocol --------------------------------------------------

    def pauseProducing(self) -> None:
        """
        Stop reading the journal: what ccx has not read stays held (the
        store's hold), and the keeper holds the program back once its
        journal is full of it.
        """
        self._paused = True

    def resumeProducing(self) -> None:
        if not self._paused:
            return
        self._paused = False
        # As a pipe reader resumes: in the next turn, not inside the caller.
        self.reactor.callLater(0, self._pump)

    def stopProducing(self) -> None:
        """
        Stop reading output: what the journal holds past here is not given.
        """
        self._stop_reading()

    def closeChildFD(self, descriptor: int) -> None:
        if descriptor == 0:
            self.closeStdin()
        else:
            for stream, child_fd in self._fds.items():
                if child_fd == descriptor and stream in self._open:
                    self._end_stream(stream)

    def closeStdin(self) -> None:
        """
        Close standard input once what was written is flushed; the keeper
        closes its own descriptor for it at once.
        """
        if self._stdin is not None:
            self._stdin.loseConnection()
            self.link.close_stdin(self.process_id)

    def registerProducer(self, producer: IPushProducer, streaming: bool) -> None:
        if self._stdin is None:
            if self.terminal:
                # Its terminal was closed before this ccx took it back: so
                # is its input.
                self.protocol.childConnectionLost(0)
                return
            raise RuntimeError("the standard input of this process is not open")
        self._stdin.registerProducer(producer, streaming)

    def resize(self, size: WindowSize) -> None:
        """
        Set the size of the program's terminal (through ccx's duplicate of
        its master): the program gets SIGWINCH.

        @raise RuntimeError: when the program has no open terminal.
        @raise OSError: when the terminal is gone.
        """
        if not self.terminal or self._stdin is None or self._stdin.disconnected:
            raise RuntimeError("the program has no open terminal")
        set_window_size(self._stdin.fd, size)

    # The PipeWriter reports to this transport as to a process.
    def childConnectionLost(self, childFD: int) -> None:
        self._stdin = None
        try:
            self.protocol.childConnectionLost(childFD)
        except Exception:
            self.log.failure("childConnectionLost(0) failed")
        self._maybe_end()

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        pass

    def signalProcess(self, signalID: Union[str, int]) -> None:
        """
        Send a signal to the program alone (ccx signals its group).
        """
        if self.pid is None:
            raise ProcessExitedAlready()
        if isinstance(signalID, str):
            signalID = getattr(signal, "SIG" + signalID)
        os.kill(self.pid, signalID)
