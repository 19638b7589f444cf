"""
Durable programs (C{durable: true}) with a real twistd, real programs and
the real keeper: they outlive a SIGKILL or a stop of ccx, and the next
start takes them back.  Each test ends its programs and its keeper, and
checks that nothing of them is left.
"""

import os
import signal
import subprocess
import sys
import time

from autobahn.twisted.websocket import WebSocketClientFactory
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.trial.unittest import TestCase

from ccx.journal.program import ProgramJournal
from ccx.journal.record import Record, read_record
from ccx.journal.statedir import PROGRAMS, StateDir
from ccx.process.cgroup import own_cgroup
from ccx.process.group import ProcessGroup, group_states
from ccx.testing.polling import until
from ccx.testing.proc import keeper_pids, leftovers
from ccx.testing.service import SOURCE_ROOT, ServiceProcess
from tests.support import Client, ServiceFixture, program

# The cgroup v2 hierarchy CI writes (see docs/running.md).
UNIFIED = "/sys/fs/cgroup/unified"


def cgroup_of(pid: int) -> str:
    """
    The directory of the cgroup v2 process C{pid} is in.
    """
    return own_cgroup(cgroup=f"/proc/{pid}/cgroup")[0]


SEQ_ALL = b"".join(b"%d\n" % i for i in range(1, 20001))


def waiting_for(flag: str) -> str:
    """
    A shell loop that waits until file C{flag} exists (in the program's
    working directory): the test says when the program goes on.
    """
    return f"while [ ! -e {flag} ]; do sleep 0.01; done"


class ServiceRestarts:
    """
    A real service, stopped, killed and started again on one state dir.
    """

    timeout = 90

    def setUp(self):
        self.state_dir = os.path.abspath(self.mktemp())
        self.flags = os.path.abspath(self.mktemp())
        os.makedirs(self.flags)
        self.groups = []
        self.cgroups = []
        # Runs last: after every service stopped.
        self.addCleanup(lambda: Deferred.fromCoroutine(self.nothing_left()))

    async def nothing_left(self):
        """
        Every program ends, then the keeper (it exits once it holds none and
        no ccx is connected): a test that leaves either fails.
        """
        left = leftovers(self.groups)
        for pgid in left:
            ProcessGroup(pgid).signal(signal.SIGKILL)
        try:
            await until(reactor, lambda: not keeper_pids(self.state_dir), 10, 0.02, "the keeper exits")
        finally:
            for pid in keeper_pids(self.state_dir):
                os.kill(pid, signal.SIGKILL)
        self.assertEqual(left, {}, "programs left behind")
        self.assertEqual([c for c in self.cgroups if os.path.exists(c)], [], "cgroups left behind")

    def flag(self, name: str) -> None:
        with open(os.path.join(self.flags, name), "w"):
            pass

    async def start_service(self, **settings) -> ServiceProcess:
        service = ServiceProcess(
            allow=[program("sh"), program("cat"), program("sleep")],
            settings={"state_dir": self.state_dir, "kill_grace": 1, "log_format": "json", **settings},
        )
        await service.started(reactor)
        self.addCleanup(lambda: Deferred.fromCoroutine(service.stopped(reactor)))
        return service

    async def connect(self, service: ServiceProcess) -> Client:
        factory = WebSocketClientFactory(service.url)
        factory.protocol = Client
        factory.setProtocolOptions(maxMessagePayloadSize=0, maxFramePayloadSize=0)
        client = await TCP4ClientEndpoint(reactor, "127.0.0.1", service.port).connect(factory)
        await client.opened
        self.addCleanup(client.close)
        return client

    async def execute(self, client: Client, script: str, **params) -> dict:
        params.setdefault("durable", True)
        result = await client.call(
            "execute", {"command": [program("sh"), "-c", script], "cwd": self.flags, **params}
        )
        self.groups.append(result["pgid"])
        return result

    async def kill(self, service: ServiceProcess) -> None:
        # What the dead ccx made in the cgroup hierarchy must go too.
        self.cgroups.append(os.path.join(UNIFIED, f"ccx-{service.pid}"))
        service.process.send_signal(signal.SIGKILL)
        await until(reactor, lambda: not service.running, 10, 0.01, "ccx dies")

    def journaled(self, process_id: str, stream: str = "stdout") -> int:
        """
        How many bytes of C{stream} the program's journal holds (its
        segments' data files).
        """
        folder = os.path.join(self.state_dir, PROGRAMS, process_id, stream)
        try:
            names = os.listdir(folder)
        except OSError:
            return 0
        return sum(os.path.getsize(os.path.join(folder, n)) for n in names if n.endswith(".out"))

    async def entry(self, client: Client, process_id: str) -> dict:
        listed = await client.call("list")
        return [p for p in listed["processes"] if p["process_id"] == process_id][0]



