"""
Test doubles shared by the unit tests: an output sink, and a managed process
driven without real processes (L{Harness}: a fake spawner connects a fake
process transport, a fake process group records signals, a L{Clock} stands
in for time).
"""

import signal
from typing import Any, Iterable, List, Optional, Tuple

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.interfaces import IAddress, IListeningPort, IPushProducer
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactor
from twisted.python.failure import Failure
from zope.interface import implementer

from ccx.native.wire import NotificationSink
from ccx.output.events import (
    Completion,
    OutputChunk,
    OutputDropped,
    ProcessStarted,
    StateChanged,
)
from ccx.output.interfaces import IOutputSink
from ccx.protocol import UTF8
from ccx.rpc.interfaces import INotificationChannel
from ccx.process.command import Command
from ccx.process.group import GroupContainment
from ccx.process.managed import ManagedProcess, RunOptions

PID = 4242
# How a program that exited 0 ended, for tests of what comes after.
COMPLETION = Completion(
    process_id="p1",
    pid=42,
    status="completed",
    exit_code=0,
    signal=None,
    duration=0.5,
    stdout_bytes=0,
    stderr_bytes=0,
    dropped_bytes=0,
    error=None,
)
START_TIME = 1000.0


@implementer(INotificationChannel)
class FakeChannel:
    """
    A channel that records the notifications sent to it.
    """

    def __init__(self, writable: bool = True) -> None:
        self.writable = writable
        self.sent: List[Tuple[str, dict]] = []

    def send_notification(self, method: str, params: dict) -> None:
        self.sent.append((method, params))

    def methods(self) -> List[str]:
        return [method for method, _ in self.sent]

    def params(self, method: str, stream: Optional[str] = None) -> List[dict]:
        return [
            params
            for sent, params in self.sent
            if sent == method and stream in (None, params.get("type"))
        ]

    def data(self, stream: str = "stdout") -> bytes:
        """
        The bytes of C{stream} given in C{process.output}, joined.
        """
        return b"".join(
            params["data"].encode("utf-8")
            for params in self.params("process.output", stream)
        )


@implementer(IOutputSink)
class FakeSink(FakeChannel):
    """
    A subscriber that records its output as the native notifications a
    client would get (through L{NotificationSink}), so that tests read
    what goes on the wire.
    """

    def __init__(self, writable: bool = True, encoding: str = UTF8) -> None:
        super().__init__(writable)
        self.wire = NotificationSink(self, encoding)
        self.max_chunk = self.wire.max_chunk

    def started(self, event: ProcessStarted) -> None:
        self.wire.started(event)

    def output(self, chunk: OutputChunk) -> int:
        return self.wire.output(chunk)

    def dropped(self, event: OutputDropped) -> None:
        self.wire.dropped(event)

    def changed(self, event: StateChanged) -> None:
        self.wire.changed(event)

    def completed(self, completion: Completion) -> None:
        self.wire.completed(completion)


@implementer(IListeningPort)
class FakePort:
    """
    A listening port at a given address, that records being stopped.
    """

    def __init__(self, address: IAddress) -> None:
        self.address = address
        self.listening = True

    def startListening(self) -> None:
        self.listening = True

    def stopListening(self) -> None:
        self.listening = False

    def getHost(self) -> IAddress:
        return self.address


@implementer(IPushProducer)
class RecordingProducer:
    """
    A push producer recording what it is asked: C{"pause"}, C{"resume"},
    C{"stop"}, in order.
    """

    def __init__(self) -> None:
        self.events: List[str] = []

    def pauseProducing(self) -> None:
        self.events.append("pause")

    def resumeProducing(self) -> None:
        self.events.append("resume")

    def stopProducing(self) -> None:
        self.events.append("stop")


class BindingReactor(MemoryReactor):
    """
    A L{MemoryReactor} whose ports report the address asked for, as a real
    port reports the one it bound: the interface given (IPv4 or IPv6, or a
    name as it was given), or every interface when none was.

    @ivar ports: the ports it made, in order.
    """

    def __init__(self) -> None:
        super().__init__()
        self.ports: List[FakePort] = []

    def _port(self, port: int, interface: str) -> FakePort:
        if ":" in interface:
            address: IAddress = IPv6Address("TCP", interface, port)
        else:
            address = IPv4Address("TCP", interface or "0.0.0.0", port)
        self.ports.append(FakePort(address))
        return self.ports[-1]

    def listenTCP(self, port: int, factory: Any, backlog: int = 50, interface: str = "") -> FakePort:
        super().listenTCP(port, factory, backlog, interface)
        return self._port(port, interface)

    def listenSSL(
        self, port: int, factory: Any, contextFactory: Any, backlog: int = 50, interface: str = ""
    ) -> FakePort:
        super().listenSSL(port, factory, contextFactory, backlog, interface)
        return self._port(port, interface)

    def listenUNIX(
        self, address: str, factory: Any, backlog: int = 50, mode: int = 0o666, wantPID: int = 0
    ) -> FakePort:
        super().listenUNIX(address, factory, backlog, mode, wantPID)
        self.ports.append(FakePort(UNIXAddress(address)))
        return self.ports[-1]


