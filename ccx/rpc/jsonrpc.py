"""
JSON-RPC 2.0 framing and dispatch.

L{Dispatcher} turns one incoming frame (a request, a notification or a batch)
into the text of the reply, calling a handler for each method.  It knows
nothing of WebSockets or processes, so that a second dialect (MCP) or a second
transport can reuse it.
"""

import time

import orjson
from typing import Any, Callable, List, Mapping, Optional, Union

from twisted.internet.defer import Deferred, gatherResults, maybeDeferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from ccx.protocol import JSONError, loads, valid_id
from ccx.rpc.ratelimit import TokenBucket
from ccx.rpc.errors import (
    INTERNAL_ERROR,
    INVALID_REQUEST,
    LIMIT_EXCEEDED,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    RPCError,
    as_rpc_error,
)

_NO_ID = object()


class Call:
    """
    One method call as a handler sees it.

    @ivar method: the method name.
    @ivar request_id: the request's id, or L{None} for a notification.
    @ivar is_notification: whether no reply will be sent.
    """

    def __init__(self, method: str, request_id: Any, is_notification: bool) -> None:
        self.method = method
        self.request_id = request_id
        self.is_notification = is_notification
        self.reply_withheld = False
        self._after_reply: List[Callable[[], None]] = []

    def after_reply(self, action: Callable[[], None]) -> None:
        """
        Run C{action} once the reply carrying this call's result has been
        sent (or, for a notification, once the call is done), so that
        notifications it causes never overtake that reply.
        """
        self._after_reply.append(action)

    def withhold_reply(self) -> None:
        """
        Send no response to this request: the peer cancelled it (MCP's
        C{notifications/cancelled}) and will not read one.
        """
        self.reply_withheld = True


Handler = Callable[[Any, Call], Any]


class Reply:
    """
    The outcome of one frame.

    @ivar payload: the JSON (UTF-8) to send back, or L{None} when nothing is due.
    @ivar after: actions to run once C{payload} has been sent.
    """

    def __init__(self, payload: Optional[bytes], after: List[Callable[[], None]]) -> None:
        self.payload = payload
        self.after = after


def encode(message: Any) -> bytes:
    """
    Serialise a JSON-RPC message as compact UTF-8 JSON.

    orjson, because every chunk of program output is serialised: the
    standard library's encoder took a third of the service's time.

    @raise TypeError: for values JSON cannot carry (orjson's
        C{JSONEncodeError} is one).
    """
    return orjson.dumps(message)


def notification(method: str, params: Any) -> bytes:
    """
    A JSON-RPC notification, serialised.
    """
    return orjson.dumps({"jsonrpc": "2.0", "method": method, "params": params})


def parse(payload: Union[bytes, str]) -> Any:
    """
    Parse one frame's payload as strict JSON (L{ccx.protocol.loads}).

    @raise RPCError: with code -32700 when the payload is not UTF-8 JSON.
    """
    try:
        return loads(payload)
    except JSONError as e:
        raise RPCError(PARSE_ERROR, f"parse error: {e}")