class DurableServiceTests(ServiceRestarts, TestCase):
    """
    Durable programs across a SIGKILL, a stop and a start of the service.
    """

    async def test_sigkill_while_printing(self):
        """
        ccx is SIGKILLed while a durable program prints; it prints on while
        ccx is away; the next ccx lists it running, and an attach from 0
        gets every byte at its offset, then its real exit status.
        """
        first = await self.start_service()
        client = await self.connect(first)
        script = f"seq 1 5000; {waiting_for('go')}; seq 5001 20000; {waiting_for('end')}; exit 7"
        started = await self.execute(client, script)
        process_id = started["process_id"]
        head = SEQ_ALL[: SEQ_ALL.index(b"\n5001\n") + 1]
        await until(reactor, lambda: client.output(process_id) == head, what="the first lines")
        await self.kill(first)
        self.flag("go")
        await until(reactor, lambda: self.journaled(process_id) == len(SEQ_ALL), what="journaled")

        second = await self.start_service()
        client = await self.connect(second)
        # Listed at once; its pid once the keeper has answered.
        entry = await self.entry(client, process_id)
        self.assertEqual((entry["state"], entry["durable"]), ("running", True))
        await until(
            reactor,
            lambda: Deferred.fromCoroutine(self.entry(client, process_id)).addCallback(
                lambda e: e["pid"] == started["pid"]
            ),
            what="taken back from the keeper",
        )
        attached = await client.call(
            "attach", {"process_id": process_id, "offsets": {"stdout": 0, "stderr": 0}, "on_full": "block"}
        )
        self.assertEqual(attached["offsets"], {"stdout": 0, "stderr": 0})
        await until(reactor, lambda: client.output(process_id) == SEQ_ALL, what="all output")
        self.flag("end")
        completed = await client.notification("process.completed", process_id)
        self.assertEqual(client.output(process_id), SEQ_ALL)
        self.assertEqual((completed["exit_code"], completed["status"]), (7, "failed"))
        self.assertEqual(completed["stdout_bytes"], len(SEQ_ALL))
        self.assertTrue(completed["durable"])

    async def two_durable_printers(self, total: int) -> dict:
        """
        Two durable programs that each print L{SEQ_ALL} (within
        C{--journal-bytes}, together more than C{total} bytes when it is
        less than twice that) and end, read live by one client; wait until
        the state dir's journals hold at most C{total} bytes.

        @return: how many bytes each program's journal holds, by id.
        """
        service = await self.start_service(journal_bytes=128 * 1024, journal_total_bytes=total)
        client = await self.connect(service)
        ids = [(await self.execute(client, "seq 1 20000"))["process_id"] for _ in range(2)]
        for process_id in ids:
            completed = await client.notification("process.completed", process_id)
            self.assertEqual(completed["exit_code"], 0)
            # Nothing a blocking subscriber had not read went.
            self.assertEqual(client.output(process_id), SEQ_ALL)
        await until(
            reactor,
            lambda: sum(self.journaled(p) for p in ids) <= total,
            what="the state dir within its total",
        )
        self.assertEqual(service.errors(), [])
        return {p: self.journaled(p) for p in ids}

    async def test_journal_total_bounds_durable_journals(self):
        """
        C{--journal-total-bytes} holds across the journals the keeper
        writes: two durable programs whose journals are each within
        C{--journal-bytes} but together one byte more than the total keep
        within it (the oldest segments go: asked of the keeper while it
        holds the program, evicted by ccx once it forgot it).
        """
        held = await self.two_durable_printers(2 * len(SEQ_ALL) - 1)
        self.assertLess(sum(held.values()), 2 * len(SEQ_ALL))

    async def test_journal_total_just_held(self):
        """
        Two durable programs' journals that together just reach the total
        keep all they hold.
        """
        held = await self.two_durable_printers(2 * len(SEQ_ALL))
        self.assertEqual(list(held.values()), [len(SEQ_ALL), len(SEQ_ALL)])

    async def test_ends_while_ccx_is_down(self):
        """
        A durable program that ends while ccx is down is reported by the
        next start with its real exit status, end time and output.
        """
        first = await self.start_service()
        client = await self.connect(first)
        started = await self.execute(client, f"echo before; {waiting_for('go')}; echo after >&2; exit 5")
        process_id = started["process_id"]
        await until(reactor, lambda: client.output(process_id) == b"before\n", what="output")
        await self.kill(first)
        self.flag("go")
        folder = os.path.join(self.state_dir, PROGRAMS, process_id)
        record = await until(
            reactor, lambda: read_record(folder).status and read_record(folder), what="its end recorded"
        )
        self.assertEqual((record.exit_code, record.status), (5, "failed"))

        second = await self.start_service()
        client = await self.connect(second)
        entry = await self.entry(client, process_id)
        self.assertEqual(
            (entry["state"], entry["exit_code"], entry["ended_at"], entry["started_at"]),
            ("exited", 5, record.ended_at, record.started_at),
        )
        await client.call("attach", {"process_id": process_id, "offsets": {"stdout": 0, "stderr": 0}})
        completed = await client.notification("process.completed", process_id)
        self.assertEqual(client.output(process_id), b"before\n")
        self.assertEqual(client.output(process_id, "stderr"), b"after\n")
        self.assertEqual(
            (completed["exit_code"], completed["ended_at"]), (5, record.ended_at)
        )
        self.assertAlmostEqual(completed["duration"], record.ended_at - record.started_at, places=5)

    async def test_steered_after_readoption(self):
        """
        A re-adopted durable program is paused, resumed, written to (its
        standard input stayed open while ccx was away) and cancelled.
        """
        first = await self.start_service()
        client = await self.connect(first)
        started = await self.execute(client, "exec cat", stdin=True)
        process_id, pgid = started["process_id"], started["pgid"]
        # The keeper started it in a cgroup of its own.
        cgroup = cgroup_of(pgid)
        self.assertEqual(os.path.basename(cgroup), process_id)
        await client.call("write", {"process_id": process_id, "data": "one\n"})
        await until(reactor, lambda: client.output(process_id) == b"one\n", what="echoed")
        await self.kill(first)

        second = await self.start_service()
        client = await self.connect(second)
        await until(
            reactor,
            lambda: Deferred.fromCoroutine(self.entry(client, process_id)).addCallback(
                lambda e: e["pid"] == pgid
            ),
            what="taken back from the keeper",
        )
        await client.call("attach", {"process_id": process_id, "offsets": {"stdout": 0, "stderr": 0}})
        await client.call("write", {"process_id": process_id, "data": "two\n"})
        await until(reactor, lambda: client.output(process_id) == b"one\ntwo\n", what="echoed")
        await client.call("control", {"type": "PAUSE", "process_id": process_id})
        await until(reactor, lambda: group_states(pgid) == ["T"], what="stopped")
        await client.call("control", {"type": "RESUME", "process_id": process_id})
        await until(reactor, lambda: "T" not in group_states(pgid), what="continued")
        await client.call("signal", {"process_id": process_id, "signal": "SIGWINCH"})
        await client.call("control", {"type": "CANCEL", "process_id": process_id})
        completed = await client.notification("process.completed", process_id)
        self.assertEqual(completed["status"], "cancelled")
        self.assertEqual(ProcessGroup(pgid).members(), [])
        self.assertFalse(os.path.exists(cgroup))

    async def test_write_eof_after_readoption(self):
        """write with eof closes both ccx's and the keeper's ends: the program sees the end."""
        first = await self.start_service()
        client = await self.connect(first)
        started = await self.execute(client, "cat; exit 3", stdin=True)
        process_id = started["process_id"]
        await self.kill(first)
        second = await self.start_service()
        client = await self.connect(second)
        await until(
            reactor,
            lambda: Deferred.fromCoroutine(self.entry(client, process_id)).addCallback(
                lambda e: e["pid"] is not None
            ),
            what="taken back",
        )
        await client.call("attach", {"process_id": process_id})
        await client.call("write", {"process_id": process_id, "data": "last\n", "eof": True})
        completed = await client.notification("process.completed", process_id)
        self.assertEqual((completed["exit_code"], client.output(process_id)), (3, b"last\n"))

    async def test_stop_keeps_durable_cancels_the_rest(self):
        """
        Stopping the service (SIGTERM, as systemctl does) cancels programs
        that are not durable and leaves durable ones running; the next start
        lists them and can cancel them.
        """
        first = await self.start_service()
        client = await self.connect(first)
        durable = await self.execute(client, waiting_for("never"))
        plain = await self.execute(client, "exec sleep 300", durable=False, on_disconnect="keep")
        await first.stopped(reactor)
        self.assertEqual(ProcessGroup(plain["pgid"]).members(), [])
        self.assertNotEqual(ProcessGroup(durable["pgid"]).members(), [])

        second = await self.start_service()
        client = await self.connect(second)
        entry = await self.entry(client, durable["process_id"])
        self.assertEqual(entry["state"], "running")
        await until(
            reactor,
            lambda: Deferred.fromCoroutine(self.entry(client, durable["process_id"])).addCallback(
                lambda e: e["pid"] is not None
            ),
            what="taken back",
        )
        await client.call("attach", {"process_id": durable["process_id"]})
        await client.call("control", {"type": "CANCEL", "process_id": durable["process_id"]})
        completed = await client.notification("process.completed", durable["process_id"])
        self.assertEqual(completed["status"], "cancelled")


