"""
Tests for L{ccx.output.fanout}: delivery to subscribers, drops and
back-pressure, with a fake sink and a fake read control.
"""

import base64
from typing import Dict, List, Optional, Tuple

from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from ccx.native.wire import changed_params, completed_params, started_params
from ccx.output.events import (
    Completion,
    OutputChunk,
    OutputDropped,
    ProcessStarted,
    StateChanged,
)
from ccx.output.fanout import MAX_CHUNK, ProcessOutput
from ccx.output.interfaces import IOutputSink, IReadControl
from ccx.protocol import BASE64, UTF8
from tests.fakes import COMPLETION, FakeSink

PAUSED = StateChanged("p1", 42, "paused")


class PausingSink(FakeSink):
    """
    A sink whose consumer pauses it after each notification, as a transport
    with a full buffer does.
    """

    def send_notification(self, method: str, params: dict) -> None:
        FakeSink.send_notification(self, method, params)
        self.writable = False


@implementer(IReadControl)
class FakeReader:
    """
    A read control that counts the calls made to it.
    """

    def __init__(self) -> None:
        self.pauses = 0
        self.resumes = 0

    def pauseProducing(self) -> None:
        self.pauses += 1

    def resumeProducing(self) -> None:
        self.resumes += 1


def make_output(
    blocking: bool, max_bytes: int = 10, max_lines: int = 1000
) -> Tuple[ProcessOutput, FakeReader]:
    """
    A process output with a fake read control connected.
    """
    output = ProcessOutput("p1", max_bytes, max_lines, blocking)
    reader = FakeReader()
    output.set_reader(reader)
    return output, reader


def subscribe(
    output: ProcessOutput,
    blocking: bool,
    writable: bool = True,
    offsets: Optional[Dict[str, int]] = None,
    encoding: str = UTF8,
) -> FakeSink:
    """
    Add an active subscriber; return its sink.
    """
    sink = FakeSink(writable, encoding)
    output.subscribe(sink, blocking, offsets).activate()
    return sink


def spans(sink: FakeSink, stream: str) -> List[Tuple[str, int, int]]:
    """
    What C{sink} was told of C{stream}, in order: C{(method, start, end)}.
    """
    result = []
    for method, params in sink.sent:
        if params.get("type") != stream:
            continue
        if method == "process.output":
            size = len(params["data"].encode("utf-8"))
        else:
            size = params["bytes"]
        result.append((method, params["offset"], params["offset"] + size))
    return result


class FakesTests(SynchronousTestCase):
    """
    The fakes provide the interfaces they stand in for.
    """

    def test_sink(self) -> None:
        """L{FakeSink} and L{PausingSink} provide L{IOutputSink}."""
        self.assertTrue(verifyObject(IOutputSink, FakeSink()))
        self.assertTrue(verifyObject(IOutputSink, PausingSink()))

    def test_reader(self) -> None:
        """L{FakeReader} provides L{IReadControl}."""
        self.assertTrue(verifyObject(IReadControl, FakeReader()))


