"""
Containment: each program in a cgroup of its own where one can be written
(this machine and CI: the hybrid unified mount, as root), its process group
otherwise.  Real programs, real cgroups; /proc and the cgroups are checked
after every test.
"""

import os
import signal
from typing import Any, List, Optional

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from ccx.config import ConfigError, build_config
from ccx.native.wire import process_entry as list_entry
from ccx.node import Node
from ccx.process import group as group_module
from ccx.process.allowlist import AllowList
from ccx.process.cgroup import CgroupError, Limits, open_tree
from ccx.process.errors import LimitsUnavailable
from ccx.process.group import FREEZE_WAIT, CgroupContainment, ProcEntry, ProcessGroup, process_entry
from ccx.process.launch import Launcher, LaunchSettings, LaunchSpec
from ccx.process.managed import ManagedProcess
from ccx.process.registry import ProcessRegistry
from ccx.testing.cgroups import cgroups_left
from ccx.testing.proc import leftovers
from tests.support import ServiceFixture, program, until

# An escapee: a grandchild in a session (and group) of its own.
ESCAPE = "setsid sleep 300 & exec sleep 300"
# An escapee that is always running: a busy loop (state R, S once frozen).
BUSY_ESCAPE = "setsid sh -c 'while :; do :; done' & exec sleep 300"


def alive(pid: int) -> bool:
    entry = process_entry(pid)
    return entry is not None and entry.state != "Z"


class ContainedTestsMixin:
    """
    A launcher whose programs run in cgroups of their own (or in their
    process groups with C{cgroups = False}); every test ends with no
    process and no cgroup left.
    """

    cgroups = True

    def setUp(self) -> None:
        self.tree = open_tree() if self.cgroups else None
        self.registry = ProcessRegistry(reactor, max_processes=4, keep_finished=30)
        self.launcher = Launcher(
            AllowList([program("sh"), program("sleep"), program("setsid")]),
            self.registry,
            reactor,
            LaunchSettings(kill_grace=0.5),
            cgroups=self.tree,
        )
        self.pids: List[int] = []
        self.addCleanup(self.check_nothing_left)

    @inlineCallbacks
    def check_nothing_left(self) -> Any:
        yield self.registry.shutdown()
        for pid in self.pids:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
                self.fail(f"process {pid} was left running")
        if self.tree is not None:
            self.assertTrue(self.tree.close())
        self.assertEqual(cgroups_left(), [])

    def launch(self, command: str, limits: Optional[Limits] = None) -> ManagedProcess:
        process, started = self.launcher.launch(LaunchSpec(command, shell=True, limits=limits))
        return process

    @inlineCallbacks
    def escapee_of(self, process: ManagedProcess) -> Any:
        """
        The pid of the grandchild that left the program's group.
        """
        found: List[int] = []

        def look() -> bool:
            if process.containment is None:
                return False
            # Once setsid has run, the grandchild leads a group of its own.
            for entry in map(process_entry, process.cgroup.procs()):
                if entry is not None and entry.pgid == entry.pid != process.pid:
                    found.append(entry.pid)
                    return True
            return False

        yield until(look)
        self.pids.append(found[0])
        return found[0]


