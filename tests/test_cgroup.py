"""
Tests for L{ccx.process.cgroup}: the parsing and the file operations against
a fake cgroup directory tree, then the kernel's own cgroups (the writable
cgroup v2 hierarchy this machine and CI have).
"""

import errno
import os
import signal
import subprocess
from typing import Dict

from twisted.trial.unittest import SynchronousTestCase

from ccx.process.cgroup import (
    Cgroup,
    CgroupError,
    CgroupTree,
    ControllersMissing,
    Limits,
    open_tree,
    own_cgroup,
    remove_stale,
    remove_with_stale_parent,
)
from ccx.process.group import process_entry
from ccx.testing.cgroups import cgroups_left, remove_cgroups
from tests.support import program

HYBRID = (
    "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n"
    "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
    "41 31 0:38 / {point} rw,relatime - cgroup2 cgroup2 rw\n"
)


def write_files(directory: str, files: Dict[str, str]) -> None:
    os.makedirs(directory, exist_ok=True)
    for name, text in files.items():
        with open(os.path.join(directory, name), "w") as f:
            f.write(text)


def read(path: str) -> str:
    with open(path) as f:
        return f.read()


# What the kernel shows in a cgroup that is not the root.
CGROUP_FILES = {
    "cgroup.type": "domain\n",
    "cgroup.procs": "",
    "cgroup.events": "populated 0\nfrozen 0\n",
    "cgroup.freeze": "0\n",
    "cgroup.kill": "",
    "cgroup.controllers": "",
    "cgroup.subtree_control": "",
    "cpu.stat": "usage_usec 0\nuser_usec 0\nsystem_usec 0\n",
}


class FakeTree:
    """
    A mount table, a /proc/self/cgroup and a cgroup hierarchy in a temp dir.
    """

    def __init__(self, testcase: SynchronousTestCase, own: str = "/") -> None:
        self.top = os.path.abspath(testcase.mktemp())
        self.point = os.path.join(self.top, "unified")
        os.makedirs(self.point)
        self.mountinfo = os.path.join(self.top, "mountinfo")
        self.cgroup = os.path.join(self.top, "cgroup")
        write_files(self.top, {
            "mountinfo": HYBRID.format(point=self.point),
            "cgroup": f"4:memory:/x\n0::{own}\n",
        })
        # The root has no cgroup.type, events, freeze or kill.
        write_files(self.point, {"cgroup.procs": "", "cgroup.controllers": "", "cgroup.subtree_control": ""})
        self.own = os.path.normpath(os.path.join(self.point, own.lstrip("/")))
        if own != "/":
            write_files(self.own, CGROUP_FILES)


class OwnCgroupTests(SynchronousTestCase):
    def test_hybrid_root(self) -> None:
        """In the root of the hybrid unified mount: its mount point, from the 0:: line."""
        tree = FakeTree(self)
        self.assertEqual(own_cgroup(tree.mountinfo, tree.cgroup), (tree.point, tree.point))

    def test_nested(self) -> None:
        """A cgroup below the mount's root is the mount point joined with the path."""
        tree = FakeTree(self, "/system.slice/ccx.service")
        self.assertEqual(
            own_cgroup(tree.mountinfo, tree.cgroup)[0],
            os.path.join(tree.point, "system.slice/ccx.service"),
        )

    def test_escaped_mount_point(self) -> None:
        """mountinfo's octal escapes (a space) are decoded."""
        tree = FakeTree(self)
        write_files(tree.top, {"mountinfo": "41 31 0:38 / /a\\040b rw - cgroup2 cgroup2 rw\n"})
        self.assertEqual(own_cgroup(tree.mountinfo, tree.cgroup)[0], "/a b")

    def test_mount_of_another_subtree(self) -> None:
        """A cgroup2 mount whose root does not hold our cgroup is not ours."""
        tree = FakeTree(self, "/a")
        write_files(tree.top, {"mountinfo": "41 31 0:38 /ab /m rw - cgroup2 cgroup2 rw\n"})
        error = self.assertRaises(CgroupError, own_cgroup, tree.mountinfo, tree.cgroup)
        self.assertIn("no cgroup v2 mount shows", str(error))

    def test_no_v2_line(self) -> None:
        """Only v1 hierarchies: a clear error."""
        tree = FakeTree(self)
        write_files(tree.top, {"cgroup": "4:memory:/x\n"})
        error = self.assertRaises(CgroupError, own_cgroup, tree.mountinfo, tree.cgroup)
        self.assertEqual(str(error), "this process is in no cgroup v2 hierarchy")

    def test_v1_mount_only(self) -> None:
        """A 0:: line but only v1 mounts: no hierarchy to write."""
        tree = FakeTree(self)
        write_files(tree.top, {"mountinfo": HYBRID.splitlines()[1] + "\n"})
        self.assertRaises(CgroupError, own_cgroup, tree.mountinfo, tree.cgroup)


