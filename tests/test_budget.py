"""
Tests for L{ccx.output.budget.OutputBudget}: the output a service holds for
its subscribers, released oldest finished first, oldest bytes first, with
exact drops for whoever had not read it.
"""

from dataclasses import replace

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from ccx.output.budget import OutputBudget
from ccx.output.fanout import ProcessOutput
from ccx.process.registry import ProcessRegistry
from tests.fakes import COMPLETION, FakeSink, Harness


def output(process_id: str, budget: OutputBudget, max_bytes: int = 1000) -> ProcessOutput:
    result = ProcessOutput(process_id, max_bytes, 1000, blocking=False)
    result.budget = budget
    return result


def finish(out: ProcessOutput) -> None:
    out.complete(replace(COMPLETION, process_id=out.process_id))


def drops(sink: FakeSink) -> list:
    return [(p["type"], p["offset"], p["bytes"]) for p in sink.params("process.dropped")]


class OutputBudgetTests(SynchronousTestCase):
    """
    Held output across processes stays within the budget.
    """

    def setUp(self) -> None:
        self.budget = OutputBudget(100)

    def test_counts_what_is_held(self) -> None:
        """Bytes received are counted as held; evicted, retired or closed ones are not."""
        a = output("a", self.budget, max_bytes=30)
        b = output("b", self.budget)
        a.receive("stdout", b"x" * 20, 1.0)
        a.receive("stderr", b"y" * 20, 1.0)
        b.receive("stdout", b"z" * 10, 1.0)
        self.assertEqual(self.budget.held_bytes, 50)
        a.receive("stdout", b"x" * 20, 2.0)
        self.assertEqual(self.budget.held_bytes, 60)
        finish(a)
        a.retire()
        self.assertEqual(self.budget.held_bytes, 10)
        b.close()
        self.assertEqual(self.budget.held_bytes, 0)
        self.assertEqual(self.budget.finished_count, 0)

    def test_at_the_budget_nothing_is_released(self) -> None:
        """Holding exactly the budget releases nothing; one byte more releases one byte."""
        old = output("old", self.budget)
        old.receive("stdout", b"o" * 60, 1.0)
        finish(old)
        live = output("live", self.budget)
        live.receive("stdout", b"l" * 40, 2.0)
        self.assertEqual(self.budget.held_bytes, 100)
        self.assertEqual(old.streams["stdout"].start, 0)
        live.receive("stdout", b"l", 3.0)
        self.assertEqual(self.budget.held_bytes, 100)
        self.assertEqual(old.streams["stdout"].start, 1)
        self.assertEqual(self.budget.released_bytes, 1)

    def test_oldest_finished_first(self) -> None:
        """The process that finished first gives back first, however old its output is."""
        first = output("first", self.budget)
        second = output("second", self.budget)
        second.receive("stdout", b"2" * 40, 1.0)
        first.receive("stdout", b"1" * 40, 2.0)
        finish(first)
        finish(second)
        live = output("live", self.budget)
        live.receive("stdout", b"l" * 50, 3.0)
        self.assertEqual(first.streams["stdout"].start, 30)
        self.assertEqual(second.streams["stdout"].start, 0)
        live.receive("stdout", b"l" * 20, 4.0)
        self.assertEqual(first.held_bytes, 0)
        self.assertEqual(second.streams["stdout"].start, 10)
        self.assertEqual(self.budget.held_bytes, 100)
        self.assertEqual(self.budget.finished_count, 1)

    def test_oldest_bytes_first_across_streams(self) -> None:
        """Within a process, the bytes read first go first, whichever stream holds them."""
        out = output("p", self.budget)
        out.receive("stderr", b"e" * 30, 1.0)
        out.receive("stdout", b"o" * 30, 2.0)
        out.receive("stderr", b"E" * 30, 3.0)
        finish(out)
        live = output("live", self.budget)
        live.receive("stdout", b"l" * 50, 4.0)
        # 140 held: 40 go, the 30 oldest of stderr, then 10 of stdout.
        self.assertEqual(out.streams["stderr"].start, 30)
        self.assertEqual(out.streams["stdout"].start, 10)
        self.assertEqual(out.streams["stderr"].read(0, 100)[1], b"E" * 30)

    def test_running_output_is_never_released(self) -> None:
        """Only finished processes give back: a running program's buffer is its own bound."""
        a = output("a", self.budget)
        b = output("b", self.budget)
        a.receive("stdout", b"a" * 80, 1.0)
        b.receive("stdout", b"b" * 80, 2.0)
        self.assertEqual(self.budget.held_bytes, 160)
        self.assertEqual(a.streams["stdout"].start, 0)
        self.assertEqual(b.streams["stdout"].start, 0)
        finish(a)
        self.assertEqual(a.streams["stdout"].start, 60)
        self.assertEqual(self.budget.held_bytes, 100)

    def test_subscriber_behind_gets_the_exact_drop_and_goes_on(self) -> None:
        """A subscriber that had not read released bytes is told exactly which, then reads on to the completion."""
        out = output("p", self.budget)
        sink = FakeSink(writable=False)
        subscription = out.subscribe(sink, blocking=True)
        subscription.activate()
        out.receive("stdout", b"a" * 30 + b"b" * 30, 1.0)
        finish(out)
        live = output("live", self.budget)
        live.receive("stdout", b"l" * 70, 2.0)
        self.assertEqual(sink.sent, [])
        sink.writable = True
        subscription.pump()
        self.assertEqual(drops(sink), [("stdout", 0, 30)])
        self.assertEqual(sink.params("process.output")[0]["offset"], 30)
        self.assertEqual(sink.data(), b"b" * 30)
        self.assertEqual(sink.methods()[-1], "process.completed")
        self.assertEqual(out.dropped_bytes, 30)

    def test_subscriber_that_had_read_loses_nothing(self) -> None:
        """Bytes a subscriber already had are released without a drop for it, nor counted as dropped."""
        out = output("p", self.budget)
        sink = FakeSink()
        out.subscribe(sink, blocking=False).activate()
        out.receive("stdout", b"a" * 60, 1.0)
        finish(out)
        live = output("live", self.budget)
        live.receive("stdout", b"l" * 70, 2.0)
        self.assertEqual(out.streams["stdout"].start, 30)
        self.assertEqual(drops(sink), [])
        self.assertEqual(out.dropped_bytes, 0)

    def test_released_with_no_subscriber_is_not_counted_dropped(self) -> None:
        """A finished process nobody reads gives back its output without counting it as dropped."""
        out = output("p", self.budget)
        out.receive("stdout", b"a" * 60, 1.0)
        finish(out)
        output("live", self.budget).receive("stdout", b"l" * 70, 2.0)
        self.assertEqual(out.streams["stdout"].start, 30)
        self.assertEqual(out.dropped_bytes, 0)


