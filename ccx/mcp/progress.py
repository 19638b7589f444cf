"""
C{notifications/progress} for a tool call that runs a program.
"""

from typing import Any, Dict, List, Optional, Union

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from zope.interface import implementer

from ccx.native.wire import whole_characters
from ccx.output.events import (
    Completion,
    OutputChunk,
    OutputDropped,
    ProcessStarted,
    StateChanged,
)
from ccx.output.fanout import MAX_CHUNK, Subscription
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
    @ivar max_chunk: it takes chunks of any size (L{MAX_CHUNK}).
    """

    max_chunk = MAX_CHUNK

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
        # The output text not yet sent, cut from the front once the rest
        # covers MAX_MESSAGE characters (_cut says that it was).
        self._pending: List[str] = []
        self._pending_chars = 0
        self._cut = False
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
        data = whole_characters(chunk.data, chunk.final)
        if not data:
            return 0
        self._add(data.decode("utf-8", "replace"))
        return len(data)

    def dropped(self, event: OutputDropped) -> None:
        self._add(f"\n[{event.size} bytes of {event.stream} skipped]\n")

    def changed(self, event: StateChanged) -> None:
        pass

    def completed(self, completion: Completion) -> None:
        pass

    # -- pacing -------------------------------------------------------------

    def _add(self, text: str) -> None:
        """
        Keep C{text} for the next notification, which shows at most the
        last L{MAX_MESSAGE} characters: what comes before them is let go.
        """
        pending = self._pending
        pending.append(text)
        self._pending_chars += len(text)
        while self._pending_chars - len(pending[0]) >= MAX_MESSAGE:
            self._pending_chars -= len(pending.pop(0))
            self._cut = True
        self._schedule()

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
        cut = self._cut
        self._forget_pending()
        progress = sum(self.subscription.cursors.values())
        if progress <= self._progress:
            return
        if cut or len(text) > MAX_MESSAGE:
            text = "\u2026" + text[-MAX_MESSAGE:]
        self._send(progress, text)

    def _forget_pending(self) -> None:
        self._pending = []
        self._pending_chars = 0
        self._cut = False

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
        self._forget_pending()
        self._cancel_timer()