def crlf(data: bytes) -> bytes:
    """
    C{data} as a terminal shows it (C{onlcr}: each newline as CR LF).
    """
    return data.replace(b"\n", b"\r\n")


class DurableTerminalTests(ServiceRestarts, TestCase):
    """
    Durable programs on a terminal the keeper holds, across a SIGKILL of
    ccx: the terminal stays, with its size; output, input, resize and
    control work after the restart.
    """

    async def taken_back(self, client: Client, process_id: str, pid: int) -> dict:
        return await until(
            reactor,
            lambda: Deferred.fromCoroutine(self.entry(client, process_id)).addCallback(
                lambda e: e["pid"] == pid and e
            ),
            what="taken back from the keeper",
        )

    async def test_sigkill_while_printing_on_a_terminal(self):
        """
        ccx is SIGKILLed while a durable program prints on its terminal; it
        prints on while ccx is away; the next ccx takes it back with the
        size the first one set, an attach from 0 gets every byte, and
        resize, write, pause, resume and cancel work; nothing is left.
        """
        first = await self.start_service()
        client = await self.connect(first)
        script = (
            f"stty -echo; stty size; seq 1 3000; {waiting_for('go')}; seq 3001 20000; "
            "echo ready; read x; stty size; echo got:$x; exec sleep 300"
        )
        started = await self.execute(client, script, pty={"rows": 24, "cols": 80})
        process_id, pgid = started["process_id"], started["pgid"]
        cgroup = cgroup_of(pgid)
        self.cgroups.append(cgroup)
        head = b"24 80\r\n" + crlf(SEQ_ALL[: SEQ_ALL.index(b"\n3001\n") + 1])
        await until(reactor, lambda: client.output(process_id, "pty") == head, what="the first lines")
        await client.call("resize", {"process_id": process_id, "rows": 30, "cols": 100})
        await self.kill(first)
        self.flag("go")
        before = b"24 80\r\n" + crlf(SEQ_ALL) + b"ready\r\n"
        await until(
            reactor, lambda: self.journaled(process_id, "pty") == len(before), what="journaled"
        )

        second = await self.start_service()
        client = await self.connect(second)
        entry = await self.taken_back(client, process_id, pgid)
        self.assertEqual((entry["state"], entry["durable"]), ("running", True))
        self.assertEqual(entry["pty"], {"rows": 30, "cols": 100})
        attached = await client.call(
            "attach", {"process_id": process_id, "offsets": {"pty": 0}, "on_full": "block"}
        )
        self.assertEqual(attached["offsets"], {"pty": 0})
        await until(reactor, lambda: client.output(process_id, "pty") == before, what="all output")
        await client.call("resize", {"process_id": process_id, "rows": 50, "cols": 132})
        await client.call("write", {"process_id": process_id, "data": "hello\n"})
        after = before + b"50 132\r\ngot:hello\r\n"
        await until(reactor, lambda: client.output(process_id, "pty") == after, what="typed")
        await client.call("control", {"type": "PAUSE", "process_id": process_id})
        await until(reactor, lambda: group_states(pgid) == ["T"], what="stopped")
        await client.call("control", {"type": "RESUME", "process_id": process_id})
        await until(reactor, lambda: "T" not in group_states(pgid), what="continued")
        await client.call("control", {"type": "CANCEL", "process_id": process_id})
        completed = await client.notification("process.completed", process_id)
        self.assertEqual(completed["status"], "cancelled")
        self.assertEqual((completed["pty_bytes"], completed["stdout_bytes"]), (len(after), 0))
        self.assertEqual(client.output(process_id, "pty"), after)
        self.assertEqual(ProcessGroup(pgid).members(), [])
        self.assertFalse(os.path.exists(cgroup))
        record = read_record(os.path.join(self.state_dir, PROGRAMS, process_id))
        self.assertEqual((record.status, record.pty, record.pty_bytes), ("cancelled", [50, 132], len(after)))

    async def test_ends_on_its_terminal_while_ccx_is_down(self):
        """
        A durable program on a terminal that ends while ccx is down: the
        next start lists it with its exit, its last size and its bytes, and
        replays them.
        """
        first = await self.start_service()
        client = await self.connect(first)
        started = await self.execute(
            client, f"echo before; {waiting_for('go')}; stty size; exit 5", pty={"rows": 24, "cols": 80}
        )
        process_id = started["process_id"]
        await until(reactor, lambda: client.output(process_id, "pty") == b"before\r\n", what="output")
        await client.call("resize", {"process_id": process_id, "rows": 40, "cols": 90})
        await self.kill(first)
        self.flag("go")
        folder = os.path.join(self.state_dir, PROGRAMS, process_id)
        record = await until(
            reactor, lambda: read_record(folder).status and read_record(folder), what="its end recorded"
        )
        expected = b"before\r\n40 90\r\n"
        self.assertEqual(
            (record.exit_code, record.pty, record.pty_bytes), (5, [40, 90], len(expected))
        )

        second = await self.start_service()
        client = await self.connect(second)
        entry = await self.entry(client, process_id)
        self.assertEqual(
            (entry["state"], entry["exit_code"], entry["pty"], entry["pty_bytes"]),
            ("exited", 5, {"rows": 40, "cols": 90}, len(expected)),
        )
        await client.call("attach", {"process_id": process_id, "offsets": {"pty": 0}})
        await client.notification("process.completed", process_id)
        self.assertEqual(client.output(process_id, "pty"), expected)


