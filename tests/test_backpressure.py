"""
Back-pressure end to end: a client that stops reading its socket holds the
program back (block) or skips ahead with exact drop accounting (drop).
"""

from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from ccx.process.group import ProcessGroup
from tests.support import ServiceFixture, chunk_bytes, until

BUFFER = 256 * 1024
# Large enough to fill the pipe, the held buffer and both sockets' kernel
# buffers many times over.
TOTAL = 64 * 1024 * 1024
LINES = 3_000_000
SEQ = "".join(f"{i}\n" for i in range(1, LINES + 1)).encode()


def flood(size: int) -> list:
    return ["sh", "-c", f"head -c {size} /dev/zero | tr '\\0' a"]


def covered(client, process_id, stream="stdout", start=0):
    """
    The (offset, data) chunks and (offset, bytes) drops one client received
    for a stream, checked to tile the stream with no gap and no overlap.
    """
    chunks, drops, position = [], [], start
    for m in client.messages:
        if not isinstance(m, dict) or m.get("params", {}).get("process_id") != process_id:
            continue
        p = m["params"]
        if m["method"] == "process.output" and p["type"] == stream:
            assert p["offset"] == position, (p["offset"], position)
            chunks.append((p["offset"], chunk_bytes(p)))
            position += len(chunks[-1][1])
        elif m["method"] == "process.dropped" and p["type"] == stream:
            assert p["offset"] == position, (p["offset"], position)
            drops.append((p["offset"], p["bytes"]))
            position += p["bytes"]
    return chunks, drops, position


