"""
ccx's end of the keeper's socket: starting the keeper when the first
durable program starts, connecting to it again at every start, and carrying
the messages of L{ccx.keeper.messages} between it and each program's
L{KeeperTransport}.
"""

import fcntl
import os
import signal
import sys
from collections import deque
from typing import Any, Callable, Deque, Dict, List, Optional

from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.internet.endpoints import UNIXClientEndpoint
from twisted.internet.error import ConnectError
from twisted.internet.interfaces import IFileDescriptorReceiver
from twisted.internet.protocol import Factory, ProcessProtocol
from twisted.logger import Logger
from twisted.protocols.basic import LineOnlyReceiver
from twisted.python.failure import Failure
from zope.interface import implementer

from ccx.durable.transport import KeeperTransport
from ccx.keeper import messages as m
from ccx.durable.orphans import is_same_process
from ccx.journal.program import Space
from ccx.journal.record import Record, RecordError, read_record
from ccx.journal.statedir import PROGRAMS
from ccx.process.cgroup import Cgroup
from ccx.process.command import Command
from ccx.process.group import ProcessGroup

# When the connection to a keeper that still runs drops: how many times ccx
# tries to connect again, the first wait and the longest (doubling between):
# about 20 s in all, well within the keeper's HOLD_GRACE.
RECONNECT_ATTEMPTS = 10
RECONNECT_FIRST = 0.1
RECONNECT_LONGEST = 4.0
# The directory that holds the ccx package: the keeper imports it from there.
_SOURCE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class KeeperUnavailable(Exception):
    """
    No keeper could be reached (or started); the message says why.
    """


@implementer(IFileDescriptorReceiver)
class KeeperProtocol(LineOnlyReceiver):
    """
    One connection to the keeper: lines in, lines out, and the descriptors
    that come with C{spawned} and C{adopted} (a program's standard input).
    """

    delimiter = b"\n"
    MAX_LENGTH = m.MAX_LINE
    log = Logger()

    def __init__(self, link: "KeeperLink") -> None:
        self.link = link
        self.greeted: Deferred = Deferred()
        self._descriptors: Deque[int] = deque()

    def connectionMade(self) -> None:
        self.send({"type": m.HELLO, "version": m.VERSION})

    def send(self, message: Dict[str, Any]) -> None:
        self.transport.write(m.encode(message))

    def fileDescriptorReceived(self, descriptor: int) -> None:
        self._descriptors.append(descriptor)

    def lineReceived(self, line: bytes) -> None:
        try:
            message = m.decode(line)
        except m.BadMessage as e:
            self.log.error("the keeper sent {error}; disconnecting", error=str(e))
            self.transport.loseConnection()
            return
        descriptor = None
        if message["type"] in (m.SPAWNED, m.ADOPTED) and message.get("stdin"):
            descriptor = self._descriptors.popleft() if self._descriptors else None
        if message["type"] == m.HELLO and not self.greeted.called:
            self.greeted.callback(message)
            return
        if message["type"] == m.ERROR and not self.greeted.called:
            self.greeted.errback(KeeperUnavailable(f"the keeper refused: {message.get('message')}"))
            return
        self.link.received(message, descriptor)

    def lineLengthExceeded(self, line: bytes) -> None:
        self.log.error("the keeper sent a line too long; disconnecting")
        self.transport.loseConnection()

    def connectionLost(self, reason: Failure = None) -> None:
        while self._descriptors:
            os.close(self._descriptors.popleft())
        if not self.greeted.called:
            self.greeted.errback(KeeperUnavailable("the keeper closed the connection"))
        self.link.disconnected(self)


class _KeeperStart(ProcessProtocol):
    """
    The process that starts the keeper: it exits once the keeper listens
    (0), or says on its standard error why it could not.
    """

    def __init__(self) -> None:
        self.done: Deferred = Deferred()
        self._errors = b""

    def errReceived(self, data: bytes) -> None:
        self._errors = (self._errors + data)[-4096:]

    def processEnded(self, reason: Failure) -> None:
        code = getattr(reason.value, "exitCode", None)
        if code == 0:
            self.done.callback(None)
        else:
            text = self._errors.decode("utf-8", "replace").strip() or f"exit status {code}"
            self.done.errback(KeeperUnavailable(f"the keeper could not start: {text}"))


