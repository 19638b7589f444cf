"""
The journal end to end: real programs, real clients, a real twistd
restarted with the same state dir.
"""

import os
import shutil
import tempfile

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.trial.unittest import TestCase

from ccx.testing.service import ServiceProcess
from tests.support import ServiceFixture, connect_to, program
from tests.test_backpressure import covered

BUFFER = 64 * 1024


def drops(client, process_id, stream="stdout"):
    return [
        (m["params"]["offset"], m["params"]["bytes"])
        for m in client.messages
        if isinstance(m, dict)
        and m.get("method") == "process.dropped"
        and m["params"]["process_id"] == process_id
        and m["params"]["type"] == stream
    ]


class JournalServiceTests(TestCase):
    timeout = 60

    @inlineCallbacks
    def test_attach_from_zero_past_the_memory_buffer(self):
        """A program prints 16× the memory buffer: attach from 0 gets every byte at its offset."""
        ccx = yield ServiceFixture(self, buffer_bytes=BUFFER).start()
        client = yield ccx.connect()
        result = yield ccx.execute(client, {"command": ["seq", "1", "200000"]})
        yield client.notification("process.completed", result["process_id"])
        expected = "".join(f"{i}\n" for i in range(1, 200001)).encode()
        self.assertGreater(len(expected), 16 * BUFFER)
        process = ccx.service.node.registry.get(result["process_id"])
        self.assertGreater(process.output.streams["stdout"].start, 0, "memory held only its tail")
        later = yield ccx.connect()
        attached = yield later.call("attach", {"process_id": result["process_id"], "offsets": {"stdout": 0}})
        self.assertEqual(attached["offsets"]["stdout"], 0)
        done = yield later.notification("process.completed", result["process_id"])
        self.assertEqual(later.output(result["process_id"]), expected)
        self.assertEqual(drops(later, result["process_id"]), [])
        self.assertEqual(done["dropped_bytes"], 0)

    @inlineCallbacks
    def test_drop_observer_loses_only_what_the_journal_evicted(self):
        """A stalled drop-mode observer is told exactly the range the journal no longer holds."""
        limit = 256 * 1024
        ccx = yield ServiceFixture(self, buffer_bytes=BUFFER, journal_bytes=limit).start()
        starter = yield ccx.connect()
        result = yield ccx.execute(
            starter,
            {"command": ["sh", "-c", "read go; seq 1 2000000"], "stdin": True, "on_full": "drop"},
        )
        process_id = result["process_id"]
        observer = yield ccx.connect()
        yield observer.call("attach", {"process_id": process_id, "offsets": {"stdout": 0}})
        observer.transport.pauseProducing()
        yield starter.call("write", {"process_id": process_id, "data": "go\n"})
        yield starter.notification("process.completed", process_id)
        process = ccx.service.node.registry.get(process_id)
        journal_start = process.output.store.start("stdout")
        self.assertGreater(journal_start, 0)
        observer.transport.resumeProducing()
        yield observer.notification("process.completed", process_id)
        chunks, lost, end = covered(observer, process_id)
        expected = "".join(f"{i}\n" for i in range(1, 2000001)).encode()
        self.assertEqual(end, len(expected))
        for offset, data in chunks:
            self.assertEqual(data, expected[offset : offset + len(data)])
        # Whatever the socket held when it stalled came first; the loss
        # ends exactly at the journal's first offset.
        self.assertTrue(lost)
        self.assertEqual(lost[-1][0] + lost[-1][1], journal_start)
        self.assertEqual(sum(size for _, size in lost), process.output.dropped_bytes)

    @inlineCallbacks
    def test_restarted_service_lists_and_replays(self):
        """A service started again on the same state dir lists the finished program and replays its output."""
        state_dir = tempfile.mkdtemp(prefix="ccx-test-state-")
        self.addCleanup(shutil.rmtree, state_dir, True)
        settings = {"state_dir": state_dir, "buffer_bytes": BUFFER}
        expected = "".join(f"{i}\n" for i in range(1, 50001)).encode()

        first = yield Deferred.fromCoroutine(
            ServiceProcess([program("seq")], settings=settings).started(reactor)
        )
        self.addCleanup(lambda: self.assertEqual(first.cgroups_left(), []))
        self.addCleanup(lambda: Deferred.fromCoroutine(first.stopped(reactor)))
        client = yield connect_to(self, first.port)
        result = yield client.call("execute", {"command": ["seq", "1", "50000"]})
        process_id = result["process_id"]
        yield client.notification("process.completed", process_id)
        yield client.close()
        yield Deferred.fromCoroutine(first.stopped(reactor))
        self.assertTrue(os.path.isdir(os.path.join(state_dir, "programs", process_id)))

        second = yield Deferred.fromCoroutine(
            ServiceProcess([program("seq")], settings=settings).started(reactor)
        )
        self.addCleanup(lambda: self.assertEqual(second.cgroups_left(), []))
        self.addCleanup(lambda: Deferred.fromCoroutine(second.stopped(reactor)))
        client = yield connect_to(self, second.port)
        listed = yield client.call("list")
        [entry] = [p for p in listed["processes"] if p["process_id"] == process_id]
        self.assertEqual(
            (entry["state"], entry["exit_code"], entry["stdout_bytes"], entry["command"]),
            ("exited", 0, len(expected), ["seq", "1", "50000"]),
        )
        yield client.call("attach", {"process_id": process_id, "offsets": {"stdout": 0}})
        done = yield client.notification("process.completed", process_id)
        self.assertEqual(client.output(process_id), expected)
        self.assertEqual((done["status"], done["exit_code"]), ("completed", 0))
        yield client.close()

    @inlineCallbacks
    def test_restarted_service_replays_a_terminal_program(self):
        """
        A program on a terminal (not durable) that finished: a service
        started again on the same state dir lists it with its size and
        bytes, and an attach from 0 replays its one stream byte for byte;
        one that printed nothing (its journal made no file) too.
        """
        state_dir = tempfile.mkdtemp(prefix="ccx-test-state-")
        self.addCleanup(shutil.rmtree, state_dir, True)
        settings = {"state_dir": state_dir, "buffer_bytes": BUFFER}
        command = [program("sh"), "-c", "stty size; seq 1 50000; printf '\\033[1mbold'"]
        expected = (
            b"33 101\r\n"
            + "".join(f"{i}\r\n" for i in range(1, 50001)).encode()
            + b"\x1b[1mbold"
        )

        first = yield Deferred.fromCoroutine(
            ServiceProcess([program("sh")], settings=settings).started(reactor)
        )
        self.addCleanup(lambda: self.assertEqual(first.cgroups_left(), []))
        self.addCleanup(lambda: Deferred.fromCoroutine(first.stopped(reactor)))
        client = yield connect_to(self, first.port)
        result = yield client.call(
            "execute", {"command": command, "pty": {"rows": 33, "cols": 101}}
        )
        process_id = result["process_id"]
        yield client.notification("process.completed", process_id)
        self.assertEqual(client.output(process_id, "pty"), expected)
        silent = yield client.call(
            "execute", {"command": [program("sh"), "-c", "exit 0"], "pty": {"rows": 24, "cols": 80}}
        )
        yield client.notification("process.completed", silent["process_id"])
        yield client.close()
        yield Deferred.fromCoroutine(first.stopped(reactor))

        second = yield Deferred.fromCoroutine(
            ServiceProcess([program("sh")], settings=settings).started(reactor)
        )
        self.addCleanup(lambda: self.assertEqual(second.cgroups_left(), []))
        self.addCleanup(lambda: Deferred.fromCoroutine(second.stopped(reactor)))
        client = yield connect_to(self, second.port)
        listed = yield client.call("list")
        [entry] = [p for p in listed["processes"] if p["process_id"] == process_id]
        self.assertEqual(
            (entry["state"], entry["exit_code"], entry["pty_bytes"], entry["pty"], entry["durable"]),
            ("exited", 0, len(expected), {"rows": 33, "cols": 101}, False),
        )
        attached = yield client.call("attach", {"process_id": process_id, "offsets": {"pty": 0}})
        self.assertEqual(attached["offsets"], {"pty": 0})
        done = yield client.notification("process.completed", process_id)
        self.assertEqual(client.output(process_id, "pty"), expected)
        self.assertEqual((done["status"], done["pty_bytes"]), ("completed", len(expected)))
        [entry] = [p for p in listed["processes"] if p["process_id"] == silent["process_id"]]
        self.assertEqual((entry["state"], entry["pty_bytes"], entry["pty"]), ("exited", 0, {"rows": 24, "cols": 80}))
        attached = yield client.call(
            "attach", {"process_id": silent["process_id"], "offsets": {"pty": 0}}
        )
        self.assertEqual(attached["offsets"], {"pty": 0})
        done = yield client.notification("process.completed", silent["process_id"])
        self.assertEqual((done["status"], done["pty_bytes"]), ("completed", 0))
        yield client.close()

    @inlineCallbacks
    def test_no_journal_writes_nothing(self):
        """--no-journal: output in memory only, and nothing in the state dir."""
        ccx = yield ServiceFixture(self, buffer_bytes=BUFFER, journal=False).start()
        client = yield ccx.connect()
        result = yield ccx.execute(client, {"command": ["seq", "1", "10"]})
        yield client.notification("process.completed", result["process_id"])
        self.assertIsNone(ccx.service.node.registry.state_dir)
        self.assertFalse(os.path.exists(ccx.config.state_dir))

    @inlineCallbacks
    def test_forgetting_deletes_the_directory(self):
        """--max-finished governs records and journals together: the forgotten program's directory goes."""
        ccx = yield ServiceFixture(self, max_finished=1).start()
        client = yield ccx.connect()
        ids = []
        for _ in range(2):
            result = yield ccx.execute(client, {"command": ["seq", "1", "3"]})
            yield client.notification("process.completed", result["process_id"])
            ids.append(result["process_id"])
        programs = os.path.join(ccx.config.state_dir, "programs")
        self.assertEqual(os.listdir(programs), [ids[1]])