class DeliveryTests(SynchronousTestCase):
    """
    What a subscriber is sent, and in what order.
    """

    def test_output_params(self) -> None:
        """A chunk carries its stream, data, offset, read time and no truncation."""
        output, _ = make_output(blocking=False, max_bytes=100)
        sink = subscribe(output, blocking=False)
        output.receive("stdout", b"hello\n", 12.5)
        output.receive("stderr", b"oops\n", 13.0)
        self.assertEqual(
            sink.sent,
            [
                (
                    "process.output",
                    {
                        "process_id": "p1",
                        "type": "stdout",
                        "data": "hello\n",
                        "offset": 0,
                        "time": 12.5,
                        "truncated": False,
                    },
                ),
                (
                    "process.output",
                    {
                        "process_id": "p1",
                        "type": "stderr",
                        "data": "oops\n",
                        "offset": 0,
                        "time": 13.0,
                        "truncated": False,
                    },
                ),
            ],
        )

    def test_offsets_per_stream(self) -> None:
        """Each stream has its own offsets, following on from chunk to chunk."""
        output, _ = make_output(blocking=False, max_bytes=100)
        sink = subscribe(output, blocking=False)
        output.receive("stdout", b"hello\n", 1.0)
        output.receive("stderr", b"oops\n", 2.0)
        output.receive("stdout", b"bye\n", 3.0)
        self.assertEqual(
            spans(sink, "stdout"),
            [("process.output", 0, 6), ("process.output", 6, 10)],
        )
        self.assertEqual(spans(sink, "stderr"), [("process.output", 0, 5)])

    def test_time_is_when_read(self) -> None:
        """A chunk delivered live carries the time its first byte was read."""
        output, _ = make_output(blocking=False, max_bytes=100)
        sink = subscribe(output, blocking=False)
        output.receive("stdout", b"one\n", 1.0)
        output.receive("stdout", b"two\n", 2.0)
        times = [p["time"] for p in sink.params("process.output")]
        self.assertEqual(times, [1.0, 2.0])

    def test_chunk_size_limit(self) -> None:
        """No chunk carries more than C{MAX_CHUNK} bytes; together they are whole."""
        output, _ = make_output(blocking=False, max_bytes=4 * MAX_CHUNK)
        sink = subscribe(output, blocking=False)
        data = b"x" * (2 * MAX_CHUNK + 5)
        output.receive("stdout", data, 1.0)
        sizes = [len(p["data"]) for p in sink.params("process.output")]
        self.assertEqual(sizes, [MAX_CHUNK, MAX_CHUNK, 5])
        self.assertEqual(sink.data(), data)

    def test_sink_paused_during_delivery(self) -> None:
        """A sink that stops being writable is sent nothing more until pumped."""
        output, _ = make_output(blocking=False, max_bytes=4 * MAX_CHUNK)
        sink = PausingSink()
        subscription = output.subscribe(sink, False)
        subscription.activate()
        output.receive("stdout", b"x" * (2 * MAX_CHUNK), 1.0)
        self.assertEqual(sink.methods(), ["process.output"])
        sink.writable = True
        output.pump(subscription)
        self.assertEqual(
            spans(sink, "stdout"),
            [
                ("process.output", 0, MAX_CHUNK),
                ("process.output", MAX_CHUNK, 2 * MAX_CHUNK),
            ],
        )

    def test_inactive_until_activated(self) -> None:
        """An inactive subscription is sent nothing until L{activate}."""
        output, _ = make_output(blocking=False, max_bytes=100)
        sink = FakeSink()
        subscription = output.subscribe(sink, False)
        output.receive("stdout", b"early\n", 1.0)
        output.broadcast(PAUSED)
        output.complete(COMPLETION)
        self.assertEqual(sink.sent, [])
        subscription.activate()
        self.assertEqual(sink.methods(), ["process.output", "process.completed"])
        self.assertEqual(sink.data(), b"early\n")

    def test_first_before_output(self) -> None:
        """The C{first} notification is sent on activation, before any output."""
        output, _ = make_output(blocking=False, max_bytes=100)
        output.receive("stdout", b"held\n", 1.0)
        sink = FakeSink()
        started = ProcessStarted("p1", 42, ("prog",))
        subscription = output.subscribe(sink, True, first=started)
        output.receive("stdout", b"more\n", 2.0)
        self.assertEqual(sink.sent, [])
        subscription.activate()
        subscription.activate()
        self.assertEqual(sink.sent[0], ("process.started", started_params(started)))
        self.assertEqual(sink.methods(), ["process.started", "process.output"])
        self.assertEqual(sink.data(), b"held\nmore\n")

    def test_default_offsets_oldest_held(self) -> None:
        """A new subscriber starts at the oldest byte held, with no drop reported."""
        output, _ = make_output(blocking=False, max_bytes=4)
        output.receive("stdout", b"0123456789", 1.0)
        sink = subscribe(output, blocking=False)
        self.assertEqual(spans(sink, "stdout"), [("process.output", 6, 10)])

    def test_offsets_no_longer_held(self) -> None:
        """Attaching at offsets no longer held reports the missed range, then output."""
        output, _ = make_output(blocking=False, max_bytes=4)
        output.receive("stdout", b"0123456789", 1.0)
        output.receive("stderr", b"abc", 1.0)
        sink = subscribe(output, blocking=False, offsets={"stdout": 2, "stderr": 1})
        self.assertEqual(
            spans(sink, "stdout"),
            [("process.dropped", 2, 6), ("process.output", 6, 10)],
        )
        self.assertEqual(spans(sink, "stderr"), [("process.output", 1, 3)])

    def test_broadcast(self) -> None:
        """A broadcast reaches active subscribers that are not done."""
        output, _ = make_output(blocking=False)
        active = subscribe(output, blocking=False)
        inactive = FakeSink()
        output.subscribe(inactive, False)
        gone = FakeSink()
        subscription = output.subscribe(gone, False)
        subscription.activate()
        output.unsubscribe(subscription)
        output.broadcast(PAUSED)
        self.assertEqual(active.sent, [("process.paused", changed_params(PAUSED))])
        self.assertEqual((inactive.sent, gone.sent), ([], []))

    def test_unsubscribe_stops_delivery(self) -> None:
        """An unsubscribed subscriber is sent nothing more, not even completion."""
        output, _ = make_output(blocking=False, max_bytes=100)
        sink = FakeSink()
        subscription = output.subscribe(sink, False)
        subscription.activate()
        output.receive("stdout", b"one\n", 1.0)
        output.unsubscribe(subscription)
        output.receive("stdout", b"two\n", 2.0)
        output.pump(subscription)
        output.complete(COMPLETION)
        self.assertEqual(sink.methods(), ["process.output"])
        self.assertEqual(sink.data(), b"one\n")
        self.assertNotIn(subscription, output.subscriptions)