class DurableParamsTests(TestCase):
    """
    C{durable} on the wire, in this process.
    """

    async def service(self, **settings):
        fixture = ServiceFixture(self, **settings)
        # Runs after the service stopped (cleanups run last first).
        self.addCleanup(
            lambda: Deferred.fromCoroutine(
                until(reactor, lambda: not keeper_pids(fixture.config.state_dir), 10)
            )
        )
        await fixture.start()
        return fixture, await fixture.connect()

    async def test_durable_with_cancel_refused(self):
        """durable: true with an explicit on_disconnect "cancel" is -32602; "keep" is fine."""
        fixture, client = await self.service()
        response = await client.request(
            "execute",
            {"command": [program("true")], "durable": True, "on_disconnect": "cancel"},
        )
        self.assertEqual(response["error"]["code"], -32602)
        self.assertIn("durable", response["error"]["message"])
        result = await fixture.execute(
            client, {"command": [program("true")], "durable": True, "on_disconnect": "keep"}
        )
        completed = await client.notification("process.completed", result["process_id"])
        self.assertTrue(completed["durable"])

    async def test_durable_on_a_terminal(self):
        """
        durable with pty runs under the keeper on a terminal of that size:
        one stream, pty, as for any program on a terminal.
        """
        fixture, client = await self.service()
        result = await fixture.execute(
            client,
            {
                "command": [program("sh"), "-c", "stty size; tty >/dev/null && echo tty"],
                "durable": True,
                "pty": {"rows": 33, "cols": 101},
            },
        )
        completed = await client.notification("process.completed", result["process_id"])
        self.assertTrue(completed["durable"])
        expected = b"33 101\r\ntty\r\n"
        self.assertEqual(client.output(result["process_id"], "pty"), expected)
        self.assertEqual((completed["pty_bytes"], completed["stdout_bytes"]), (len(expected), 0))

    async def test_durable_pty_with_cancel_refused(self):
        """durable and pty with on_disconnect "cancel" is still -32602; nothing is started."""
        fixture, client = await self.service()
        response = await client.request(
            "execute",
            {
                "command": [program("true")],
                "durable": True,
                "pty": {"rows": 24, "cols": 80},
                "on_disconnect": "cancel",
            },
        )
        self.assertEqual(response["error"]["code"], -32602)
        self.assertIn("durable", response["error"]["message"])
        self.assertEqual(fixture.service.node.registry.all(), [])

    async def test_merge_stderr_with_pty_refused(self):
        """
        merge_stderr with pty is -32602 (a terminal merges them already),
        durable or not; merge_stderr false with pty runs.
        """
        fixture, client = await self.service()
        for durable in (False, True):
            response = await client.request(
                "execute",
                {
                    "command": [program("true")],
                    "durable": durable,
                    "pty": {"rows": 24, "cols": 80},
                    "merge_stderr": True,
                },
            )
            self.assertEqual(response["error"]["code"], -32602)
            self.assertIn("merge_stderr", response["error"]["message"])
            self.assertEqual(fixture.service.node.registry.all(), [])
        result = await fixture.execute(
            client,
            {"command": [program("true")], "pty": {"rows": 24, "cols": 80}, "merge_stderr": False},
        )
        completed = await client.notification("process.completed", result["process_id"])
        self.assertEqual(completed["status"], "completed")

    async def test_durable_must_be_boolean(self):
        """durable: "yes" is -32602."""
        fixture, client = await self.service()
        response = await client.request(
            "execute", {"command": [program("true")], "durable": "yes"}
        )
        self.assertEqual(response["error"]["code"], -32602)

    async def test_service_default(self):
        """
        With --durable, programs are durable unless a client says
        durable: false; on_disconnect "cancel" then goes with durable: false.
        """
        fixture, client = await self.service(durable=True)
        result = await fixture.execute(client, {"command": [program("true")]})
        completed = await client.notification("process.completed", result["process_id"])
        self.assertTrue(completed["durable"])
        result = await fixture.execute(
            client, {"command": [program("true")], "durable": False, "on_disconnect": "cancel"}
        )
        completed = await client.notification("process.completed", result["process_id"])
        self.assertFalse(completed["durable"])

    async def test_spawn_failed_durable(self):
        """
        A durable program that cannot start gets -32005 with the same words
        as any program, and leaves no record.
        """
        script = os.path.abspath(self.mktemp())
        with open(script, "w") as f:
            f.write("#!/nonexistent/interpreter\n")
        os.chmod(script, 0o755)
        fixture, client = await self.service(allow=[script])
        response = await client.request("execute", {"command": [script], "durable": True})
        self.assertEqual(response["error"]["code"], -32005)
        self.assertIn(f"{script!r}: No such file or directory", response["error"]["message"])
        self.assertEqual(os.listdir(os.path.join(fixture.config.state_dir, PROGRAMS)), [])


