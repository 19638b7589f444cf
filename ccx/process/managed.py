"""
A program ccx runs: its state machine, its signals, and its end.
"""

import signal
import time
from dataclasses import dataclass
from enum import Enum
from typing import Callable, Optional

from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.interfaces import IProcessTransport, IPushProducer, IReactorTime
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ccx.journal.record import Record
from ccx.output.events import PTY, STREAMS, Completion, StateChanged
from ccx.output.fanout import ProcessOutput
from ccx.output.interfaces import IOutputStore, IReadControl
from ccx.process.command import Command
from ccx.process.errors import InvalidState, LimitReached, ProcessNotFound, SpawnFailed
from ccx.process.cgroup import Cgroup, CgroupError, Usage
from ccx.process.group import CgroupContainment, EndedGroup, GroupContainment, ProcessGroup
from ccx.process.interfaces import IExecReport, IRecordedProcess
from ccx.process.pipes import TERMINAL_FD
from ccx.process.terminal import EOF_CHARACTER, WindowSize
from ccx.process.timer import PausableTimer


class State(str, Enum):
    """
    Where a process is in its life.  The last four are final: the process
    is I{finished} (its group is empty, its pipes are closed, and its
    completion has been handed to its output), and the state says how it
    ended.
    """

    STARTING = "starting"
    RUNNING = "running"
    PAUSED = "paused"
    # The group leader has exited; what it left behind is being ended and
    # its pipes read to the end.
    EXITED = "exited"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMEOUT = "timeout"

    @property
    def finished(self) -> bool:
        return self in _FINAL


_FINAL = frozenset((State.COMPLETED, State.FAILED, State.CANCELLED, State.TIMEOUT))

_FD_STREAMS = {1: "stdout", 2: "stderr"}
_TERMINAL_STREAMS = {TERMINAL_FD: PTY}

# While members of an ended program's group are still alive, how often to
# look again.  Only the short window between SIGTERM and their death polls.
_GROUP_POLL = 0.02


@dataclass(frozen=True)
class RunOptions:
    """
    How a process is run and watched; see C{execute} in docs/protocol.md.

    @ivar blocking: its output holds the program back rather than lose
        bytes (C{on_full: "block"}).
    @ivar cancel_on_disconnect: the connection that started it cancels it
        when it closes (C{on_disconnect: "cancel"}).
    @ivar encoding: how its starter asked for its output to be carried; the
        process layer keeps it for the edges, and never reads it.
    @ivar durable: it runs under the keeper and outlives this ccx
        (C{durable: true}); it is never cancelled when ccx stops.
    @ivar journal_bytes: for a durable program, how much of its journal
        a blocking subscriber may leave unread before the program is held
        back.
    """

    blocking: bool = True
    cancel_on_disconnect: bool = True
    encoding: str = "utf-8"
    timeout: Optional[float] = None
    kill_grace: float = 5.0
    buffer_bytes: int = 1024 * 1024
    buffer_lines: int = 10000
    durable: bool = False
    journal_bytes: int = 64 * 1024 * 1024


# Spawns a command for a protocol and returns its transport (a spawn
# function with its reactor bound).
Spawner = Callable[[ProcessProtocol, Command], IProcessTransport]


@implementer(IPushProducer)
class _StdinGate:
    """
    The producer of a program's standard input: C{full} while the pipe's
    write buffer is over its limit, C{closed} once the pipe is closed or
    closing.
    """

    full = False
    closed = False

    def pauseProducing(self) -> None:
        self.full = True

    def resumeProducing(self) -> None:
        self.full = False

    def stopProducing(self) -> None:
        self.full = True