class CgroupContainmentTests(ContainedTestsMixin, TestCase):
    @inlineCallbacks
    def test_cancel_leaves_nothing(self) -> None:
        """CANCEL ends a setsid grandchild too (cgroup.kill after the grace period); the cgroup is gone."""
        process = self.launch(ESCAPE)
        yield until(lambda: process.pid is not None)
        escapee = yield self.escapee_of(process)
        path = process.cgroup_path
        # Recorded for the state dir, so that a later start can find it.
        self.assertEqual(process.record().cgroup, path)
        self.assertEqual(sorted(os.listdir(os.path.dirname(path))).count(process.process_id), 1)
        self.assertIn(escapee, process.containment.members())
        process.cancel()
        yield process.ended
        self.assertEqual(process.output.completion.status, "cancelled")
        self.assertIsNone(process.output.completion.error)
        self.assertFalse(alive(escapee))
        self.assertFalse(alive(process.pid))
        self.assertFalse(os.path.exists(path))

    @inlineCallbacks
    def test_pause_freezes_escapees(self) -> None:
        """PAUSE stops the group (T) then freezes the cgroup: the busy escapee sleeps; RESUME runs it again."""
        process = self.launch(BUSY_ESCAPE)
        escapee = yield self.escapee_of(process)
        yield until(lambda: process_entry(escapee).state == "R")
        process.pause()
        cgroup = process.cgroup
        yield until(cgroup.frozen)
        self.assertEqual(process_entry(process.pid).state, "T")
        # A busy loop that is not running: frozen (SIGSTOP went to the group only).
        self.assertEqual(process_entry(escapee).state, "S")
        before = cgroup.usage().cpu_seconds
        process.resume()
        self.assertFalse(cgroup.frozen())
        yield until(lambda: process_entry(escapee).state == "R")
        yield until(lambda: cgroup.usage().cpu_seconds > before)
        self.assertNotEqual(process_entry(process.pid).state, "T")
        process.cancel()
        yield process.ended
        self.assertFalse(alive(escapee))

    @inlineCallbacks
    def test_cancel_while_paused(self) -> None:
        """A paused (frozen) program is thawed by CANCEL and ends, escapees and all."""
        process = self.launch(ESCAPE)
        escapee = yield self.escapee_of(process)
        process.pause()
        yield until(process.cgroup.frozen)
        process.cancel()
        yield process.ended
        self.assertEqual(process.output.completion.status, "cancelled")
        self.assertFalse(alive(escapee))

    @inlineCallbacks
    def test_cpu_time_in_list(self) -> None:
        """list reports the CPU time of all of a program's processes, escapees included; memory is null here."""
        process = self.launch(BUSY_ESCAPE)
        yield self.escapee_of(process)
        yield until(lambda: list_entry(process)["cpu_seconds"] >= 0.05)
        self.assertIsNone(list_entry(process)["memory_bytes"])
        process.cancel()
        yield process.ended
        # The last figures stay once the cgroup is gone.
        self.assertGreaterEqual(list_entry(process)["cpu_seconds"], 0.05)

    @inlineCallbacks
    def test_completion_waits_for_an_empty_cgroup(self) -> None:
        """The program exits 0, an escapee holds on: completion comes once the cgroup is empty."""
        # The program waits until its grandchild has escaped (or its exit
        # would end the grandchild still in its group).
        up = os.path.abspath(self.mktemp())
        process = self.launch(
            f"setsid sh -c 'touch {up}; exec sleep 300' >/dev/null 2>&1 & "
            f"while [ ! -e {up} ]; do :; done; echo started"
        )
        escapee = yield self.escapee_of(process)
        seen: List[bool] = []
        process.ended.addCallback(lambda p: seen.append(alive(escapee) or p.cgroup.populated()))
        yield process.ended
        self.assertEqual(seen, [False])
        completion = process.output.completion
        self.assertEqual((completion.status, completion.exit_code), ("completed", 0))
        self.assertFalse(os.path.exists(process.cgroup_path))

    def test_limits_name_the_missing_controllers(self) -> None:
        """No controller is enabled here: limits fail naming them, and no cgroup is left."""
        error = self.assertRaises(
            LimitsUnavailable, self.launch, "true", Limits(memory=1 << 20, pids=4)
        )
        self.assertIn("the cgroup controllers memory, pids are not enabled", error.message)
        self.assertEqual(error.parameter, "limits")
        self.assertEqual(self.registry.live_count, 0)
        self.assertEqual(os.listdir(self.tree.base), [n for n in os.listdir(self.tree.base) if "." in n])


class ProcessGroupFallbackTests(ContainedTestsMixin, TestCase):
    cgroups = False

    @inlineCallbacks
    def test_cancel(self) -> None:
        """Without a cgroup, CANCEL still ends the program's group; no cgroup, no CPU figure."""
        process = self.launch("exec sleep 300")
        yield until(lambda: process.pid is not None)
        self.assertIsNone(process.cgroup_path)
        self.assertEqual(process.containment.kind, "process-group")
        self.assertIsNone(list_entry(process)["cpu_seconds"])
        process.cancel()
        yield process.ended
        self.assertEqual(process.output.completion.status, "cancelled")
        self.assertEqual(leftovers([process.pid]), {})

    def test_limits_need_cgroups(self) -> None:
        """limits where programs are held in process groups: a clear refusal."""
        error = self.assertRaises(LimitsUnavailable, self.launch, "true", Limits(pids=1))
        self.assertIn("process groups only", error.message)
        self.assertEqual(error.setting, "containment")


class FakeCgroup:
    def __init__(self, procs: List[int]) -> None:
        self.path = "/fake/p1"
        self._procs = procs
        self.frozen_by: List[str] = []

    def procs(self) -> List[int]:
        return list(self._procs)

    def freeze(self) -> None:
        self.frozen_by.append("freeze")

    def thaw(self) -> None:
        self.frozen_by.append("thaw")