class OrphanTests(ServiceRestarts, TestCase):
    """
    Programs that are not durable, after a SIGKILL of ccx.
    """

    async def test_killed_ccx_leaves_no_orphan(self):
        """
        A program that is not durable, and a grandchild of it that left its
        process group, outlive a SIGKILLed ccx only until the next start,
        which ends them and lists the program failed, saying why; its
        cgroup is gone.
        """
        first = await self.start_service()
        client = await self.connect(first)
        started = await self.execute(
            client,
            "setsid sleep 300 & echo $! > escapee; exec sleep 300",
            durable=False,
            on_disconnect="keep",
        )
        process_id, pgid = started["process_id"], started["pgid"]
        escapee_file = os.path.join(self.flags, "escapee")
        await until(reactor, lambda: os.path.exists(escapee_file) and open(escapee_file).read().strip(), what="escapee started")
        escapee = int(open(escapee_file).read())
        cgroup = cgroup_of(pgid)
        self.assertEqual(os.path.basename(cgroup), process_id)
        await self.kill(first)
        self.assertNotEqual(ProcessGroup(pgid).members(), [])

        second = await self.start_service()
        client = await self.connect(second)
        await until(reactor, lambda: not ProcessGroup(pgid).members(), what="the orphan ended")
        await until(reactor, lambda: not os.path.exists(f"/proc/{escapee}") or open(f"/proc/{escapee}/stat").read().split(") ")[1][0] == "Z", what="the escapee ended")
        entry = await self.entry(client, process_id)
        self.assertEqual((entry["state"], entry["durable"]), ("exited", False))
        await client.call("attach", {"process_id": process_id})
        completed = await client.notification("process.completed", process_id)
        self.assertEqual(completed["status"], "failed")
        self.assertIn("ccx stopped abruptly", completed["error"])
        await until(reactor, lambda: not os.path.exists(cgroup), what="its cgroup removed")




