"""
Tests for L{ccx.process.timer.PausableTimer}, driven by a fake clock.
"""

from typing import List

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from ccx.process.timer import PausableTimer


class PausableTimerTests(SynchronousTestCase):
    """
    A timer that counts only the time between C{start} and C{pause}.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.fired: List[float] = []
        self.timer = PausableTimer(self.clock, 10.0, self._action)

    def _action(self) -> None:
        self.fired.append(self.clock.seconds())

    def test_not_started(self) -> None:
        """A timer that was never started does not fire."""
        self.clock.advance(100)
        self.assertEqual(self.fired, [])
        self.assertFalse(self.timer.running)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_fires_after_seconds(self) -> None:
        """A started timer fires once, exactly after its seconds."""
        self.timer.start()
        self.assertTrue(self.timer.running)
        self.clock.advance(9.999)
        self.assertEqual(self.fired, [])
        self.clock.advance(0.001)
        self.assertEqual(self.fired, [10.0])
        self.assertFalse(self.timer.running)
        self.clock.advance(100)
        self.assertEqual(self.fired, [10.0])

    def test_start_is_idempotent(self) -> None:
        """Starting a running timer neither restarts nor doubles it."""
        self.timer.start()
        self.clock.advance(4)
        self.timer.start()
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.clock.advance(6)
        self.assertEqual(self.fired, [10.0])

    def test_pause_stops_counting(self) -> None:
        """Time spent paused does not count."""
        self.timer.start()
        self.clock.advance(4)
        self.timer.pause()
        self.assertFalse(self.timer.running)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(50)
        self.assertEqual(self.fired, [])
        self.timer.start()
        self.clock.advance(5.999)
        self.assertEqual(self.fired, [])
        self.clock.advance(0.001)
        self.assertEqual(self.fired, [60.0])

    def test_several_pauses(self) -> None:
        """Running time adds up over several pause and resume cycles."""
        for _ in range(3):
            self.timer.start()
            self.clock.advance(3)
            self.timer.pause()
            self.clock.advance(20)
        self.assertEqual(self.fired, [])
        self.timer.start()
        self.clock.advance(0.999)
        self.assertEqual(self.fired, [])
        self.clock.advance(0.001)
        self.assertEqual(len(self.fired), 1)

    def test_pause_is_idempotent(self) -> None:
        """Pausing a paused (or never started) timer changes nothing."""
        self.timer.pause()
        self.timer.start()
        self.clock.advance(4)
        self.timer.pause()
        self.clock.advance(1)
        self.timer.pause()
        self.timer.start()
        self.clock.advance(6)
        self.assertEqual(self.fired, [11.0])

    def test_cancel(self) -> None:
        """A cancelled timer never fires, even when started again."""
        self.timer.start()
        self.clock.advance(4)
        self.timer.cancel()
        self.assertFalse(self.timer.running)
        self.timer.start()
        self.assertFalse(self.timer.running)
        self.clock.advance(100)
        self.assertEqual(self.fired, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_cancel_while_paused(self) -> None:
        """Cancelling a paused timer keeps it from being resumed."""
        self.timer.start()
        self.timer.pause()
        self.timer.cancel()
        self.timer.start()
        self.clock.advance(100)
        self.assertEqual(self.fired, [])

    def test_no_restart_after_firing(self) -> None:
        """Once fired, starting the timer again does nothing."""
        self.timer.start()
        self.clock.advance(10)
        self.timer.start()
        self.assertFalse(self.timer.running)
        self.clock.advance(100)
        self.assertEqual(self.fired, [10.0])

    def test_cancel_after_firing(self) -> None:
        """Cancelling or pausing a timer that has fired is harmless."""
        self.timer.start()
        self.clock.advance(10)
        self.timer.pause()
        self.timer.cancel()
        self.assertEqual(self.fired, [10.0])

    def test_zero_seconds(self) -> None:
        """A timer of no time fires on the next clock step."""
        timer = PausableTimer(self.clock, 0, self._action)
        timer.start()
        self.assertEqual(self.fired, [])
        self.clock.advance(0)
        self.assertEqual(self.fired, [0.0])
