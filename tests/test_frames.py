"""
Binary output frames: the codec of L{ccx.protocol}, the sink that sends
them (L{ccx.native.wire.FrameSink}), the methods that choose them, and a
real client reading every byte through them.
"""

import struct

from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from ccx.config import build_config
from ccx.native.methods import NativeMethods
from ccx.native.wire import FrameSink, NotificationSink, decoder
from ccx.node import Node
from ccx.output.fanout import ProcessOutput
from ccx.output.interfaces import IOutputSink
from ccx.protocol import (
    FRAME_HEADER_SIZE,
    INVALID_PARAMS,
    decode_output_frame,
    encode_output_frame,
    loads,
)
from ccx.rpc.interfaces import IFrameChannel
from ccx.rpc.jsonrpc import Dispatcher, notification
from tests.fakes import COMPLETION, FakeChannel
from tests.support import ServiceFixture, until

PROCESS_ID = "0123456789abcdef0123456789abcdef"


class CodecTests(SynchronousTestCase):
    """
    The frame layout of docs/protocol.md.
    """

    def test_layout(self):
        """A 40-byte header in network byte order, then the raw bytes."""
        frame = encode_output_frame(PROCESS_ID, "stderr", 2**40 + 3, 1.25, b"\x00\xff")
        self.assertEqual(FRAME_HEADER_SIZE, 40)
        self.assertEqual(frame[0], 1)  # kind: output
        self.assertEqual(frame[1], 2)  # stream: stderr
        self.assertEqual(frame[2:8], b"\x00" * 6)
        self.assertEqual(frame[8:24], bytes.fromhex(PROCESS_ID))
        self.assertEqual(struct.unpack(">Q", frame[24:32]), (2**40 + 3,))
        self.assertEqual(struct.unpack(">d", frame[32:40]), (1.25,))
        self.assertEqual(frame[40:], b"\x00\xff")

    def test_round_trip(self):
        """What is encoded decodes to the same frame, for every stream."""
        for stream in ("stdout", "stderr", "pty"):
            frame = decode_output_frame(encode_output_frame(PROCESS_ID, stream, 7, 2.5, b"data"))
            self.assertEqual(
                (frame.process_id, frame.stream, frame.offset, frame.time, frame.data),
                (PROCESS_ID, stream, 7, 2.5, b"data"),
            )

    def test_empty_data(self):
        """A frame may carry no bytes."""
        self.assertEqual(decode_output_frame(encode_output_frame(PROCESS_ID, "stdout", 0, 0.0, b"")).data, b"")

    def test_refused(self):
        """Short payloads, other kinds, unknown streams and non-hex ids are refused."""
        frame = encode_output_frame(PROCESS_ID, "stdout", 0, 0.0, b"x")
        self.assertRaises(ValueError, decode_output_frame, frame[: FRAME_HEADER_SIZE - 1])
        self.assertRaises(ValueError, decode_output_frame, b"\x02" + frame[1:])
        self.assertRaises(ValueError, decode_output_frame, frame[:1] + b"\x09" + frame[2:])
        self.assertRaises(ValueError, encode_output_frame, "p1", "stdout", 0, 0.0, b"")
        self.assertRaises(ValueError, encode_output_frame, PROCESS_ID[:-2], "stdout", 0, 0.0, b"")


@implementer(IFrameChannel)
class FakeFrameChannel(FakeChannel):
    """
    A channel that records binary frames beside notifications, in order.
    """

    def send_frame(self, payload: bytes) -> None:
        self.sent.append(("frame", decode_output_frame(payload)))

    def frames(self):
        return [frame for kind, frame in self.sent if kind == "frame"]


