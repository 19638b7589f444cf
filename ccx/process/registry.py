"""
Every process the service knows, live or finished and still kept.
"""

import uuid
from collections import Counter
from functools import partial
from typing import Callable, Dict, List, Optional

from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from ccx.journal.program import PTY_STREAMS, STREAMS
from ccx.journal.record import Record, write_record
from ccx.journal.statedir import StateDir
from ccx.journal.store import ProgramJournal
from ccx.output.budget import OutputBudget
from ccx.process.managed import ManagedProcess, Spawner, State
from ccx.process.errors import InvalidState, LimitReached, ProcessNotFound, SpawnFailed
from ccx.process.pacing import SpawnPacer
from ccx.process.watch import ENDED, FORGOTTEN, STARTED, ProcessWatch


class ProcessRegistry:
    """
    The processes of one ccx service.

    @param max_processes: how many may be live (not finished) at once.
    @param keep_finished: seconds a finished process stays listable and
        attachable before it is forgotten.
    @param max_finished: how many finished processes are kept at most (with
        their held output): past that the oldest is forgotten at once, even
        while a subscriber is still behind (it gets what it missed as
        dropped, then the completion), so that memory stays bounded however
        many programs finish and however slowly clients read.
    @param held_output_bytes: the most output all processes together hold
        for their subscribers (see L{OutputBudget}).
    @param max_waiting: how many programs may wait for their turn to start
        (see L{SpawnPacer}); by default as many as may be live.
    @ivar held_output: that L{OutputBudget}.
    @ivar state_dir: the L{StateDir} keeping each process's record and
        journal (L{use_state_dir}), or L{None} for none.
    @ivar pacer: the L{SpawnPacer} that starts them a few per reactor turn.
    @ivar watch: the L{ProcessWatch} told of every process's changes.
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        max_processes: int,
        keep_finished: float,
        max_finished: int = 64,
        held_output_bytes: int = 256 * 1024 * 1024,
        max_waiting: Optional[int] = None,
    ) -> None:
        self._clock = clock
        self.max_processes = max_processes
        self.keep_finished = keep_finished
        self.max_finished = max_finished
        self.held_output = OutputBudget(held_output_bytes)
        self._processes: Dict[str, ManagedProcess] = {}
        self._live: Dict[str, ManagedProcess] = {}
        self._forget_calls: Dict[str, object] = {}
        self._stopping = False
        self.started_total = 0
        self.finished_total: Counter = Counter()
        # Output of processes no longer kept, so that totals never go down.
        self.retired_bytes: Counter = Counter()
        self.on_spawned: Optional[Callable[[float], None]] = None
        self.state_dir: Optional[StateDir] = None
        self._journals: Dict[str, ProgramJournal] = {}
        self.pacer = SpawnPacer(clock, max_processes if max_waiting is None else max_waiting)
        self.watch = ProcessWatch()

    def use_state_dir(self, state_dir: StateDir) -> None:
        """
        Keep records and journals in C{state_dir}, and take up the finished
        programs it holds (those whose C{keep_finished} has passed are
        forgotten, their directories deleted).
        """
        self.state_dir = state_dir
        finished = sorted(state_dir.finished_records(), key=lambda r: r.ended_at or 0.0)
        now = self._clock.seconds() if finished else 0.0
        for record in finished:
            age = max(0.0, now - (record.ended_at or 0.0))
            if age >= self.keep_finished or record.process_id in self._processes:
                state_dir.remove(record.process_id)
                continue
            try:
                # Its streams from its record: a stream that got no byte
                # left no file to tell it by.
                journal = state_dir.load(
                    record.process_id, PTY_STREAMS if record.pty is not None else STREAMS
                )
            except OSError as e:
                self.log.error(
                    "cannot read the journal of process {process_id}: {error}",
                    process_id=record.process_id,
                    error=e.strerror,
                )
                continue
            process = ManagedProcess.from_record(record, journal, self._clock)
            self._journals[record.process_id] = journal
            self._processes[record.process_id] = process
            self._forget_calls[record.process_id] = self._clock.callLater(
                self.keep_finished - age, self._expire, record.process_id
            )
        self._trim_finished()

    def unfinished_records(self) -> List[Record]:
        """
        The records of programs still running when the service that started
        them stopped: left in the state dir for whoever re-adopts them.
        """
        if self.state_dir is None:
            return []
        return self.state_dir.unfinished_records()

    def _keep_journal(self, process: ManagedProcess) -> None:
        """
        Give a new process its journal; without one (the state dir cannot
        be written) it runs with its memory buffer alone, and says why.
        """
        if self.state_dir is None or process.options.durable:
            # A durable program's journal is the keeper's to write.
            return
        try:
            journal = self.state_dir.create(process.process_id, tuple(process.output.streams))
        except OSError as e:
            process.output.store_error = f"journal cannot be created: {e.strerror}"
            self.log.error(
                "process {process_id}: {error}",
                process_id=process.process_id,
                error=process.output.store_error,
            )
            return
        self._journals[process.process_id] = journal
        process.output.set_store(journal)

    def _write_record(self, process: ManagedProcess) -> None:
        journal = self._journals.get(process.process_id)
        if process.options.durable and process.finished and self.state_dir is not None:
            # The keeper writes a durable program's record while it runs;
            # ccx has the last word on how it ended (cancelled, timeout).
            directory = self.state_dir.directory(process.process_id)
            write = lambda record: write_record(directory, record)  # noqa: E731
        elif journal is not None:
            write = journal.write_record
        else:
            return
        try:
            write(process.record())
        except OSError as e:
            self.log.error(
                "process {process_id}: cannot write its record: {error}",
                process_id=process.process_id,
                error=e.strerror,
            )

    @staticmethod
    def new_process_id() -> str:
        return uuid.uuid4().hex

    @property
    def live_count(self) -> int:
        return len(self._live)

    def check_capacity(self) -> None:
        """
        @raise LimitReached: when no further process may start.
        """
        if len(self._live) >= self.max_processes:
            raise LimitReached(
                f"{len(self._live)} processes are running, the most allowed; wait "
                "for one to finish or cancel one",
                setting="max_processes",
                value=self.max_processes,
            )

    def start(self, process: ManagedProcess, spawner: Spawner) -> Deferred:
        """
        Track a process and spawn it, now or once its turn comes: a few
        start in one reactor turn (L{SpawnPacer}), so that a burst of
        requests cannot keep the reactor from reaping the programs that
        already exited, which would count against the limit meanwhile.

        The limit is checked when the program's turn comes: one that waited
        is refused only if C{max_processes} are live then.  Until then the
        process is not tracked (it has no pid to show); a process
        L{terminated <ManagedProcess.terminate>} while it waits never runs.

        @return: a L{Deferred} that fires with the process once the program
            runs, or fails with L{SpawnFailed} saying why it could not start,
            or with the L{ProcessError} that refused it after it waited.
        @raise LimitReached: when no further process may start, or too many
            wait.
        @raise SpawnFailed: when the service is stopping.
        """
        self._check_running()
        return self.pacer.submit(partial(self._spawn, process, spawner))

    def adopt(self, process: ManagedProcess, spawner: Spawner) -> Deferred:
        """
        Track a durable process this service did not start (it ran before
        this start of ccx), at once and whatever the process limit, which
        bounds only what clients start.  Its output is read from the
        keeper's journal: ccx keeps no second one.
        """
        process.output.budget = self.held_output
        self._processes[process.process_id] = process
        self._live[process.process_id] = process
        # Watched as any other: a dashboard sees it pause, resume and end.
        process.on_change = self.watch.notify
        process.ended.addCallback(self._ended)
        return process.start(spawner)

    def _check_running(self) -> None:
        """
        @raise SpawnFailed: once the service is stopping: a program it
            started now would outlive it.
        """
        if self._stopping:
            raise SpawnFailed("ccx is stopping; the program was not started")

    def _spawn(self, process: ManagedProcess, spawner: Spawner) -> Deferred:
        self._check_running()
        if process.outcome is State.CANCELLED:
            # Terminated while it waited (its connection closed, its MCP
            # request was cancelled): nobody wants it to run any more.
            raise InvalidState(f"process {process.process_id!r} was cancelled before it started")
        self.check_capacity()
        process.output.budget = self.held_output
        self._keep_journal(process)
        self._processes[process.process_id] = process
        self._live[process.process_id] = process
        process.on_change = self.watch.notify
        process.ended.addCallback(self._ended)
        began = self._clock.seconds()

        def running(result: ManagedProcess) -> ManagedProcess:
            self.started_total += 1
            self._write_record(result)
            if self.on_spawned is not None:
                self.on_spawned(self._clock.seconds() - began)
            self.watch.notify(STARTED, result)
            return result

        return process.start(spawner).addCallback(running)

    def _ended(self, process: ManagedProcess) -> ManagedProcess:
        self._live.pop(process.process_id, None)
        ran = process.output.completion is not None
        self.finished_total[process.state.value if ran else "spawn_failed"] += 1
        if ran:
            self._write_record(process)
            self.watch.notify(ENDED, process)
        if self._stopping:
            # The service is stopping: nobody will list or attach to it, but
            # a connection still delivering its output gets it all first.
            if not self._delivering(process):
                # Forgotten once everyone else waiting for its end (an MCP
                # execute, whose answer carries its output) has had it: a
                # callback added now runs after those already there.
                process.ended.addBoth(self._forget_after, process.process_id)
        elif not ran:
            self._forget(process.process_id)
        else:
            self._forget_calls[process.process_id] = self._clock.callLater(
                self.keep_finished, self._expire, process.process_id
            )
            self._trim_finished()
        return process

    @staticmethod
    def _delivering(process: ManagedProcess) -> bool:
        """
        Whether a subscriber has still to be given this process's output
        or its completion: C{keep_finished} does not forget it before then
        (C{max_finished} and the output budget still bound what it holds).
        """
        return any(s.delivering for s in process.output.subscriptions)

    def _trim_finished(self) -> None:
        """
        Forget the oldest finished processes while more than
        C{max_finished} are kept, whoever is still reading them.
        """
        excess = len(self._forget_calls) - self.max_finished
        # Dicts keep insertion order: the first is the oldest finished.
        for process_id in list(self._forget_calls)[: max(0, excess)]:
            self._forget_calls[process_id].cancel()
            self._forget(process_id)

    def _expire(self, process_id: str) -> None:
        process = self._processes.get(process_id)
        if process is not None and self._delivering(process):
            self._forget_calls[process_id] = self._clock.callLater(
                self.keep_finished, self._expire, process_id
            )
            return
        self._forget(process_id)

    def forget(self, process_id: str) -> None:
        """
        Forget a finished process now, as C{keep_finished} would later: its
        record, its held output and its journal.

        @raise ProcessNotFound: when there is no such process.
        @raise InvalidState: when it has not finished.
        """
        process = self.get(process_id)
        if not process.finished:
            raise InvalidState(
                f"process {process_id!r} is still running: cancel it or wait for it "
                "to end before forgetting it"
            )
        call = self._forget_calls.get(process_id)
        if call is not None:
            call.cancel()
        self._forget(process_id)

    def _forget_after(self, result: object, process_id: str) -> object:
        self._forget(process_id)
        return result

    def _forget(self, process_id: str) -> None:
        self._forget_calls.pop(process_id, None)
        self._journals.pop(process_id, None)
        process = self._processes.pop(process_id, None)
        if process is None:
            return
        self.watch.notify(FORGOTTEN, process)
        output = process.output
        if self._stopping and output.completion is not None:
            # The service is stopping: its record and journal stay, for
            # the next start.
            self.retired_bytes.update(output.totals())
            output.close()
            return
        if output.completion is None:
            # Nobody is told anything more: the program never ran.
            self.retired_bytes.update(output.totals())
            output.close()
        else:
            # Retiring counts as dropped what subscribers had not read.
            output.retire()
            self.retired_bytes.update(output.totals())
        if self.state_dir is not None:
            self.state_dir.remove(process_id)

    def output_totals(self) -> Counter:
        """
        Bytes written and dropped by every process since the service started.
        """
        totals = Counter(self.retired_bytes)
        for process in self._processes.values():
            totals.update(process.output.totals())
        return totals

    def get(self, process_id: str, live: bool = False) -> ManagedProcess:
        """
        @param live: refuse a process that has finished.
        @raise ProcessNotFound: when there is no such process.
        """
        process = self._processes.get(process_id)
        if process is None:
            raise ProcessNotFound(process_id)
        if live and process.finished:
            raise ProcessNotFound(process_id, finished=True)
        return process

    def find(self, process_id: str) -> Optional[ManagedProcess]:
        return self._processes.get(process_id)

    def all(self) -> List[ManagedProcess]:
        return list(self._processes.values())

    def live(self) -> List[ManagedProcess]:
        return list(self._live.values())

    def shutdown(self) -> Deferred:
        """
        Cancel every live process that is not durable and forget every
        finished one, except those whose output a connection is still
        delivering: the connections close once delivered
        (L{ccx.node.Node.close_connections}).  Durable processes go on
        running under the keeper, which the next start re-adopts them from.

        @return: a L{Deferred} that fires once every cancelled process has
            finished.
        """
        self._stopping = True
        # Those still waiting for their turn are refused now, not after.
        self.pacer.flush()
        waiting = []
        for process in self.live():
            if process.options.durable and not process.ending:
                continue
            # One being cancelled is waited for, durable or not: its client
            # asked for its end.
            process.terminate()
            waiting.append(process.ended)
        for process_id, call in list(self._forget_calls.items()):
            call.cancel()
            del self._forget_calls[process_id]
            if not self._delivering(self._processes[process_id]):
                self._forget(process_id)
        if not waiting:
            return succeed(None)
        return DeferredList(waiting).addCallback(lambda _: None)
