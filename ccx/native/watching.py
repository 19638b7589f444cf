"""
The process table as a subscription (C{watch}): a client is told
C{processes.changed} whenever any process starts, pauses, resumes, is
cancelled, ends or is forgotten, whoever started it.
"""

from typing import Any, Dict, Optional

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from ccx.native.wire import process_entry
from ccx.process.registry import ProcessRegistry
from ccx.process.watch import FORGOTTEN
from ccx.rpc.interfaces import INotificationChannel

NOTIFICATION = "processes.changed"


class ProcessTableFeed:
    """
    One connection's C{watch}: changes are gathered for the rest of the
    reactor's turn and sent then, one notification per process with what
    last happened to it and its C{list} entry as it is when sent.  While
    the connection cannot take more, changes wait, at most one per process
    (the registry bounds how many there are), and are sent once it can
    (L{pump}): a client that does not read costs no more than that.

    @param clock: where the end of the turn is scheduled.
    """

    def __init__(
        self, registry: ProcessRegistry, channel: INotificationChannel, clock: IReactorTime
    ) -> None:
        self._registry = registry
        self._channel = channel
        self._clock = clock
        # process id -> (what last happened, the process), in order.
        self._pending: Dict[str, Any] = {}
        self._call: Optional[IDelayedCall] = None
        registry.watch.add(self.changed)

    def changed(self, event: str, process: Any) -> None:
        self._pending.pop(process.process_id, None)
        self._pending[process.process_id] = (event, process)
        if self._call is None:
            self._call = self._clock.callLater(0, self._turn_ended)

    def _turn_ended(self) -> None:
        self._call = None
        self.pump()

    def pump(self) -> None:
        """
        Send what waits, while the connection can take it.
        """
        while self._pending and self._channel.writable:
            process_id = next(iter(self._pending))
            event, process = self._pending.pop(process_id)
            entry = None if event == FORGOTTEN else process_entry(process)
            self._channel.send_notification(
                NOTIFICATION, {"event": event, "process_id": process_id, "process": entry}
            )

    def close(self) -> None:
        self._registry.watch.remove(self.changed)
        self._pending.clear()
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