class FrameSinkTests(SynchronousTestCase):
    """
    L{FrameSink}: output as frames, everything else as notifications.
    """

    def setUp(self):
        self.output = ProcessOutput(PROCESS_ID, 1000, 100, blocking=True)
        self.channel = FakeFrameChannel()
        self.sink = FrameSink(self.channel, PROCESS_ID)
        self.subscription = self.output.subscribe(self.sink, True)
        self.subscription.activate()

    def test_interfaces(self):
        self.assertTrue(verifyObject(IOutputSink, self.sink))
        self.assertTrue(verifyObject(IFrameChannel, self.channel))

    def test_raw_bytes_with_offsets(self):
        """Any bytes, a UTF-8 character cut in two included, go as they are."""
        self.output.receive("stdout", b"\xf0\x9f", 1.0)
        self.output.receive("stdout", b"\x98\x80\x00", 2.0)
        self.output.receive("stderr", b"err", 3.0)
        frames = self.channel.frames()
        self.assertEqual(
            [(f.stream, f.offset, f.data, f.time) for f in frames],
            [("stdout", 0, b"\xf0\x9f", 1.0), ("stdout", 2, b"\x98\x80\x00", 2.0), ("stderr", 0, b"err", 3.0)],
        )
        self.assertEqual({f.process_id for f in frames}, {PROCESS_ID})

    def test_back_pressure(self):
        """A channel that cannot take more gets nothing until pumped again."""
        self.channel.writable = False
        self.output.receive("stdout", b"held", 1.0)
        self.assertEqual(self.channel.sent, [])
        self.channel.writable = True
        self.subscription.pump()
        self.assertEqual([f.data for f in self.channel.frames()], [b"held"])

    def test_drops_and_completion_stay_json(self):
        """Drops and the completion are JSON notifications, after the frames before them."""
        output = ProcessOutput(PROCESS_ID, 4, 100, blocking=False)
        channel = FakeFrameChannel(writable=False)
        output.subscribe(FrameSink(channel, PROCESS_ID), False).activate()
        output.receive("stdout", b"0123456789", 1.0)
        output.complete(COMPLETION)
        channel.writable = True
        output.pump_all()
        kinds = [kind for kind, _ in channel.sent]
        self.assertEqual(kinds, ["process.dropped", "frame", "process.completed"])
        self.assertEqual(channel.params("process.dropped")[0]["bytes"], 6)
        self.assertEqual(channel.frames()[0].offset, 6)


class ChoosingTests(SynchronousTestCase):
    """
    Where C{encoding: "binary"} is accepted.
    """

    def setUp(self):
        self.node = Node(build_config({"port": "tcp:0:interface=127.0.0.1", "allow": ["true"]}), Clock())

    def call(self, frames, method, params):
        channel = FakeFrameChannel()
        methods = NativeMethods(self.node, self.node.new_session(), channel, frames=frames)
        reply = self.successResultOf(
            Dispatcher(methods.table()).dispatch(
                b'{"jsonrpc": "2.0", "id": 1, "method": "%s", "params": %s}'
                % (method.encode(), params)
            )
        )
        return loads(reply.payload)

    def test_refused_without_frames(self):
        """Where no binary frames can go (MCP's WebSocket), binary is -32602 and nothing runs."""
        for method, params in (
            ("execute", b'{"command": ["true"], "encoding": "binary"}'),
            ("attach", b'{"process_id": "nope", "encoding": "binary"}'),
        ):
            error = self.call(None, method, params)["error"]
            self.assertEqual(error["code"], INVALID_PARAMS)
            self.assertIn("native WebSocket only", error["message"])
        self.assertEqual(self.node.registry.all(), [])

    def test_unknown_encoding(self):
        """Another encoding name is -32602 naming the three."""
        error = self.call(FakeFrameChannel(), "execute", b'{"command": ["true"], "encoding": "raw"}')["error"]
        self.assertEqual(error["code"], INVALID_PARAMS)
        self.assertIn("'binary'", error["message"])


class BinaryClientTests(TestCase):
    """
    A real WebSocket client reading a real program through binary frames.
    """

    timeout = 120

    @inlineCallbacks
    def setUp(self):
        self.ccx = yield ServiceFixture(
            self, buffer_bytes=256 * 1024, journal_bytes=256 * 1024, kill_grace=0.5
        ).start()
        self.client = yield self.ccx.connect(path="/ws")

    @inlineCallbacks
    def test_every_byte_under_back_pressure(self):
        """A client that stops reading holds the program back, then gets every byte, in order."""
        total = 8 * 1024 * 1024
        registry = self.ccx.service.node.registry
        self.client.transport.pauseProducing()
        self.client.send_json(
            {"jsonrpc": "2.0", "id": 1, "method": "execute",
             "params": {"command": ["sh", "-c", f"head -c {total} /dev/urandom | od -An -v | head -c {total}"],
                        "encoding": "binary"}}
        )
        yield until(lambda: len(registry.live()) == 1)
        process = registry.live()[0]
        yield until(lambda: process.output.reading_paused)
        self.assertLess(process.output.streams["stdout"].end, total, "the program must be held back")
        self.client.transport.resumeProducing()
        done = yield self.client.notification("process.completed", process.process_id)
        self.ccx.groups.append(done["pgid"])
        self.assertEqual((done["status"], done["dropped_bytes"], done["stdout_bytes"]), ("completed", 0, total))
        self.assertEqual(len(self.client.output(process.process_id, binary=True)), total)
        completed_at = self.client.messages.index(
            next(m for m in self.client.messages if m.get("method") == "process.completed")
        )
        self.assertTrue(all(not m.get("binary") for m in self.client.messages[completed_at:]))

    @inlineCallbacks
    def test_exact_bytes_and_attach(self):
        """Bytes no text could carry arrive exactly; another client attaches from an offset with binary."""
        result = yield self.ccx.execute(
            self.client,
            {"command": ["sh", "-c", "printf '\\000\\377\\300a'; read x; printf '\\351z' >&2; printf 'end'"],
             "stdin": True, "encoding": "binary", "on_disconnect": "keep"},
        )
        process_id = result["process_id"]
        yield until(lambda: len(self.client.output(process_id, binary=True)) == 4)
        other = yield self.ccx.connect(path="/ws")
        attached = yield other.call(
            "attach", {"process_id": process_id, "offsets": {"stdout": 2}, "encoding": "binary",
                       "on_full": "block"}
        )
        self.assertEqual((attached["offsets"]["stdout"], attached["encoding"]), (2, "binary"))
        yield self.client.call("write", {"process_id": process_id, "data": "\n", "eof": True})
        yield other.notification("process.completed", process_id)
        yield self.client.notification("process.completed", process_id)
        self.assertEqual(self.client.output(process_id, binary=True), b"\x00\xff\xc0aend")
        self.assertEqual(self.client.output(process_id, "stderr", binary=True), b"\xe9z")
        self.assertEqual(other.output(process_id, start=2, binary=True), b"\xc0aend")
        [entry] = (yield other.call("list"))["processes"]
        self.assertEqual(entry["encoding"], "binary")
        yield other.close()

    @inlineCallbacks
    def test_mcp_websocket_refuses(self):
        """On the WebSocket that chose MCP, native execute with binary is -32602."""
        client = yield self.ccx.connect(protocols=("mcp",))
        response = yield client.request(
            "execute", {"command": ["true"], "encoding": "binary"}
        )
        self.assertEqual(response["error"]["code"], INVALID_PARAMS)
        self.assertEqual(self.ccx.service.node.registry.all(), [])
        yield client.close()


