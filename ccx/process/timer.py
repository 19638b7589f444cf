"""
A timer whose clock stops while the thing it times is paused.
"""

from typing import Callable, Optional

from twisted.internet.interfaces import IDelayedCall, IReactorTime


class PausableTimer:
    """
    Call C{action} after C{seconds} of running time.

    Used for C{timeout} (time spent paused does not count) and for draining
    pipes (time spent not reading them because of back-pressure does not
    count).
    """

    def __init__(
        self, clock: IReactorTime, seconds: float, action: Callable[[], None]
    ) -> None:
        self._clock = clock
        self._remaining = seconds
        self._action = action
        self._call: Optional[IDelayedCall] = None
        self._started_at = 0.0
        self._done = False

    @property
    def running(self) -> bool:
        return self._call is not None

    def start(self) -> None:
        """
        Start (or resume) counting.
        """
        if self._done or self._call is not None:
            return
        self._started_at = self._clock.seconds()
        self._call = self._clock.callLater(self._remaining, self._fire)

    def pause(self) -> None:
        if self._call is None:
            return
        self._call.cancel()
        self._call = None
        self._remaining -= self._clock.seconds() - self._started_at

    def cancel(self) -> None:
        self.pause()
        self._done = True

    def _fire(self) -> None:
        self._call = None
        self._done = True
        self._action()
