"""
The stress suite (C{python -m ccx.stress}): its checks, in memory, and its
short profile run end to end against a real service, as CI runs it.
"""

import json
import os
import sys
from dataclasses import replace
from typing import List

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.utils import getProcessOutputAndValue
from twisted.python import usage
from twisted.trial.unittest import TestCase

from ccx.stress.__main__ import Options
from ccx.stress.profiles import SHORT
from ccx.stress.report import Result, format_result
from ccx.stress.scenarios import SCENARIOS, _memory_verdict
from ccx.stress.streams import Pattern, ProcessWatch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def output(offset: int, data: bytes, stream: str = "stdout") -> dict:
    return {"process_id": "p", "type": stream, "data": data.decode(), "offset": offset}


def completed(stdout_bytes: int, dropped_bytes: int = 0, status: str = "completed") -> dict:
    return {
        "process_id": "p",
        "status": status,
        "exit_code": 0,
        "error": None,
        "stdout_bytes": stdout_bytes,
        "stderr_bytes": 0,
        "dropped_bytes": dropped_bytes,
    }


class PatternTests(TestCase):
    def test_matches_at_any_offset(self) -> None:
        """A pattern knows its bytes at every offset, across many lines."""
        pattern = Pattern("ab-1")
        stream = b"ab-1\n" * 300_000
        for offset, size in [(0, 5), (3, 7), (12_345, 200_000), (1_000_001, 4)]:
            self.assertTrue(pattern.matches(offset, stream[offset : offset + size]))

    def test_detects_a_changed_byte(self) -> None:
        pattern = Pattern("ab-1")
        self.assertFalse(pattern.matches(3, b"1\nab-2\n"))
        self.assertFalse(pattern.matches(0, b"ab-1\nab-1"[1:]))

    def test_command(self) -> None:
        self.assertEqual(Pattern("x").command(), ["yes", "x"])
        self.assertEqual(Pattern("x", 10).command(), ["sh", "-c", "yes x | head -c 10"])

    def test_refuses_text_a_shell_would_read(self) -> None:
        self.assertRaises(ValueError, Pattern, "a b;")


class ProcessWatchTests(TestCase):
    def watch(self, drops: bool = False) -> ProcessWatch:
        watch = ProcessWatch("p")
        watch.content = Pattern("ab")
        watch.allow_drops = drops
        return watch

    def test_exact_stream(self) -> None:
        watch = self.watch()
        watch.notified("process.output", output(0, b"ab\na"))
        watch.notified("process.output", output(4, b"b\nab\n"))
        watch.notified("process.completed", completed(9))
        watch.check_completed("completed", 9)
        watch.check_exact(9)
        self.assertEqual(watch.problems, [])

    def test_gap(self) -> None:
        watch = self.watch()
        watch.notified("process.output", output(0, b"ab\n"))
        watch.notified("process.output", output(6, b"ab\n"))
        self.assertIn("chunk at offset 6, expected 3", watch.problems[0])

    def test_wrong_bytes(self) -> None:
        watch = self.watch()
        watch.notified("process.output", output(0, b"ab\nax\n"))
        self.assertIn("differ", watch.problems[0])

    def test_dropped_ranges_tile_the_stream(self) -> None:
        watch = self.watch(drops=True)
        watch.notified("process.output", output(0, b"ab\n"))
        watch.notified("process.dropped", {"type": "stdout", "offset": 3, "bytes": 6})
        watch.notified("process.output", output(9, b"ab\n"))
        watch.notified("process.completed", completed(12, dropped_bytes=6))
        watch.check_drop_accounting()
        self.assertEqual(watch.problems, [])
        self.assertEqual(watch.dropped["stdout"], 6)

    def test_drop_accounting_differs(self) -> None:
        watch = self.watch(drops=True)
        watch.notified("process.dropped", {"type": "stdout", "offset": 0, "bytes": 3})
        watch.notified("process.completed", completed(3, dropped_bytes=5))
        watch.check_drop_accounting()
        self.assertIn("dropped_bytes says 5", watch.problems[0])

    def test_unexpected_drop(self) -> None:
        watch = self.watch()
        watch.notified("process.dropped", {"type": "stdout", "offset": 0, "bytes": 3})
        self.assertIn("dropped", watch.problems[0])

    def test_completion_short_of_the_stream(self) -> None:
        """process.completed must come after everything was delivered or dropped."""
        watch = self.watch()
        watch.notified("process.output", output(0, b"ab\n"))
        watch.notified("process.completed", completed(6))
        self.assertIn("reach 3, but the program wrote 6", watch.problems[0])

    def test_waiting(self) -> None:
        watch = self.watch()
        fired: List[object] = []
        watch.when_received(4).addCallback(fired.append)
        watch.notified("process.output", output(0, b"ab\n"))
        self.assertEqual(fired, [])
        watch.notified("process.output", output(3, b"ab\n"))
        self.assertEqual(fired, [watch])


