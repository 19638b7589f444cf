"""
Waiting instead of polling: a request that answers once a process has new
output past given offsets, or has ended, or at a deadline; and the bound on
how many such requests one client may hold open at once.
"""

from typing import Any, Dict, Optional

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from ccx.output.events import (
    Completion,
    OutputChunk,
    OutputDropped,
    ProcessStarted,
    StateChanged,
)
from ccx.output.fanout import MAX_CHUNK, Subscription
from ccx.output.interfaces import IOutputSink
from ccx.process.managed import ManagedProcess
from ccx.rpc.errors import invalid_params, limit_exceeded

# The longest a request may wait, in seconds.
MAX_WAIT_SECONDS = 60.0
# How many waiting requests one client may have open at once.
MAX_WAITING = 16


class WaitBudget:
    """
    How many waiting requests one client has open, bounded by C{limit}.
    """

    def __init__(self, limit: int = MAX_WAITING) -> None:
        self.limit = limit
        self.open = 0

    def take(self) -> None:
        """
        @raise RPCError: (-32001) when the client already waits C{limit} times.
        """
        if self.open >= self.limit:
            raise limit_exceeded(
                f"limit exceeded: this client already has {self.limit} waiting "
                "requests open; let one answer first (or wait for less time)"
            )
        self.open += 1

    def give(self) -> None:
        self.open -= 1


@implementer(IOutputSink)
class _NewOutput:
    """
    A subscriber that takes nothing: it only notices that there is output
    past its offsets (or that some is no longer held, or the end).
    """

    max_chunk = MAX_CHUNK

    def __init__(self, arrived: Deferred) -> None:
        self._arrived = arrived

    @property
    def writable(self) -> bool:
        return not self._arrived.called

    def _fire(self) -> None:
        if not self._arrived.called:
            self._arrived.callback(None)

    def started(self, event: ProcessStarted) -> None:
        pass

    def output(self, chunk: OutputChunk) -> int:
        self._fire()
        return 0

    def dropped(self, event: OutputDropped) -> None:
        self._fire()

    def changed(self, event: StateChanged) -> None:
        pass

    def completed(self, completion: Completion) -> None:
        self._fire()


class Wait:
    """
    One waiting request: it fires L{done} (with L{None}) once what it waits
    for happens or the deadline passes, and can be cancelled.
    """

    def __init__(self, clock: IReactorTime, seconds: float) -> None:
        self.done: Deferred = Deferred()
        self._subscription: Optional[Subscription] = None
        self._timer = clock.callLater(seconds, self.finish)

    def finish(self, _: Any = None) -> None:
        if self._timer.active():
            self._timer.cancel()
        if self._subscription is not None:
            self._subscription.output.unsubscribe(self._subscription)
            self._subscription = None
        if not self.done.called:
            self.done.callback(None)

    def for_output(self, process: ManagedProcess, offsets: Dict[str, int]) -> "Wait":
        """
        Finish once C{process} has output past C{offsets}, or has ended.
        """
        arrived: Deferred = Deferred()
        arrived.addCallback(self.finish)
        subscription = process.output.subscribe(_NewOutput(arrived), False, dict(offsets))
        self._subscription = subscription
        subscription.activate()
        return self

    def for_end(self, process: ManagedProcess) -> "Wait":
        """
        Finish once C{process} has ended and all its output is in.
        """
        if process.finished:
            self.finish()
        else:

            def ended(result: Any) -> Any:
                self.finish()
                return result

            process.ended.addBoth(ended)
        return self


def wait_seconds(arguments: Dict[str, Any], tool: str, default: float = 0.0) -> float:
    """
    The C{wait_seconds} argument: 0 to L{MAX_WAIT_SECONDS}.
    """
    value = arguments.get("wait_seconds", default)
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not 0 <= value <= MAX_WAIT_SECONDS
    ):
        raise invalid_params(
            f"invalid params: {tool}'s 'wait_seconds' must be a number from 0 to "
            f"{MAX_WAIT_SECONDS:g}"
        )
    return float(value)
