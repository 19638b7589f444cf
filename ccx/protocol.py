"""
The names, numbers and JSON rules of the wire contract (docs/protocol.md),
shared by the service and the command-line client.

Standard library only, and nothing else of ccx: whatever speaks to a ccx
service can import it without Twisted, Autobahn or the service itself.
"""

import json
import math
from typing import Any, Optional, Union

# JSON-RPC error codes (docs/protocol.md section 4).
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603

LIMIT_EXCEEDED = -32001
COMMAND_NOT_ALLOWED = -32002
PROCESS_NOT_FOUND = -32003
INVALID_STATE = -32004
SPAWN_FAILED = -32005

# A program's output streams, in the order the contract lists them.
STREAMS = ("stdout", "stderr")

# How output and C{write}'s data are carried in JSON text.
UTF8 = "utf-8"
BASE64 = "base64"
ENCODINGS = (UTF8, BASE64)

# C{control}'s types, each with the status its result reports.
CONTROLS = {"PAUSE": "paused", "RESUME": "resumed", "CANCEL": "cancelled"}

# The signals C{signal} may send.
SIGNALS = (
    "SIGINT",
    "SIGHUP",
    "SIGTERM",
    "SIGKILL",
    "SIGUSR1",
    "SIGUSR2",
    "SIGWINCH",
    "SIGQUIT",
)


class JSONError(ValueError):
    """
    A message that is not strict JSON; the text says why, for a person.
    """


def _reject_constant(name: str) -> Any:
    raise JSONError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise JSONError(f"the number {text[:40]} is too large")
    return value


def loads(payload: Union[bytes, str]) -> Any:
    """
    Parse one message as strict JSON: UTF-8, no C{NaN} or C{Infinity}, no
    number too large for a float.

    @raise JSONError: when C{payload} is not such JSON.
    """
    try:
        if isinstance(payload, bytes):
            payload = payload.decode("utf-8")
        return json.loads(
            payload, parse_constant=_reject_constant, parse_float=_finite_float
        )
    except UnicodeDecodeError:
        raise JSONError("the message is not valid UTF-8")
    except RecursionError:
        raise JSONError("the message is nested too deeply")
    except JSONError:
        raise
    except ValueError as e:
        raise JSONError(str(e))


def dumps(message: Any) -> bytes:
    """
    Serialise a message as compact JSON in ASCII (other characters escaped,
    so that any Python string travels, a lone surrogate included).

    The service serialises its hot path with orjson (L{ccx.rpc.jsonrpc.encode});
    this is the encoder for everything that has no such need.

    @raise ValueError: for C{NaN} or an infinite float, which JSON cannot carry.
    @raise TypeError: for values that are not JSON.
    """
    return json.dumps(message, separators=(",", ":"), allow_nan=False).encode("ascii")


def valid_id(value: Any) -> bool:
    """
    Whether C{value} is a request id that the service accepts and echoes
    back: a string, a number (an integer of 64 bits at most) or null.
    """
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        # Echoed back in the reply, which carries 64-bit integers at most.
        return -(2**63) <= value < 2**64
    return value is None or isinstance(value, (str, float))


def id_key(request_id: Any) -> str:
    """
    A request id as a dictionary key: JSON keeps C{1} and C{"1"} apart, as
    JSON-RPC does.
    """
    return json.dumps(request_id)


def error_response(
    request_id: Any, code: int, message: str, data: Optional[Any] = None
) -> dict:
    """
    A JSON-RPC error response; C{data} is left out when it is L{None}.
    """
    error: dict = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return {"jsonrpc": "2.0", "id": request_id, "error": error}