class MemoryVerdictTests(TestCase):
    profile = replace(SHORT, soak_warmup=4.0, rss_margin=16.0)

    def test_steady(self) -> None:
        """Up and down around a level after the warm-up is steady."""
        result = Result("soak")
        samples = [(t, 60.0 + 4 * min(t, 4) + (t % 3)) for t in range(10)]
        figures = _memory_verdict(samples, self.profile, result)
        self.assertEqual(result.problems, [])
        self.assertEqual(figures["rss_start_mib"], 60.0)
        self.assertEqual(figures["rss_warm_mib"], 71.0)

    def test_growing(self) -> None:
        """Growth beyond the margin after the warm-up fails."""
        result = Result("soak")
        samples = [(t, 60.0 + 5 * t) for t in range(10)]
        figures = _memory_verdict(samples, self.profile, result)
        self.assertEqual(figures["rss_growth_mib"], 22.5)
        self.assertIn("RSS grew 22.5 MiB", result.problems[0])


class OptionsTests(TestCase):
    def test_unknown_scenario(self) -> None:
        self.assertRaises(usage.UsageError, Options().parseOptions, ["nope"])

    def test_only(self) -> None:
        options = Options()
        options.parseOptions(["--only", "toggles", "--profile", "short", "--seed", "3"])
        self.assertEqual(options.names, ["toggles"])
        self.assertEqual((options["profile"], options["seed"]), ("short", 3))

    def test_all_by_default(self) -> None:
        options = Options()
        options.parseOptions([])
        self.assertEqual((options.names, options["profile"]), (list(SCENARIOS), "full"))

    def test_report_line(self) -> None:
        result = Result("toggles", summary="100 toggles", seconds=1.25, problems=["a"])
        self.assertEqual(format_result(result), "FAIL  toggles    100 toggles  (1.2 s)\n      - a")


class ShortProfileTests(TestCase):
    """
    C{python -m ccx.stress --profile short}, run as CI runs it: it starts
    its own service, runs every scenario scaled down, and stops everything.
    """

    timeout = 150

    @inlineCallbacks
    def test_every_scenario_passes(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH")]))
        out, err, code = yield getProcessOutputAndValue(
            sys.executable,
            ["-m", "ccx.stress", "--profile", "short"],
            env=env,
            path=ROOT,
            reactor=reactor,
        )
        text = out.decode("utf-8", "replace")
        report = f"stdout:\n{text}\nstderr:\n{err.decode('utf-8', 'replace')}"
        lines = [line for line in text.splitlines() if line.startswith(("PASS", "FAIL"))]
        self.assertEqual([line.split()[1] for line in lines], [*SCENARIOS, "leftovers"], report)
        self.assertEqual([line for line in lines if not line.startswith("PASS")], [], report)
        self.assertEqual(code, 0, report)
        record = json.loads(text.splitlines()[-1])
        self.assertTrue(record["passed"])
        self.assertEqual(record["profile"], "short")
