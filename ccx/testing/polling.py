"""
Waiting, from outside, for what only looking again can tell: a state the
kernel holds (a stopped process), a figure the service reports (C{/health},
C{list}), a server that has begun to listen.
"""

import inspect
from typing import Any, Callable

from twisted.internet.defer import Deferred, TimeoutError
from twisted.internet.task import deferLater


class Stuck(Exception):
    """
    What always happens quickly did not happen in time.
    """


async def until(
    reactor: Any,
    check: Callable[[], Any],
    timeout: float = 10.0,
    interval: float = 0.01,
    what: str = "condition not reached",
) -> Any:
    """
    Call C{check} (which may return an awaitable) until it returns a true
    value, looking again every C{interval} seconds.

    @return: that value.
    @raise Stuck: after C{timeout} seconds, saying C{what} (and the last
        value seen).
    """
    deadline = reactor.seconds() + timeout
    while True:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if reactor.seconds() > deadline:
            raise Stuck(f"{what} within {timeout:g} s (last: {value!r})")
        await deferLater(reactor, interval, lambda: None)


async def within(d: Deferred, seconds: float, what: str, reactor: Any) -> Any:
    """
    The result of C{d}, or L{Stuck} (saying C{what} did not happen) after
    C{seconds}.
    """
    try:
        return await d.addTimeout(seconds, reactor)
    except TimeoutError:
        raise Stuck(f"{what} within {seconds:g} s")
