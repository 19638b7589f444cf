"""
JSON-RPC error codes and the exception that carries one to the edge.
"""

from typing import Any, Optional

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
    "command_not_allowed",
    "invalid_params",
    "invalid_state",
    "limit_exceeded",
    "process_not_found",
    "spawn_failed",
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
