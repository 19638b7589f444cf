"""
A real twistd service at start: what it refuses (a state dir it cannot use,
--containment cgroup where none can be written) is one line and exit status
1, never a traceback; what a service killed with SIGKILL left of its cgroups
is removed by the next start, and nothing of a live service's.
"""

import os
import signal

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.trial.unittest import TestCase

from ccx.journal.statedir import FORMAT_NAME, FORMAT_VERSION
from ccx.testing.cgroups import cgroups_left, programs_dir
from ccx.testing.polling import until
from ccx.testing.service import ServiceProcess
from tests.support import program

# Runs the service in a mount namespace of its own where the paths given
# after "--" are read-only (bind-mounted onto themselves, then remounted):
# nothing outside it sees the change, and it goes with the service.
READ_ONLY = (
    "unshare", "-m", "sh", "-c",
    'while [ "$1" != -- ]; do mount --bind "$1" "$1" && mount -o remount,ro,bind "$1" "$1" '
    '|| exit 99; shift; done; shift; exec "$@"',
    "sh",
)


def read_only(*paths: str) -> tuple:
    return (*READ_ONLY, *paths, "--")


class RefusedStartTests(TestCase):
    timeout = 60

    @inlineCallbacks
    def refused(self, **kwargs):
        """
        Start a service that must refuse to start: its exit status and the
        lines it wrote.
        """
        service = ServiceProcess([program("seq")], **kwargs)
        self.addCleanup(lambda: self.assertEqual(service.cgroups_left(), [], "cgroups left behind"))
        self.addCleanup(service.stop)
        status = yield Deferred.fromCoroutine(service.exited(reactor))
        return status, service.log_lines()

    def assertOneLine(self, status, lines, expected):
        """
        Exit status 1; one line says C{expected}, and nothing is a traceback.
        """
        text = "\n".join(lines)
        self.assertEqual(status, 1, text)
        self.assertNotIn("Traceback", text)
        self.assertEqual([line for line in lines if "ccx: " in line], [line for line in lines if expected in line], text)
        self.assertEqual(len([line for line in lines if expected in line]), 1, text)

    @inlineCallbacks
    def test_state_dir_not_a_directory(self):
        path = os.path.abspath(self.mktemp())
        with open(path, "w") as f:
            f.write("not a directory\n")
        status, lines = yield self.refused(settings={"state_dir": path})
        self.assertOneLine(status, lines, f"ccx: --state-dir: state dir {os.path.abspath(path)}: Not a directory")

    @inlineCallbacks
    def test_state_dir_of_a_later_format(self):
        """A state dir a later ccx wrote is refused, saying so (one version more than this one reads)."""
        path = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(path, "programs"))
        with open(os.path.join(path, FORMAT_NAME), "w") as f:
            f.write(f"ccx-state {FORMAT_VERSION + 1}\n")
        status, lines = yield self.refused(settings={"state_dir": path})
        self.assertOneLine(status, lines, f"was written by a later ccx (format {FORMAT_VERSION + 1};")

    @inlineCallbacks
    def test_state_dir_not_writable(self):
        """A state dir already made, now read-only: refused at start, not program by program."""
        path = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(path, "programs"))
        with open(os.path.join(path, FORMAT_NAME), "w") as f:
            f.write(f"ccx-state {FORMAT_VERSION}\n")
        status, lines = yield self.refused(settings={"state_dir": path}, wrapper=read_only(path))
        self.assertOneLine(status, lines, f"ccx: --state-dir: state dir {path}: Read-only file system")
        self.assertEqual(os.listdir(os.path.join(path, "programs")), [])

    @inlineCallbacks
    def test_containment_cgroup_where_none_can_be_written(self):
        top = programs_dir()
        status, lines = yield self.refused(
            settings={"containment": "cgroup"}, wrapper=read_only(os.path.dirname(top))
        )
        self.assertOneLine(status, lines, "ccx: --containment cgroup: cannot make cgroup ")
        self.assertIn("Read-only file system", "\n".join(lines))

    @inlineCallbacks
    def test_containment_auto_where_none_can_be_written_starts(self):
        """The near miss: the same read-only cgroups with --containment auto start, in process groups."""
        top = programs_dir()
        service = ServiceProcess([program("seq")], wrapper=read_only(os.path.dirname(top)))
        yield Deferred.fromCoroutine(service.started(reactor))
        try:
            self.assertEqual(service.health()["containment"], "process-group")
        finally:
            yield Deferred.fromCoroutine(service.stopped(reactor))
        self.assertEqual(service.returncode, -signal.SIGTERM)
        self.assertEqual(service.cgroups_left(), [])


class StaleCgroupTests(TestCase):
    timeout = 60

    @inlineCallbacks
    def test_next_start_removes_what_a_killed_service_left(self):
        """
        A service killed with SIGKILL leaves its ccx-PID cgroup; the next
        service to start removes it, and never that of the service still
        running beside it.
        """
        killed = ServiceProcess([program("seq")])
        beside = ServiceProcess([program("seq")])
        for service in (killed, beside):
            self.addCleanup(lambda s=service: self.assertEqual(s.cgroups_left(), []))
            self.addCleanup(lambda s=service: Deferred.fromCoroutine(s.stopped(reactor)))
            yield Deferred.fromCoroutine(service.started(reactor))
        os.kill(killed.pid, signal.SIGKILL)
        yield Deferred.fromCoroutine(until(reactor, lambda: not killed.running, 10))
        self.assertEqual(cgroups_left(killed.pid), [programs_dir(killed.pid)])
        self.assertEqual(cgroups_left(beside.pid), [programs_dir(beside.pid)])
        after = ServiceProcess([program("seq")])
        self.addCleanup(lambda: self.assertEqual(after.cgroups_left(), []))
        yield Deferred.fromCoroutine(after.started(reactor))
        yield Deferred.fromCoroutine(after.stopped(reactor))
        self.assertEqual(cgroups_left(killed.pid), [])
        self.assertEqual(cgroups_left(beside.pid), [programs_dir(beside.pid)])
        self.assertEqual(beside.health()["status"], "ok")
