"""
What the dashboard needs of the native protocol: C{watch} (the process
table, live, whoever starts what), C{programs} (what may run) and C{read}
(past output, for scrollback), end to end on a real service.
"""

import base64
import os

from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from ccx.native.watching import NOTIFICATION, ProcessTableFeed
from ccx.process.registry import ProcessRegistry
from ccx.process.watch import ProcessWatch
from ccx.rpc.errors import INVALID_PARAMS, PROCESS_NOT_FOUND
from tests.support import PROGRAMS, ServiceFixture, program, until


class Channel:
    def __init__(self):
        self.writable = True
        self.sent = []

    def send_notification(self, method, params):
        self.sent.append((method, params))


class Process:
    def __init__(self, process_id):
        self.process_id = process_id


class FeedTests(SynchronousTestCase):
    """
    The feed gathers changes for a reactor turn, sends one per process,
    and holds them (one per process) while its connection cannot take more.
    """

    def setUp(self):
        self.clock = Clock()
        self.registry = ProcessRegistry(self.clock, 4, 10.0)
        self.channel = Channel()
        self.feed = ProcessTableFeed(self.registry, self.channel, self.clock)
        self.entries = []
        import ccx.native.watching as watching

        self.patch(watching, "process_entry", lambda p: {"process_id": p.process_id})

    def test_sent_at_the_end_of_the_turn(self):
        p = Process("a")
        self.registry.watch.notify("started", p)
        self.assertEqual(self.channel.sent, [])
        self.clock.advance(0)
        self.assertEqual(
            self.channel.sent,
            [(NOTIFICATION, {"event": "started", "process_id": "a", "process": {"process_id": "a"}})],
        )

    def test_one_per_process_with_the_last_event(self):
        a, b = Process("a"), Process("b")
        for event, p in (("started", a), ("started", b), ("paused", a)):
            self.registry.watch.notify(event, p)
        self.clock.advance(0)
        self.assertEqual(
            [(m["process_id"], m["event"]) for _, m in self.channel.sent], [("b", "started"), ("a", "paused")]
        )

    def test_held_while_not_writable(self):
        """A connection that cannot take more holds one change per process, sent by pump."""
        self.channel.writable = False
        a = Process("a")
        for _ in range(1000):
            self.registry.watch.notify("paused", a)
            self.registry.watch.notify("resumed", a)
        self.clock.advance(0)
        self.assertEqual(self.channel.sent, [])
        self.assertEqual(len(self.feed._pending), 1)
        self.channel.writable = True
        self.feed.pump()
        self.assertEqual([m["event"] for _, m in self.channel.sent], ["resumed"])

    def test_forgotten_has_no_entry(self):
        self.registry.watch.notify("forgotten", Process("a"))
        self.clock.advance(0)
        self.assertEqual(self.channel.sent[0][1]["process"], None)

    def test_close_stops_it(self):
        self.registry.watch.notify("started", Process("a"))
        self.feed.close()
        self.clock.advance(0)
        self.registry.watch.notify("started", Process("b"))
        self.clock.advance(0)
        self.assertEqual(self.channel.sent, [])
        self.assertEqual(len(self.registry.watch), 0)


class WatchTests(SynchronousTestCase):
    def test_observers(self):
        watch, seen = ProcessWatch(), []
        observer = lambda event, p: seen.append((event, p))  # noqa: E731
        watch.add(observer)
        watch.notify("started", 1)
        watch.remove(observer)
        watch.remove(observer)
        watch.notify("ended", 1)
        self.assertEqual(seen, [("started", 1)])


