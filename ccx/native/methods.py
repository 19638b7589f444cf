"""
The native JSON-RPC methods (docs/protocol.md section 4), for one connection.
"""

import binascii
import signal
from typing import Any, Dict, Optional

from twisted.internet.defer import Deferred

from ccx.native.watching import ProcessTableFeed
from ccx.native.wire import (
    FrameSink,
    NotificationSink,
    decoder,
    encoder,
    list_state,
    process_entry,
    read_limit,
    read_range,
)
from ccx.node import Node
from ccx.output.events import ALL_STREAMS, ProcessStarted
from ccx.output.interfaces import IOutputSink
from ccx.process.errors import ProcessNotFound
from ccx.process.managed import ManagedProcess
from ccx.protocol import BASE64, BINARY, BINARY_FRAMES, CONTROLS, ENCODINGS, OUTPUT_ENCODINGS, SIGNALS, UTF8
from ccx.rpc.errors import invalid_params
from ccx.rpc.interfaces import IFrameChannel, INotificationChannel
from ccx.rpc.jsonrpc import Call, Handler
from ccx.rpc.params import LAUNCH_PARAMS, ParamReader, check_offsets, window_size
from ccx.session import Session

# How many bytes read returns by default, and at most.
READ_BYTES = 64 * 1024
MAX_READ_BYTES = 1024 * 1024

CAPABILITIES = (
    "execute",
    "control",
    "signal",
    "write",
    "list",
    "attach",
    "detach",
    "forget",
    "pty",
    "batch",
    "base64",
    "watch",
    "programs",
    "read",
    "back-pressure",
    BINARY_FRAMES,
)