class RegistryBudgetTests(SynchronousTestCase):
    """
    The registry gives every process's output the service's budget.
    """

    def test_processes_share_the_budget(self) -> None:
        """Output of processes started through the registry counts in one budget, bounded across them."""
        clock = Clock()
        registry = ProcessRegistry(
            clock, max_processes=10, keep_finished=30.0, max_finished=10, held_output_bytes=100
        )
        sinks = []
        for name in ("p1", "p2", "p3"):
            h = Harness(name, clock=clock, start=False)
            h.start(registry)
            h.run()
            sink = FakeSink(writable=False)
            h.process.output.subscribe(sink, blocking=False).activate()
            sinks.append(sink)
            h.process.childDataReceived(1, b"x" * 60)
            h.finish(0)
            self.assertLessEqual(registry.held_output.held_bytes, 100)
        self.assertEqual(len(registry.all()), 3)
        held = [p.output.held_bytes for p in registry.all()]
        self.assertEqual(held, [0, 40, 60])
        for sink, process in zip(sinks, registry.all()):
            sink.writable = True
            process.output.pump_all()
        self.assertEqual([drops(s) for s in sinks], [[("stdout", 0, 60)], [("stdout", 0, 20)], []])
        self.assertEqual(registry.output_totals()["dropped"], 80)
