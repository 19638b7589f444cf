"""
C{notifications/progress} for a tool call that runs a program.
"""

from typing import Any, Dict, List, Optional, Union

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from zope.interface import implementer

from ccx.native.wire import complete_utf8_length
from ccx.output.events import (
    Completion,
    OutputChunk,
    OutputDropped,
    ProcessStarted,
    StateChanged,
)
from ccx.output.fanout import Subscription
from ccx.output.interfaces import IOutputSink
from ccx.rpc.interfaces import INotificationChannel

# At most one notification per this many seconds; output arriving meanwhile
# is carried by the next one.
PROGRESS_INTERVAL = 0.1
# The most characters of output one notification's message carries (its
# tail); the tool's result holds the output itself.
MAX_MESSAGE = 4000

ProgressToken = Union[str, int]


@implementer(IOutputSink)
class ProgressReporter:
    """
    Turns a process's output into C{notifications/progress} on the channel
    of the request that started it: C{progress} is the number of output
    bytes so far (it grows with every notification), C{message} the output
    text since the previous one.

    It is a dropping subscriber of the process's output, so it never slows
    the program.  It takes output while its channel is writable, sends it
    in a notification at the next turn of the reactor, and then takes
    nothing for L{PROGRESS_INTERVAL}: the output path's own back-pressure
    paces it, and what it skips meanwhile is reported as skipped, never
    queued.

    @ivar subscription: its subscription, set by whoever subscribes it.
    """

    def __init__(
        self,
        channel: INotificationChannel,
        token: ProgressToken,
        clock: IReactorTime,
        interval: float = PROGRESS_INTERVAL,
    ) -> None:
        self.subscription: Optional[Subscription] = None
        self._channel = channel
        self._token = token
        self._clock = clock
        self._interval = interval
        self._pending: List[str] = []
        self._progress = 0
        self._resting = False
        self._closed = False
        self._timer: Optional[IDelayedCall] = None

    @property
    def writable(self) -> bool:
        return not self._resting and not self._closed and self._channel.writable

    def announce(self, message: str) -> None:
        """
        Send the first notification (progress 0), before any output.
        """
        self._send(0, message)

    # -- IOutputSink --------------------------------------------------------

    def started(self, event: ProcessStarted) -> None:
        pass

    def output(self, chunk: OutputChunk) -> int:
        data = chunk.data
        if not chunk.final:
            data = data[: complete_utf8_length(data)]
            if not data:
                return 0
        self._pending.append(data.decode("utf-8", "replace"))
        self._schedule()
        return len(data)

    def dropped(self, event: OutputDropped) -> None:
        self._pending.append(f"\n[{event.size} bytes of {event.stream} skipped]\n")
        self._schedule()

    def changed(self, event: StateChanged) -> None:
        pass

    def completed(self, completion: Completion) -> None:
        pass

    # -- pacing -------------------------------------------------------------

    def _schedule(self) -> None:
        """
        Send what was taken at the next turn of the reactor, once the
        subscription has given everything it has now.
        """
        if self._timer is None:
            self._timer = self._clock.callLater(0, self._flush_later)

    def _flush_later(self) -> None:
        self._timer = None
        self._flush()

    def _flush(self) -> None:
        if self._closed or not self._pending or self.subscription is None:
            return
        text = "".join(self._pending)
        self._pending = []
        progress = sum(self.subscription.cursors.values())
        if progress <= self._progress:
            return
        if len(text) > MAX_MESSAGE:
            text = "\u2026" + text[-MAX_MESSAGE:]
        self._send(progress, text)

    def _send(self, progress: int, message: str) -> None:
        self._progress = progress
        params: Dict[str, Any] = {
            "progressToken": self._token,
            "progress": progress,
            "message": message,
        }
        self._channel.send_notification("notifications/progress", params)
        self._rest()

    def _rest(self) -> None:
        """
        Take nothing for one interval, then take what has come meanwhile.
        """
        self._resting = True
        self._cancel_timer()
        self._timer = self._clock.callLater(self._interval, self._wake)

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _wake(self) -> None:
        self._timer = None
        self._resting = False
        if not self._closed and self.subscription is not None:
            self.subscription.pump()

    # -- ending -------------------------------------------------------------

    def finish(self) -> None:
        """
        The program has finished: send what output is left (whatever the
        rate), then nothing more.
        """
        subscription = self.subscription
        if not self._closed and subscription is not None:
            self._cancel_timer()
            self._resting = False
            subscription.pump()
            self._flush()
        self.close()

    def close(self) -> None:
        """
        The request is answered (or cancelled): send nothing more.
        """
        self._closed = True
        self._pending = []
        self._cancel_timer()
