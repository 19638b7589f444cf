"""
Every process the service knows, live or finished and still kept.
"""

import uuid
from typing import Dict, List, Optional

from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from ccx.process.managed import ManagedProcess
from ccx.rpc.errors import limit_exceeded, process_not_found


class ProcessRegistry:
    """
    The processes of one ccx service.

    @param max_processes: how many may be live (not finished) at once.
    @param keep_finished: seconds a finished process stays listable and
        attachable before it is forgotten.
    """

    log = Logger()

    def __init__(
        self, clock: IReactorTime, max_processes: int, keep_finished: float
    ) -> None:
        self._clock = clock
        self.max_processes = max_processes
        self.keep_finished = keep_finished
        self._processes: Dict[str, ManagedProcess] = {}
        self._live: Dict[str, ManagedProcess] = {}
        self._forget_calls: Dict[str, object] = {}
        self._stopping = False

    @staticmethod
    def new_process_id() -> str:
        return uuid.uuid4().hex

    @property
    def live_count(self) -> int:
        return len(self._live)

    def check_capacity(self) -> None:
        """
        @raise RPCError: -32001 when no further process may start.
        """
        if len(self._live) >= self.max_processes:
            raise limit_exceeded(
                f"limit exceeded: {len(self._live)} processes are running, the most "
                f"allowed (--max-processes {self.max_processes}); wait for one to "
                "finish or cancel one"
            )

    def add(self, process: ManagedProcess) -> None:
        """
        Track a process from its spawn on.
        """
        self.check_capacity()
        self._processes[process.process_id] = process
        self._live[process.process_id] = process
        process.ended.addCallback(self._ended)

    def _ended(self, process: ManagedProcess) -> ManagedProcess:
        self._live.pop(process.process_id, None)
        if process.output.completion is None or self._stopping:
            # It never ran, or the service is stopping: nobody will list or
            # attach to it.
            self._processes.pop(process.process_id, None)
        else:
            self._forget_calls[process.process_id] = self._clock.callLater(
                self.keep_finished, self._forget, process.process_id
            )
        return process

    def _forget(self, process_id: str) -> None:
        self._forget_calls.pop(process_id, None)
        process = self._processes.pop(process_id, None)
        if process is not None:
            process.output.close()

    def get(self, process_id: str, live: bool = False) -> ManagedProcess:
        """
        @param live: refuse a process that has finished.
        @raise RPCError: -32003 when there is no such process.
        """
        process = self._processes.get(process_id)
        if process is None:
            raise process_not_found(process_id)
        if live and process.finished:
            raise process_not_found(process_id, finished=True)
        return process

    def find(self, process_id: str) -> Optional[ManagedProcess]:
        return self._processes.get(process_id)

    def all(self) -> List[ManagedProcess]:
        return list(self._processes.values())

    def live(self) -> List[ManagedProcess]:
        return list(self._live.values())

    def shutdown(self) -> Deferred:
        """
        Cancel every live process and forget every finished one.

        @return: a L{Deferred} that fires once every process has finished.
        """
        self._stopping = True
        waiting = []
        for process in self.live():
            process.terminate()
            waiting.append(process.ended)
        for process_id, call in list(self._forget_calls.items()):
            call.cancel()
            self._forget(process_id)
        if not waiting:
            return succeed(None)
        return DeferredList(waiting).addCallback(lambda _: None)