class KeeperGoneTests(TestCase):
    """
    A durable program whose keeper is gone: its pipes went with it.
    """

    async def service(self):
        fixture = ServiceFixture(self, kill_grace=1.0)
        await fixture.start()
        return fixture, await fixture.connect()

    async def test_keeper_killed_while_ccx_runs(self):
        """
        The keeper dies under a running ccx: the program is killed (nothing
        of it runs on unmanaged) and completes failed, saying why.
        """
        fixture, client = await self.service()
        result = await fixture.execute(
            client, {"command": [program("sleep"), "300"], "durable": True}
        )
        [keeper] = keeper_pids(fixture.config.state_dir)
        os.kill(keeper, signal.SIGKILL)
        completed = await client.notification("process.completed", result["process_id"])
        self.assertEqual(completed["status"], "failed")
        self.assertIn("keeper", completed["error"])
        self.assertEqual(ProcessGroup(result["pgid"]).members(), [])

    async def test_unfinished_record_without_keeper(self):
        """
        At start, an unfinished durable record with no keeper to hold it (the
        machine rebooted, say) is reported failed, saying why; nothing is
        signalled (its pid is not the recorded process's any more).
        """
        state_dir = os.path.abspath(self.mktemp())
        StateDir(state_dir, 1 << 20, 1 << 24).open()
        journal = ProgramJournal.create(
            os.path.join(state_dir, PROGRAMS, "p" * 32), 1 << 20, 1 << 16
        )
        journal.append("stdout", b"before the reboot\n", 1000.0)
        journal.write_record(
            Record(
                process_id="p" * 32,
                argv=["sleep", "300"],
                executable=program("sleep"),
                cwd="/",
                started_at=1000.0,
                pid=os.getpid(),
                durable=True,
            )
        )
        journal.close()
        fixture = ServiceFixture(self, state_dir=state_dir)
        await fixture.start()
        client = await fixture.connect()
        await client.call("attach", {"process_id": "p" * 32, "offsets": {"stdout": 0, "stderr": 0}})
        completed = await client.notification("process.completed", "p" * 32)
        self.assertEqual((completed["status"], completed["durable"]), ("failed", True))
        self.assertIn("keeper", completed["error"])
        self.assertEqual(client.output("p" * 32), b"before the reboot\n")