class FreezeAfterStopTests(SynchronousTestCase):
    """
    The freeze waits until the group is seen stopped, and no longer than
    C{FREEZE_WAIT}.
    """

    def setUp(self) -> None:
        self.states = {100: "S", 101: "S", 200: "R"}
        # 200 left the group: it is not waited for.
        self.patch(
            group_module,
            "process_entry",
            lambda pid: ProcEntry(pid, self.states[pid], 1, 200 if pid == 200 else 100),
        )
        self.clock = Clock()
        self.cgroup = FakeCgroup([100, 101, 200])
        self.signals: List[int] = []
        group = ProcessGroup(100)
        group.signal = self.signals.append
        self.containment = CgroupContainment(group, self.cgroup, self.clock)

    def test_freezes_once_stopped(self) -> None:
        self.containment.pause()
        self.assertEqual((self.signals, self.cgroup.frozen_by), ([signal.SIGSTOP], []))
        self.states[100] = "T"
        self.clock.advance(0.01)
        self.assertEqual(self.cgroup.frozen_by, [])
        self.states[101] = "T"
        self.clock.advance(0.01)
        self.assertEqual(self.cgroup.frozen_by, ["freeze"])

    def test_freezes_at_the_deadline(self) -> None:
        """A member that never shows stopped (in D state, traced) delays the freeze by FREEZE_WAIT at most."""
        self.containment.pause()
        self.clock.pump([0.01] * int(FREEZE_WAIT / 0.01 - 2))
        self.assertEqual(self.cgroup.frozen_by, [])
        self.clock.pump([0.01] * 3)
        self.assertEqual(self.cgroup.frozen_by, ["freeze"])

    def test_resume_before_the_freeze(self) -> None:
        """RESUME before the group stopped: no freeze comes later; thaw, then SIGCONT."""
        self.containment.pause()
        self.containment.resume()
        self.assertEqual(self.signals, [signal.SIGSTOP, signal.SIGCONT])
        self.clock.advance(FREEZE_WAIT * 2)
        self.assertEqual(self.cgroup.frozen_by, ["thaw"])
        self.assertEqual(self.clock.getDelayedCalls(), [])


class ContainmentOptionTests(SynchronousTestCase):
    def node(self, **settings: Any) -> Node:
        return Node(build_config(settings), Clock())

    def test_choices(self) -> None:
        """--containment takes auto, cgroup or process-group; a near miss is refused."""
        for value in ("auto", "cgroup", "process-group"):
            self.assertEqual(build_config({"containment": value}).containment, value)
        error = self.assertRaises(ConfigError, build_config, {"containment": "process_group"})
        self.assertEqual(str(error), "--containment must be one of auto, cgroup, process-group")

    def test_process_group_forced(self) -> None:
        node = self.node(containment="process-group")
        node.open_containment()
        self.assertEqual(node.containment, "process-group")
        self.assertEqual(node.health()["containment"], "process-group")

    def test_auto(self) -> None:
        node = self.node()
        self.assertEqual(node.containment, "process-group")
        node.open_containment()
        self.addCleanup(node.close_containment)
        self.assertEqual(node.containment, "cgroup")
        self.assertEqual(node.health()["containment"], "cgroup")

    def unwritable(self, *args: Any) -> None:
        raise CgroupError("cannot make cgroup /sys/fs/cgroup/ccx-1: Read-only file system")

    def test_cgroup_required_but_unwritable(self) -> None:
        """--containment cgroup where none can be written: one line saying why."""
        self.patch(__import__("ccx.node").node, "open_tree", self.unwritable)
        node = self.node(containment="cgroup")
        error = self.assertRaises(ConfigError, node.open_containment)
        self.assertEqual(
            str(error),
            "--containment cgroup: cannot make cgroup /sys/fs/cgroup/ccx-1: Read-only file system",
        )

    def test_auto_falls_back(self) -> None:
        self.patch(__import__("ccx.node").node, "open_tree", self.unwritable)
        node = self.node()
        node.open_containment()
        self.assertEqual(node.containment, "process-group")


