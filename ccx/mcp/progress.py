"""
C{notifications/progress} for a tool call that runs a program.
"""

from typing import Any, Dict, List, Optional, Union

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from zope.interface import implementer

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
    the program; it is writable only while its channel is and once per
    L{PROGRESS_INTERVAL}, so the output path's own back-pressure is what
    paces it and what it skips is reported as skipped, never queued.

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
        self._ready = True
        self._pumping = False
        self._closed = False
        self._timer: Optional[IDelayedCall] = None

    @property
    def writable(self) -> bool:
        return self._ready and not self._closed and self._channel.writable

    def announce(self, message: str) -> None:
        """
        Send the first notification (progress 0), before any output.
        """
        self._send(0, message)

    def send_notification(self, method: str, params: dict) -> None:
        if method == "process.output":
            self._pending.append(params["data"])
        elif method == "process.dropped":
            self._pending.append(
                f"\n[{params['bytes']} bytes of {params['type']} skipped]\n"
            )
        else:
            return
        if not self._pumping and self._timer is None:
            # Output read from the pipe just now: take what else is there
            # in a moment, once the subscription has moved its cursors.
            self._ready = False
            self._timer = self._clock.callLater(0, self._tick)

    def finish(self) -> None:
        """
        The program has finished: send what output is left (whatever the
        rate), then nothing more.
        """
        subscription = self.subscription
        if not self._closed and subscription is not None:
            if self._timer is not None and self._timer.active():
                self._timer.cancel()
            self._timer = None
            self._ready = True
            self._pumping = True
            try:
                subscription.output.pump(subscription)
            finally:
                self._pumping = False
            self._flush()
        self.close()

    def close(self) -> None:
        """
        The request is answered (or cancelled): send nothing more.
        """
        self._closed = True
        self._pending = []
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

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
        self._ready = False
        self._timer = self._clock.callLater(self._interval, self._tick)

    def _tick(self) -> None:
        self._timer = None
        self._ready = True
        subscription = self.subscription
        if self._closed or subscription is None:
            return
        self._pumping = True
        try:
            subscription.output.pump(subscription)
        finally:
            self._pumping = False
        self._flush()
