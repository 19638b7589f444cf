"""
The client-side toolkit (L{ccx.testing}): waiting with a L{Clock}, and a
child server stopped even when it ignores SIGTERM.
"""

import os
import time
from typing import List

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from ccx.process.group import ProcessGroup
from ccx.testing.child import ChildFailed, LaunchedChild
from ccx.testing.polling import Stuck, until
from ccx.testing.proc import open_fds, rss_mib, stopped


class UntilTests(SynchronousTestCase):
    def test_returns_the_first_true_value(self):
        """until looks again every interval and fires with the first true value."""
        clock, values = Clock(), iter([0, None, "there"])
        d = Deferred.fromCoroutine(until(clock, lambda: next(values), timeout=1, interval=0.1))
        self.assertNoResult(d)
        clock.advance(0.1)
        self.assertNoResult(d)
        clock.advance(0.1)
        self.assertEqual(self.successResultOf(d), "there")

    def test_stuck_after_timeout(self):
        """Past the timeout it fails with Stuck, saying what was awaited."""
        clock = Clock()
        d = Deferred.fromCoroutine(until(clock, lambda: False, timeout=0.5, interval=0.1, what="x"))
        clock.advance(0.6)
        clock.advance(0.1)
        self.assertIn("x within 0.5 s", str(self.failureResultOf(d, Stuck).value))


class ProcTests(SynchronousTestCase):
    def test_own_figures(self):
        """The figures of this process; None for a pid that does not exist."""
        self.assertGreater(rss_mib(os.getpid()), 1)
        self.assertGreater(open_fds(os.getpid()), 2)
        self.assertFalse(stopped(os.getpid()))
        self.assertIsNone(rss_mib(2**22 + 1))


class LaunchedChildTests(SynchronousTestCase):
    def test_term_ignoring_child_is_killed_with_its_group(self):
        """stop: SIGTERM, then SIGKILL to the whole group once the timeout passes."""
        # Ready once the trap is set: a SIGTERM before it would end sh at once.
        child = _ReadyWhenSaid(
            ["sh", "-c", "trap '' TERM; echo ready; sleep 1000 & wait"], keep_log=True
        )
        child.start()
        self.addCleanup(os.unlink, child.log_path)
        pid = child.pid
        status = child.stop(timeout=0.5)
        self.assertEqual(status, -9)
        self.assertEqual(ProcessGroup(pid).members(), [])
        self.assertIn("killed", "\n".join(child.log_lines()))

    def test_log_deleted_once_stopped(self):
        """The log is gone once the child is stopped."""
        child = _ReadyWhenSaid(["sh", "-c", "echo ready; sleep 1000"])
        child.start()
        path = child.log_path
        self.assertTrue(os.path.exists(path))
        child.stop()
        self.assertFalse(os.path.exists(path))

    def test_log_deleted_after_failed_start(self):
        """
        A child that exits before it is ready: the error quotes its log, and
        the log is gone.
        """
        child = _ReadyWhenSaid(["sh", "-c", "echo goodbye; exit 3"])
        error = self.assertRaises(ChildFailed, child.start)
        self.assertIn("goodbye", str(error))
        self.assertTrue(child.paths)
        self.assertFalse(os.path.exists(child.paths[0]))

    def test_notes_are_not_overwritten(self):
        """A line added with note stays in the log when the child writes more."""
        go = self.mktemp()
        child = _ReadyWhenSaid(
            ["sh", "-c", f"echo ready; while [ ! -e {go} ]; do sleep 0.01; done; echo after; sleep 1000"]
        )
        child.start()
        self.addCleanup(child.stop)
        child.note("noted")
        open(go, "w").close()
        while "after" not in child.log_lines():
            child.check_running()
            time.sleep(0.01)
        self.assertEqual(child.log_lines(), ["ready", "noted", "after"])


class _ReadyWhenSaid(LaunchedChild):
    """
    A child that is ready once it has written C{ready}.

    @ivar paths: the log paths it was seen with.
    """

    paths: List[str]

    def ready(self) -> bool:
        self.paths = [self.log_path]
        return super().ready() and "ready" in self.log_lines()

