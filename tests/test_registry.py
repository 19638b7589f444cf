"""
Tests for L{ccx.process.registry.ProcessRegistry}, with processes run by
fakes (see L{tests.test_managed}) and a L{Clock}.
"""

import signal
from typing import List

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from ccx.output.events import ProcessStarted
from ccx.process.managed import State
from ccx.process.registry import ProcessRegistry
from ccx.process.errors import InvalidState, LimitReached, ProcessError, SpawnFailed
from ccx.process.group import GroupContainment
from ccx.rpc.errors import LIMIT_EXCEEDED, PROCESS_NOT_FOUND, rpc_error
from tests.fakes import FakeSink
from tests.fakes import PID, FakeSpawner, Harness, TurnClock


class RegistryTests(SynchronousTestCase):
    """
    Tracking processes from spawn to being forgotten.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.registry = ProcessRegistry(self.clock, max_processes=2, keep_finished=30.0)

    def spawn(self, process_id: str, run: bool = True, **options: object) -> Harness:
        """
        Add a process to the registry, then start it (running, if C{run}).
        """
        h = Harness(process_id, clock=self.clock, start=False, **options)
        h.start(self.registry)
        if run:
            h.run()
        return h

    def test_new_process_id(self) -> None:
        """Process ids are distinct hex strings."""
        ids = {ProcessRegistry.new_process_id() for _ in range(100)}
        self.assertEqual(len(ids), 100)
        for process_id in ids:
            self.assertEqual(len(process_id), 32)
            int(process_id, 16)

    def test_start(self) -> None:
        """A started process can be got, found, listed and counts as live."""
        h = self.spawn("p1")
        self.assertIs(self.registry.get("p1"), h.process)
        self.assertIs(self.registry.get("p1", live=True), h.process)
        self.assertIs(self.registry.find("p1"), h.process)
        self.assertEqual(self.registry.all(), [h.process])
        self.assertEqual(self.registry.live(), [h.process])
        self.assertEqual(self.registry.live_count, 1)

    def test_get_unknown(self) -> None:
        """Getting an unknown process is -32003."""
        error = rpc_error(self.assertRaises(ProcessError, self.registry.get, "nope"))
        self.assertEqual(error.code, PROCESS_NOT_FOUND)
        self.assertIn("'nope'", error.message)
        error = rpc_error(self.assertRaises(ProcessError, self.registry.get, "nope", live=True))
        self.assertEqual(error.code, PROCESS_NOT_FOUND)

    def test_find_unknown(self) -> None:
        """Finding an unknown process gives None."""
        self.assertIsNone(self.registry.find("nope"))

    def test_capacity(self) -> None:
        """A process beyond max_processes is refused with -32001."""
        self.spawn("p1")
        self.spawn("p2", run=False)
        error = rpc_error(self.assertRaises(ProcessError, self.registry.check_capacity))
        self.assertEqual(error.code, LIMIT_EXCEEDED)
        self.assertIn("--max-processes 2", error.message)
        third = Harness("p3", clock=self.clock, start=False)
        error = rpc_error(self.assertRaises(ProcessError, self.registry.start, third.process, third.spawner))
        self.assertEqual(error.code, LIMIT_EXCEEDED)
        self.assertIsNone(self.registry.find("p3"))
        self.assertEqual(self.registry.live_count, 2)

    def test_capacity_freed(self) -> None:
        """A finished process, though kept, no longer counts against the limit."""
        h = self.spawn("p1")
        self.spawn("p2")
        h.finish(0)
        self.assertEqual(self.registry.live_count, 1)
        self.registry.check_capacity()
        self.spawn("p3")
        self.assertEqual(len(self.registry.all()), 3)

    def test_get_live_refuses_finished(self) -> None:
        """get(live=True) of a finished process is -32003."""
        h = self.spawn("p1")
        h.finish(0)
        error = rpc_error(self.assertRaises(ProcessError, self.registry.get, "p1", live=True))
        self.assertEqual(error.code, PROCESS_NOT_FOUND)
        self.assertIn("already finished", error.message)
        self.assertIs(self.registry.get("p1"), h.process)
        self.assertEqual(self.registry.live(), [])

    def test_keep_finished(self) -> None:
        """A finished process is forgotten keep_finished seconds later."""
        h = self.spawn("p1")
        sink = FakeSink()
        subscription = h.process.output.subscribe(sink, blocking=False)
        h.finish(0)
        self.clock.advance(29.999)
        self.assertIs(self.registry.find("p1"), h.process)
        self.clock.advance(0.001)
        self.assertIsNone(self.registry.find("p1"))
        self.assertEqual(self.registry.all(), [])
        self.assertTrue(subscription.done)
        self.assertEqual(h.process.output.subscriptions, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_exec_failure_removed(self) -> None:
        """A process whose program never ran is removed as soon as it ends."""
        h = self.spawn("p1", run=False)
        h.fail_exec()
        self.failureResultOf(h.started, SpawnFailed)
        h.finish(127)
        self.assertIsNone(self.registry.find("p1"))
        self.assertEqual(self.registry.live_count, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_spawn_failure_removed(self) -> None:
        """A process that could not be spawned is removed at once."""
        h = Harness("p1", clock=self.clock, start=False)
        h.spawner = FakeSpawner(error=OSError("no more processes"))
        started = self.registry.start(h.process, h.spawner)
        self.failureResultOf(started, SpawnFailed)
        self.flushLoggedErrors(OSError)
        self.assertIsNone(self.registry.find("p1"))
        self.assertEqual(self.registry.live_count, 0)

    def test_shutdown_nothing_live(self) -> None:
        """Shutting down with no live process is done at once."""
        self.assertIsNone(self.successResultOf(self.registry.shutdown()))

    def test_shutdown(self) -> None:
        """Shutdown terminates every live process and fires once all ended."""
        running = self.spawn("p1")
        starting = self.spawn("p2", run=False)
        d = self.registry.shutdown()
        self.assertEqual(running.signal_names(), ["SIGTERM", "SIGCONT"])
        self.assertEqual(starting.group.signals, [])
        running.finish(None, signal.SIGTERM)
        self.assertNoResult(d)
        starting.run()
        self.assertEqual(starting.signal_names(), ["SIGTERM", "SIGCONT"])
        self.assertNoResult(d)
        starting.finish(None, signal.SIGTERM)
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual(running.process.output.completion.status, "cancelled")
        self.assertEqual(starting.process.output.completion.status, "cancelled")
        self.assertEqual(self.registry.all(), [])

    def test_shutdown_leaves_durable(self) -> None:
        """
        Shutdown does not signal a durable process nor wait for it: it goes
        on under the keeper; the others are cancelled as ever.
        """
        durable = self.spawn("p1", durable=True)
        plain = self.spawn("p2")
        d = self.registry.shutdown()
        self.assertEqual(durable.group.signals, [])
        self.assertEqual(plain.signal_names(), ["SIGTERM", "SIGCONT"])
        plain.finish(None, signal.SIGTERM)
        self.successResultOf(d)
        self.assertFalse(durable.process.finished)

    def test_shutdown_waits_for_durable_being_cancelled(self) -> None:
        """A durable process a client cancelled is waited for: its end was asked for."""
        durable = self.spawn("p1", durable=True)
        durable.process.cancel()
        d = self.registry.shutdown()
        self.assertNoResult(d)
        durable.finish(None, signal.SIGTERM)
        self.successResultOf(d)

    def test_adopt_ignores_the_limit(self) -> None:
        """
        Durable processes taken back at start are tracked beyond
        max_processes, which bounds what clients start; clients are then
        refused until some end.
        """
        for name in ("p1", "p2", "p3"):
            h = Harness(name, clock=self.clock, start=False, durable=True)
            self.registry.adopt(h.process, h.spawner)
        self.assertEqual(self.registry.live_count, 3)
        self.assertRaises(LimitReached, self.registry.check_capacity)

    def test_shutdown_kills_after_grace(self) -> None:
        """A process that ignores SIGTERM at shutdown gets SIGKILL."""
        h = self.spawn("p1", kill_grace=2.0)
        d = self.registry.shutdown()
        self.clock.advance(2.0)
        self.assertEqual(h.signal_names(), ["SIGTERM", "SIGCONT", "SIGKILL"])
        self.assertNoResult(d)
        h.finish(None, signal.SIGKILL)
        self.successResultOf(d)

    def test_shutdown_cancels_forgetting(self) -> None:
        """Shutdown leaves no call pending to forget a finished process."""
        h = self.spawn("p1")
        h.finish(0)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.successResultOf(self.registry.shutdown())
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(h.group.signals, [])

    def test_shutdown_forgets_finished(self) -> None:
        """Shutdown forgets every finished process, as its docstring says."""
        h = self.spawn("p1")
        subscription = h.process.output.subscribe(FakeSink(), blocking=False)
        h.finish(0)
        self.successResultOf(self.registry.shutdown())
        self.assertIsNone(self.registry.find("p1"))
        self.assertTrue(subscription.done)


class MaxFinishedTests(SynchronousTestCase):
    """
    However many programs finish, at most max_finished are kept.
    """

    def test_oldest_finished_forgotten_first(self) -> None:
        """Past max_finished, the oldest finished process is forgotten and its output closed."""
        clock = Clock()
        registry = ProcessRegistry(clock, max_processes=10, keep_finished=300.0, max_finished=2)
        harnesses = []
        for name in ("p1", "p2", "p3"):
            h = Harness(name, clock=clock, start=False).start(registry).run()
            h.finish(0)
            harnesses.append(h)
        self.assertIsNone(registry.find("p1"))
        self.assertEqual([p.process_id for p in registry.all()], ["p2", "p3"])
        self.assertEqual(harnesses[0].process.output.streams["stdout"].max_bytes, 0)
        self.assertEqual(len(clock.getDelayedCalls()), 2)

    def test_not_expired_while_a_subscriber_is_behind(self) -> None:
        """Under max_finished, a finished process whose subscriber has not had process.completed outlives keep_finished."""
        clock = Clock()
        registry = ProcessRegistry(clock, max_processes=10, keep_finished=30.0, max_finished=2)
        slow = Harness("slow", clock=clock, start=False).start(registry).run()
        sink = FakeSink(writable=False)
        subscription = slow.process.output.subscribe(sink, blocking=False)
        subscription.activate()
        slow.process.childDataReceived(1, b"not yet delivered")
        slow.finish(0)
        fast = Harness("fast", clock=clock, start=False).start(registry).run()
        fast.finish(0)
        clock.advance(31)
        self.assertIs(registry.find("slow"), slow.process)
        sink.writable = True
        slow.process.output.pump(subscription)
        self.assertEqual(sink.methods()[-1], "process.completed")
        clock.advance(31)
        self.assertIsNone(registry.find("slow"))

    def test_max_finished_holds_while_a_subscriber_is_behind(self) -> None:
        """
        Past max_finished the oldest finished process is forgotten even with a
        subscriber behind: it then gets process.dropped for exactly what it
        missed, and process.completed.
        """
        clock = Clock()
        registry = ProcessRegistry(clock, max_processes=10, keep_finished=30.0, max_finished=1)
        slow = Harness("slow", clock=clock, start=False).start(registry).run()
        sink = FakeSink(writable=False)
        subscription = slow.process.output.subscribe(sink, blocking=False)
        subscription.activate()
        slow.process.childDataReceived(1, b"not yet delivered")
        slow.process.childDataReceived(2, b"nor this")
        slow.finish(0)
        self.assertIs(registry.find("slow"), slow.process)
        fast = Harness("fast", clock=clock, start=False).start(registry).run()
        fast.finish(0)
        self.assertIsNone(registry.find("slow"))
        self.assertEqual([p.process_id for p in registry.all()], ["fast"])
        self.assertEqual(registry.held_output.held_bytes, 0)
        self.assertEqual(sink.sent, [])
        sink.writable = True
        subscription.pump()
        self.assertEqual(
            sink.methods(), ["process.dropped", "process.dropped", "process.completed"]
        )
        self.assertEqual(
            [(p["type"], p["offset"], p["bytes"]) for p in sink.params("process.dropped")],
            [("stdout", 0, 17), ("stderr", 0, 8)],
        )
        self.assertTrue(subscription.done)
        self.assertEqual(registry.output_totals()["dropped"], 25)
        self.assertEqual(len(clock.getDelayedCalls()), 1)

    def test_max_finished_with_a_writable_subscriber_behind(self) -> None:
        """A subscriber that can take them gets the drop and the completion as the process is forgotten."""
        clock = Clock()
        registry = ProcessRegistry(clock, max_processes=10, keep_finished=30.0, max_finished=1)
        slow = Harness("slow", clock=clock, start=False).start(registry).run()
        sink = FakeSink(writable=False)
        slow.process.output.subscribe(sink, blocking=False).activate()
        slow.process.childDataReceived(1, b"missed")
        slow.finish(0)
        sink.writable = True
        fast = Harness("fast", clock=clock, start=False).start(registry).run()
        fast.finish(0)
        self.assertEqual(sink.methods(), ["process.dropped", "process.completed"])
        self.assertEqual(slow.process.output.subscriptions, [])


    def test_forgotten_before_its_reply(self) -> None:
        """A subscription made for a reply not sent yet (a batch still starting others) gets the drop and the completion once activated, though max_finished forgot its process."""
        clock = Clock()
        registry = ProcessRegistry(clock, max_processes=10, keep_finished=30.0, max_finished=1)
        early = Harness("early", clock=clock, start=False).start(registry).run()
        sink = FakeSink()
        subscription = early.process.output.subscribe(
            sink, blocking=True, first=ProcessStarted("early", PID, ("prog",))
        )
        early.process.childDataReceived(1, b"lost")
        early.finish(0)
        later = Harness("later", clock=clock, start=False).start(registry).run()
        later.finish(0)
        self.assertIsNone(registry.find("early"))
        self.assertEqual(sink.methods(), [])
        subscription.activate()
        self.assertEqual(
            sink.methods(), ["process.started", "process.dropped", "process.completed"]
        )
        self.assertTrue(subscription.done)


class PacedStartTests(SynchronousTestCase):
    """
    A burst of starts: a few spawn per reactor turn, the rest wait their
    turn, and the limit is judged when each one's turn comes.
    """

    def setUp(self) -> None:
        self.clock = TurnClock()
        self.registry = ProcessRegistry(
            self.clock, max_processes=5, keep_finished=30.0, max_waiting=3
        )
        self.assertEqual(self.registry.pacer.per_turn, 4)

    def burst(self, count: int) -> List[Harness]:
        """
        C{count} processes asked for in one turn.
        """
        harnesses = []
        for n in range(count):
            h = Harness(f"p{n}", clock=self.clock, start=False)
            h.start(self.registry)
            harnesses.append(h)
        return harnesses

    def spawned(self, h: Harness) -> bool:
        """
        Whether C{h} was spawned; if so, its fakes are swapped in and it runs.
        """
        if h.spawner.transport is None:
            return False
        h.transport = h.spawner.transport
        h.process.containment = GroupContainment(h.group)
        if h.process.state == State.STARTING:
            h.run()
        return True

    def test_waiting_ones_start_once_the_first_ended(self) -> None:
        """Past the limit within one turn, the last wait; the first end meanwhile, and none is refused."""
        harnesses = self.burst(6)
        self.assertEqual([self.spawned(h) for h in harnesses], [True] * 4 + [False] * 2)
        self.assertEqual(self.registry.live_count, 4)
        self.assertIsNone(self.registry.find("p4"))
        self.assertEqual(self.registry.pacer.waiting, 2)
        for h in harnesses[:4]:
            self.assertIs(self.successResultOf(h.started), h.process)
            h.finish(0)
        self.assertEqual(self.registry.live_count, 0)
        self.clock.turn()
        for h in harnesses[4:]:
            self.assertTrue(self.spawned(h))
            self.assertIs(self.successResultOf(h.started), h.process)
            self.assertIs(self.registry.find(h.process.process_id), h.process)
        self.assertEqual(self.registry.live_count, 2)

    def test_limit_judged_at_its_turn(self) -> None:
        """A waiting one starts if fewer than max_processes are live at its turn; the next, at the limit, gets -32001."""
        harnesses = self.burst(6)
        for h in harnesses[:4]:
            self.spawned(h)
        self.clock.turn()
        fifth, sixth = harnesses[4:]
        self.assertTrue(self.spawned(fifth))
        self.assertIs(self.successResultOf(fifth.started), fifth.process)
        self.assertEqual(self.registry.live_count, 5)
        self.assertFalse(self.spawned(sixth))
        error = rpc_error(self.failureResultOf(sixth.started, ProcessError).value)
        self.assertEqual(error.code, LIMIT_EXCEEDED)
        self.assertIn("--max-processes 5", error.message)
        self.assertIsNone(self.registry.find("p5"))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_max_waiting(self) -> None:
        """max_waiting may wait; one more is refused at once with -32001."""
        self.burst(4 + 3)
        h = Harness("extra", clock=self.clock, start=False)
        error = rpc_error(self.assertRaises(ProcessError, h.start, self.registry))
        self.assertEqual(error.code, LIMIT_EXCEEDED)
        self.assertEqual(h.spawner.commands, [])

    def test_cancelled_while_waiting_never_runs(self) -> None:
        """A process terminated while it waits (its connection closed) is never spawned."""
        harnesses = self.burst(5)
        waiting = harnesses[4]
        waiting.process.terminate()
        self.clock.turn()
        self.assertEqual(waiting.spawner.commands, [])
        self.failureResultOf(waiting.started, InvalidState)
        self.assertIsNone(self.registry.find("p4"))
        self.assertEqual(self.registry.live_count, 4)

    def test_shutdown_refuses_the_waiting(self) -> None:
        """Shutdown refuses at once those waiting, and any start after it; none is spawned."""
        harnesses = self.burst(5)
        for h in harnesses[:4]:
            self.spawned(h)
        d = self.registry.shutdown()
        failure = self.failureResultOf(harnesses[4].started, SpawnFailed)
        self.assertIn("ccx is stopping", failure.value.message)
        self.assertEqual(harnesses[4].spawner.commands, [])
        late = Harness("late", clock=self.clock, start=False)
        self.assertRaises(SpawnFailed, late.start, self.registry)
        self.assertEqual(late.spawner.commands, [])
        for h in harnesses[:4]:
            h.finish(None, signal.SIGTERM)
        self.assertIsNone(self.successResultOf(d))
        self.clock.advance(60)
        self.assertEqual(self.clock.getDelayedCalls(), [])