class CompletionTests(SynchronousTestCase):
    """
    C{process.completed}: once, last, after all output.
    """

    def test_once_and_last(self) -> None:
        """Completion is sent once, after the output, and nothing follows it."""
        output, _ = make_output(blocking=True, max_bytes=100)
        sink = subscribe(output, blocking=True)
        output.receive("stdout", b"out\n", 1.0)
        output.receive("stderr", b"err\n", 1.0)
        output.complete(COMPLETION)
        output.pump_all()
        output.broadcast(PAUSED)
        self.assertEqual(
            sink.methods(), ["process.output", "process.output", "process.completed"]
        )
        self.assertEqual(sink.sent[-1], ("process.completed", completed_params(COMPLETION)))

    def test_paused_at_completion(self) -> None:
        """A sink paused at completion gets the rest of the output first."""
        output, _ = make_output(blocking=True, max_bytes=100)
        sink = FakeSink()
        subscription = output.subscribe(sink, True)
        subscription.activate()
        output.receive("stdout", b"one\n", 1.0)
        sink.writable = False
        output.receive("stdout", b"two\n", 2.0)
        output.receive("stderr", b"err\n", 2.0)
        output.complete(COMPLETION)
        self.assertEqual(sink.methods(), ["process.output"])
        sink.writable = True
        output.pump(subscription)
        output.pump(subscription)
        self.assertEqual(sink.methods()[-1], "process.completed")
        self.assertEqual(sink.methods().count("process.completed"), 1)
        self.assertEqual((sink.data("stdout"), sink.data("stderr")),
                         (b"one\ntwo\n", b"err\n"))

    def test_after_drops(self) -> None:
        """A subscriber that fell behind gets its drops, output, then completion."""
        output, _ = make_output(blocking=False, max_bytes=4)
        sink = subscribe(output, blocking=False, writable=False)
        output.receive("stdout", b"0123456789", 1.0)
        output.complete(COMPLETION)
        self.assertEqual(sink.sent, [])
        sink.writable = True
        output.pump_all()
        self.assertEqual(
            sink.methods(), ["process.dropped", "process.output", "process.completed"]
        )

    def test_attach_after_completion(self) -> None:
        """Attaching to a finished process replays what is held, then completion."""
        output, _ = make_output(blocking=False, max_bytes=100)
        output.receive("stdout", b"kept\n", 1.0)
        output.complete(COMPLETION)
        sink = subscribe(output, blocking=False)
        self.assertEqual(sink.methods(), ["process.output", "process.completed"])

    def test_end_of_streams_is_not_completion(self) -> None:
        """Ending a stream alone does not complete the process."""
        output, _ = make_output(blocking=False, max_bytes=100)
        sink = subscribe(output, blocking=False)
        output.receive("stdout", b"x", 1.0)
        output.end_stream("stdout")
        output.end_stream("stderr")
        self.assertNotIn("process.completed", sink.methods())


