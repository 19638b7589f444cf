"""
How many calls a connection may make.
"""

from twisted.internet.interfaces import IReactorTime


class TokenBucket:
    """
    Allow C{rate} calls per second on average, and bursts of up to C{burst}.
    """

    def __init__(self, clock: IReactorTime, rate: float, burst: float = 0) -> None:
        self._clock = clock
        self.rate = rate
        self.burst = burst or rate
        self._tokens = self.burst
        self._last = clock.seconds()

    def take(self) -> bool:
        """
        @return: whether one more call is allowed now.
        """
        now = self._clock.seconds()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False
