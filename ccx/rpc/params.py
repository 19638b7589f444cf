"""
Strict reading of a method's named params, with errors a person can act on.
"""

import math
from typing import Any, Dict, Iterable, Mapping, Optional, Sequence

from ccx.output.events import ALL_STREAMS
from ccx.process.cgroup import Limits
from ccx.process.launch import LaunchSpec
from ccx.process.terminal import MAX_COLS, MAX_ROWS, WindowSize
from ccx.rpc.errors import invalid_params

REQUIRED: Any = object()

# The bounds of each of execute's limits: the least and the most.
MIN_MEMORY = 1024 * 1024
MAX_MEMORY = 2**62
MIN_CPU = 0.01
MAX_CPU = 1024.0
MAX_PIDS = 4 * 1024 * 1024

# The members L{ParamReader.launch_spec} reads: a method that starts a
# program accepts these, and its own beside them.
LAUNCH_PARAMS = ("command", "shell", "cwd", "env", "timeout", "limits", "merge_stderr", "pty")


class ParamReader:
    """
    Read the params of one call, refusing unknown members and wrong types.

    @param params: the call's params as received.
    @param method: the method name, for messages.
    @param known: every member the method accepts.
    """

    def __init__(self, params: Any, method: str, known: Iterable[str]) -> None:
        if params is None or params == []:
            params = {}
        if not isinstance(params, dict):
            raise invalid_params(
                f"invalid params: {method} takes its params as an object of named members"
            )
        known = tuple(known)
        unknown = sorted(set(params) - set(known))
        if unknown:
            listed = ", ".join(repr(name) for name in unknown)
            accepted = ", ".join(known) or "none"
            raise invalid_params(
                f"invalid params: {method} has no parameter {listed} (it accepts: {accepted})"
            )
        self._params = params
        self._method = method

    def _get(self, name: str, default: Any) -> Any:
        if name in self._params and self._params[name] is not None:
            return self._params[name]
        if default is REQUIRED:
            raise invalid_params(f"invalid params: {self._method} needs {name!r}")
        return default

    def _wrong(self, name: str, expected: str) -> Exception:
        return invalid_params(
            f"invalid params: {self._method}'s {name!r} must be {expected}"
        )

    def string(
        self,
        name: str,
        default: Any = REQUIRED,
        choices: Optional[Sequence[str]] = None,
    ) -> Any:
        value = self._get(name, default)
        if value is default and default is not REQUIRED:
            return value
        if not isinstance(value, str):
            raise self._wrong(name, "a string")
        if choices is not None and value not in choices:
            raise self._wrong(name, "one of " + ", ".join(repr(c) for c in choices))
        return value

    def boolean(self, name: str, default: bool) -> bool:
        value = self._get(name, default)
        if not isinstance(value, bool):
            raise self._wrong(name, "true or false")
        return value

    def whole(
        self, name: str, default: Any = REQUIRED, least: int = 0, most: Optional[int] = None
    ) -> int:
        """
        A whole number from C{least} to C{most} (no bound when L{None}).
        """
        value = self._get(name, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < least or (
            most is not None and value > most
        ):
            bounds = f"from {least} to {most}" if most is not None else f"{least} or more"
            raise self._wrong(name, f"a whole number {bounds}")
        return value

    def number(self, name: str, default: Any = None) -> Optional[float]:
        """
        A positive, finite number of seconds (or L{None} when absent).
        """
        value = self._get(name, default)
        if value is default:
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self._wrong(name, "a number")
        if not (0 < value <= 10**9) or not math.isfinite(value):
            raise self._wrong(name, "a positive number no larger than 1e9")
        return float(value)

    def offset(self, name: str, default: Any = None) -> Any:
        value = self._get(name, default)
        if value is default:
            return value
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise self._wrong(name, "a whole number of bytes, 0 or more")
        return value

    def string_map(self, name: str) -> Dict[str, str]:
        value = self._get(name, {})
        if not isinstance(value, dict) or not all(
            isinstance(v, str) for v in value.values()
        ):
            raise self._wrong(name, "an object whose values are strings")
        return value

    def object(self, name: str) -> Dict[str, Any]:
        value = self._get(name, {})
        if not isinstance(value, dict):
            raise self._wrong(name, "an object")
        return value

    def offsets(self, name: str = "offsets") -> Dict[str, int]:
        """
        Byte offsets by stream name: the streams given, each a whole number.
        """
        requested = self.object(name)
        unknown = sorted(set(requested) - set(ALL_STREAMS))
        if unknown:
            raise invalid_params(
                f"invalid params: {self._method}'s {name!r} has no stream "
                f"{unknown[0]!r} (streams: {', '.join(ALL_STREAMS)})"
            )
        offsets = {}
        for stream in ALL_STREAMS:
            value = requested.get(stream)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise invalid_params(
                    f"invalid params: {self._method}'s {name}.{stream} must be a "
                    "whole number of bytes, 0 or more"
                )
            offsets[stream] = value
        return offsets

    def on_full(self, default: str) -> bool:
        """
        C{on_full} as the process layer takes it: whether to hold the
        program back (C{"block"}) rather than lose output (C{"drop"}).
        """
        return self.string("on_full", default, choices=("block", "drop")) == "block"

    def on_disconnect(self) -> bool:
        """
        C{on_disconnect} as the process layer takes it: whether the program
        is cancelled (C{"cancel"}) or kept (C{"keep"}) when its starter goes.
        """
        choices = ("cancel", "keep")
        return self.string("on_disconnect", "cancel", choices=choices) == "cancel"

    def durable(self, default: bool) -> bool:
        """
        C{durable}, with the service's default; a durable program outlives
        its starter's connection, so an explicit C{on_disconnect: "cancel"}
        with it is refused.
        """
        durable = self.boolean("durable", default)
        if durable and self._get("on_disconnect", None) == "cancel":
            raise invalid_params(
                f"invalid params: {self._method}: a durable program outlives its "
                "connection; 'on_disconnect': 'cancel' cannot go with 'durable': true"
            )
        return durable
    def limits(self, name: str = "limits") -> Optional[Limits]:
        """
        C{limits}: C{memory} (bytes, a whole number from 1 MiB), C{cpu}
        (CPUs, from 0.01 to 1024) and C{pids} (a whole number from 1), each
        optional; L{None} when absent or empty.
        """
        given = self.object(name)
        unknown = sorted(set(given) - {"memory", "cpu", "pids"})
        if unknown:
            raise invalid_params(
                f"invalid params: {self._method}'s {name!r} has no limit {unknown[0]!r} "
                "(limits: memory, cpu, pids)"
            )
        memory, cpu, pids = given.get("memory"), given.get("cpu"), given.get("pids")
        if memory is not None and not _whole(memory, MIN_MEMORY, MAX_MEMORY):
            raise invalid_params(
                f"invalid params: {self._method}'s {name}.memory must be a whole number "
                f"of bytes from {MIN_MEMORY} (1 MiB) to {MAX_MEMORY}"
            )
        if cpu is not None and (
            isinstance(cpu, bool)
            or not isinstance(cpu, (int, float))
            or not (MIN_CPU <= cpu <= MAX_CPU)
        ):
            raise invalid_params(
                f"invalid params: {self._method}'s {name}.cpu must be a number of CPUs "
                f"from {MIN_CPU} to {MAX_CPU:g}"
            )
        if pids is not None and not _whole(pids, 1, MAX_PIDS):
            raise invalid_params(
                f"invalid params: {self._method}'s {name}.pids must be a whole number "
                f"from 1 to {MAX_PIDS}"
            )
        if memory is None and cpu is None and pids is None:
            return None
        return Limits(memory=memory, cpu=None if cpu is None else float(cpu), pids=pids)

    def window(self, name: str) -> Optional[WindowSize]:
        """
        A terminal's window size, C{{"rows": R, "cols": C}}, each a whole
        number from 1 to L{MAX_ROWS} or L{MAX_COLS}; L{None} when absent.
        """
        given = self._get(name, None)
        if given is None:
            return None
        if not isinstance(given, dict):
            raise self._wrong(name, 'an object {"rows": R, "cols": C}')
        unknown = sorted(set(given) - {"rows", "cols"})
        if unknown:
            raise invalid_params(
                f"invalid params: {self._method}'s {name!r} has no member {unknown[0]!r} "
                "(members: rows, cols)"
            )
        for member, most in (("rows", MAX_ROWS), ("cols", MAX_COLS)):
            if member not in given:
                raise invalid_params(f"invalid params: {self._method}'s {name!r} needs {member!r}")
            if not _whole(given[member], 1, most):
                raise invalid_params(
                    f"invalid params: {self._method}'s {name}.{member} must be a whole "
                    f"number from 1 to {most}"
                )
        return WindowSize(given["rows"], given["cols"])

    def launch_spec(self, **chosen: Any) -> LaunchSpec:
        """
        What every dialect's way of starting a program reads alike
        (C{command}, C{shell}, C{cwd}, C{env}, C{timeout}, C{limits},
        C{merge_stderr} where the method takes it), with
        the rest of the L{LaunchSpec} as the caller chose it.
        """
        return LaunchSpec(
            self.any("command"),
            shell=self.boolean("shell", False),
            cwd=self.string("cwd", None),
            env=self.string_map("env"),
            timeout=self.number("timeout"),
            limits=self.limits(),
            merge_stderr=self.boolean("merge_stderr", False),
            pty=self.window("pty"),
            **chosen,
        )

    def any(self, name: str, default: Any = REQUIRED) -> Any:
        return self._get(name, default)


def _whole(value: Any, least: int, most: int) -> bool:
    return not isinstance(value, bool) and isinstance(value, int) and least <= value <= most


def check_offsets(offsets: Mapping[str, int], ends: Mapping[str, int]) -> None:
    """
    Refuse offsets past what each stream has had so far.

    @param ends: each stream's length so far.
    """
    for stream, offset in offsets.items():
        if stream not in ends:
            raise invalid_params(
                f"invalid params: offsets.{stream}: the process has no {stream} stream "
                f"(its streams: {', '.join(s for s in ends if s != 'dropped')})"
            )
        if offset > ends[stream]:
            raise invalid_params(
                f"invalid params: offsets.{stream} is {offset}, past the end of "
                f"that stream ({ends[stream]} bytes so far)"
            )



def window_size(r: ParamReader, method: str) -> WindowSize:
    """
    C{rows} and C{cols} given as two params of C{method} (C{resize}), as
    strictly as C{pty}.
    """
    rows, cols = r.any("rows"), r.any("cols")
    for member, value, most in (("rows", rows, MAX_ROWS), ("cols", cols, MAX_COLS)):
        if not _whole(value, 1, most):
            raise invalid_params(
                f"invalid params: {method}'s {member!r} must be a whole number from 1 to {most}"
            )
    return WindowSize(rows, cols)
