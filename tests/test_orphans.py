"""
Tests for L{ccx.durable.orphans}: the marks of running programs that are
not durable, and what a start does with those a dead ccx left.
"""

import json
import os
import signal
import subprocess

from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from ccx.durable.orphans import RunningMarks, end_orphan
from ccx.keeper.records import proc_start_time
from ccx.process.group import ProcessGroup
from tests.fakes import Harness


class MarksTests(SynchronousTestCase):
    def setUp(self):
        self.state_dir = os.path.abspath(self.mktemp())
        self.marks = RunningMarks(self.state_dir)

    def write(self, name, mark):
        os.makedirs(self.marks.directory, exist_ok=True)
        with open(os.path.join(self.marks.directory, name), "w") as f:
            f.write(mark if isinstance(mark, str) else json.dumps(mark))

    def test_add_and_remove(self):
        """A running program's mark names it, its start time and its ccx; remove drops it."""
        h = Harness("p1").run()
        self.marks.add(h.process)
        with open(os.path.join(self.marks.directory, "p1.json")) as f:
            mark = json.load(f)
        self.assertEqual(
            (mark["process_id"], mark["pid"], mark["ccx_pid"], mark["argv"]),
            ("p1", h.process.pid, os.getpid(), h.process.command.argv),
        )
        self.assertEqual(mark["ccx_start"], proc_start_time(os.getpid()))
        self.marks.remove("p1")
        self.marks.remove("p1")
        self.assertEqual(os.listdir(self.marks.directory), [])

    def test_left_by_a_dead_ccx_only(self):
        """
        left() gives (and removes) the marks of a ccx no longer running:
        one whose pid runs with another start time is gone too; those of a
        running ccx, a file being written, stay.
        """
        me = {"pid": 1, "ccx_pid": os.getpid(), "ccx_start": proc_start_time(os.getpid())}
        recycled = dict(me, ccx_start=me["ccx_start"] - 1)
        self.write("mine.json", dict(me, process_id="mine"))
        self.write("dead.json", dict(recycled, process_id="dead"))
        self.write("writing.json.new", "{")
        self.write("broken.json", "{")
        self.assertEqual([m["process_id"] for m in self.marks.left()], ["dead"])
        self.assertEqual(
            sorted(os.listdir(self.marks.directory)), ["mine.json", "writing.json.new"]
        )

    def test_unwritable(self):
        """A state dir that cannot be written is logged, never fatal."""
        with open(self.state_dir, "w"):
            pass
        h = Harness("p1").run()
        with capturedLogs() as events:
            self.marks.add(h.process)
        [event] = events
        self.assertEqual(event["log_level"], LogLevel.warn)
        self.assertIn("cannot mark it running", event["log_format"])


class EndOrphanTests(SynchronousTestCase):
    def start(self):
        child = subprocess.Popen(["sleep", "300"], start_new_session=True)
        self.addCleanup(child.wait)
        self.addCleanup(ProcessGroup(child.pid).signal, signal.SIGKILL)
        return child

    def test_ends_the_marked_group(self):
        """The group of a leader that is still the marked process is killed."""
        child = self.start()
        mark = {"pid": child.pid, "proc_start": proc_start_time(child.pid)}
        self.assertTrue(end_orphan(mark, Clock(), None))
        self.assertEqual(child.wait(), -signal.SIGKILL)

    def test_recycled_pid_spared(self):
        """A pid now another process's (another start time) is never signalled."""
        child = self.start()
        mark = {"pid": child.pid, "proc_start": proc_start_time(child.pid) + 1}
        self.assertFalse(end_orphan(mark, Clock(), None))
        self.assertIsNone(child.poll())