class MessageLimitTests(SynchronousTestCase):
    """
    Output is cut so that every message fits the connection's limit.
    """

    def deliver(self, sink, data):
        output = ProcessOutput(PROCESS_ID, len(data) + 1, 100, blocking=True)
        output.subscribe(sink, True).activate()
        output.receive("stdout", data, 1.0)
        output.complete(COMPLETION)

    def test_text_and_base64_fit(self):
        """Worst-case text (control bytes, six-fold in JSON) and base64 stay within the limit, exactly."""
        data = bytes(range(32)) * 4096
        for encoding in ("utf-8", "base64"):
            channel = FakeChannel()
            self.deliver(NotificationSink(channel, encoding, max_message=1000), data)
            outputs = channel.params("process.output")
            self.assertGreater(len(outputs), 1)
            for params in outputs:
                self.assertLessEqual(len(notification("process.output", params)), 1000)
            decode = decoder(encoding)
            self.assertEqual(b"".join(decode(p["data"]) for p in outputs), data)
            self.assertEqual(channel.methods()[-1], "process.completed")

    def test_text_never_splits_a_character(self):
        """Cut to fit, text still never splits a UTF-8 character."""
        data = "é€😀".encode("utf-8") * 2000
        channel = FakeChannel()
        self.deliver(NotificationSink(channel, "utf-8", max_message=1000), data)
        texts = [p["data"] for p in channel.params("process.output")]
        self.assertNotIn("\ufffd", "".join(texts))
        self.assertEqual("".join(texts).encode("utf-8"), data)

    def test_frames_fit(self):
        """A binary frame is at most the limit, header included."""
        channel = FakeFrameChannel()
        sizes = []
        channel.send_frame = lambda payload: (
            sizes.append(len(payload)),
            FakeFrameChannel.send_frame(channel, payload),
        )
        data = b"x" * 5000
        self.deliver(FrameSink(channel, PROCESS_ID, max_message=1000), data)
        self.assertTrue(sizes and max(sizes) <= 1000, sizes)
        self.assertEqual(b"".join(f.data for f in channel.frames()), data)


class SmallMessagesTests(TestCase):
    """
    A service whose messages are smaller than a chunk still delivers every byte.
    """

    timeout = 120

    @inlineCallbacks
    def test_every_encoding(self):
        """With --max-message-size 65536, 300000 bytes arrive whole in each encoding."""
        ccx = yield ServiceFixture(self, max_message_size=65536).start()
        client = yield ccx.connect(path="/ws")
        for encoding in ("binary", "utf-8", "base64"):
            result = yield ccx.execute(
                client,
                {"command": ["sh", "-c", "head -c 300000 /dev/zero | tr '\\000' a"],
                 "encoding": encoding},
            )
            done = yield client.notification("process.completed", result["process_id"])
            self.assertEqual((done["status"], done["stdout_bytes"]), ("completed", 300000))
            received = b""
            for message in client.messages:
                params = message.get("params", {}) if isinstance(message, dict) else {}
                if message.get("method") == "process.output" and params.get("process_id") == result["process_id"]:
                    data = params["data"]
                    received += data if isinstance(data, bytes) else decoder(encoding)(data)
            self.assertEqual(received, b"a" * 300000, encoding)