class ServiceContainmentTests(TestCase):
    """
    The wire: /health, list, /metrics and limits, natively and over MCP.
    """

    @inlineCallbacks
    def start(self, connect: bool = True, **settings: Any) -> Any:
        self.ccx = ServiceFixture(self, **settings)
        yield self.ccx.start()
        if connect:
            self.client = yield self.ccx.connect("/ws")

    @inlineCallbacks
    def test_health_list_and_metrics(self) -> None:
        import treq

        yield self.start()
        result = yield self.ccx.execute(self.client, {"command": ["sh", "-c", "while :; do :; done"]})
        process_id = result["process_id"]

        def cpu() -> float:
            return self.ccx.service.node.registry.get(process_id).usage().cpu_seconds

        yield until(lambda: cpu() > 0.01)
        listed = yield self.client.call("list")
        entry = listed["processes"][0]
        self.assertGreater(entry["cpu_seconds"], 0.01)
        self.assertIsNone(entry["memory_bytes"])
        response = yield treq.get(f"http://127.0.0.1:{self.ccx.port}/metrics", persistent=False)
        text = yield response.text()
        self.assertIn(f'ccx_process_cpu_seconds{{process_id="{process_id}"}}', text)
        self.assertNotIn("ccx_process_memory_bytes{", text)
        health = yield (yield treq.get(f"http://127.0.0.1:{self.ccx.port}/health", persistent=False)).json()
        self.assertEqual(health["containment"], "cgroup")
        yield self.client.call("control", {"type": "CANCEL", "process_id": process_id})
        yield self.client.notification("process.completed", process_id)

    @inlineCallbacks
    def test_health_without_token_says_only_status(self) -> None:
        import treq

        yield self.start(connect=False, token="secret-token")
        health = yield (yield treq.get(f"http://127.0.0.1:{self.ccx.port}/health", persistent=False)).json()
        self.assertEqual(health, {"status": "ok"})

    @inlineCallbacks
    def test_limits_refused_natively(self) -> None:
        """execute with limits: -32602 naming the missing controller; nothing started."""
        yield self.start()
        response = yield self.client.request(
            "execute", {"command": "sleep 100", "limits": {"memory": 1 << 20}}
        )
        self.assertEqual(response["error"]["code"], -32602)
        self.assertIn("the cgroup controller memory is not enabled", response["error"]["message"])
        self.assertEqual((yield self.client.call("list"))["processes"], [])

    @inlineCallbacks
    def test_mcp_limits_and_status(self) -> None:
        """MCP start with limits fails naming the missing controller; status reports CPU time."""
        from tests.test_mcp import initialize_params

        self.ccx = ServiceFixture(self)
        yield self.ccx.start()
        client = yield self.ccx.connect("/ws/mcp", protocols=("mcp",))
        yield client.call("initialize", initialize_params())
        client.send_json({"jsonrpc": "2.0", "method": "notifications/initialized"})
        for tool in ("start", "execute"):
            refused = yield client.call(
                "tools/call",
                {"name": tool, "arguments": {"command": "sleep 100", "limits": {"cpu": 0.5}}},
            )
            self.assertTrue(refused["isError"])
            self.assertIn("the cgroup controller cpu is not enabled", refused["content"][0]["text"])
        bad = yield client.request(
            "tools/call",
            {"name": "start", "arguments": {"command": "sleep 100", "limits": {"cpu": 0.009}}},
        )
        self.assertIn("cpu must be a number of CPUs from 0.01", str(bad))
        started = yield client.call(
            "tools/call", {"name": "start", "arguments": {"command": ["sleep", "1000"]}}
        )
        process_id = started["structuredContent"]["process_id"]
        self.ccx.groups.append(started["structuredContent"]["pgid"])
        status = yield client.call(
            "tools/call", {"name": "status", "arguments": {"process_id": process_id}}
        )
        self.assertIsInstance(status["structuredContent"]["cpu_seconds"], float)
        self.assertIsNone(status["structuredContent"]["memory_bytes"])
        yield client.call("tools/call", {"name": "cancel", "arguments": {"process_id": process_id}})
        yield until(lambda: self.ccx.service.node.registry.get(process_id).finished)

    @inlineCallbacks
    def test_process_group_forced(self) -> None:
        """--containment process-group: /health says so, programs still end on CANCEL, list has no CPU figure."""
        import treq

        yield self.start(containment="process-group")
        health = yield (yield treq.get(f"http://127.0.0.1:{self.ccx.port}/health", persistent=False)).json()
        self.assertEqual(health["containment"], "process-group")
        result = yield self.ccx.execute(self.client, {"command": "sleep 100"})
        listed = yield self.client.call("list")
        self.assertIsNone(listed["processes"][0]["cpu_seconds"])
        yield self.client.call("control", {"type": "CANCEL", "process_id": result["process_id"]})
        yield self.client.notification("process.completed", result["process_id"])
        response = yield self.client.request(
            "execute", {"command": "sleep 100", "limits": {"pids": 1}}
        )
        self.assertEqual(response["error"]["code"], -32602)
        self.assertIn("process groups only", response["error"]["message"])
        self.assertIn("--containment", response["error"]["message"])
