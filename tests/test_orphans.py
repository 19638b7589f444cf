"""
Tests for L{ccx.durable.orphans}: what a start does with the unfinished
records of programs that are not durable (their ccx was killed).
"""

import os
import signal
import subprocess
import time

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from ccx.durable.orphans import ORPHAN_ERROR, end_orphans, process_started_at
from ccx.journal.record import Record, read_record, write_record
from ccx.journal.statedir import StateDir
from ccx.process.group import ProcessGroup


class EndOrphansTests(SynchronousTestCase):
    def setUp(self):
        self.state_dir = StateDir(os.path.abspath(self.mktemp()), 1 << 20, 1 << 24).open()
        self.clock = Clock()
        self.clock.advance(5000)

    def start(self):
        child = subprocess.Popen(["sleep", "300"], start_new_session=True)
        self.addCleanup(child.wait)
        self.addCleanup(ProcessGroup(child.pid).signal, signal.SIGKILL)
        return child

    def record(self, process_id, pid, started_at, durable=False):
        record = Record(
            process_id=process_id,
            argv=["sleep", "300"],
            executable="/usr/bin/sleep",
            cwd="/",
            started_at=started_at,
            pid=pid,
            durable=durable,
        )
        directory = self.state_dir.directory(process_id)
        os.makedirs(directory)
        write_record(directory, record)
        return directory

    def test_ended_and_recorded_failed(self):
        """
        The group of a leader that is still the recorded process is killed,
        and its record finished: failed, saying why, ended now.
        """
        child = self.start()
        directory = self.record("p1", child.pid, process_started_at(child.pid))
        self.assertEqual(end_orphans(self.state_dir, self.clock), ["p1"])
        self.assertEqual(child.wait(), -signal.SIGKILL)
        record = read_record(directory)
        self.assertEqual(
            (record.status, record.error, record.ended_at), ("failed", ORPHAN_ERROR, 5000)
        )

    def test_recycled_pid_spared(self):
        """
        A pid whose process started more than the tolerance away from the
        record's start (a recycled pid) is never signalled; the record is
        finished all the same.
        """
        child = self.start()
        self.record("p1", child.pid, process_started_at(child.pid) - 2.5)
        self.assertEqual(end_orphans(self.state_dir, self.clock), ["p1"])
        self.assertIsNone(child.poll())

    def test_durable_left_to_the_keeper(self):
        """An unfinished durable record is the keeper's: untouched."""
        child = self.start()
        directory = self.record("p1", child.pid, process_started_at(child.pid), durable=True)
        self.assertEqual(end_orphans(self.state_dir, self.clock), [])
        self.assertIsNone(child.poll())
        self.assertIsNone(read_record(directory).status)

    def test_process_started_at(self):
        """A process's start, from /proc, in seconds since the epoch; None when gone."""
        child = self.start()
        began = process_started_at(child.pid)
        self.assertLess(abs(began - time.time()), 60)
        self.assertIsNone(process_started_at(2**22 + 1))
