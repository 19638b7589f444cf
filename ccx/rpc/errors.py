"""
JSON-RPC error codes and the exception that carries one to the edge.
"""

from typing import Any, Optional

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
        error: dict = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error


def invalid_params(message: str) -> RPCError:
    return RPCError(INVALID_PARAMS, message)


def limit_exceeded(message: str) -> RPCError:
    return RPCError(LIMIT_EXCEEDED, message)


def command_not_allowed(message: str) -> RPCError:
    return RPCError(COMMAND_NOT_ALLOWED, message)


def process_not_found(process_id: Optional[str], finished: bool = False) -> RPCError:
    if process_id is None:
        return RPCError(
            PROCESS_NOT_FOUND,
            "process not found: this connection has no unfinished process; "
            "pass process_id",
        )
    if finished:
        return RPCError(
            PROCESS_NOT_FOUND, f"process not found: {process_id!r} has already finished"
        )
    return RPCError(
        PROCESS_NOT_FOUND,
        f"process not found: no process {process_id!r} (see the 'list' method)",
    )


def invalid_state(message: str) -> RPCError:
    return RPCError(INVALID_STATE, message)


def spawn_failed(message: str) -> RPCError:
    return RPCError(SPAWN_FAILED, f"spawn failed: {message}")
