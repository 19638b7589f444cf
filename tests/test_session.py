"""
Tests for L{ccx.session.Session}: one connection's subscriptions and the
processes it started.
"""

import signal

from twisted.trial.unittest import SynchronousTestCase

from ccx.output.events import ProcessStarted
from ccx.output.fanout import ProcessOutput
from ccx.session import Session
from tests.fakes import COMPLETION, FakeSink, Harness, run_options



class FakeProcess:
    """
    As much of a L{ManagedProcess} as a session uses, counting terminations.
    """

    def __init__(
        self,
        process_id: str,
        on_disconnect: str = "cancel",
        state: str = "running",
        finished: bool = False,
    ) -> None:
        self.process_id = process_id
        self.options = run_options(on_disconnect=on_disconnect)
        self.output = ProcessOutput(process_id, 1024, 100, blocking=True)
        self.state = state
        self.finished = finished
        self.terminated = 0

    def terminate(self, status: str = "cancelled") -> None:
        self.terminated += 1


class SessionTests(SynchronousTestCase):
    """
    Subscribing, pumping and closing.
    """

    def setUp(self) -> None:
        self.sink = FakeSink()
        self.session = Session()

    def test_ids(self) -> None:
        """Each session has its own hex id and starts empty and open."""
        other = Session()
        self.assertNotEqual(self.session.session_id, other.session_id)
        self.assertEqual(len(self.session.session_id), 32)
        self.assertFalse(self.session.closed)
        self.assertEqual(self.session.subscriptions, {})
        self.assertEqual(self.session.started, [])

    def test_subscribe(self) -> None:
        """A subscription to a process is made inactive, with the session's sink."""
        process = FakeProcess("p1")
        subscription = self.session.subscribe(process, self.sink, blocking=True)
        self.assertIs(self.session.subscriptions["p1"], subscription)
        self.assertEqual(process.output.subscriptions, [subscription])
        self.assertIs(subscription.sink, self.sink)
        self.assertTrue(subscription.blocking)
        self.assertFalse(subscription.active)

    def test_subscribe_offsets_and_first(self) -> None:
        """Offsets and the first notification are passed to the subscription."""
        process = FakeProcess("p1")
        process.output.receive("stdout", b"abcdef", 1.0)
        first = ProcessStarted("p1", 42, ("prog",))
        subscription = self.session.subscribe(
            process, self.sink, blocking=False, offsets={"stdout": 4}, first=first
        )
        subscription.activate()
        self.assertEqual(
            self.sink.methods(), ["process.started", "process.output"]
        )
        self.assertEqual(self.sink.params("process.output")[0]["data"], "ef")

    def test_subscribe_replaces(self) -> None:
        """Subscribing again to a process replaces the earlier subscription."""
        process = FakeProcess("p1")
        old = self.session.subscribe(process, self.sink, blocking=True)
        new = self.session.subscribe(process, self.sink, blocking=False)
        self.assertIsNot(old, new)
        self.assertTrue(old.done)
        self.assertEqual(process.output.subscriptions, [new])
        self.assertEqual(self.session.subscriptions, {"p1": new})

    def test_subscriptions_per_process(self) -> None:
        """Subscriptions to different processes are kept side by side."""
        first = self.session.subscribe(FakeProcess("p1"), self.sink, blocking=True)
        second = self.session.subscribe(FakeProcess("p2"), self.sink, blocking=True)
        self.assertEqual(self.session.subscriptions, {"p1": first, "p2": second})
        self.assertFalse(first.done)

    def test_unsubscribe(self) -> None:
        """Unsubscribing drops the subscription from the session and the output."""
        process = FakeProcess("p1")
        subscription = self.session.subscribe(process, self.sink, blocking=True)
        self.assertTrue(self.session.unsubscribe("p1"))
        self.assertTrue(subscription.done)
        self.assertEqual(process.output.subscriptions, [])
        self.assertEqual(self.session.subscriptions, {})

    def test_unsubscribe_unknown(self) -> None:
        """Unsubscribing without a subscription says so."""
        self.assertFalse(self.session.unsubscribe("p1"))

    def test_newest_unfinished(self) -> None:
        """The newest started process that has not exited is chosen."""
        older = FakeProcess("p1")
        newest = FakeProcess("p2", state="paused")
        self.session.started = [older, newest]
        self.assertIs(self.session.newest_unfinished(), newest)
        newest.state = "exited"
        self.assertIs(self.session.newest_unfinished(), older)
        older.finished = True
        self.assertIsNone(self.session.newest_unfinished())

    def test_newest_unfinished_none(self) -> None:
        """A session that started nothing has no newest process."""
        self.assertIsNone(self.session.newest_unfinished())

    def test_pump_delivers(self) -> None:
        """pump lets an active subscription deliver what it held back."""
        process = FakeProcess("p1")
        subscription = self.session.subscribe(process, self.sink, blocking=True)
        subscription.activate()
        self.sink.writable = False
        process.output.receive("stdout", b"hello", 1.0)
        self.assertEqual(self.sink.sent, [])
        self.sink.writable = True
        self.session.pump()
        self.assertEqual(self.sink.params("process.output")[0]["data"], "hello")

    def test_pump_takes_turns(self) -> None:
        """When the connection fills after one chunk, each pump starts with another subscription."""
        processes = [FakeProcess(f"p{i}") for i in range(3)]
        for process in processes:
            self.session.subscribe(process, self.sink, blocking=True).activate()
        self.sink.writable = False
        for process in processes:
            process.output.receive("stdout", process.process_id.encode(), 1.0)

        sink = self.sink

        def send_then_fill(method, params):
            sink.sent.append((method, params))
            sink.writable = False

        self.sink.send_notification = send_then_fill
        for _ in processes:
            self.sink.writable = True
            self.session.pump()
        served = sorted(p["data"] for p in self.sink.params("process.output"))
        self.assertEqual(served, ["p0", "p1", "p2"])

    def test_pump_inactive(self) -> None:
        """pump delivers nothing to a subscription not yet activated."""
        process = FakeProcess("p1")
        self.session.subscribe(process, self.sink, blocking=True)
        process.output.receive("stdout", b"hello", 1.0)
        self.session.pump()
        self.assertEqual(self.sink.sent, [])

    def test_pump_drops_done(self) -> None:
        """pump forgets subscriptions that are done."""
        process = FakeProcess("p1")
        subscription = self.session.subscribe(process, self.sink, blocking=True)
        subscription.activate()
        process.output.complete(COMPLETION)
        self.assertTrue(subscription.done)
        other = self.session.subscribe(FakeProcess("p2"), self.sink, blocking=True)
        self.session.pump()
        self.assertEqual(self.session.subscriptions, {"p2": other})
        self.assertEqual(self.sink.methods(), ["process.completed"])

    def test_close(self) -> None:
        """close unsubscribes all and terminates only "cancel" processes."""
        cancel = FakeProcess("p1", on_disconnect="cancel")
        keep = FakeProcess("p2", on_disconnect="keep")
        watched = FakeProcess("p3")
        self.session.started = [cancel, keep]
        subscriptions = [
            self.session.subscribe(cancel, self.sink, blocking=True),
            self.session.subscribe(keep, self.sink, blocking=True),
            self.session.subscribe(watched, self.sink, blocking=False),
        ]
        self.session.close()
        self.assertTrue(self.session.closed)
        self.assertEqual(cancel.terminated, 1)
        self.assertEqual(keep.terminated, 0)
        self.assertEqual(watched.terminated, 0)
        self.assertEqual(self.session.subscriptions, {})
        self.assertTrue(all(s.done for s in subscriptions))
        for process in (cancel, keep, watched):
            self.assertEqual(process.output.subscriptions, [])
        self.assertEqual(self.session.started, [])

    def test_close_cancels_real_process(self) -> None:
        """Closing sends SIGTERM to the group of a running "cancel" process."""
        cancel = Harness("p1", on_disconnect="cancel").run()
        keep = Harness("p2", on_disconnect="keep").run()
        self.session.started = [cancel.process, keep.process]
        self.session.subscribe(cancel.process, self.sink, blocking=True).activate()
        self.session.close()
        self.assertEqual(cancel.signal_names(), ["SIGTERM", "SIGCONT"])
        self.assertEqual(keep.group.signals, [])
        self.assertEqual(self.sink.sent, [])
        cancel.finish(None, signal.SIGTERM)
        self.assertEqual(cancel.process.output.completion.status, "cancelled")

    def test_close_twice(self) -> None:
        """A second close terminates nothing more."""
        process = FakeProcess("p1")
        self.session.started = [process]
        self.session.close()
        self.session.close()
        self.assertEqual(process.terminated, 1)