class OpenTreeTests(SynchronousTestCase):
    def test_root_layout(self) -> None:
        """In the root, ccx stays there and holds its programs in ccx-PID."""
        tree = FakeTree(self)
        # mkdir in a fake tree makes an empty directory: give it the kernel's files.
        write_files(os.path.join(tree.point, "ccx-77"), CGROUP_FILES)
        opened = open_tree(tree.mountinfo, tree.cgroup, pid=77)
        self.assertEqual(opened.base, os.path.join(tree.point, "ccx-77"))
        self.assertEqual(opened.home, tree.point)
        self.assertTrue(opened.owned)

    def test_root_layout_lacking_kill(self) -> None:
        """A kernel without cgroup.kill (before 5.14) is refused, and the directory made is removed."""
        tree = FakeTree(self)
        error = self.assertRaises(CgroupError, open_tree, tree.mountinfo, tree.cgroup, 77)
        self.assertIn("cgroup.kill", str(error))
        self.assertFalse(os.path.exists(os.path.join(tree.point, "ccx-77")))

    def test_delegated_layout(self) -> None:
        """In a cgroup of its own, ccx moves into the leaf 'service' and enables the limits' controllers."""
        tree = FakeTree(self, "/system.slice/ccx.service")
        write_files(tree.own, {"cgroup.controllers": "io memory\n"})
        opened = open_tree(tree.mountinfo, tree.cgroup, pid=77)
        self.assertEqual(opened.base, tree.own)
        self.assertEqual(opened.home, os.path.join(tree.own, "service"))
        self.assertFalse(opened.owned)
        self.assertEqual(read(os.path.join(tree.own, "service", "cgroup.procs")), "77")
        # io is not a limit's controller: only memory is enabled.
        self.assertEqual(read(os.path.join(tree.own, "cgroup.subtree_control")), "+memory")
        self.assertTrue(opened.close())
        self.assertTrue(os.path.isdir(tree.own))

    def test_unwritable(self) -> None:
        """Where the cgroup cannot be made, the error names it and why."""
        tree = FakeTree(self)
        # Root ignores mode bits: make the name a file instead.
        write_files(tree.point, {"ccx-77": ""})
        error = self.assertRaises(CgroupError, open_tree, tree.mountinfo, tree.cgroup, 77)
        self.assertEqual(str(error), f"cannot make cgroup {tree.point}/ccx-77: File exists")


class FakeCgroupTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.top = os.path.abspath(self.mktemp())
        self.home = os.path.join(self.top, "home")
        write_files(self.home, {"cgroup.procs": ""})
        self.path = os.path.join(self.top, "p1")
        write_files(self.path, CGROUP_FILES)
        self.cgroup = Cgroup(self.path, self.home)

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    def test_events(self) -> None:
        """populated and frozen come from cgroup.events."""
        self.assertEqual((self.cgroup.populated(), self.cgroup.frozen()), (False, False))
        write_files(self.path, {"cgroup.events": "populated 1\nfrozen 1\n"})
        self.assertEqual((self.cgroup.populated(), self.cgroup.frozen()), (True, True))

    def test_gone(self) -> None:
        """A removed cgroup has no processes, is not populated, and removing it again succeeds."""
        os.rename(self.path, self.path + ".x")
        self.assertEqual(self.cgroup.procs(), [])
        self.assertFalse(self.cgroup.populated())
        self.assertTrue(self.cgroup.remove())

    def test_freeze_thaw(self) -> None:
        self.cgroup.freeze()
        self.assertEqual(read(self.file("cgroup.freeze")), "1")
        self.cgroup.thaw()
        self.assertEqual(read(self.file("cgroup.freeze")), "0")

    def test_kill(self) -> None:
        self.cgroup.kill()
        self.assertEqual(read(self.file("cgroup.kill")), "1")

    def test_kill_refused_with_ccx_inside(self) -> None:
        """A cgroup ccx itself is in (a failed move back) is never killed."""
        write_files(self.path, {"cgroup.procs": f"1\n{os.getpid()}\n"})
        error = self.assertRaises(CgroupError, self.cgroup.kill)
        self.assertIn("ccx itself", str(error))
        self.assertEqual(read(self.file("cgroup.kill")), "")

    def test_usage(self) -> None:
        """CPU time from cpu.stat's usage_usec; memory only where memory.current exists."""
        write_files(self.path, {"cpu.stat": "usage_usec 1500000\nuser_usec 1\n"})
        usage = self.cgroup.usage()
        self.assertEqual((usage.cpu_seconds, usage.memory_bytes), (1.5, None))
        write_files(self.path, {"memory.current": "4096\n"})
        self.assertEqual(self.cgroup.usage().memory_bytes, 4096)

    def test_joined(self) -> None:
        """joined moves this process in, then home."""
        with self.cgroup.joined():
            self.assertEqual(read(self.file("cgroup.procs")), str(os.getpid()))
            self.assertEqual(read(os.path.join(self.home, "cgroup.procs")), "")
        self.assertEqual(read(os.path.join(self.home, "cgroup.procs")), str(os.getpid()))

    def test_joined_moves_home_after_an_error(self) -> None:
        """A failure inside the block still moves this process home."""
        with self.assertRaises(ZeroDivisionError):
            with self.cgroup.joined():
                1 / 0
        self.assertEqual(read(os.path.join(self.home, "cgroup.procs")), str(os.getpid()))

    def test_joined_cannot_go_home(self) -> None:
        """A move home that fails raises, naming the file."""
        cgroup = Cgroup(self.path, os.path.join(self.top, "missing"))
        with self.assertRaises(CgroupError) as caught:
            with cgroup.joined():
                pass
        self.assertIn("missing/cgroup.procs", str(caught.exception))

    def test_apply(self) -> None:
        """Limits go to memory.max, cpu.max (quota and period) and pids.max."""
        write_files(self.path, {"memory.max": "max", "cpu.max": "max 100000", "pids.max": "max"})
        self.cgroup.apply(Limits(memory=1 << 20, cpu=0.5, pids=10))
        self.assertEqual(read(self.file("memory.max")), "1048576")
        self.assertEqual(read(self.file("cpu.max")), "50000 100000")
        self.assertEqual(read(self.file("pids.max")), "10")

    def test_apply_least_cpu(self) -> None:
        """0.01 CPU is the least quota cpu.max takes (1 ms of each 100 ms)."""
        write_files(self.path, {"cpu.max": "max 100000"})
        self.cgroup.apply(Limits(cpu=0.01))
        self.assertEqual(read(self.file("cpu.max")), "1000 100000")

    def test_apply_missing_controller(self) -> None:
        """A limit whose file is missing names its controller; nothing is written."""
        write_files(self.path, {"memory.max": "max"})
        error = self.assertRaises(ControllersMissing, self.cgroup.apply, Limits(memory=1 << 20, pids=3))
        self.assertEqual(error.missing, ["pids"])
        self.assertEqual(read(self.file("memory.max")), "max")


class FakeTreeCreateTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.base = os.path.abspath(self.mktemp())
        write_files(self.base, {"cgroup.subtree_control": "memory\n"})
        self.tree = CgroupTree(self.base, "/home", owned=True)

    def test_create(self) -> None:
        cgroup = self.tree.create("p1")
        self.assertEqual(cgroup.path, os.path.join(self.base, "p1"))
        self.assertTrue(os.path.isdir(cgroup.path))

    def test_limits_need_their_controllers(self) -> None:
        """A limit whose controller the base does not enable is refused before anything is made."""
        error = self.assertRaises(ControllersMissing, self.tree.create, "p1", Limits(memory=1 << 20, cpu=1.0))
        self.assertEqual(error.missing, ["cpu"])
        self.assertIn("the cgroup controller cpu is not enabled", str(error))
        self.assertFalse(os.path.exists(os.path.join(self.base, "p1")))

    def test_limits_not_applied_removes_the_cgroup(self) -> None:
        """Enabled but absent from the new cgroup (a race, a fake): the cgroup is removed again."""
        self.assertRaises(ControllersMissing, self.tree.create, "p1", Limits(memory=1 << 20))
        self.assertFalse(os.path.exists(os.path.join(self.base, "p1")))

    def test_close_owned(self) -> None:
        # The kernel's files do not keep a cgroup from being removed; a fake's do.
        os.remove(os.path.join(self.base, "cgroup.subtree_control"))
        self.assertTrue(self.tree.close())
        self.assertFalse(os.path.exists(self.base))

    def test_close_not_empty(self) -> None:
        self.tree.create("p1")
        self.assertFalse(self.tree.close())


class RealCgroupTests(SynchronousTestCase):
    """
    The kernel's cgroups: freeze, kill, cgroup.events and cpu.stat for real.
    """

    def setUp(self) -> None:
        self.tree = open_tree()
        self.addCleanup(lambda: self.assertEqual(cgroups_left(), []))
        self.addCleanup(self.tree.close)

    def start(self, *argv: str) -> subprocess.Popen:
        cgroup = self.tree.create("test")
        self.addCleanup(cgroup.remove)
        with cgroup.joined():
            child = subprocess.Popen(argv, start_new_session=True)
        self.addCleanup(child.wait)
        self.addCleanup(self._kill, cgroup)
        self.cgroup = cgroup
        return child

    def _kill(self, cgroup: Cgroup) -> None:
        if cgroup.populated():
            cgroup.kill()
        while cgroup.populated():
            pass

    def test_tree_is_not_a_process_home(self) -> None:
        """ccx stays where it was: only its children go into program cgroups."""
        self.start(program("sleep"), "30")
        self.assertEqual(len(self.cgroup.procs()), 1)
        self.assertNotIn(os.getpid(), self.cgroup.procs())
        self.assertIn(str(os.getpid()), read(os.path.join(self.tree.home, "cgroup.procs")).split())

    def test_kill_ends_escapees(self) -> None:
        """cgroup.kill ends a setsid grandchild the process group does not reach."""
        child = self.start(program("sh"), "-c", "setsid sleep 300 & exec sleep 300")
        escapee = None
        while escapee is None:
            # The grandchild, once setsid has made it a group of its own.
            for pid in self.cgroup.procs():
                entry = process_entry(pid)
                if pid != child.pid and entry is not None and entry.pgid == pid:
                    escapee = pid
        self.assertTrue(self.cgroup.populated())
        self.cgroup.kill()
        self.assertEqual(child.wait(), -signal.SIGKILL)
        while self.cgroup.populated():
            pass
        # Gone, or a zombie its new parent (init) has yet to reap.
        entry = process_entry(escapee)
        self.assertTrue(entry is None or entry.state == "Z", entry)
        self.assertTrue(self.cgroup.remove())

    def test_freeze(self) -> None:
        """Frozen, a busy loop sleeps and cgroup.events says frozen; thawed, it runs."""
        child = self.start(program("sh"), "-c", "while :; do :; done")
        self.cgroup.freeze()
        while not self.cgroup.frozen():
            pass
        self.assertEqual(process_entry(child.pid).state, "S")
        self.cgroup.thaw()
        while self.cgroup.frozen():
            pass
        while process_entry(child.pid).state != "R":
            pass

    def test_cpu_time(self) -> None:
        """cpu.stat counts the CPU time of the cgroup's processes."""
        self.start(program("sh"), "-c", "while :; do :; done")
        while self.cgroup.usage().cpu_seconds < 0.02:
            pass
        self.assertIsNone(self.cgroup.usage().memory_bytes)

    def test_limits_where_no_controller_is_enabled(self) -> None:
        """Here no controller is enabled for program cgroups: limits name what is missing."""
        error = self.assertRaises(
            ControllersMissing, self.tree.create, "limited", Limits(memory=1 << 20, cpu=1.0, pids=5)
        )
        self.assertEqual(error.missing, ["memory", "cpu", "pids"])
        self.assertFalse(os.path.exists(os.path.join(self.tree.base, "limited")))