@implementer(IReadControl, IExecReport)
class ManagedProcess(ProcessProtocol):
    """
    One program, from spawn to its L{Completion}.

    @ivar state: its L{State}.
    @ivar output: its L{ProcessOutput}.
    @ivar cgroup: the cgroup it runs in, or L{None} (process group only).
    @ivar containment: what holds every process of it once it runs: a
        L{GroupContainment} or a L{CgroupContainment}.
    @ivar ended: a L{Deferred} that fires with this process once it is finished.
    @ivar window: the window size of its terminal, or L{None} for a program
        on pipes.
    @ivar on_change: called with each change of its state (C{paused},
        C{resumed}, C{cancelled}) and itself, besides its subscribers'
        notifications: the registry's L{ProcessWatch}.
    """

    log = Logger()

    def __init__(
        self,
        process_id: str,
        command: Command,
        options: RunOptions,
        clock: IReactorTime,
        owner: Optional[str] = None,
        cgroup: Optional[Cgroup] = None,
    ) -> None:
        self.process_id = process_id
        self.cgroup = cgroup
        self.command = command
        self.options = options
        self.owner = owner
        self._clock = clock
        self.window: Optional[WindowSize] = command.pty
        self._fd_streams = _FD_STREAMS if command.pty is None else _TERMINAL_STREAMS
        self.output = ProcessOutput(
            process_id,
            options.buffer_bytes,
            options.buffer_lines,
            blocking=options.blocking,
            streams=STREAMS if command.pty is None else (PTY,),
        )
        self.state = State.STARTING
        self.pid: Optional[int] = None
        self.containment: Optional[GroupContainment] = None
        self.exit_code: Optional[int] = None
        self.signal_name: Optional[str] = None
        self.started_at: Optional[float] = None
        self.ended_at: Optional[float] = None
        self.ended: Deferred = Deferred()
        # The final state a cancel or a timeout asked for.
        self._ending: Optional[State] = None
        self._error: Optional[str] = None
        # What held it went away (lost): it ran, and ends with its error.
        self._lost = False
        self._started: Optional[Deferred] = None
        self._began = 0.0
        self._duration = 0.0
        self._timeout: Optional[PausableTimer] = None
        self._drain: Optional[PausableTimer] = None
        self._kill_call = None
        self._group_deadline = 0.0
        self._stdin: Optional["_StdinGate"] = None
        self._log_context = {"process_id": process_id, "session_id": owner}
        self.on_change: Optional[Callable[[str, "ManagedProcess"], None]] = None

    # -- starting -------------------------------------------------------

    def start(self, spawner: Spawner) -> Deferred:
        """
        Spawn the program.

        @return: a L{Deferred} that fires once the program itself is running,
            or fails with L{SpawnFailed} saying why it could not start.
        """
        started = self._started = Deferred()
        self._began = time.monotonic()
        try:
            spawner(self, self.command)
        except SpawnFailed as e:
            # The program's own fault (a missing file, a directory that
            # cannot be entered): the client is told why, with no traceback.
            reason = e.message
        except Exception as e:
            self.log.failure("process {process_id}: spawning failed", **self._log_context)
            reason = str(e) or e.__class__.__name__
        else:
            return started
        # No child is left to end: the process is over now.
        self._release_cgroup()
        self.state = State.FAILED
        self.exec_failed(reason)
        self.ended.callback(self)
        return started

    def connectionMade(self) -> None:
        self.pid = self.transport.pid
        group = ProcessGroup(self.pid)
        self.started_at = self._clock.seconds()
        if IRecordedProcess.providedBy(self.transport):
            # Started, perhaps ended, before this ccx saw it: report its
            # real times, and never signal a group that ended unseen (its
            # cgroup, being its own, still may be).
            self.started_at = self.transport.started_at
            if self.transport.group_gone:
                group = EndedGroup(self.pid)
            if self.transport.store is not None:
                # Its output is in the store already, up to where the
                # transport starts handing it on.
                self.output.restore(self.transport.store, self.transport.offsets, 0)
            if self.window is not None and self.transport.window is not None:
                # Its terminal's size as whoever held it found it (a client
                # may have resized it since it started).
                self.window = self.transport.window
        if self.cgroup is not None:
            self.containment = CgroupContainment(group, self.cgroup, self._clock)
        else:
            self.containment = GroupContainment(group)
        if self.command.stdin:
            # The stdin pipe pauses this producer when more than its buffer
            # waits to be written: write() then refuses more, so a program
            # that does not read its input cannot make ccx hold unbounded data.
            self._stdin = _StdinGate()
            self.transport.registerProducer(self._stdin, True)

    def exec_failed(self, reason: str) -> None:
        """
        The program could not be started: start fails with L{SpawnFailed};
        the process is failed once the child has ended (at once when the
        spawner left none).
        """
        self._error = reason
        self.log.warn(
            "process {process_id} could not start: {error}", error=reason, **self._log_context
        )
        started, self._started = self._started, None
        if started is not None:
            started.errback(SpawnFailed(reason))

    def lost(self, reason: str) -> None:
        """
        What held the program is gone (a durable program's keeper): how it
        ends cannot be known.  Whatever is left of it is killed at once
        (nothing of it may run on unmanaged, its output going nowhere), and
        it ends failed, with C{reason} as its error, once its transport has.
        """
        self._error = reason
        self._lost = True
        self.log.error("process {process_id}: {error}", error=reason, **self._log_context)
        if self.containment is not None and self.containment.alive():
            try:
                self.containment.kill()
            except CgroupError as e:
                self.log.warn(
                    "process {process_id}: {error}", error=str(e), **self._log_context
                )

    def exec_succeeded(self) -> None:
        """
        The program runs: back-pressure, the timeout and a cancel asked for
        while starting take effect, and start fires.
        """
        if self.state == State.STARTING:
            self.state = State.RUNNING
        # Back-pressure starts once the program runs: until then nothing
        # of it can arrive.
        if self.state == State.RUNNING:
            self.output.set_reader(self)
        # The audit trail (ccx.session) logs it at info, with who asked.
        self.log.debug(
            "process {process_id} started: {argv} (pid {pid})",
            argv=self.command.argv,
            pid=self.pid,
            **self._log_context,
        )
        if self._ending is not None and self.state == State.RUNNING:
            self._terminate_group()
        recorded = IRecordedProcess.providedBy(self.transport)
        if recorded and self.transport.paused_at is not None and self.state == State.RUNNING:
            # Paused by an earlier ccx, and frozen since: it still is.
            self.state = State.PAUSED
        if self.options.timeout is not None and self.state in (State.RUNNING, State.PAUSED):
            seconds = self.options.timeout
            if recorded:
                # Its running time counts from its start, whatever restarts
                # of ccx happened since; its paused time does not.
                seconds = max(0.0, seconds - self._ran_before())
            self._timeout = PausableTimer(
                self._clock, seconds, lambda: self.cancel(State.TIMEOUT)
            )
            if self.state == State.RUNNING:
                self._timeout.start()
        started, self._started = self._started, None
        if started is not None:
            started.callback(self)

    # -- output ---------------------------------------------------------

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        stream = self._fd_streams.get(childFD)
        if stream is not None:
            self.output.receive(stream, data, self._clock.seconds())

    def childConnectionLost(self, childFD: int) -> None:
        stream = self._fd_streams.get(childFD)
        if stream is not None:
            self.output.end_stream(stream)
        elif childFD == 0 and self._stdin is not None:
            self._stdin.closed = True

    def pauseProducing(self) -> None:
        """
        Back-pressure: stop reading the program's output.
        """
        self.transport.pauseProducing()
        if self._drain is not None:
            self._drain.pause()

    def resumeProducing(self) -> None:
        self.transport.resumeProducing()
        if self._drain is not None:
            self._drain.start()

    # -- control ----------------------------------------------------------

    @property
    def finished(self) -> bool:
        return self.state.finished

    @property
    def ending(self) -> bool:
        """
        Whether a cancel or a timeout is ending it.
        """
        return self._ending is not None

    def _changed(self, change: str) -> None:
        self.output.broadcast(StateChanged(self.process_id, self.pid, change))
        if self.on_change is not None:
            self.on_change(change, self)

    def _check_controllable(self) -> None:
        if self.state == State.STARTING:
            raise InvalidState(f"process {self.process_id!r} is still starting")
        if self.state == State.EXITED or self.finished:
            raise ProcessNotFound(self.process_id, finished=True)
        if self._ending is not None:
            raise InvalidState(f"process {self.process_id!r} is being cancelled")

    def _ran_before(self) -> float:
        """
        How long a recorded program has run (not paused) until now.
        """
        transport = self.transport
        now = self._clock.seconds()
        paused = transport.paused_seconds
        if transport.paused_at is not None:
            paused += max(0.0, now - transport.paused_at)
        return max(0.0, now - (transport.started_at or now) - paused)

    def pause(self) -> None:
        """
        Stop the whole group with SIGSTOP, then freeze its cgroup (what left
        the group stops too).  Pausing a paused process does nothing.
        """
        self._check_controllable()
        if self.state == State.PAUSED:
            return
        self.containment.pause()
        self.state = State.PAUSED
        if IRecordedProcess.providedBy(self.transport):
            self.transport.paused(self._clock.seconds())
        if self._timeout is not None:
            self._timeout.pause()
        self.log.info("process {process_id} paused", **self._log_context)
        self._changed("paused")

    def resume(self) -> None:
        """
        Thaw its cgroup, then continue the whole group with SIGCONT.
        Resuming a running process does nothing.
        """
        self._check_controllable()
        if self.state == State.RUNNING:
            return
        self.containment.resume()
        self.state = State.RUNNING
        if IRecordedProcess.providedBy(self.transport):
            self.transport.paused(None)
        if self._timeout is not None:
            self._timeout.start()
        self.log.info("process {process_id} resumed", **self._log_context)
        self._changed("resumed")

    def cancel(self, ending: State = State.CANCELLED) -> None:
        """
        End the whole group: SIGTERM (and SIGCONT, so that a paused program
        dies too), then after the grace period, if any of it is left,
        SIGKILL to the group or C{cgroup.kill} to everything in its cgroup.

        @param ending: the final state to report, L{State.CANCELLED} or
            L{State.TIMEOUT}.
        """
        if self._ending is not None and self.state != State.EXITED:
            return
        self._check_controllable()
        self._ending = ending
        if self._timeout is not None:
            self._timeout.cancel()
        self.state = State.RUNNING
        self.log.info(
            "process {process_id} cancelled ({status})",
            status=ending.value,
            **self._log_context,
        )
        self._terminate_group()
        self._changed("cancelled")

    def terminate(self, ending: State = State.CANCELLED) -> None:
        """
        End the process whatever its state, for a closed connection or the
        service stopping: one still starting is cancelled as soon as it runs.
        """
        if self.finished or self.state == State.EXITED or self._ending is not None:
            return
        if self.state == State.STARTING:
            self._ending = ending
            return
        self.cancel(ending)

    def send_signal(self, signum: int) -> None:
        self._check_controllable()
        self.log.info(
            "process {process_id}: sending {signal}",
            signal=signal.Signals(signum).name,
            **self._log_context,
        )
        self.containment.signal(signum)

    def write(self, data: bytes, eof: bool = False) -> None:
        """
        Write to the program's standard input: for a program on a terminal,
        type into it (C{eof} types the EOF character, Ctrl-D; the terminal
        stays open).

        @raise InvalidState: when its standard input is not open.
        @raise LimitReached: when it does not read its input as fast as it
            is written.
        """
        self._check_controllable()
        if not self.command.stdin:
            raise InvalidState(
                f"process {self.process_id!r} was started with its standard input "
                "closed",
                parameter="stdin",
            )
        if self._stdin_closed():
            raise InvalidState(
                f"the standard input of process {self.process_id!r} is already closed"
            )
        if data:
            if self._stdin.full:
                raise LimitReached(
                    f"process {self.process_id!r} is not reading its standard input "
                    "as fast as it is written; retry later"
                )
            self.transport.write(data)
        if eof and self.window is not None:
            self.transport.write(EOF_CHARACTER)
        elif eof:
            self._stdin.closed = True
            self.transport.closeStdin()

    def resize(self, size: WindowSize) -> None:
        """
        Change the window size of the program's terminal: its foreground
        process group gets SIGWINCH (when the size changed).

        @raise InvalidState: when it does not run on a terminal.
        """
        self._check_controllable()
        if self.window is None:
            raise InvalidState(
                f"process {self.process_id!r} does not run on a terminal "
                "(start it with 'pty' to resize it)",
                parameter="pty",
            )
        try:
            self.transport.resize(size)
        except (OSError, RuntimeError):
            raise InvalidState(
                f"the terminal of process {self.process_id!r} is already closed"
            ) from None
        self.window = size

    def _stdin_closed(self) -> bool:
        return self._stdin is None or self._stdin.closed

    # -- ending -----------------------------------------------------------

    def _terminate_group(self) -> None:
        """
        SIGTERM and SIGCONT to the group; SIGKILL after the grace period.
        Idempotent: one escalation at a time.
        """
        if self._kill_call is not None:
            return
        self.output.release()
        self.containment.terminate()
        self._kill_call = self._clock.callLater(self.options.kill_grace, self._kill)

    def _kill(self) -> None:
        if self.containment.alive():
            self.log.warn(
                "process {process_id}: {kind} still alive after {grace}s, killing it",
                kind=self.containment.kind,
                grace=self.options.kill_grace,
                **self._log_context,
            )
            try:
                self.containment.kill()
            except CgroupError as e:
                self.log.error("process {process_id}: {error}", error=str(e), **self._log_context)

    def processExited(self, reason: Failure) -> None:
        self._duration = time.monotonic() - self._began
        self.ended_at = self._clock.seconds()
        if IRecordedProcess.providedBy(self.transport) and self.transport.exited_at is not None:
            self.ended_at = self.transport.exited_at
            self._duration = max(0.0, self.ended_at - self.started_at)
        self.state = State.EXITED
        value = reason.value
        if isinstance(value, ProcessTerminated) and value.signal is not None:
            self.exit_code = -value.signal
            self.signal_name = signal.Signals(value.signal).name
        elif isinstance(value, (ProcessDone, ProcessTerminated)):
            self.exit_code = value.exitCode
        if self._timeout is not None:
            self._timeout.cancel()
        self.output.release()
        if self._error is None and self.containment.alive():
            self._terminate_group()
        self._drain = PausableTimer(
            self._clock, self.options.kill_grace, self._stop_draining
        )
        if not self.output.reading_paused:
            self._drain.start()

    def _stop_draining(self) -> None:
        """
        Something of the group still holds the pipes open after the grace
        period: stop waiting for end of file.
        """
        self.log.warn(
            "process {process_id}: output pipes still open {grace}s after exit; closing",
            grace=self.options.kill_grace,
            **self._log_context,
        )
        self.transport.loseConnection()

    def processEnded(self, reason: Failure) -> None:
        if self._drain is not None:
            self._drain.cancel()
        self.output.set_reader(None)
        if self._error is not None and not self._lost:
            # It never ran: nothing of it to wait for or to report.
            self.state = State.FAILED
            self._release_cgroup()
            self.ended.callback(self)
            return
        self._group_deadline = self._clock.seconds() + 2 * self.options.kill_grace
        self._await_empty_group()

    def _await_empty_group(self) -> None:
        members = self.containment.members()
        if members and self._clock.seconds() < self._group_deadline:
            self._clock.callLater(_GROUP_POLL, self._await_empty_group)
            return
        if members:
            self._error = (
                f"{self.containment.label} still has members after SIGKILL: "
                + ", ".join(str(pid) for pid in members)
            )
            self.log.error("process {process_id}: {error}", error=self._error, **self._log_context)
        self._finish()

    def _finish(self) -> None:
        if self._kill_call is not None and self._kill_call.active():
            self._kill_call.cancel()
        self.state = self.outcome
        if self.ended_at is None:
            # Ended with no exit seen (it never ran): now.
            self.ended_at = self._clock.seconds()
        self._release_cgroup()
        completion = self.completion()
        self.log.info(
            "process {process_id} finished: {status} (exit code {exit_code})",
            status=completion.status,
            exit_code=self.exit_code,
            **self._log_context,
        )
        self.output.complete(completion)
        self.ended.callback(self)

    def _release_cgroup(self) -> None:
        """
        The program is over: remove its cgroup (its final usage is kept).
        """
        try:
            if self.containment is not None:
                self.containment.release()
            elif self.cgroup is not None and not self.cgroup.remove():
                raise CgroupError(f"cannot remove cgroup {self.cgroup.path}")
        except CgroupError as e:
            self.log.error("process {process_id}: {error}", error=str(e), **self._log_context)

    @property
    def group(self) -> Optional[ProcessGroup]:
        """
        The program's process group, once it runs.
        """
        return None if self.containment is None else self.containment.group

    @property
    def cgroup_path(self) -> Optional[str]:
        """
        The full path of the program's cgroup (for its record), or L{None}.
        """
        return None if self.cgroup is None else self.cgroup.path

    def usage(self) -> Optional[Usage]:
        """
        CPU time and memory of all of the program's processes, while it runs
        and (the last figures) once it ended; L{None} without a cgroup.
        """
        if self.containment is None:
            return None
        return self.containment.usage()

    @property
    def outcome(self) -> State:
        """
        The final state this process has, or will have if it ends now.
        """
        if self.state.finished:
            return self.state
        if self._ending is not None:
            return self._ending
        return State.COMPLETED if self.exit_code == 0 else State.FAILED

    def completion(self) -> Completion:
        """
        How this process ended (or would have, if it ended now).
        """
        streams = self.output.streams
        return Completion(
            process_id=self.process_id,
            pid=self.pid,
            status=self.outcome.value,
            exit_code=self.exit_code,
            signal=self.signal_name,
            duration=round(self._duration, 6),
            stdout_bytes=streams["stdout"].end if "stdout" in streams else 0,
            stderr_bytes=streams["stderr"].end if "stderr" in streams else 0,
            dropped_bytes=self.output.dropped_bytes,
            error=self._error,
            ended_at=self.ended_at,
            durable=self.options.durable,
            pty_bytes=streams[PTY].end if PTY in streams else None,
        )

    # -- records ------------------------------------------------------------

    def record(self) -> Record:
        """
        This process as the state dir keeps it: how it ended once finished.
        """
        finished = self.finished
        completion = self.completion()
        return Record(
            process_id=self.process_id,
            argv=list(self.command.argv),
            executable=self.command.executable,
            cwd=self.command.cwd,
            started_at=self.started_at,
            pid=self.pid,
            cgroup=self.cgroup_path,
            encoding=self.options.encoding,
            durable=self.options.durable,
            status=completion.status if finished else None,
            ended_at=self.ended_at,
            exit_code=self.exit_code,
            signal=self.signal_name,
            duration=completion.duration,
            stdout_bytes=completion.stdout_bytes,
            stderr_bytes=completion.stderr_bytes,
            dropped_bytes=completion.dropped_bytes,
            error=completion.error,
            pty=None if self.window is None else [self.window.rows, self.window.cols],
            pty_bytes=completion.pty_bytes or 0,
        )

    @classmethod
    def from_record(
        cls, record: Record, store: IOutputStore, clock: IReactorTime
    ) -> "ManagedProcess":
        """
        A process that finished before this service started, as its record
        says, with its output in C{store}: listable and attachable, no more.
        """
        window = None
        if record.pty is not None:
            try:
                window = WindowSize(*record.pty)
            except (TypeError, ValueError):
                # Still a program on a terminal: its stream is pty.
                window = WindowSize(24, 80)
        command = Command(record.executable, list(record.argv), record.cwd, pty=window)
        options = RunOptions(encoding=record.encoding, durable=record.durable)
        process = cls(record.process_id, command, options, clock)
        try:
            process.state = State(record.status)
        except ValueError:
            process.state = State.FAILED
        if not process.state.finished:
            process.state = State.FAILED
        process.pid = record.pid
        process.exit_code = record.exit_code
        process.signal_name = record.signal
        process.started_at = record.started_at
        process.ended_at = record.ended_at
        process._duration = record.duration
        process._error = record.error
        process.output.restore(
            store,
            {
                "stdout": record.stdout_bytes,
                "stderr": record.stderr_bytes,
                PTY: record.pty_bytes,
            },
            record.dropped_bytes,
        )
        process.output.complete(process.completion())
        process.ended.callback(process)
        return process
