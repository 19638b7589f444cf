"""
JSON-RPC error codes, the exception that carries one to the edge, and the
one mapping from the process layer's refusals to codes and wording.
"""

from typing import Any, Optional, Tuple, Type

from ccx.process.errors import (
    InvalidCommand,
    InvalidState,
    LimitReached,
    NotAllowed,
    ProcessError,
    ProcessNotFound,
    SpawnFailed,
)
from ccx.protocol import (
    COMMAND_NOT_ALLOWED,
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    INVALID_STATE,
    LIMIT_EXCEEDED,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    PROCESS_NOT_FOUND,
    SPAWN_FAILED,
    error_response,
)

__all__ = [
    "COMMAND_NOT_ALLOWED",
    "INTERNAL_ERROR",
    "INVALID_PARAMS",
    "INVALID_REQUEST",
    "INVALID_STATE",
    "LIMIT_EXCEEDED",
    "METHOD_NOT_FOUND",
    "PARSE_ERROR",
    "PROCESS_NOT_FOUND",
    "SPAWN_FAILED",
    "RPCError",
    "as_rpc_error",
    "invalid_params",
    "limit_exceeded",
    "rpc_error",
]


class RPCError(Exception):
    """
    An error to be answered as a JSON-RPC error object.

    @ivar code: the JSON-RPC error code.
    @ivar message: a sentence a person can act on.
    @ivar data: optional structured detail.
    """

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data

    def to_json(self) -> dict:
        return error_response(None, self.code, self.message, self.data)["error"]

    def response(self, request_id: Any) -> dict:
        """
        The JSON-RPC error response that answers C{request_id} with this error.
        """
        return error_response(request_id, self.code, self.message, self.data)


def invalid_params(message: str) -> RPCError:
    return RPCError(INVALID_PARAMS, message)


def limit_exceeded(message: str) -> RPCError:
    return RPCError(LIMIT_EXCEEDED, message)


# How each refusal of the process layer is answered: its code, and the words
# its message starts with.
_PROCESS_ERRORS: Tuple[Tuple[Type[ProcessError], int, str], ...] = (
    (InvalidCommand, INVALID_PARAMS, "invalid params"),
    (NotAllowed, COMMAND_NOT_ALLOWED, "command not allowed"),
    (LimitReached, LIMIT_EXCEEDED, "limit exceeded"),
    (ProcessNotFound, PROCESS_NOT_FOUND, "process not found"),
    (InvalidState, INVALID_STATE, "invalid state"),
    (SpawnFailed, SPAWN_FAILED, "spawn failed"),
)


def _option_hint(error: ProcessError) -> str:
    """
    What a person could change, spelled as the C{twistd ccx} option.
    """
    if error.setting is None:
        return ""
    option = "--" + error.setting.replace("_", "-")
    if isinstance(error, NotAllowed) and error.value is not None:
        hint = f"; start ccx with {option} {error.value} to allow it"
        if error.nothing_allowed:
            hint += "; nothing is allowed by default"
        return hint
    if error.value is None:
        return f" (see {option})"
    return f" ({option} {error.value})"


def _parameter_hint(error: ProcessError) -> str:
    """
    What the request could have said instead, in the dialects' words.
    """
    if isinstance(error, ProcessNotFound):
        if error.process_id is None:
            return "; pass process_id"
        return "" if error.finished else " (see 'list')"
    if error.parameter == "stdin":
        return "; start it with stdin: true to write to it"
    return ""


def rpc_error(error: ProcessError) -> RPCError:
    """
    The JSON-RPC error for a refusal of the process layer: the native
    dialect and MCP both answer with this.
    """
    for kind, code, prefix in _PROCESS_ERRORS:
        if isinstance(error, kind):
            hints = _option_hint(error) + _parameter_hint(error)
            return RPCError(code, f"{prefix}: {error.message}{hints}")
    return RPCError(INTERNAL_ERROR, f"internal error: {error.message}")


def as_rpc_error(error: Exception) -> Optional[RPCError]:
    """
    C{error} as a JSON-RPC error, or L{None} when it is not one a client
    caused (an internal error).
    """
    if isinstance(error, RPCError):
        return error
    if isinstance(error, ProcessError):
        return rpc_error(error)
    return None