class Dispatcher:
    """
    Dispatch JSON-RPC 2.0 frames to handlers.

    @param methods: handlers by method name; each takes the params (an
        object, an array or L{None}) and a L{Call}, and returns a result or
        a L{Deferred} of one, or raises L{RPCError}.
    @param max_batch: the most calls one batch may hold.
    @param limiter: when given, consulted once per call; a call it refuses
        gets -32001 instead of running.
    @param observer: when given, called with the method, the seconds it took
        and the error code (or L{None}) of every call to a known method.
    @param max_reply: when given, the largest reply the transport can carry:
        a larger one becomes an error saying so, instead of never arriving.
    """

    log = Logger()

    def __init__(
        self,
        methods: Mapping[str, Handler],
        max_batch: int = 100,
        log_context: Optional[dict] = None,
        limiter: Optional[TokenBucket] = None,
        observer: Optional[Callable[[str, float, Optional[int]], None]] = None,
        max_reply: Optional[int] = None,
    ) -> None:
        self._methods = methods
        self._max_batch = max_batch
        self._limiter = limiter
        self._observer = observer
        self._max_reply = max_reply
        self._log_context = log_context or {}

    def dispatch(self, payload: Union[bytes, str]) -> "Deferred[Reply]":
        """
        Handle one frame.

        @return: a L{Deferred} that fires with the L{Reply}; it never fails.
        """
        try:
            message = parse(payload)
        except RPCError as e:
            return succeed(Reply(encode(e.response(None)), []))

        if isinstance(message, list):
            return self._dispatch_batch(message)

        d = self._dispatch_one(message)
        return d.addCallback(
            lambda result: Reply(
                None if result[0] is None else self._encode(result[0]), result[1]
            )
        )

    def _dispatch_batch(self, messages: list) -> "Deferred[Reply]":
        if not messages:
            error = RPCError(INVALID_REQUEST, "invalid request: an empty batch")
            return succeed(Reply(encode(error.response(None)), []))
        if len(messages) > self._max_batch:
            error = RPCError(
                INVALID_REQUEST,
                f"invalid request: a batch may hold at most {self._max_batch} "
                f"calls; this one holds {len(messages)}",
            )
            return succeed(Reply(encode(error.response(None)), []))

        def combine(results: list) -> Reply:
            responses = [response for response, _ in results if response is not None]
            after = [action for _, actions in results for action in actions]
            return Reply(self._encode(responses) if responses else None, after)

        return gatherResults([self._dispatch_one(m) for m in messages]).addCallback(
            combine
        )

    def _dispatch_one(self, message: Any) -> Deferred:
        """
        @return: a L{Deferred} firing with C{(response or None, after-actions)}.
        """
        try:
            call = self._validate(message)
        except RPCError as e:
            request_id = message.get("id") if isinstance(message, dict) else None
            if not valid_id(request_id):
                request_id = None
            return succeed((e.response(request_id), []))

        if self._limiter is not None and not self._limiter.take():
            error = RPCError(
                LIMIT_EXCEEDED,
                f"limit exceeded: more than {self._limiter.rate:g} requests per second "
                "on this connection; slow down and retry",
            )
            return succeed(self._respond(call, error=error))
        handler = self._methods.get(call.method)
        if handler is None:
            error = RPCError(
                METHOD_NOT_FOUND,
                f"method not found: {call.method!r} "
                f"(known methods: {', '.join(sorted(self._methods))})",
            )
            return succeed(self._respond(call, error=error))

        self.log.debug(
            "call {method} id={request_id}",
            method=call.method,
            request_id=call.request_id,
            **self._log_context,
        )
        began = time.monotonic()
        d = maybeDeferred(handler, message.get("params"), call)
        d.addCallbacks(
            lambda result: self._respond(call, result=result),
            lambda failure: self._respond(call, error=self._to_error(call, failure)),
        )
        if self._observer is not None:
            d.addCallback(self._observe, call.method, began)
        return d

    def _observe(self, result: tuple, method: str, began: float) -> tuple:
        response = result[0]
        error = response.get("error") if response is not None else None
        self._observer(
            method, time.monotonic() - began, error["code"] if error is not None else None
        )
        return result

    def _encode(self, response: Any) -> bytes:
        """
        Encode a response (or a batch of them); a result that JSON cannot
        carry becomes an internal error instead of no reply at all.
        """
        try:
            payload = encode(response)
        except TypeError:
            self.log.failure("a result could not be encoded", **self._log_context)
            error = RPCError(
                INTERNAL_ERROR, "internal error: the result could not be encoded"
            )
        else:
            if self._max_reply is None or len(payload) <= self._max_reply:
                return payload
            self.log.warn(
                "a reply of {size} bytes is larger than the largest message ({limit})",
                size=len(payload),
                limit=self._max_reply,
                **self._log_context,
            )
            error = RPCError(
                INTERNAL_ERROR,
                f"internal error: the reply is {len(payload)} bytes, more than the "
                f"largest message ({self._max_reply} bytes, --max-message-size); "
                "ask for less at a time",
            )
        if isinstance(response, list):
            return b"[" + b",".join(self._encode(r) for r in response) + b"]"
        return encode(error.response(response.get("id")))

    def _validate(self, message: Any) -> Call:
        if not isinstance(message, dict):
            raise RPCError(
                INVALID_REQUEST, "invalid request: a JSON-RPC message must be an object"
            )
        if message.get("jsonrpc") != "2.0":
            raise RPCError(INVALID_REQUEST, 'invalid request: "jsonrpc" must be "2.0"')
        request_id = message.get("id", _NO_ID)
        if request_id is not _NO_ID and not valid_id(request_id):
            raise RPCError(
                INVALID_REQUEST,
                'invalid request: "id" must be a string, a number or null',
            )
        method = message.get("method")
        if not isinstance(method, str):
            raise RPCError(INVALID_REQUEST, 'invalid request: "method" must be a string')
        params = message.get("params")
        if params is not None and not isinstance(params, (dict, list)):
            raise RPCError(
                INVALID_REQUEST,
                'invalid request: "params" must be an object or an array',
            )
        is_notification = request_id is _NO_ID
        return Call(method, None if is_notification else request_id, is_notification)

    def _to_error(self, call: Call, failure: Failure) -> RPCError:
        error = as_rpc_error(failure.value)
        if error is not None:
            return error
        self.log.failure(
            "method {method} failed", failure, method=call.method, **self._log_context
        )
        return RPCError(
            INTERNAL_ERROR,
            f"internal error while running {call.method!r}; the service log has details",
        )

    def _respond(
        self, call: Call, result: Any = None, error: Optional[RPCError] = None
    ) -> tuple:
        if call.is_notification or call.reply_withheld:
            return (None, call._after_reply)
        if error is not None:
            return (error.response(call.request_id), call._after_reply)
        response = {"jsonrpc": "2.0", "id": call.request_id, "result": result}
        return (response, call._after_reply)
