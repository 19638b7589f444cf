"""
Tests for L{ccx.process.pacing.SpawnPacer}, with a L{TurnClock} standing for
the reactor's turns.
"""

from typing import List

from twisted.internet.defer import Deferred, succeed
from twisted.trial.unittest import SynchronousTestCase

from ccx.process.errors import InvalidState, LimitReached, ProcessError
from ccx.process.pacing import SPAWNS_PER_TURN, SpawnPacer
from ccx.rpc.errors import LIMIT_EXCEEDED, rpc_error
from tests.fakes import TurnClock


class SpawnPacerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = TurnClock()
        self.pacer = SpawnPacer(self.clock, max_waiting=10, per_turn=3)
        self.ran: List[int] = []

    def job(self, number: int):
        def run() -> Deferred:
            self.ran.append(number)
            return succeed(number)

        return run

    def submit(self, count: int, first: int = 0) -> List[Deferred]:
        return [self.pacer.submit(self.job(first + n)) for n in range(count)]

    def test_default_pace(self) -> None:
        """By default a few programs start per turn."""
        self.assertEqual(SpawnPacer(self.clock, max_waiting=1).per_turn, SPAWNS_PER_TURN)
        self.assertGreaterEqual(SPAWNS_PER_TURN, 1)

    def test_lone_job_runs_at_once(self) -> None:
        """A job with nothing waiting before it runs at once, and no call is left."""
        d = self.pacer.submit(self.job(1))
        self.assertEqual(self.successResultOf(d), 1)
        self.assertEqual(self.ran, [1])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_per_turn(self) -> None:
        """Past per_turn in one turn, jobs wait, then run per_turn a turn in the order they came."""
        started = self.submit(8)
        self.assertEqual(self.ran, [0, 1, 2])
        self.assertEqual(self.pacer.waiting, 5)
        for d in started[3:]:
            self.assertNoResult(d)
        self.clock.turn()
        self.assertEqual(self.ran, [0, 1, 2, 3, 4, 5])
        self.assertNoResult(started[6])
        self.clock.turn()
        self.assertEqual(self.ran, list(range(8)))
        self.assertEqual([self.successResultOf(d) for d in started], list(range(8)))
        self.assertEqual(self.pacer.waiting, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_newcomer_waits_behind(self) -> None:
        """A job submitted while others wait runs after them; once none waits, the turn's share is used at once."""
        self.submit(5)
        self.assertEqual(self.ran, [0, 1, 2])
        self.clock.turn()
        self.assertEqual(self.ran, [0, 1, 2, 3, 4])
        # This turn ran two: one more runs at once, the next waits.
        self.submit(1, first=5)
        self.assertEqual(self.ran, [0, 1, 2, 3, 4, 5])
        self.submit(1, first=6)
        self.assertEqual(self.pacer.waiting, 1)
        self.clock.turn()
        self.assertEqual(self.ran, list(range(7)))

    def test_max_waiting(self) -> None:
        """max_waiting jobs may wait; one more is refused at once with -32001."""
        self.submit(3 + 10)
        self.assertEqual(self.pacer.waiting, 10)
        error = self.assertRaises(LimitReached, self.pacer.submit, self.job(99))
        rpc = rpc_error(error)
        self.assertEqual(rpc.code, LIMIT_EXCEEDED)
        self.assertIn("10 programs are already waiting", rpc.message)
        self.assertEqual(self.pacer.waiting, 10)
        self.clock.turn()
        self.assertNotIn(99, self.ran)
        # Room again: it may wait now.
        self.pacer.submit(self.job(100))
        self.assertEqual(self.pacer.waiting, 8)

    def test_refusal_when_its_turn_comes(self) -> None:
        """What a waiting job raises when it runs fails its Deferred; the next still run."""

        def refused() -> Deferred:
            raise InvalidState("no")

        self.submit(3)
        d = self.pacer.submit(refused)
        after = self.pacer.submit(self.job(3))
        self.clock.turn()
        self.assertIsInstance(self.failureResultOf(d, ProcessError).value, InvalidState)
        self.assertEqual(self.successResultOf(after), 3)

    def test_refusal_at_once_raises(self) -> None:
        """A job run at once raises to the submitter, as it would without pacing."""

        def refused() -> Deferred:
            raise LimitReached("full")

        self.assertRaises(LimitReached, self.pacer.submit, refused)

    def test_flush(self) -> None:
        """flush runs every waiting job at once and leaves no call."""
        started = self.submit(9)
        self.pacer.flush()
        self.assertEqual(self.ran, list(range(9)))
        self.assertEqual([self.successResultOf(d) for d in started], list(range(9)))
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.pacer.flush()


class TurnClockTests(SynchronousTestCase):
    def test_turn(self) -> None:
        """A turn runs what is due, not what that schedules for now, nor later calls."""
        clock = TurnClock()
        ran: List[str] = []
        clock.callLater(0, lambda: (ran.append("a"), clock.callLater(0, ran.append, "b")))
        victims = []
        clock.callLater(0, lambda: victims[0].cancel())
        victims.append(clock.callLater(0, ran.append, "x"))
        clock.callLater(1, ran.append, "later")
        clock.turn()
        self.assertEqual(ran, ["a"])
        clock.turn()
        self.assertEqual(ran, ["a", "b"])
        clock.turn()
        self.assertEqual(ran, ["a", "b"])
        clock.advance(1)
        self.assertEqual(ran, ["a", "b", "later"])