class StateDirLockTests(ServiceRestarts, TestCase):
    """
    One service per state dir: C{ccx.lock}, held for the service's life.
    """

    async def test_second_service_refused(self):
        """
        A second service on a state dir in use exits 1 with one line naming
        the first (and ends or adopts nothing of it); the keeper's own lock
        still turns a second keeper away; once the first is SIGKILLed, a
        new service starts on the dir and takes its durable program back.
        """
        first = await self.start_service()
        client = await self.connect(first)
        started = await self.execute(client, f"echo one; {waiting_for('go')}; echo two")
        process_id = started["process_id"]
        await until(reactor, lambda: client.output(process_id) == b"one\n", what="output")
        [keeper] = keeper_pids(self.state_dir)

        # The same dir, spelled another way.
        second = ServiceProcess(
            allow=[program("sh")], settings={"state_dir": self.state_dir + "/./"}
        )
        self.addCleanup(second.stop)
        status = await second.exited(reactor)
        lines = second.log_lines()
        text = "\n".join(lines)
        self.assertEqual(status, 1, text)
        self.assertNotIn("Traceback", text)
        expected = f"ccx: --state-dir: state dir {self.state_dir} is in use by another ccx (pid {first.pid}): stop it, or give another --state-dir"
        self.assertEqual([line for line in lines if "ccx: " in line], [expected], text)
        self.assertNotEqual(ProcessGroup(started["pgid"]).members(), [])

        # A second keeper still exits at once, leaving the first to serve.
        other = subprocess.run(
            [sys.executable, "-S", "-m", "ccx.keeper", "--state-dir", self.state_dir, "--foreground"],
            cwd=SOURCE_ROOT,
            timeout=30,
        )
        self.assertEqual(other.returncode, 0)
        self.assertEqual(keeper_pids(self.state_dir), [keeper])

        await self.kill(first)
        third = await self.start_service()
        client = await self.connect(third)
        self.flag("go")
        await client.call("attach", {"process_id": process_id, "offsets": {"stdout": 0, "stderr": 0}})
        completed = await client.notification("process.completed", process_id)
        self.assertEqual((completed["status"], client.output(process_id)), ("completed", b"one\ntwo\n"))


