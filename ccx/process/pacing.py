"""
Starting programs a few at a time, so that a burst of requests does not
hold the reactor for one long turn.
"""

from collections import deque
from typing import Callable, Deque, Optional, Tuple

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from ccx.process.errors import LimitReached

# Spawns per reactor turn: each costs the parent a vfork and the child's
# exec (0.2 ms idle, a few ms on a loaded machine), so a turn stays short
# while a burst still starts hundreds of programs a second.
SPAWNS_PER_TURN = 4

# What starts one program: returns its start Deferred, or raises a refusal.
Job = Callable[[], Deferred]


class SpawnPacer:
    """
    Runs jobs at most C{per_turn} in a reactor turn, the rest in the order
    they came over the following turns, so that between them the reactor
    reaps exits, sends replies and answers C{/health}.

    A job runs at once while no other waits and this turn's share is not
    spent, as a lone request's does: pacing costs it nothing.  A turn's
    share is counted from the last paced turn; it is only reset when jobs
    wait, so a count left from an earlier turn can at worst make one job
    wait a turn it need not have.

    @ivar per_turn: jobs run in one turn.
    @ivar max_waiting: jobs that may wait; past that a job is refused.
    """

    def __init__(
        self, clock: IReactorTime, max_waiting: int, per_turn: int = SPAWNS_PER_TURN
    ) -> None:
        self._clock = clock
        self.per_turn = per_turn
        self.max_waiting = max_waiting
        self._waiting: Deque[Tuple[Job, Deferred]] = deque()
        self._spent = 0
        self._call: Optional[IDelayedCall] = None

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def submit(self, job: Job) -> Deferred:
        """
        Run C{job} now if it may, else once its turn comes.

        @return: C{job}'s L{Deferred}, or one that fires with its result
            (or its refusal) once it ran.
        @raise LimitReached: when C{max_waiting} jobs already wait.
        @raise Exception: what C{job} raises, when it runs at once.
        """
        if not self._waiting and self._spent < self.per_turn:
            self._spent += 1
            return job()
        if len(self._waiting) >= self.max_waiting:
            raise LimitReached(
                f"{len(self._waiting)} programs are already waiting for their turn "
                "to start, the most allowed; retry later"
            )
        result: Deferred = Deferred()
        self._waiting.append((job, result))
        if self._call is None:
            self._call = self._clock.callLater(0, self._turn)
        return result

    def _turn(self) -> None:
        """
        A new reactor turn: run the next C{per_turn} waiting jobs.
        """
        self._call = None
        self._spent = 0
        while self._waiting and self._spent < self.per_turn:
            self._spent += 1
            self._run_next()
        if self._waiting:
            self._call = self._clock.callLater(0, self._turn)

    def _run_next(self) -> None:
        job, result = self._waiting.popleft()
        maybeDeferred(job).chainDeferred(result)

    def flush(self) -> None:
        """
        Run every waiting job now, whatever the pace (the service is
        stopping: each is refused, and its requester told at once).
        """
        if self._call is not None:
            self._call.cancel()
            self._call = None
        while self._waiting:
            self._run_next()