class NativeMethods:
    """
    The methods one connection may call.

    @param channel: where this connection's notifications go.
    @param frames: where binary output frames go, on a connection that
        may carry them (the native WebSocket); L{None} elsewhere.
    """

    def __init__(
        self,
        node: Node,
        session: Session,
        channel: INotificationChannel,
        frames: Optional[IFrameChannel] = None,
    ) -> None:
        self._node = node
        self._session = session
        self._channel = channel
        self._frames = frames
        self._feed: Optional[ProcessTableFeed] = None

    def table(self) -> Dict[str, Handler]:
        return {
            "execute": self.execute,
            "control": self.control,
            "signal": self.signal,
            "write": self.write,
            "list": self.list,
            "attach": self.attach,
            "detach": self.detach,
            "forget": self.forget,
            "watch": self.watch,
            "unwatch": self.unwatch,
            "programs": self.programs,
            "read": self.read,
            "resize": self.resize,
            "ping": self.ping,
            "pong": self.ping,
        }

    def _target(self, process_id: Optional[str]) -> ManagedProcess:
        if process_id is None:
            process = self._session.newest_unfinished()
            if process is None:
                raise ProcessNotFound(None)
            return process
        return self._node.registry.get(process_id, live=True)

    def _sink(self, process: ManagedProcess, encoding: str) -> IOutputSink:
        limit = self._node.config.max_message_size
        if encoding == BINARY:
            return FrameSink(self._frames, process.process_id, limit)
        return NotificationSink(self._channel, encoding, limit)

    def _encoding(self, r: ParamReader, default: Optional[str]) -> Optional[str]:
        """
        The output encoding a call asks for: binary frames only where this
        connection can carry them.
        """
        encoding = r.string("encoding", default, choices=OUTPUT_ENCODINGS)
        if encoding == BINARY and self._frames is None:
            raise invalid_params(
                "invalid params: encoding 'binary' (binary output frames) is for "
                "the native WebSocket only; use 'base64' here"
            )
        return encoding

    def execute(self, params: Any, call: Call) -> Deferred:
        r = ParamReader(
            params,
            "execute",
            (*LAUNCH_PARAMS, "stdin", "on_full", "on_disconnect", "encoding", "durable"),
        )
        durable = r.durable(self._node.config.durable)
        spec = r.launch_spec(
            stdin=r.boolean("stdin", False),
            blocking=r.on_full("block"),
            cancel_on_disconnect=r.on_disconnect() and not durable,
            encoding=self._encoding(r, UTF8),
            durable=durable,
        )
        session = self._session
        process, started = session.launch(spec)

        def running(_: object) -> dict:
            # Subscribed once it runs (it may have waited for its turn, with
            # no pid yet), before the reactor can read any of its output.
            subscription = session.subscribe(
                process,
                self._sink(process, spec.encoding),
                blocking=spec.blocking,
                first=ProcessStarted(process.process_id, process.pid, tuple(process.command.argv)),
            )
            call.after_reply(subscription.activate)
            return {
                "status": "started",
                "process_id": process.process_id,
                "pid": process.pid,
                "pgid": process.pid,
            }

        return started.addCallback(running)

    def control(self, params: Any, call: Call) -> dict:
        r = ParamReader(params, "control", ("type", "process_id"))
        kind = r.string("type", choices=tuple(CONTROLS))
        process = self._target(r.string("process_id", None))
        if kind == "PAUSE":
            process.pause()
        elif kind == "RESUME":
            process.resume()
        else:
            process.cancel()
        return {"process_id": process.process_id, "status": CONTROLS[kind]}

    def signal(self, params: Any, call: Call) -> dict:
        r = ParamReader(params, "signal", ("process_id", "signal"))
        process_id = r.string("process_id")
        name = r.string("signal", choices=SIGNALS)
        process = self._node.registry.get(process_id, live=True)
        process.send_signal(signal.Signals[name])
        return {"process_id": process.process_id, "signal": name}

    def write(self, params: Any, call: Call) -> dict:
        r = ParamReader(params, "write", ("process_id", "data", "encoding", "eof"))
        process_id = r.string("process_id")
        text = r.string("data", "")
        encoding = r.string("encoding", UTF8, choices=ENCODINGS)
        eof = r.boolean("eof", False)
        try:
            data = decoder(encoding)(text)
        except (binascii.Error, ValueError):
            raise invalid_params("invalid params: write's 'data' is not valid base64")
        process = self._node.registry.get(process_id, live=True)
        process.write(data, eof)
        return {"bytes": len(data)}

    def resize(self, params: Any, call: Call) -> dict:
        r = ParamReader(params, "resize", ("process_id", "rows", "cols"))
        process_id = r.string("process_id")
        size = window_size(r, "resize")
        process = self._node.registry.get(process_id, live=True)
        process.resize(size)
        return {"process_id": process.process_id, "rows": size.rows, "cols": size.cols}

    def list(self, params: Any, call: Call) -> dict:
        ParamReader(params, "list", ())
        return {"processes": [process_entry(p) for p in self._node.registry.all()]}

    def attach(self, params: Any, call: Call) -> dict:
        r = ParamReader(params, "attach", ("process_id", "offsets", "on_full", "encoding"))
        process_id = r.string("process_id")
        offsets = r.offsets()
        blocking = r.on_full("drop")
        encoding = self._encoding(r, None)
        process = self._node.registry.get(process_id)
        if encoding is None:
            encoding = process.options.encoding
            if encoding == BINARY and self._frames is None:
                # Started by a client that could take binary frames.
                encoding = BASE64
        check_offsets(offsets, process.output.totals())
        subscription = self._session.subscribe(
            process, self._sink(process, encoding), blocking=blocking, offsets=offsets
        )
        call.after_reply(subscription.activate)
        return {
            "process_id": process.process_id,
            "state": list_state(process),
            "offsets": dict(subscription.cursors),
            "encoding": encoding,
        }

    def detach(self, params: Any, call: Call) -> dict:
        r = ParamReader(params, "detach", ("process_id",))
        process_id = r.string("process_id")
        if not self._session.unsubscribe(process_id):
            self._node.registry.get(process_id)
        return {}

    def forget(self, params: Any, call: Call) -> dict:
        r = ParamReader(params, "forget", ("process_id",))
        process_id = r.string("process_id")
        self._node.registry.forget(process_id)
        return {"process_id": process_id, "status": "forgotten"}

    def watch(self, params: Any, call: Call) -> dict:
        ParamReader(params, "watch", ())
        if self._feed is None:
            self._feed = ProcessTableFeed(self._node.registry, self._channel, self._node.reactor)
            self._session.feeds.append(self._feed)
        # The table as it is now; every change after it is notified.
        return self.list({}, call)

    def unwatch(self, params: Any, call: Call) -> dict:
        ParamReader(params, "unwatch", ())
        if self._feed is not None:
            self._session.feeds.remove(self._feed)
            self._feed.close()
            self._feed = None
        return {}

    def programs(self, params: Any, call: Call) -> dict:
        ParamReader(params, "programs", ())
        programs = [
            {"name": name, "path": path}
            for path, names in self._node.allow_list.entries()
            for name in names
        ]
        return {"programs": sorted(programs, key=lambda p: (p["name"], p["path"]))}

    def read(self, params: Any, call: Call) -> dict:
        r = ParamReader(params, "read", ("process_id", "stream", "offset", "bytes", "encoding"))
        process_id = r.string("process_id")
        stream = r.string("stream", None, choices=ALL_STREAMS)
        offset = r.whole("offset", 0)
        size = r.whole("bytes", READ_BYTES, least=1, most=MAX_READ_BYTES)
        encoding = r.string("encoding", BASE64, choices=ENCODINGS)
        process = self._node.registry.get(process_id)
        output = process.output
        if stream is None:
            stream = next(iter(output.streams))
        totals = output.totals()
        check_offsets({stream: offset}, totals)
        # What fits in one reply once encoded (as process.output's data).
        size = min(size, read_limit(encoding, self._node.config.max_message_size))
        first, data = read_range(output, stream, offset, size)
        return {
            "process_id": process_id,
            "stream": stream,
            "offset": first,
            "data": encoder(encoding)(data),
            "bytes": len(data),
            "encoding": encoding,
            "start": output.next_held(stream, 0),
            "end": totals[stream],
        }

    def ping(self, params: Any, call: Call) -> dict:
        return {}
