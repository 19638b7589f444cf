"""
The names, numbers and JSON rules of the wire contract (docs/protocol.md),
shared by the service and the command-line client.

Standard library only, and nothing else of ccx: whatever speaks to a ccx
service can import it without Twisted, Autobahn or the service itself.
"""

import json
import math
import struct
from dataclasses import dataclass
from typing import Any, Callable, Optional, Tuple, Union

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
# The one stream of a program on a terminal (execute's C{pty}).
PTY = "pty"
# Every stream name an offset may be given for.
ALL_STREAMS = STREAMS + (PTY,)

# How output and C{write}'s data are carried in JSON text.
UTF8 = "utf-8"
BASE64 = "base64"
ENCODINGS = (UTF8, BASE64)
# Output may also come as binary WebSocket frames (see below).
BINARY = "binary"
OUTPUT_ENCODINGS = (UTF8, BASE64, BINARY)
# The capability (in C{connected}) of a service that sends binary frames.
BINARY_FRAMES = "binary-frames"

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


# Binary output frames (docs/protocol.md, "Binary output frames"): a fixed
# header in network byte order, then the raw bytes.
FRAME_OUTPUT = 1
# Stream codes; 3 is reserved for a pseudo-terminal's single stream.
STREAM_CODES = {"stdout": 1, "stderr": 2, PTY: 3}
_STREAM_NAMES = {code: name for name, code in STREAM_CODES.items()}
# kind (1 byte), stream (1), reserved (6, zero), process id (16: its 32 hex
# digits), offset (unsigned 64-bit), read time (IEEE 754 double, seconds
# since the epoch).
_FRAME_HEADER = struct.Struct(">BB6x16sQd")
FRAME_HEADER_SIZE = _FRAME_HEADER.size


@dataclass(frozen=True)
class OutputFrame:
    """
    One binary output frame: C{data} is bytes C{offset} onwards of the
    process's C{stream}, read at C{time}.
    """

    process_id: str
    stream: str
    offset: int
    time: float
    data: bytes


def output_frame_encoder(process_id: str) -> Callable[[str, int, float, bytes], bytes]:
    """
    The function that turns C{(stream, offset, time, data)} into the payload
    of a binary frame of C{process_id}'s output, the id checked and packed
    once.

    @raise ValueError: when C{process_id} is not 32 hex digits.
    """
    ident = bytes.fromhex(process_id)
    if len(ident) != 16:
        raise ValueError(f"a process id of binary frames is 32 hex digits: {process_id!r}")
    pack = _FRAME_HEADER.pack

    def encode(stream: str, offset: int, time: float, data: bytes) -> bytes:
        return pack(FRAME_OUTPUT, STREAM_CODES[stream], ident, offset, time) + data

    return encode


def encode_output_frame(
    process_id: str, stream: str, offset: int, time: float, data: bytes
) -> bytes:
    """
    The payload of a binary frame carrying C{data}.

    @raise ValueError: when C{process_id} is not 32 hex digits.
    @raise KeyError: when C{stream} has no code.
    """
    return output_frame_encoder(process_id)(stream, offset, time, data)


def output_frame_header(payload: bytes) -> Tuple[str, str, int, float]:
    """
    Read a binary frame's header only: its process id, stream, offset and
    read time (the data is C{payload[FRAME_HEADER_SIZE:]}).

    @raise ValueError: when C{payload} is not an output frame.
    """
    if len(payload) < FRAME_HEADER_SIZE:
        raise ValueError("a binary frame shorter than its header")
    kind, code, ident, offset, time = _FRAME_HEADER.unpack_from(payload)
    if kind != FRAME_OUTPUT or code not in _STREAM_NAMES:
        raise ValueError(f"not an output frame (kind {kind}, stream {code})")
    return ident.hex(), _STREAM_NAMES[code], offset, time


def decode_output_frame(payload: bytes) -> OutputFrame:
    """
    Read a binary frame.

    @raise ValueError: when C{payload} is not an output frame.
    """
    process_id, stream, offset, time = output_frame_header(payload)
    return OutputFrame(process_id, stream, offset, time, bytes(payload[FRAME_HEADER_SIZE:]))