class KeeperReconnectTests(TestCase):
    """
    The connection to the keeper drops while the keeper runs: ccx connects
    again and takes its programs back; nothing is killed.
    """

    timeout = 60

    async def service(self):
        fixture = ServiceFixture(self, kill_grace=1.0)
        self.addCleanup(
            lambda: Deferred.fromCoroutine(
                until(reactor, lambda: not keeper_pids(fixture.config.state_dir), 10)
            )
        )
        await fixture.start()
        self.flags = os.path.abspath(self.mktemp())
        os.makedirs(self.flags)
        return fixture, await fixture.connect()

    def flag(self, name):
        with open(os.path.join(self.flags, name), "w"):
            pass

    async def start(self, fixture, client, script):
        result = await fixture.execute(
            client,
            {"command": [program("sh"), "-c", script], "durable": True, "stdin": True, "cwd": self.flags},
        )
        await until(reactor, lambda: client.output(result["process_id"]) == b"one\n", what="output")
        return result

    async def test_dropped_while_running(self):
        """
        Dropped while the program runs: what it prints and what is written
        to it meanwhile and after are all there at their offsets, and it
        ends with its real exit status; the keeper is the same.
        """
        fixture, client = await self.service()
        result = await self.start(
            fixture, client, f"echo one; read line; echo $line; {waiting_for('go')}; echo three; exit 3"
        )
        link = fixture.service.node.keeper
        [keeper] = keeper_pids(fixture.config.state_dir)
        link._protocol.transport.abortConnection()
        await client.call("write", {"process_id": result["process_id"], "data": "two\n"})
        await until(reactor, lambda: link.connected, what="connected again")
        self.flag("go")
        completed = await client.notification("process.completed", result["process_id"])
        self.assertEqual(
            (completed["status"], completed["exit_code"], completed.get("error")), ("failed", 3, None)
        )
        self.assertEqual(client.output(result["process_id"]), b"one\ntwo\nthree\n")
        self.assertEqual(keeper_pids(fixture.config.state_dir), [keeper])

    async def test_ended_while_dropped(self):
        """
        The program ends, and its keeper forgets it, while ccx cannot
        connect (the socket is away): taken back from its record, with its
        real exit status and all its output.
        """
        fixture, client = await self.service()
        result = await self.start(fixture, client, "echo one; read line; echo $line; exit 4")
        link = fixture.service.node.keeper
        socket_path = os.path.join(fixture.config.state_dir, "keeper.sock")
        os.rename(socket_path, socket_path + ".away")
        link._protocol.transport.abortConnection()
        await client.call("write", {"process_id": result["process_id"], "data": "two\n"})
        folder = os.path.join(fixture.config.state_dir, PROGRAMS, result["process_id"])
        await until(reactor, lambda: read_record(folder).status is not None, what="ended")
        self.assertFalse(link.connected)
        # Back before the retries run out.
        os.rename(socket_path + ".away", socket_path)
        completed = await client.notification("process.completed", result["process_id"])
        self.assertEqual(
            (completed["status"], completed["exit_code"], completed.get("error")), ("failed", 4, None)
        )
        self.assertEqual(client.output(result["process_id"]), b"one\ntwo\n")


class DurableTimeoutTests(ServiceRestarts, TestCase):
    """
    A durable program's timeout counts its running time across restarts.
    """

    async def test_timeout_across_restarts(self):
        """
        Paused, then ccx SIGKILLed and started again: the program is listed
        paused (it is frozen still), and once resumed it ends by its timeout
        after its timeout of running since its start: the restart did not
        start it again from zero, nor was the paused time counted.
        """
        first = await self.start_service()
        client = await self.connect(first)
        started = await self.execute(client, "exec sleep 300", timeout=3)
        process_id = started["process_id"]
        before_pause = time.time()
        await client.call("control", {"type": "PAUSE", "process_id": process_id})
        after_pause = time.time()
        folder = os.path.join(self.state_dir, PROGRAMS, process_id)
        await until(
            reactor, lambda: read_record(folder).extra.get("paused_at") is not None, what="recorded paused"
        )
        await self.kill(first)

        second = await self.start_service()
        client = await self.connect(second)
        await until(
            reactor,
            lambda: Deferred.fromCoroutine(self.entry(client, process_id)).addCallback(
                lambda e: e["state"] == "paused" and e["pid"] is not None
            ),
            what="taken back, paused",
        )
        self.assertEqual(group_states(started["pgid"]), ["T"])
        await client.call("attach", {"process_id": process_id})
        before_resume = time.time()
        await client.call("control", {"type": "RESUME", "process_id": process_id})
        after_resume = time.time()
        completed = await client.notification("process.completed", process_id)
        self.assertEqual(completed["status"], "timeout")
        entry = await self.entry(client, process_id)
        ran = entry["ended_at"] - entry["started_at"]
        self.assertGreaterEqual(ran, 3 + (before_resume - after_pause) - 0.05)
        self.assertLess(ran, 3 + (after_resume - before_pause) + 1.5)