class KeeperLink:
    """
    The keeper of one state dir, as ccx reaches it.

    @param python: the interpreter that runs the keeper.
    """

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        state_dir: str,
        journal_bytes: int = 64 * 1024 * 1024,
        segment_bytes: int = 8 * 1024 * 1024,
        python: str = sys.executable,
    ) -> None:
        """
        @param journal_bytes: the most output each program's journal holds
            (C{--journal-bytes}).
        @param segment_bytes: the size of its segments (the state dir's).
        """
        self.reactor = reactor
        self.state_dir = os.path.abspath(state_dir)
        self.journal_bytes = journal_bytes
        self.segment_bytes = segment_bytes
        self.python = python
        self.keeper_pid: Optional[int] = None
        self._protocol: Optional[KeeperProtocol] = None
        self._hello: Dict[str, Any] = {}
        self._connecting: Optional[Deferred] = None
        self._waiting: List[Deferred] = []
        self._transports: Dict[str, KeeperTransport] = {}
        self._unknown: Dict[str, Callable[[], None]] = {}
        self._closing = False
        self._directory: Optional[int] = None
        # The state dir's total (set by the service): durable programs'
        # journals count in it when the keeper can evict for it.
        self.space: Optional[Space] = None

    # -- the connection ----------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._protocol is not None

    def connect(self, start: bool) -> Deferred:
        """
        Connect to the keeper, starting it first when C{start} and none
        listens.

        @return: a L{Deferred} that fires with the keeper's C{hello} once
            connected, or fails with L{KeeperUnavailable}.
        """
        waiter: Deferred = Deferred()
        if self._protocol is not None:
            waiter.callback(self._hello)
            return waiter
        self._waiting.append(waiter)
        if self._connecting is None:
            self._connecting = Deferred.fromCoroutine(self._connect(start))
            self._connecting.addBoth(self._connected)
        return waiter

    def _connected(self, result: Any) -> None:
        self._connecting = None
        waiting, self._waiting = self._waiting, []
        for waiter in waiting:
            if isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(result)

    async def _connect(self, start: bool) -> Dict[str, Any]:
        try:
            protocol = await self._open()
        except (ConnectError, OSError):
            if not start:
                raise KeeperUnavailable("no keeper runs for this state dir")
            await self._start_keeper()
            try:
                protocol = await self._open()
            except (ConnectError, OSError) as e:
                raise KeeperUnavailable(f"the keeper does not answer: {e}")
        hello = await protocol.greeted
        self._protocol = protocol
        self._hello = hello
        self.keeper_pid = hello.get("pid")
        return hello

    def _socket_path(self) -> str:
        """
        The keeper's socket: by a path through an open descriptor of the
        state dir when its own path is too long for a unix socket address.
        """
        path = os.path.join(self.state_dir, m.SOCKET_NAME)
        if len(path.encode()) < 100:
            return path
        if self._directory is None:
            self._directory = os.open(self.state_dir, os.O_PATH)
        return f"/proc/self/fd/{self._directory}/{m.SOCKET_NAME}"

    def _open(self) -> Deferred:
        endpoint = UNIXClientEndpoint(self.reactor, self._socket_path(), timeout=5)
        return endpoint.connect(Factory.forProtocol(lambda: KeeperProtocol(self)))

    def _start_keeper(self) -> Deferred:
        os.makedirs(self.state_dir, mode=0o700, exist_ok=True)
        starter = _KeeperStart()
        argv = [self.python, "-S", "-m", "ccx.keeper", "--state-dir", self.state_dir]
        # Only what the keeper needs: it hands programs their own environment.
        env = {"PYTHONPATH": _SOURCE_ROOT, "PATH": os.defpath, "LC_ALL": "C.UTF-8"}
        self.log.info("starting the keeper of {state_dir}", state_dir=self.state_dir)
        self.reactor.spawnProcess(
            starter, self.python, argv, env=env, path="/", childFDs={0: "w", 1: "r", 2: "r"}
        )
        return starter.done

    def keeper_alive(self) -> bool:
        """
        Whether a keeper runs for this state dir: one holds C{keeper.lock}
        (the kernel lets it go when the keeper ends, however it ends).
        """
        try:
            fd = os.open(os.path.join(self.state_dir, m.LOCK_NAME), os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            return False
        try:
            # Shared and let go at once: only a keeper's exclusive lock blocks it.
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        except OSError:
            return False
        finally:
            os.close(fd)
        return False

    def disconnected(self, protocol: KeeperProtocol) -> None:
        """
        The connection ended.  While the keeper runs, its programs run on:
        ccx connects again and takes each back (L{_reconnect}); only a
        keeper that is gone takes them with it.
        """
        if protocol is not self._protocol:
            return
        self._protocol = None
        if self._closing:
            return
        if not self._transports:
            self.log.warn("the connection to the keeper closed")
            return
        self.log.warn("the connection to the keeper closed; connecting again")
        Deferred.fromCoroutine(self._reconnect())

    async def _reconnect(self) -> None:
        delay = RECONNECT_FIRST
        for attempt in range(RECONNECT_ATTEMPTS):
            if not self.keeper_alive():
                self._lose_all("its keeper is gone: the program's output pipes went with it")
                return
            try:
                await self.connect(start=False)
            except KeeperUnavailable as e:
                self.log.info(
                    "the keeper does not answer ({error}); trying again in {delay} s",
                    error=str(e),
                    delay=delay,
                )
                await deferLater(self.reactor, delay, lambda: None)
                delay = min(delay * 2, RECONNECT_LONGEST)
                continue
            if self._closing:
                return
            self.log.info(
                "connected to the keeper again: taking back {count} programs",
                count=len(self._transports),
            )
            for process_id, transport in list(self._transports.items()):
                self._ask_adopt(process_id, transport)
            return
        if self.keeper_alive():
            self._lose_all(
                f"its keeper (pid {self.keeper_pid}) runs but does not answer "
                f"after {RECONNECT_ATTEMPTS} attempts: ccx cannot follow the program"
            )
        else:
            self._lose_all("its keeper is gone: the program's output pipes went with it")

    def _lose_all(self, reason: str) -> None:
        """
        No keeper holds the programs any more: each is told how it ended,
        from its record when that says so, else that it was lost for
        C{reason} (and what is left of it is killed).
        """
        self.log.error("{reason}", reason=reason)
        transports, self._transports = dict(self._transports), {}
        self._unknown.clear()
        for process_id, transport in transports.items():
            self._unheld(process_id, transport, reason)

    def close(self) -> None:
        """
        ccx is stopping: leave the keeper, which keeps the durable programs
        (and holds nothing back for this ccx any more).
        """
        self._closing = True
        if self._protocol is not None:
            self._protocol.send({"type": m.LEAVE})
            self._protocol.transport.loseConnection()
        if self._directory is not None:
            os.close(self._directory)
            self._directory = None

    def _send(self, message: Dict[str, Any]) -> None:
        if self._protocol is not None:
            self._protocol.send(message)

    # -- programs ---------------------------------------------------------

    def spawn(
        self, protocol: Any, command: Command, cgroup: Optional[Cgroup] = None
    ) -> KeeperTransport:
        """
        Have the keeper start C{command} for C{protocol} (a
        L{ccx.process.managed.ManagedProcess}), in C{cgroup} when it has
        one: a L{ccx.process.managed.Spawner}.  The transport reports the
        outcome when the keeper answers.
        """
        transport = self._transport(protocol.process_id, protocol)
        self._transports[protocol.process_id] = transport
        options = protocol.options
        message = {
            "type": m.SPAWN,
            "id": protocol.process_id,
            "argv": list(command.argv),
            "executable": command.executable,
            "cwd": command.cwd,
            "env": dict(command.env),
            "stdin": command.stdin,
            "blocking": options.blocking,
            "journal_bytes": self.journal_bytes,
            "segment_bytes": self.segment_bytes,
            "cgroup": None if cgroup is None else cgroup.path,
            "encoding": options.encoding,
            "merge_stderr": command.merge_stderr,
            # On a terminal of this size, made by the keeper.
            "pty": None if command.pty is None else [command.pty.rows, command.pty.cols],
        }

        def refused(failure: Failure) -> None:
            self._transports.pop(protocol.process_id, None)
            transport.spawn_failed(failure.getErrorMessage())

        def send(hello: Dict[str, Any]) -> None:
            if command.pty is not None and "pty" not in hello.get("features", ()):
                # A keeper an older ccx started would run it on pipes.
                self._transports.pop(protocol.process_id, None)
                transport.spawn_failed(
                    "the keeper of this state dir was started by an older ccx and cannot "
                    "hold terminals; a durable program on a terminal can start once it "
                    "has exited (when it holds no program)"
                )
                return
            self._send(message)
            if options.timeout is not None:
                # In its record: the next ccx counts it from the start.
                self.note(protocol.process_id, {"timeout": options.timeout})

        self.connect(start=True).addCallbacks(send, refused)
        return transport

    def _transport(self, process_id: str, protocol: Any) -> KeeperTransport:
        return KeeperTransport(
            self.reactor,
            self,
            self.state_dir,
            process_id,
            protocol,
            self.segment_bytes,
            terminal=protocol.command.pty is not None,
        )

    def adopt(self, record: Record, protocol: Any, command: Command) -> KeeperTransport:
        """
        Take back a durable program of this state dir for C{protocol}: from
        the keeper when it holds it, else from its record and journal.
        """
        process_id = record.process_id
        transport = self._transport(process_id, protocol)
        transport.paused_seconds = float(record.extra.get("paused_seconds") or 0.0)
        paused_at = record.extra.get("paused_at")
        transport.paused_at = None if paused_at is None else float(paused_at)
        self._transports[process_id] = transport

        def absent(failure: Failure) -> None:
            self._unheld(process_id, transport)

        self.connect(start=False).addCallbacks(
            lambda hello: self._ask_adopt(process_id, transport), absent
        )
        return transport

    def _ask_adopt(self, process_id: str, transport: KeeperTransport) -> None:
        self._unknown[process_id] = lambda: self._unheld(process_id, transport)
        self._send({"type": m.ADOPT, "id": process_id})

    def _unheld(
        self,
        process_id: str,
        transport: KeeperTransport,
        lost: str = "its keeper no longer holds it: how it ended is unknown",
    ) -> None:
        """
        The keeper does not hold a program its record says runs: it ended
        meanwhile (the record says how), or it was lost for the reason
        C{lost} (its keeper is gone).
        """
        try:
            record = read_record(os.path.join(self.state_dir, PROGRAMS, process_id))
        except RecordError as e:
            if transport.connected:
                transport.keeper_lost(f"its record cannot be read: {e}")
            else:
                transport.spawn_failed(f"its record cannot be read: {e}")
            return
        if not transport.connected:
            replay(transport, record)
        elif record.exit_code is not None:
            # Followed before the connection dropped: it ended meanwhile.
            transport.ended_unseen(record.exit_code, record.ended_at)
        else:
            transport.keeper_lost(lost)

    def hold(
        self, process_id: str, offsets: Optional[Dict[str, int]], full: bool = False
    ) -> None:
        """
        @param full: the state dir's total holds the program back (a keeper
            without the feature C{total} ignores it).
        """
        self._send({"type": m.HOLD, "id": process_id, "offsets": offsets, "full": full})

    def total_space(self) -> Optional[Space]:
        """
        The state dir's total, when the keeper connected to can keep it
        (feature C{total}): a keeper an older ccx started cannot, and its
        programs are bounded by C{--journal-bytes} alone.
        """
        if "total" not in self._hello.get("features", ()):
            return None
        return self.space

    def evict(self, process_id: str, stream: str, start: int) -> None:
        self._send({"type": m.EVICT, "id": process_id, "stream": stream, "start": start})

    def note(self, process_id: str, extra: Dict[str, Any]) -> None:
        """
        Have the keeper keep C{extra} in the program's record (its timeout,
        its paused time).
        """
        self._send({"type": m.NOTE, "id": process_id, "extra": extra})

    def close_stdin(self, process_id: str) -> None:
        self._send({"type": m.CLOSE_STDIN, "id": process_id})

    def forget(self, process_id: str) -> None:
        """
        A program's transport has ended: the keeper's notices about it, if
        any come, go nowhere.
        """
        self._transports.pop(process_id, None)
        self._unknown.pop(process_id, None)

    def received(self, message: Dict[str, Any], descriptor: Optional[int]) -> None:
        """
        A message from the keeper, for the program it names.
        """
        kind = message["type"]
        process_id = message.get("id")
        if kind == m.UNKNOWN:
            unheld = self._unknown.pop(process_id, None)
            if unheld is not None:
                unheld()
            return
        transport = self._transports.get(process_id)
        if transport is None:
            if descriptor is not None:
                os.close(descriptor)
            if kind == m.ERROR:
                self.log.error("the keeper said: {message}", message=message.get("message"))
            return
        if kind == m.SPAWNED:
            transport.spawned(
                message["pid"],
                message["started_at"],
                descriptor,
                closed=message.get("closed", ()),
            )
        elif kind == m.ADOPTED and transport.connected:
            # Taken back after the connection dropped: what it missed.
            self._unknown.pop(process_id, None)
            if descriptor is not None:
                os.close(descriptor)  # its own is still open
            transport.readopted(
                ends=message.get("ends") or {},
                closed=message.get("closed", ()),
                stdin=bool(message.get("stdin")),
                returncode=message.get("returncode"),
                exited_at=message.get("ended_at"),
            )
        elif kind == m.ADOPTED:
            self._unknown.pop(process_id, None)
            transport.spawned(
                message["pid"],
                message["started_at"],
                descriptor,
                ends=message.get("ends"),
                closed=message.get("closed", ()),
                returncode=message.get("returncode"),
                exited_at=message.get("ended_at"),
                window=message.get("pty"),
            )
        elif kind == m.SPAWN_FAILED:
            del self._transports[process_id]
            transport.spawn_failed(message["reason"])
        elif kind == m.OUTPUT:
            transport.output(message["stream"], message["end"])
        elif kind == m.CLOSED:
            transport.closed(message["stream"])
        elif kind == m.EVICTED:
            transport.evicted(message["stream"], message["start"], message["end"])
        elif kind == m.KEPT:
            transport.kept(message["stream"], message["start"], bool(message.get("gone")))
        elif kind == m.EXITED:
            transport.exited(message["returncode"], message.get("ended_at"))


def replay(
    transport: KeeperTransport,
    record: Record,
    lost: str = "its keeper ended while it ran: how it ended is unknown",
) -> None:
    """
    Tell C{transport}'s protocol a program the keeper no longer holds, from
    its record and journal: how it ended, or, when its record says it runs,
    that it was lost, for the reason C{lost} (what is left of its group is
    killed first, when its leader is still the process the record names).
    """
    pid = record.pid
    ended = record.exit_code is not None
    alive = not ended and pid is not None and is_same_process(pid, record.started_at)
    transport.spawned(
        pid,
        record.started_at,
        closed=transport.streams,
        group_gone=not alive,
    )
    if ended:
        transport.exited(record.exit_code, record.ended_at)
        return
    if alive:
        ProcessGroup(pid).signal(signal.SIGKILL)
    transport.keeper_lost(lost)
