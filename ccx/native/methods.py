"""
The native JSON-RPC methods (docs/protocol.md section 4), for one connection.
"""

import binascii
import signal
from typing import Any, Dict, Optional

from twisted.internet.defer import Deferred

from ccx.node import Node
from ccx.output.encoding import decoder
from ccx.process.launch import LaunchSpec, launch
from ccx.process.managed import ManagedProcess
from ccx.process.spawner import spawn
from ccx.protocol import CONTROLS, ENCODINGS, SIGNALS, STREAMS, UTF8
from ccx.rpc.errors import invalid_params, process_not_found
from ccx.rpc.jsonrpc import Call, Handler
from ccx.rpc.params import ParamReader
from ccx.session import Session

CAPABILITIES = (
    "execute",
    "control",
    "signal",
    "write",
    "list",
    "attach",
    "detach",
    "batch",
    "base64",
    "back-pressure",
)


class NativeMethods:
    """
    The methods one connection may call.
    """

    def __init__(self, node: Node, session: Session) -> None:
        self._node = node
        self._session = session

    def table(self) -> Dict[str, Handler]:
        return {
            "execute": self.execute,
            "control": self.control,
            "signal": self.signal,
            "write": self.write,
            "list": self.list,
            "attach": self.attach,
            "detach": self.detach,
            "ping": self.ping,
            "pong": self.ping,
        }

    def _target(self, process_id: Optional[str]) -> ManagedProcess:
        if process_id is None:
            process = self._session.newest_unfinished()
            if process is None:
                raise process_not_found(None)
            return process
        return self._node.registry.get(process_id, live=True)

    def execute(self, params: Any, call: Call) -> Deferred:
        r = ParamReader(
            params,
            "execute",
            (
                "command",
                "shell",
                "cwd",
                "env",
                "timeout",
                "stdin",
                "on_full",
                "on_disconnect",
                "encoding",
            ),
        )
        command = r.any("command")
        shell = r.boolean("shell", False)
        cwd = r.string("cwd", None)
        env = r.string_map("env")
        timeout = r.number("timeout")
        stdin = r.boolean("stdin", False)
        on_full = r.string("on_full", "block", choices=("block", "drop"))
        on_disconnect = r.string("on_disconnect", "cancel", choices=("cancel", "keep"))
        encoding = r.string("encoding", UTF8, choices=ENCODINGS)

        process, started = launch(
            self._node,
            LaunchSpec(
                command,
                shell=shell,
                cwd=cwd,
                env=env,
                timeout=timeout,
                stdin=stdin,
                on_full=on_full,
                on_disconnect=on_disconnect,
                encoding=encoding,
            ),
            owner=self._session.session_id,
            spawn=spawn,
        )
        session = self._session
        if process.pid is None:
            return started
        session.started.append(process)
        subscription = session.subscribe(
            process,
            blocking=on_full == "block",
            first=(
                "process.started",
                {
                    "process_id": process.process_id,
                    "pid": process.pid,
                    "pgid": process.pid,
                    "command": process.command.argv,
                },
            ),
        )

        def running(_: object) -> dict:
            call.after_reply(subscription.activate)
            return {
                "status": "started",
                "process_id": process.process_id,
                "pid": process.pid,
                "pgid": process.pid,
            }

        def failed(failure: Any) -> Any:
            session.unsubscribe(process.process_id)
            if process in session.started:
                session.started.remove(process)
            return failure

        return started.addCallbacks(running, failed)

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

    def list(self, params: Any, call: Call) -> dict:
        ParamReader(params, "list", ())
        return {"processes": [p.describe() for p in self._node.registry.all()]}

    def attach(self, params: Any, call: Call) -> dict:
        r = ParamReader(params, "attach", ("process_id", "offsets", "on_full"))
        process_id = r.string("process_id")
        requested = r.object("offsets")
        on_full = r.string("on_full", "drop", choices=("block", "drop"))
        unknown = sorted(set(requested) - set(STREAMS))
        if unknown:
            raise invalid_params(
                f"invalid params: attach's 'offsets' has no stream {unknown[0]!r} "
                "(streams: stdout, stderr)"
            )
        offsets = {}
        for stream in STREAMS:
            value = requested.get(stream)
            if value is not None:
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise invalid_params(
                        f"invalid params: attach's offsets.{stream} must be a whole "
                        "number of bytes, 0 or more"
                    )
                offsets[stream] = value
        process = self._node.registry.get(process_id)
        for stream, offset in offsets.items():
            end = process.output.streams[stream].end
            if offset > end:
                raise invalid_params(
                    f"invalid params: offsets.{stream} is {offset}, past the end of "
                    f"that stream ({end} bytes so far)"
                )
        subscription = self._session.subscribe(
            process, blocking=on_full == "block", offsets=offsets
        )
        call.after_reply(subscription.activate)
        return {
            "process_id": process.process_id,
            "state": process.describe()["state"],
            "offsets": dict(subscription.cursors),
            "encoding": process.options.encoding,
        }

    def detach(self, params: Any, call: Call) -> dict:
        r = ParamReader(params, "detach", ("process_id",))
        process_id = r.string("process_id")
        if not self._session.unsubscribe(process_id):
            self._node.registry.get(process_id)
        return {}

    def ping(self, params: Any, call: Call) -> dict:
        return {}
