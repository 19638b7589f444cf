"""
The pieces the scenarios are made of: running coroutines side by side,
calling patiently, waiting for what only C{/proc} can tell, sampling the
service's memory, and reading slowly.
"""

import statistics
from typing import Any, Callable, Coroutine, Dict, Iterable, List, Optional

from twisted.internet.defer import Deferred, DeferredSemaphore, FirstError, gatherResults
from twisted.internet.task import LoopingCall

from ccx.cli.client import CallError
from ccx.protocol import LIMIT_EXCEEDED
from ccx.stress.target import Connection, Target
from ccx.testing.polling import Stuck, until
from ccx.testing.proc import stopped as is_stopped


async def gather(coroutines: Iterable[Coroutine[Any, Any, Any]]) -> List[Any]:
    """
    Run coroutines concurrently; their results in order, or the first
    failure raised.
    """
    return await _all([Deferred.fromCoroutine(c) for c in coroutines])


async def _all(deferreds: List[Deferred]) -> List[Any]:
    try:
        return await gatherResults(deferreds, consumeErrors=True)
    except FirstError as e:
        e.subFailure.raiseException()


async def bounded(
    concurrency: int, jobs: Iterable[Callable[[], Coroutine[Any, Any, Any]]]
) -> List[Any]:
    """
    Run C{jobs} (coroutine functions), at most C{concurrency} at a time.
    """
    semaphore = DeferredSemaphore(concurrency)
    return await _all(
        [semaphore.run(lambda job=job: Deferred.fromCoroutine(job())) for job in jobs]
    )


async def call_patiently(connection: Connection, method: str, params: dict) -> Any:
    """
    Call a method, trying again shortly when the service's per-connection
    rate limit (-32001) refuses it.
    """
    while True:
        try:
            return await connection.call(method, params)
        except CallError as e:
            if e.code != LIMIT_EXCEEDED:
                raise
            connection.target.rate_limited += 1
            await connection.target.sleep(0.05)


async def until_state(target: Target, pid: int, stopped: bool, timeout: float = 2.0) -> bool:
    """
    Wait until process C{pid} is stopped (C{T} in C{/proc}), or is not;
    whether it got there in time.
    """

    def reached() -> Optional[str]:
        now = is_stopped(pid)
        if now is None:
            return "gone"
        return "there" if now == stopped else None

    try:
        return await until(target.reactor, reached, timeout, 0.001) == "there"
    except Stuck:
        return False


def spread(values: List[float], digits: int = 3) -> Dict[str, float]:
    """
    Median and maximum (and p99 for many values), for the figures.
    """
    if not values:
        return {}
    ordered = sorted(values)
    figures = {
        "p50": round(statistics.median(ordered), digits),
        "max": round(ordered[-1], digits),
    }
    if len(ordered) >= 20:
        figures["p99"] = round(ordered[int(len(ordered) * 0.99) - 1], digits)
    return figures


class RssSampler:
    """
    The service's RSS, sampled every C{interval} seconds while running.

    @ivar samples: C{(seconds since start, MiB)}.
    """

    def __init__(self, target: Target, interval: float = 1.0) -> None:
        self._target = target
        self._interval = interval
        self.samples: List[tuple] = []
        self._loop = LoopingCall(self._sample)
        self._loop.clock = target.reactor
        self._began = 0.0

    def start(self) -> "RssSampler":
        self._began = self._target.reactor.seconds()
        if self._target.pid is not None:
            self._loop.start(self._interval)
        return self

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()
        self._sample()

    def _sample(self) -> None:
        rss = self._target.rss_mib()
        if rss is not None:
            self.samples.append((self._target.reactor.seconds() - self._began, rss))

    @property
    def peak(self) -> Optional[float]:
        return round(max(rss for _, rss in self.samples), 1) if self.samples else None


class Throttle:
    """
    Makes a connection read at about C{rate} bytes per second: its socket is
    read only while what it received is under what the rate allows.
    """

    def __init__(self, connection: Connection, rate: float) -> None:
        self._connection = connection
        self._rate = rate
        self._loop = LoopingCall(self._tick)
        self._loop.clock = connection.target.reactor
        self._began = 0.0

    def start(self) -> None:
        self._began = self._connection.target.reactor.seconds()
        self._loop.start(0.01)

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()
        self._connection.start_reading()

    def _tick(self) -> None:
        allowed = self._rate * (self._connection.target.reactor.seconds() - self._began)
        if self._connection.tracker.received_bytes > allowed:
            self._connection.stop_reading()
        else:
            self._connection.start_reading()