class BackPressureTests(TestCase):
    timeout = 120

    @inlineCallbacks
    def setUp(self):
        self.ccx = yield ServiceFixture(self, buffer_bytes=BUFFER, journal=False, kill_grace=0.5).start()
        self.client = yield self.ccx.connect()
        self.registry = self.ccx.service.node.registry

    @inlineCallbacks
    def test_block_holds_the_program_back(self):
        """A client that stops reading blocks the program; nothing is lost when it reads on."""
        self.client.transport.pauseProducing()
        self.client.send_json(
            {"jsonrpc": "2.0", "id": 1, "method": "execute",
             "params": {"command": flood(TOTAL), "on_full": "block"}}
        )
        yield until(lambda: len(self.registry.live()) == 1)
        process = self.registry.live()[0]
        yield until(lambda: process.output.reading_paused)
        held = process.output.streams["stdout"]
        self.assertLessEqual(held.held_bytes, BUFFER + 64 * 1024)
        self.assertLess(held.end, TOTAL, "the program must be held back")
        self.assertFalse(process.finished)
        self.client.transport.resumeProducing()
        done = yield self.client.notification("process.completed", process.process_id)
        self.ccx.groups.append(done["pgid"])
        self.assertEqual(done["status"], "completed")
        self.assertEqual(done["dropped_bytes"], 0)
        chunks, drops, end = covered(self.client, process.process_id)
        self.assertEqual(drops, [])
        self.assertEqual(end, TOTAL)
        self.assertTrue(all(data == b"a" * len(data) for _, data in chunks))

    @inlineCallbacks
    def test_drop_never_slows_the_program(self):
        """With on_full drop a stalled client does not slow the program; drops are exact."""
        self.client.transport.pauseProducing()
        self.client.send_json(
            {"jsonrpc": "2.0", "id": 1, "method": "execute",
             "params": {"command": ["seq", "1", str(LINES)], "on_full": "drop"}}
        )
        yield until(lambda: len(self.registry.all()) == 1)
        process = self.registry.all()[0]
        yield process.ended
        self.assertEqual(process.output.streams["stdout"].end, len(SEQ))
        self.client.transport.resumeProducing()
        done = yield self.client.notification("process.completed", process.process_id)
        self.ccx.groups.append(done["pgid"])
        chunks, drops, end = covered(self.client, process.process_id)
        self.assertEqual(end, len(SEQ))
        self.assertTrue(drops, "a stalled client must have missed something")
        for offset, data in chunks:
            self.assertEqual(data, SEQ[offset : offset + len(data)])
        self.assertEqual(done["dropped_bytes"], sum(size for _, size in drops))
        self.assertEqual(done["status"], "completed")

    @inlineCallbacks
    def test_slow_observer_costs_nothing(self):
        """A stalled observer neither slows the program nor costs the starter a byte."""
        observer = yield self.ccx.connect()
        result = yield self.ccx.execute(
            self.client, {"command": ["sh", "-c", "read x; seq 1 %d" % LINES], "stdin": True}
        )
        yield observer.call("attach", {"process_id": result["process_id"]})
        observer.transport.pauseProducing()
        yield self.client.call("write", {"process_id": result["process_id"], "data": "go\n"})
        done = yield self.client.notification("process.completed", result["process_id"])
        self.assertEqual(self.client.output(result["process_id"]), SEQ)
        self.assertEqual(done["status"], "completed")
        observer.transport.resumeProducing()
        yield observer.notification("process.completed", result["process_id"])
        chunks, drops, end = covered(observer, result["process_id"])
        self.assertEqual(end, len(SEQ))
        self.assertTrue(drops)
        for offset, data in chunks:
            self.assertEqual(data, SEQ[offset : offset + len(data)])

    @inlineCallbacks
    def test_keep_without_subscriber_blocks_until_attach(self):
        """A keep program whose starter left blocks once its buffer is full, and resumes for a new reader."""
        # The program writes only once its starter has gone, so that the
        # starter is given none of its output.
        command = ["sh", "-c", "read go; " + flood(8 * 1024 * 1024)[2]]
        result = yield self.ccx.execute(
            self.client, {"command": command, "stdin": True, "on_disconnect": "keep"}
        )
        yield self.client.close()
        reader = yield self.ccx.connect()
        yield reader.call("write", {"process_id": result["process_id"], "data": "go\n"})
        process = self.registry.get(result["process_id"])
        yield until(lambda: process.output.reading_paused)
        self.assertFalse(process.finished)
        self.assertEqual(process.output.streams["stdout"].start, 0, "nothing may be evicted")
        yield reader.call(
            "attach", {"process_id": result["process_id"], "offsets": {"stdout": 0}, "on_full": "block"}
        )
        done = yield reader.notification("process.completed", result["process_id"])
        chunks, drops, end = covered(reader, result["process_id"])
        self.assertEqual((drops, end, done["dropped_bytes"]), ([], 8 * 1024 * 1024, 0))

    @inlineCallbacks
    def test_reattach_with_offsets_misses_nothing(self):
        """A client that lost its connection reattaches at the offsets it reached."""
        result = yield self.ccx.execute(
            self.client,
            {"command": ["sh", "-c", "seq 1 1000; read x; seq 1001 2000"], "stdin": True,
             "on_disconnect": "keep"},
        )
        yield until(lambda: len(self.client.output(result["process_id"])) == 3893)
        reached = len(self.client.output(result["process_id"]))
        yield self.client.close()
        again = yield self.ccx.connect()
        attached = yield again.call(
            "attach", {"process_id": result["process_id"], "offsets": {"stdout": reached}, "on_full": "block"}
        )
        self.assertEqual(attached["offsets"]["stdout"], reached)
        yield again.call("write", {"process_id": result["process_id"], "data": "\n"})
        yield again.notification("process.completed", result["process_id"])
        rest = b"".join(data for _, data in covered(again, result["process_id"], start=reached)[0])
        expected = "".join(f"{i}\n" for i in range(1, 2001)).encode()
        self.assertEqual(expected[:reached] + rest, expected)

    @inlineCallbacks
    def test_detach_stops_the_stream(self):
        """detach ends a subscription: no more output reaches that connection."""
        result = yield self.ccx.execute(
            self.client, {"command": ["sh", "-c", "read x; echo after"], "stdin": True}
        )
        observer = yield self.ccx.connect()
        yield observer.call("attach", {"process_id": result["process_id"]})
        yield observer.call("detach", {"process_id": result["process_id"]})
        yield self.client.call("write", {"process_id": result["process_id"], "data": "\n"})
        yield self.client.notification("process.completed", result["process_id"])
        ping = yield observer.call("ping")
        self.assertEqual(ping, {})
        self.assertEqual(observer.output(result["process_id"]), b"")


class EndingWhileHeldBackTests(TestCase):
    """
    A program whose output is held back, with nobody to read it, still ends.
    """

    timeout = 60

    @inlineCallbacks
    def setUp(self):
        self.ccx = yield ServiceFixture(self, buffer_bytes=BUFFER, journal=False, kill_grace=0.5).start()
        self.registry = self.ccx.service.node.registry

    @inlineCallbacks
    def held_back(self, **params):
        client = yield self.ccx.connect()
        result = yield self.ccx.execute(client, {"command": ["yes"], **params})
        process = self.registry.get(result["process_id"])
        client.transport.pauseProducing()
        yield until(lambda: process.output.reading_paused)
        return client, process

    @inlineCallbacks
    def test_connection_closes_while_held_back(self):
        """A stalled client's connection closing cancels its program, which finishes."""
        client, process = yield self.held_back()
        client.transport.abortConnection()
        finished = yield process.ended
        self.assertEqual(finished.outcome, "cancelled")
        self.assertEqual(self.registry.live_count, 0)

    @inlineCallbacks
    def test_service_stops_with_a_kept_held_back_program(self):
        """Stopping the service ends a kept program whose full buffer nobody reads."""
        client, process = yield self.held_back(on_disconnect="keep")
        client.transport.abortConnection()
        yield client.closed
        self.assertFalse(process.finished)
        yield self.ccx.service.stopService()
        self.assertTrue(process.finished)
        self.assertEqual(ProcessGroup(process.pid).members(), [])