class RemoveCgroupsTests(SynchronousTestCase):
    def test_killed_service(self) -> None:
        """What a killed service left (a program still running in its cgroup) is ended and removed."""
        from ccx.testing.cgroups import remove_cgroups

        pid = 2**22 + 1  # above pid_max: no live service has it
        tree = open_tree(pid=pid)
        cgroup = tree.create("p1")
        with cgroup.joined():
            child = subprocess.Popen([program("sleep"), "300"])
        self.assertEqual(cgroups_left(pid), [tree.base, cgroup.path])
        remove_cgroups(pid)
        self.assertEqual(cgroups_left(pid), [])
        self.assertEqual(child.wait(), -signal.SIGKILL)

    def test_adopted_program_leaves_nothing(self) -> None:
        """
        A program an earlier, killed service started (in that service's
        ccx-PID) and this one took back: once it ended, removing its cgroup
        removes that empty ccx-PID too; this service's own ccx-PID stays.
        """
        dead = 2**22 + 2  # above pid_max: no live service has it
        old = open_tree(pid=dead).create("adopted")
        self.addCleanup(remove_cgroups, dead)
        own = open_tree()
        self.addCleanup(own.close)
        mine = own.create("mine")
        self.assertTrue(remove_with_stale_parent(old, os.getpid()))
        self.assertEqual(cgroups_left(dead), [])
        # The near miss: this service's own ccx-PID is not stale.
        self.assertTrue(remove_with_stale_parent(mine, os.getpid()))
        self.assertTrue(os.path.isdir(own.base))

    def test_stale_with_empty_program_cgroups(self) -> None:
        """
        A killed service's ccx-PID holding only empty program cgroups goes
        whole at the next start (the program cgroups first).
        """
        dead = 2**22 + 3  # above pid_max: no live service has it
        tree = open_tree(pid=dead)
        self.addCleanup(remove_cgroups, dead)
        tree.create("p1")
        tree.create("p2")
        self.assertEqual(len(cgroups_left(dead)), 3)
        removed = remove_stale(os.path.dirname(tree.base), os.getpid())
        self.assertEqual(removed[-1], tree.base)
        self.assertEqual(cgroups_left(dead), [])


class RemovedUnderfootTests(SynchronousTestCase):
    def test_removed_between_open_and_read(self) -> None:
        """
        A cgroup removed while its file is read (ENODEV, as when a keeper or
        another start removes it at that moment) reads as gone: not
        populated, no processes.
        """
        import ccx.process.cgroup as module

        # The module's own name shadows the builtin while the test runs.
        module.open = lambda path, *a, **k: _Vanishing(path)
        self.addCleanup(delattr, module, "open")
        cgroup = Cgroup("/sys/fs/cgroup/unified/nowhere", "/sys/fs/cgroup/unified")
        self.assertFalse(cgroup.populated())
        self.assertEqual(cgroup.procs(), [])


class _Vanishing:
    """A file whose cgroup is removed once it is open: reading it fails with ENODEV."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __enter__(self) -> "_Vanishing":
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def read(self) -> str:
        raise OSError(errno.ENODEV, "No such device", self.path)