class DashboardProtocolTests(TestCase):
    timeout = 30

    @inlineCallbacks
    def setUp(self):
        self.ccx = yield ServiceFixture(self).start()
        self.watcher = yield self.ccx.connect("/ws")
        self.other = yield self.ccx.connect("/ws")

    def changes(self, process_id):
        return [
            m["params"]["event"]
            for m in self.watcher.messages
            if isinstance(m, dict)
            and m.get("method") == NOTIFICATION
            and m["params"]["process_id"] == process_id
        ]

    def change(self, process_id, event):
        return self.watcher.wait_for(
            lambda m: isinstance(m, dict)
            and m.get("method") == NOTIFICATION
            and m["params"]["process_id"] == process_id
            and m["params"]["event"] == event
        ).addCallback(lambda m: m["params"])

    @inlineCallbacks
    def test_watch_sees_another_clients_programs(self):
        """watch answers the table, then every change of a program another client runs."""
        table = yield self.watcher.call("watch")
        self.assertEqual(table, {"processes": []})
        started = yield self.ccx.execute(
            self.other, {"command": [program("sleep"), "30"]}
        )
        pid = started["process_id"]
        change = yield self.change(pid, "started")
        self.assertEqual(change["process"]["state"], "running")
        self.assertEqual(change["process"]["command"], [program("sleep"), "30"])
        yield self.other.call("control", {"type": "PAUSE", "process_id": pid})
        change = yield self.change(pid, "paused")
        self.assertEqual(change["process"]["state"], "paused")
        yield self.other.call("control", {"type": "RESUME", "process_id": pid})
        yield self.change(pid, "resumed")
        yield self.other.call("control", {"type": "CANCEL", "process_id": pid})
        change = yield self.change(pid, "ended")
        self.assertEqual(change["process"]["state"], "exited")
        yield self.other.call("forget", {"process_id": pid})
        change = yield self.change(pid, "forgotten")
        self.assertIsNone(change["process"])

    @inlineCallbacks
    def test_watch_twice_and_unwatch(self):
        """A second watch is one subscription; after unwatch nothing more comes."""
        yield self.watcher.call("watch")
        yield self.watcher.call("watch")
        first = yield self.ccx.execute(self.other, {"command": [program("true")]})
        yield self.change(first["process_id"], "ended")
        self.assertEqual(self.changes(first["process_id"]).count("ended"), 1)
        self.assertEqual((yield self.watcher.call("unwatch")), {})
        second = yield self.ccx.execute(self.other, {"command": [program("true")]})
        yield self.other.notification("process.completed", second["process_id"])
        yield self.watcher.call("ping")
        self.assertEqual(self.changes(second["process_id"]), [])
        self.assertEqual(len(self.ccx.service.node.registry.watch), 0)

    @inlineCallbacks
    def test_closing_ends_the_watch(self):
        yield self.watcher.call("watch")
        yield self.watcher.close()
        yield until(lambda: len(self.ccx.service.node.registry.watch) == 0)

    @inlineCallbacks
    def test_watch_takes_no_params(self):
        response = yield self.watcher.request("watch", {"interval": 1})
        self.assertEqual(response["error"]["code"], INVALID_PARAMS)

    @inlineCallbacks
    def test_programs(self):
        """programs names every program the allow-list holds, by each name it may run under."""
        result = yield self.watcher.call("programs")
        names = [p["name"] for p in result["programs"]]
        self.assertEqual(sorted(names), sorted(PROGRAMS))
        for entry in result["programs"]:
            self.assertEqual(entry["path"], os.path.realpath(program(entry["name"])))

    @inlineCallbacks
    def test_read(self):
        """read returns a range of past output exactly, and its bounds."""
        started = yield self.ccx.execute(
            self.other, {"command": [program("seq"), "1", "3000"]}
        )
        pid = started["process_id"]
        yield self.other.notification("process.completed", pid)
        whole = b"".join(b"%d\n" % i for i in range(1, 3001))
        result = yield self.watcher.call(
            "read", {"process_id": pid, "stream": "stdout", "offset": 100, "bytes": 5000}
        )
        self.assertEqual(base64.b64decode(result["data"]), whole[100:5100])
        self.assertEqual(
            (result["offset"], result["bytes"], result["start"], result["end"], result["stream"]),
            (100, 5000, 0, len(whole), "stdout"),
        )
        # Up to the end, no further; at the end, nothing.
        result = yield self.watcher.call(
            "read", {"process_id": pid, "offset": len(whole) - 3, "encoding": "utf-8"}
        )
        self.assertEqual((result["data"], result["stream"]), ("00\n", "stdout"))
        result = yield self.watcher.call("read", {"process_id": pid, "offset": len(whole)})
        self.assertEqual(result["bytes"], 0)

    @inlineCallbacks
    def test_read_refusals(self):
        """Just past each bound of read is refused with -32602; an unknown id with -32003."""
        started = yield self.ccx.execute(self.other, {"command": [program("printf"), "abc"]})
        pid = started["process_id"]
        yield self.other.notification("process.completed", pid)
        for params in (
            {"process_id": pid, "offset": 4},
            {"process_id": pid, "offset": -1},
            {"process_id": pid, "offset": 0, "bytes": 0},
            {"process_id": pid, "offset": 0, "bytes": 1024 * 1024 + 1},
            {"process_id": pid, "offset": True},
            {"process_id": pid, "stream": "pty"},
            {"process_id": pid, "stream": "stdin"},
        ):
            response = yield self.watcher.request("read", params)
            self.assertEqual(response["error"]["code"], INVALID_PARAMS, params)
        for params in (
            {"process_id": pid, "offset": 3},
            {"process_id": pid, "offset": 0, "bytes": 1},
            {"process_id": pid, "offset": 0, "bytes": 1024 * 1024},
        ):
            yield self.watcher.call("read", params)
        response = yield self.watcher.request("read", {"process_id": "0" * 32})
        self.assertEqual(response["error"]["code"], PROCESS_NOT_FOUND)

    @inlineCallbacks
    def test_capabilities(self):
        connected = yield self.watcher.notification("connected")
        for name in ("watch", "programs", "read"):
            self.assertIn(name, connected["capabilities"])