class TurnClock(Clock):
    """
    A L{Clock} that also runs one reactor turn at a time: L{turn} runs only
    the calls due when it begins, as one iteration of a reactor does
    (C{advance(0)} would also run the calls those schedule for now).
    """

    def turn(self) -> None:
        due = [c for c in self.getDelayedCalls() if c.getTime() <= self.seconds()]
        for call in due:
            # An earlier call of this turn may have cancelled it.
            if call.active():
                self.calls.remove(call)
                call.called = 1
                call.func(*call.args, **call.kw)


class FakeProcessTransport:
    """
    A process transport that records what is done to it.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.pauses = 0
        self.resumes = 0
        self.written: List[bytes] = []
        self.stdin_closes = 0
        self.lost = 0

    def pauseProducing(self) -> None:
        self.pauses += 1

    def resumeProducing(self) -> None:
        self.resumes += 1

    def registerProducer(self, producer, streaming: bool) -> None:
        self.stdin_producer = producer

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def closeStdin(self) -> None:
        self.stdin_closes += 1

    def loseConnection(self) -> None:
        self.lost += 1


class FakeGroup:
    """
    A process group whose members the test decides, recording signals.
    """

    def __init__(self, pgid: int) -> None:
        self.pgid = pgid
        self.pids: List[int] = [pgid]
        self.signals: List[int] = []

    def signal(self, signum: int) -> bool:
        self.signals.append(signum)
        return bool(self.pids)

    def members(self) -> List[int]:
        return list(self.pids)

    def alive(self) -> bool:
        return bool(self.pids)


class FakeSpawner:
    """
    A spawner that connects the protocol to a L{FakeProcessTransport}, or
    raises C{error}.
    """

    def __init__(self, pid: int = PID, error: Optional[Exception] = None) -> None:
        self.pid = pid
        self.error = error
        self.transport: Optional[FakeProcessTransport] = None
        self.commands: List[Command] = []

    def __call__(
        self, protocol: ProcessProtocol, command: Command
    ) -> FakeProcessTransport:
        self.commands.append(command)
        if self.error is not None:
            raise self.error
        self.transport = FakeProcessTransport(self.pid)
        protocol.makeConnection(self.transport)
        return self.transport


def make_command(stdin: bool = False) -> Command:
    return Command("/usr/bin/prog", ["prog", "--flag"], "/tmp", {"A": "1"}, stdin)


def exit_reason(code: Optional[int] = 0, signum: Optional[int] = None) -> Failure:
    """
    The reason Twisted gives for a child's exit.
    """
    if signum is None and code == 0:
        return Failure(ProcessDone(0))
    return Failure(ProcessTerminated(exitCode=code, signal=signum))


def run_options(
    on_full: str = "block", on_disconnect: str = "cancel", **options: object
) -> RunOptions:
    """
    L{RunOptions} from the words a client uses.
    """
    return RunOptions(
        blocking=on_full == "block",
        cancel_on_disconnect=on_disconnect == "cancel",
        **options,
    )


class Harness:
    """
    A L{ManagedProcess} spawned with fakes, and the steps of its life.
    """

    def __init__(
        self,
        process_id: str = "p1",
        stdin: bool = False,
        pid: int = PID,
        owner: Optional[str] = "s1",
        clock: Optional[Clock] = None,
        start: bool = True,
        **options: object,
    ) -> None:
        if clock is None:
            clock = Clock()
            clock.advance(START_TIME)
        self.clock = clock
        self.process = ManagedProcess(
            process_id, make_command(stdin), run_options(**options), clock, owner
        )
        self.spawner = FakeSpawner(pid)
        self.group = FakeGroup(pid)
        self.reason = exit_reason()
        if start:
            self.start()

    def start(self, registry=None) -> "Harness":
        """
        Spawn the program with the fake spawner (through C{registry} when
        given) and swap in the fake group.
        """
        if registry is not None:
            self.started = registry.start(self.process, self.spawner)
        else:
            self.started = self.process.start(self.spawner)
        self.transport = self.spawner.transport
        self.process.containment = GroupContainment(self.group)
        return self

    def run(self) -> "Harness":
        """
        The spawner reports that the program runs.
        """
        self.process.exec_succeeded()
        return self

    def fail_exec(self, message: str = "'/usr/bin/prog': No such file") -> None:
        """
        The spawner reports that the program could not be started.
        """
        self.process.exec_failed(message)

    def subscribe(self, writable: bool = True, blocking: bool = True) -> FakeSink:
        sink = FakeSink(writable)
        self.process.output.subscribe(sink, blocking).activate()
        return sink

    def exit(
        self,
        code: Optional[int] = 0,
        signum: Optional[int] = None,
        leftovers: Iterable[int] = (),
    ) -> None:
        """
        The group leader exits, leaving C{leftovers} alive in its group.
        """
        self.group.pids = list(leftovers)
        self.reason = exit_reason(code, signum)
        self.process.processExited(self.reason)

    def close_pipes(self) -> None:
        self.process.childConnectionLost(1)
        self.process.childConnectionLost(2)

    def end(self) -> None:
        self.process.processEnded(self.reason)

    def finish(self, code: Optional[int] = 0, signum: Optional[int] = None) -> None:
        """
        Exit, close the pipes and end, with nothing left in the group.
        """
        self.exit(code, signum)
        self.close_pipes()
        self.end()

    def signal_names(self) -> List[str]:
        return [signal.Signals(s).name for s in self.group.signals]