class DropModeTests(SynchronousTestCase):
    """
    A process started with C{on_full: "drop"}: never slowed, drops reported.
    """

    def assertCovers(self, sink: FakeSink, stream: str, end: int) -> None:
        """
        Assert that what C{sink} was told of C{stream} covers C{[0, end)}
        with no gap and no overlap.
        """
        position = 0
        for method, start, stop in spans(sink, stream):
            self.assertEqual(start, position, (method, start, stop))
            self.assertGreater(stop, start)
            position = stop
        self.assertEqual(position, end)

    def test_paused_sink_falls_behind(self) -> None:
        """A paused sink falls behind, then gets the exact range missed and the rest."""
        output, _ = make_output(blocking=False, max_bytes=10)
        sink = FakeSink(writable=False)
        subscription = output.subscribe(sink, False)
        subscription.activate()
        output.receive("stdout", b"0123456789", 1.0)
        output.receive("stdout", b"abcdef", 2.0)
        self.assertEqual(sink.sent, [])
        sink.writable = True
        output.pump(subscription)
        self.assertEqual(
            sink.sent[0],
            ("process.dropped",
             {"process_id": "p1", "type": "stdout", "offset": 0, "bytes": 6}),
        )
        self.assertEqual(sink.params("process.output")[0]["offset"], 6)
        self.assertEqual(sink.data(), b"6789abcdef")

    def test_never_slowed(self) -> None:
        """Reading is never paused, however far behind a subscriber is."""
        output, reader = make_output(blocking=False, max_bytes=10, max_lines=2)
        subscribe(output, blocking=True, writable=False)
        for index in range(20):
            output.receive("stdout", b"line\n", float(index))
        self.assertEqual((reader.pauses, output.reading_paused), (0, False))
        self.assertLessEqual(output.streams["stdout"].held_bytes, 10)

    def test_coverage(self) -> None:
        """Delivered and dropped ranges cover each stream exactly."""
        output, _ = make_output(blocking=False, max_bytes=7, max_lines=3)
        sinks = [FakeSink() for _ in range(3)]
        subscriptions = [output.subscribe(sink, False) for sink in sinks]
        for subscription in subscriptions:
            subscription.activate()
        for step in range(60):
            for number, (sink, subscription) in enumerate(zip(sinks, subscriptions)):
                sink.writable = (step // (number + 2)) % 2 == 0
                output.pump(subscription)
            stream = "stderr" if step % 3 == 0 else "stdout"
            output.receive(stream, b"ab\ncd"[: step % 5 + 1], float(step))
        output.complete(COMPLETION)
        for sink in sinks:
            sink.writable = True
        output.pump_all()
        for sink in sinks:
            for stream in ("stdout", "stderr"):
                self.assertCovers(sink, stream, output.streams[stream].end)
            self.assertIn("process.dropped", sink.methods())
            self.assertEqual(sink.methods()[-1], "process.completed")

    def test_dropped_bytes(self) -> None:
        """C{dropped_bytes} counts the bytes evicted before a subscriber had them."""
        output, _ = make_output(blocking=False, max_bytes=10)
        sink = subscribe(output, blocking=False, writable=False)
        output.receive("stdout", b"0123456789", 1.0)
        output.receive("stdout", b"abcdef", 2.0)
        output.receive("stderr", b"0123456789ABC", 2.0)
        self.assertEqual(output.dropped_bytes, 9)
        sink.writable = True
        output.pump_all()
        dropped = sum(p["bytes"] for p in sink.params("process.dropped"))
        self.assertEqual(dropped, output.dropped_bytes)

    def test_dropped_bytes_none_missed(self) -> None:
        """Bytes evicted after every subscriber had them are not counted."""
        output, _ = make_output(blocking=False, max_bytes=4)
        sink = subscribe(output, blocking=False)
        output.receive("stdout", b"0123456789", 1.0)
        output.receive("stdout", b"abcdef", 2.0)
        self.assertEqual(output.streams["stdout"].start, 12)
        self.assertEqual(output.dropped_bytes, 0)
        self.assertEqual(sink.data(), b"0123456789abcdef")

    def test_dropped_bytes_no_subscriber(self) -> None:
        """With no subscriber, every evicted byte counts as dropped."""
        output, _ = make_output(blocking=False, max_bytes=4)
        output.receive("stdout", b"0123456789", 1.0)
        self.assertEqual(output.dropped_bytes, 6)

    def test_holds_up_to_limit(self) -> None:
        """An observer attaching late loses only what the byte limit forced out."""
        output, _ = make_output(blocking=False, max_bytes=8192, max_lines=1)
        output.receive("stdout", b"a" * 5000, 1.0)
        output.receive("stdout", b"b\n" + b"c" * 4998, 2.0)
        sink = subscribe(output, blocking=False, offsets={"stdout": 0})
        self.assertEqual(spans(sink, "stdout")[0], ("process.dropped", 0, 1808))
        self.assertEqual(output.dropped_bytes, 1808)

    def test_slow_subscriber_costs_fast_nothing(self) -> None:
        """A slow subscriber loses bytes; a fast one alongside loses none."""
        output, _ = make_output(blocking=False, max_bytes=8, max_lines=2)
        fast = subscribe(output, blocking=False)
        slow = subscribe(output, blocking=False, writable=False)
        text = b"".join(b"line %d\n" % index for index in range(30))
        for index in range(0, len(text), 5):
            output.receive("stdout", text[index : index + 5], float(index))
        slow.writable = True
        output.pump_all()
        self.assertEqual(fast.data(), text)
        self.assertEqual(fast.params("process.dropped"), [])
        self.assertEqual(slow.methods()[0], "process.dropped")
        self.assertCovers(slow, "stdout", len(text))
        missed = sum(p["bytes"] for p in slow.params("process.dropped"))
        self.assertEqual(output.dropped_bytes, missed)


class BlockModeTests(SynchronousTestCase):
    """
    A process started with C{on_full: "block"}: reading stops rather than
    let a blocking subscriber lose output.
    """

    def test_pauses_reading_at_limit(self) -> None:
        """A paused blocking subscriber stops reading once the buffer is full."""
        output, reader = make_output(blocking=True, max_bytes=10)
        subscribe(output, blocking=True, writable=False)
        output.receive("stdout", b"012345678", 1.0)
        self.assertEqual(reader.pauses, 0)
        output.receive("stdout", b"9", 2.0)
        self.assertEqual(reader.pauses, 1)
        self.assertTrue(output.reading_paused)
        output.receive("stdout", b"late", 3.0)
        self.assertEqual(reader.pauses, 1)

    def test_pauses_reading_at_line_limit(self) -> None:
        """The line limit stops reading too."""
        output, reader = make_output(blocking=True, max_bytes=100, max_lines=2)
        subscribe(output, blocking=True, writable=False)
        output.receive("stderr", b"a\n", 1.0)
        output.receive("stderr", b"b\n", 2.0)
        self.assertEqual(reader.pauses, 1)

    def test_resume(self) -> None:
        """A resumed sink gets everything and reading resumes; nothing is lost."""
        output, reader = make_output(blocking=True, max_bytes=10)
        sink = FakeSink(writable=False)
        subscription = output.subscribe(sink, True)
        subscription.activate()
        data = b"0123456789abcdefghij"
        for index in range(0, len(data), 3):
            output.receive("stdout", data[index : index + 3], float(index))
        self.assertEqual(output.streams["stdout"].start, 0)
        sink.writable = True
        output.pump(subscription)
        self.assertEqual(sink.data(), data)
        self.assertEqual((reader.pauses, reader.resumes), (1, 1))
        self.assertFalse(output.reading_paused)
        output.receive("stdout", b"klmnopqrstuvwxyz", 9.0)
        output.complete(COMPLETION)
        self.assertEqual(sink.data(), data + b"klmnopqrstuvwxyz")
        self.assertEqual(sink.params("process.dropped"), [])
        self.assertEqual(output.dropped_bytes, 0)

    def test_slowest_blocking_subscriber_holds_back(self) -> None:
        """The slowest blocking subscriber decides; unsubscribing it resumes reading."""
        output, reader = make_output(blocking=True, max_bytes=10)
        fast = subscribe(output, blocking=True)
        slow_sink = FakeSink(writable=False)
        slow = output.subscribe(slow_sink, True)
        slow.activate()
        output.receive("stdout", b"0123456789", 1.0)
        self.assertEqual(reader.pauses, 1)
        self.assertEqual(fast.data(), b"0123456789")
        output.unsubscribe(slow)
        self.assertEqual(reader.resumes, 1)
        self.assertFalse(output.reading_paused)
        output.receive("stdout", b"abc", 2.0)
        self.assertEqual(slow_sink.sent, [])
        self.assertEqual(output.dropped_bytes, 0)

    def test_dropping_observer_does_not_hold_back(self) -> None:
        """A paused dropping observer beside a blocking subscriber slows nothing."""
        output, reader = make_output(blocking=True, max_bytes=10)
        blocking = subscribe(output, blocking=True)
        observer = subscribe(output, blocking=False, writable=False)
        for index in range(10):
            output.receive("stdout", b"abcd", float(index))
        self.assertEqual(reader.pauses, 0)
        self.assertEqual(blocking.data(), b"abcd" * 10)
        self.assertEqual(output.dropped_bytes, 30)
        observer.writable = True
        output.pump_all()
        self.assertEqual(spans(observer, "stdout")[0], ("process.dropped", 0, 30))

    def test_no_blocking_subscriber(self) -> None:
        """With only a dropping observer, the buffer stands in: full stops reading."""
        output, reader = make_output(blocking=True, max_bytes=10)
        observer = subscribe(output, blocking=False, writable=False)
        output.receive("stdout", b"0123456789", 1.0)
        output.receive("stdout", b"abcdef", 2.0)
        self.assertEqual(reader.pauses, 1)
        self.assertEqual(output.streams["stdout"].start, 0)
        observer.writable = True
        output.pump_all()
        self.assertEqual(observer.data(), b"0123456789abcdef")
        self.assertEqual(observer.params("process.dropped"), [])
        self.assertTrue(output.reading_paused)
        self.assertEqual(output.dropped_bytes, 0)

    def test_blocking_subscriber_attaches(self) -> None:
        """A blocking subscriber that attaches and reads on resumes reading."""
        output, reader = make_output(blocking=True, max_bytes=10)
        output.receive("stdout", b"0123456789abc", 1.0)
        self.assertEqual((reader.pauses, output.streams["stdout"].start), (1, 0))
        sink = subscribe(output, blocking=True)
        self.assertEqual(sink.data(), b"0123456789abc")
        self.assertEqual(reader.resumes, 1)

    def test_starter_leaves(self) -> None:
        """When the only blocking subscriber leaves, nothing is evicted any more."""
        output, reader = make_output(blocking=True, max_bytes=10)
        sink = FakeSink()
        subscription = output.subscribe(sink, True)
        subscription.activate()
        output.receive("stdout", b"01234", 1.0)
        output.unsubscribe(subscription)
        output.receive("stdout", b"56789abc", 2.0)
        self.assertEqual(output.streams["stdout"].start, 0)
        self.assertEqual(reader.pauses, 1)

    def test_set_reader_when_full(self) -> None:
        """A read control connected to a full buffer is paused at once."""
        output = ProcessOutput("p1", 4, 100, True)
        output.receive("stdout", b"abcd", 1.0)
        reader = FakeReader()
        output.set_reader(reader)
        self.assertEqual(reader.pauses, 1)


class EncodingTests(SynchronousTestCase):
    """
    How C{process.output} carries bytes.
    """

    def test_never_splits_a_character(self) -> None:
        """Fed one byte at a time, each chunk holds whole characters only."""
        text = "é€😀"
        output, _ = make_output(blocking=False, max_bytes=100)
        sink = subscribe(output, blocking=False)
        for byte in text.encode("utf-8"):
            output.receive("stdout", bytes([byte]), 1.0)
        chunks = [p["data"] for p in sink.params("process.output")]
        self.assertEqual(chunks, ["é", "€", "😀"])
        self.assertEqual("".join(chunks), text)
        self.assertEqual([p["offset"] for p in sink.params("process.output")],
                         [0, 2, 5])

    def test_split_character_while_paused(self) -> None:
        """A chunk sent after a pause stops before a character still incomplete."""
        output, _ = make_output(blocking=False, max_bytes=100)
        sink = FakeSink(writable=False)
        subscription = output.subscribe(sink, False)
        subscription.activate()
        encoded = "a😀".encode("utf-8")
        output.receive("stdout", encoded[:3], 1.0)
        sink.writable = True
        output.pump(subscription)
        self.assertEqual(sink.params("process.output")[0]["data"], "a")
        output.receive("stdout", encoded[3:], 2.0)
        self.assertEqual(sink.data().decode("utf-8"), "a😀")

    def test_invalid_at_end_of_stream(self) -> None:
        """Bytes left incomplete are sent, replaced, once the stream ends."""
        output, _ = make_output(blocking=False, max_bytes=100)
        sink = subscribe(output, blocking=False)
        output.receive("stdout", b"ok\xe2\x82", 1.0)
        self.assertEqual([p["data"] for p in sink.params("process.output")], ["ok"])
        output.end_stream("stdout")
        chunks = [p["data"] for p in sink.params("process.output")]
        self.assertEqual(chunks, ["ok", "\ufffd"])
        self.assertEqual(sink.params("process.output")[1]["offset"], 2)

    def test_invalid_at_completion(self) -> None:
        """Bytes left incomplete are sent, replaced, before C{process.completed}."""
        output, _ = make_output(blocking=False, max_bytes=100)
        sink = subscribe(output, blocking=False)
        output.receive("stderr", b"\xf0\x9f", 1.0)
        output.complete(COMPLETION)
        self.assertEqual(sink.methods(), ["process.output", "process.completed"])
        self.assertEqual(sink.params("process.output")[0]["data"], "\ufffd")

    def test_late_subscriber_never_splits_a_character(self) -> None:
        """
        A subscriber that arrives after the stream closed reads it in chunks
        of at most MAX_CHUNK bytes that never split a character, whether
        the limit cuts a 2, 3 or 4 byte character: only the last chunk is
        final.
        """
        for character in ("é", "€", "😀"):
            size = len(character.encode("utf-8"))
            # One ASCII byte first, so that MAX_CHUNK falls inside a character.
            text = "a" + character * (2 * MAX_CHUNK // size)
            data = text.encode("utf-8")
            self.assertNotEqual((MAX_CHUNK - 1) % size, 0)
            output = ProcessOutput("p1", len(data), 10, blocking=False)
            output.receive("stdout", data, 1.0)
            output.complete(COMPLETION)
            events = EventSink()
            output.subscribe(events, False, offsets={"stdout": 0}).activate()
            chunks = [e for e in events.events if isinstance(e, OutputChunk)]
            self.assertGreater(len(chunks), 1)
            self.assertEqual([c.final for c in chunks], [False] * (len(chunks) - 1) + [True])
            sink = FakeSink()
            output.subscribe(sink, False, offsets={"stdout": 0}).activate()
            texts = [p["data"] for p in sink.params("process.output")]
            self.assertNotIn("\ufffd", "".join(texts))
            self.assertEqual("".join(texts), text)
            self.assertEqual(sink.data(), data)
            self.assertEqual(sink.methods()[-1], "process.completed")

    def test_base64_round_trip(self) -> None:
        """In base64, chunks carry any bytes, split anywhere, exactly."""
        output, _ = make_output(blocking=False, max_bytes=1000)
        sink = subscribe(output, blocking=False, encoding=BASE64)
        data = bytes(range(256)) + "é€😀".encode("utf-8")
        for index in range(0, len(data), 7):
            output.receive("stdout", data[index : index + 7], 1.0)
        chunks = [base64.b64decode(p["data"]) for p in sink.params("process.output")]
        self.assertEqual([len(chunk) for chunk in chunks[:2]], [7, 7])
        self.assertEqual(b"".join(chunks), data)


class ReleaseTests(SynchronousTestCase):
    """
    L{ProcessOutput.release}: an ending program's pipes are read to the end.
    """

    def test_release_resumes_reading_without_blocking_subscriber(self) -> None:
        """A full buffer standing in for an absent reader stops holding back once released."""
        output = ProcessOutput("p1", 8, 100, blocking=True)
        reader = FakeReader()
        output.set_reader(reader)
        output.receive("stdout", b"12345678", 1.0)
        self.assertTrue(output.reading_paused)
        output.release()
        self.assertFalse(output.reading_paused)
        output.receive("stdout", b"9", 2.0)
        self.assertEqual(output.streams["stdout"].start, 1)
        self.assertEqual(output.dropped_bytes, 1)

    def test_release_keeps_blocking_subscribers(self) -> None:
        """A released output still holds back for a blocking subscriber."""
        output = ProcessOutput("p1", 8, 100, blocking=True)
        reader = FakeReader()
        output.set_reader(reader)
        sink = FakeSink(writable=False)
        output.subscribe(sink, blocking=True).activate()
        output.receive("stdout", b"12345678", 1.0)
        output.release()
        self.assertTrue(output.reading_paused)


@implementer(IOutputSink)
class EventSink:
    """
    A sink that records the typed events it is told, taking at most
    C{take} bytes of each chunk.
    """

    def __init__(self, take: Optional[int] = None) -> None:
        self.writable = True
        self.max_chunk = MAX_CHUNK
        self.take = take
        self.events: list = []

    def started(self, event: ProcessStarted) -> None:
        self.events.append(event)

    def output(self, chunk: OutputChunk) -> int:
        self.events.append(chunk)
        return len(chunk.data) if self.take is None else min(self.take, len(chunk.data))

    def dropped(self, event: OutputDropped) -> None:
        self.events.append(event)

    def changed(self, event: StateChanged) -> None:
        self.events.append(event)

    def completed(self, completion: Completion) -> None:
        self.events.append(completion)


class TypedEventTests(SynchronousTestCase):
    """
    What a sink is told: typed events, in order, and no wire format.
    """

    def test_events_in_order(self) -> None:
        """started, chunks with offsets and times, state changes, drops, then the completion."""
        output = ProcessOutput("p1", 4, 100, blocking=False)
        sink = EventSink()
        started = ProcessStarted("p1", 42, ("prog",))
        output.subscribe(sink, False, first=started).activate()
        output.receive("stdout", b"ab", 1.0)
        output.broadcast(PAUSED)
        sink.writable = False
        output.receive("stdout", b"cdefgh", 2.0)
        sink.writable = True
        output.complete(COMPLETION)
        self.assertEqual(
            sink.events,
            [
                started,
                OutputChunk("p1", "stdout", 0, b"ab", 1.0),
                PAUSED,
                OutputDropped("p1", "stdout", 2, 2),
                OutputChunk("p1", "stdout", 4, b"efgh", 2.0, final=True),
                COMPLETION,
            ],
        )
        self.assertTrue(verifyObject(IOutputSink, sink))

    def test_final_only_at_the_end_of_a_closed_stream(self) -> None:
        """A chunk is final when the stream has ended with it, not before."""
        output = ProcessOutput("p1", 100, 100, blocking=True)
        sink = EventSink()
        output.subscribe(sink, True).activate()
        output.receive("stderr", b"x", 1.0)
        output.end_stream("stderr")
        output.receive("stdout", b"y", 1.0)
        chunks = [e for e in sink.events if isinstance(e, OutputChunk)]
        self.assertEqual([(c.stream, c.final) for c in chunks], [("stderr", False), ("stdout", False)])

        late = EventSink()
        output.subscribe(late, True, offsets={"stdout": 0, "stderr": 0}).activate()
        chunks = [e for e in late.events if isinstance(e, OutputChunk)]
        self.assertEqual([(c.stream, c.final) for c in chunks], [("stdout", False), ("stderr", True)])

    def test_what_a_sink_leaves_is_offered_again(self) -> None:
        """A sink that takes part of a chunk is offered the rest, from the next offset."""
        output = ProcessOutput("p1", 100, 100, blocking=True)
        sink = EventSink(take=2)
        output.subscribe(sink, True).activate()
        output.receive("stdout", b"abcde", 1.0)
        offsets = [(e.offset, e.data) for e in sink.events if isinstance(e, OutputChunk)]
        self.assertEqual(offsets, [(0, b"abcde"), (2, b"cde"), (4, b"e")])

    def test_taking_nothing_waits(self) -> None:
        """A sink that takes nothing is not offered the same chunk again until more comes."""
        output = ProcessOutput("p1", 100, 100, blocking=True)
        sink = EventSink(take=0)
        subscription = output.subscribe(sink, True)
        subscription.activate()
        output.receive("stdout", b"\xe2\x82", 1.0)
        self.assertEqual(len(sink.events), 1)
        self.assertEqual(subscription.cursors["stdout"], 0)


class FailingSinkTests(SynchronousTestCase):
    """
    One sink that fails never keeps the others (or the end) from coming.
    """

    def test_failing_sink_is_dropped(self) -> None:
        """A sink raising in output loses its subscription, logged; the others get everything."""
        output = ProcessOutput("p1", 100, 100, blocking=True)
        broken = EventSink()

        def fail(chunk):
            raise RuntimeError("cannot send")

        broken.output = fail
        good = FakeSink()
        output.subscribe(broken, True).activate()
        output.subscribe(good, True).activate()
        output.receive("stdout", b"data", 1.0)
        output.complete(COMPLETION)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(good.methods(), ["process.output", "process.completed"])
        self.assertEqual([s.sink for s in output.subscriptions], [good])

    def test_failing_started_and_changed(self) -> None:
        """A sink raising when told the start or a state change is dropped the same way."""
        output = ProcessOutput("p1", 100, 100, blocking=True)
        broken = EventSink()
        broken.started = broken.changed = lambda event: 1 / 0
        output.subscribe(broken, True, first=ProcessStarted("p1", 42, ("prog",))).activate()
        self.assertEqual(output.subscriptions, [])
        other = EventSink()
        other.changed = lambda event: 1 / 0
        output.subscribe(other, True).activate()
        output.broadcast(PAUSED)
        self.assertEqual(output.subscriptions, [])
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 2)
