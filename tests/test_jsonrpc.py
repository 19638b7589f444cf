"""
Tests for L{ccx.rpc.jsonrpc} and L{ccx.rpc.errors}.
"""

import json
import os

from twisted.internet.defer import Deferred, succeed
from twisted.trial.unittest import SynchronousTestCase

from ccx.process.errors import (
    InvalidCommand,
    InvalidState,
    LimitReached,
    NotAllowed,
    ProcessNotFound,
    SpawnFailed,
)
from ccx.rpc import errors
from ccx.rpc.errors import RPCError
from ccx.rpc.jsonrpc import Dispatcher, Reply, encode, notification, parse


def _strict_loads(text):
    """
    Parse C{text} as strict JSON, refusing NaN and Infinity.
    """

    def refuse(name):
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


def _request(method, params=None, request_id=1):
    message = {"jsonrpc": "2.0", "id": request_id, "method": method}
    if params is not None:
        message["params"] = params
    return json.dumps(message)


def _notification(method, params=None):
    message = {"jsonrpc": "2.0", "method": method}
    if params is not None:
        message["params"] = params
    return json.dumps(message)


class ParseTests(SynchronousTestCase):
    """
    Tests for L{parse}.
    """

    def assertParseError(self, payload):
        error = self.assertRaises(RPCError, parse, payload)
        self.assertEqual(error.code, errors.PARSE_ERROR)
        return error

    def test_text(self):
        """A JSON text is parsed."""
        self.assertEqual(parse('{"a": [1, "b"]}'), {"a": [1, "b"]})

    def test_bytes(self):
        """UTF-8 bytes are decoded and parsed."""
        self.assertEqual(parse('["é"]'.encode("utf-8")), ["é"])

    def test_invalid_json(self):
        """Text that is not JSON is a parse error."""
        self.assertParseError("{")

    def test_invalid_utf8(self):
        """Bytes that are not UTF-8 are a parse error saying so."""
        error = self.assertParseError(b'["\xff\xfe"]')
        self.assertIn("UTF-8", error.message)

    def test_constants(self):
        """NaN, Infinity and -Infinity are parse errors."""
        for constant in ("NaN", "Infinity", "-Infinity"):
            self.assertParseError(f"[{constant}]")

    def test_deep_nesting(self):
        """A message nested too deeply is a parse error, not a crash."""
        error = self.assertParseError("[" * 100000 + "]" * 100000)
        self.assertIn("nested too deeply", error.message)


class ErrorsTests(SynchronousTestCase):
    """
    Tests for L{ccx.rpc.errors}.
    """

    def test_codes(self):
        """The codes are those of docs/protocol.md section 4."""
        self.assertEqual(
            (
                errors.PARSE_ERROR,
                errors.INVALID_REQUEST,
                errors.METHOD_NOT_FOUND,
                errors.INVALID_PARAMS,
                errors.INTERNAL_ERROR,
                errors.LIMIT_EXCEEDED,
                errors.COMMAND_NOT_ALLOWED,
                errors.PROCESS_NOT_FOUND,
                errors.INVALID_STATE,
                errors.SPAWN_FAILED,
            ),
            (-32700, -32600, -32601, -32602, -32603,
             -32001, -32002, -32003, -32004, -32005),
        )

    def test_to_json_without_data(self):
        """An error without data has only a code and a message."""
        self.assertEqual(
            RPCError(-32602, "bad").to_json(), {"code": -32602, "message": "bad"}
        )

    def test_to_json_with_data(self):
        """An error's data is carried when given."""
        self.assertEqual(
            RPCError(-32001, "busy", {"limit": 3}).to_json(),
            {"code": -32001, "message": "busy", "data": {"limit": 3}},
        )

    def test_message_is_str(self):
        """The exception's text is its message."""
        self.assertEqual(str(RPCError(-32603, "oops")), "oops")

    def test_helpers(self):
        """Each refusal of the process layer maps to its code."""
        self.assertEqual(errors.invalid_params("x").code, -32602)
        self.assertEqual(errors.limit_exceeded("x").code, -32001)
        self.assertEqual(errors.rpc_error(InvalidCommand("x")).code, -32602)
        self.assertEqual(errors.rpc_error(LimitReached("x")).code, -32001)
        self.assertEqual(errors.rpc_error(NotAllowed("x")).code, -32002)
        self.assertEqual(errors.rpc_error(InvalidState("x")).code, -32004)
        self.assertEqual(errors.rpc_error(SpawnFailed("x")).code, -32005)
        self.assertEqual(errors.rpc_error(SpawnFailed("no such file")).message,
                         "spawn failed: no such file")

    def test_process_not_found(self):
        """Process-not-found messages say which process and what to do."""
        unknown = errors.rpc_error(ProcessNotFound("p1"))
        finished = errors.rpc_error(ProcessNotFound("p1", finished=True))
        missing = errors.rpc_error(ProcessNotFound(None))
        for error in (unknown, finished, missing):
            self.assertEqual(error.code, -32003)
        self.assertIn("'p1'", unknown.message)
        self.assertIn("list", unknown.message)
        self.assertIn("already finished", finished.message)
        self.assertIn("process_id", missing.message)

    def test_option_hints(self):
        """The edge names the option a person could change; the core never does."""
        limit = LimitReached("2 processes are running", "max_processes", 2)
        self.assertNotIn("--", limit.message)
        self.assertEqual(
            errors.rpc_error(limit).message,
            "limit exceeded: 2 processes are running (--max-processes 2)",
        )
        denied = NotAllowed("'env' may not set 'LD_X'", setting="deny_env")
        self.assertEqual(
            errors.rpc_error(denied).message,
            "command not allowed: 'env' may not set 'LD_X' (see --deny-env)",
        )
        refused = NotAllowed("'x' is not on the allow-list", "allow", "x", nothing_allowed=True)
        self.assertEqual(
            errors.rpc_error(refused).message,
            "command not allowed: 'x' is not on the allow-list; start ccx with "
            "--allow x to allow it; nothing is allowed by default",
        )

    def test_as_rpc_error(self):
        """Client errors map; anything else is not one (an internal error)."""
        rpc = RPCError(-32602, "x")
        self.assertIs(errors.as_rpc_error(rpc), rpc)
        self.assertEqual(errors.as_rpc_error(InvalidState("x")).code, -32004)
        self.assertIsNone(errors.as_rpc_error(KeyError("x")))

    def test_process_layer_imports_no_rpc(self):
        """The process and output layers know nothing of JSON-RPC."""
        import ccx.durable
        import ccx.keeper
        import ccx.output
        import ccx.process

        for package in (ccx.process, ccx.output, ccx.durable, ccx.keeper):
            folder = os.path.dirname(package.__file__)
            for name in os.listdir(folder):
                if name.endswith(".py"):
                    with open(os.path.join(folder, name)) as f:
                        imports = [
                            line for line in f if line.startswith(("from ", "import "))
                        ]
                    for edge in ("ccx.rpc", "ccx.native", "ccx.mcp", "ccx.web"):
                        self.assertFalse(
                            [line for line in imports if edge in line], (name, edge)
                        )


class EncodeTests(SynchronousTestCase):
    """
    Tests for L{encode} and L{notification}.
    """

    def test_compact(self):
        """Messages are serialised as UTF-8 without extra whitespace or escapes."""
        self.assertEqual(encode({"a": [1, "é"]}), '{"a":[1,"é"]}'.encode("utf-8"))

    def test_control_characters_escaped(self):
        """NUL and other control characters in program output are escaped, as JSON requires."""
        self.assertEqual(encode("a\x00\n\x1f"), b'"a\\u0000\\n\\u001f"')

    def test_unencodable_raises_type_error(self):
        """Values JSON cannot carry raise TypeError, which the dispatcher turns into -32603."""
        self.assertRaises(TypeError, encode, {1, 2})
        self.assertRaises(TypeError, encode, 2**70)

    def test_notification(self):
        """A notification has no id."""
        self.assertEqual(
            json.loads(notification("connected", {"x": 1})),
            {"jsonrpc": "2.0", "method": "connected", "params": {"x": 1}},
        )


class DispatcherTestsMixin:
    """
    Helpers for dispatching frames synchronously.
    """

    def setUp(self):
        self.calls = []
        self.methods = {
            "echo": self.echo,
            "fail": self.fail_with_rpc_error,
            "crash": self.crash,
        }

    def echo(self, params, call):
        self.calls.append((params, call))
        return params

    def fail_with_rpc_error(self, params, call):
        raise RPCError(errors.PROCESS_NOT_FOUND, "no such process", {"id": "p9"})

    def crash(self, params, call):
        raise ZeroDivisionError("division by zero")

    def reply(self, payload, **kwargs):
        dispatcher = Dispatcher(self.methods, **kwargs)
        return self.successResultOf(dispatcher.dispatch(payload))

    def response(self, payload, **kwargs):
        reply = self.reply(payload, **kwargs)
        self.assertIsNotNone(reply.payload)
        return _strict_loads(reply.payload)

    def assertError(self, response, code, request_id=None):
        self.assertEqual(response["jsonrpc"], "2.0")
        self.assertIs(type(response["id"]), type(request_id))
        self.assertEqual(response["id"], request_id)
        self.assertEqual(response["error"]["code"], code)
        self.assertNotIn("result", response)
        self.assertIsInstance(response["error"]["message"], str)
        return response["error"]


class ParseErrorTests(DispatcherTestsMixin, SynchronousTestCase):
    """
    Frames that are not JSON get a parse error with a null id.
    """

    def test_invalid_json(self):
        """Text that is not JSON gets -32700."""
        self.assertError(self.response('{"jsonrpc": "2.0", '), -32700)

    def test_invalid_utf8(self):
        """Bytes that are not UTF-8 get -32700."""
        self.assertError(self.response(b'{"a": "\xc3\x28"}'), -32700)

    def test_nan(self):
        """NaN in a frame gets -32700."""
        payload = '{"jsonrpc": "2.0", "id": NaN, "method": "echo"}'
        self.assertError(self.response(payload), -32700)

    def test_infinity(self):
        """Infinity in a frame gets -32700, and the handler is not called."""
        payload = '{"jsonrpc": "2.0", "id": 1, "method": "echo", "params": [Infinity]}'
        self.assertError(self.response(payload), -32700)
        self.assertEqual(self.calls, [])

    def test_deep_nesting(self):
        """A deeply nested frame gets -32700."""
        self.assertError(self.response("[" * 100000 + "]" * 100000), -32700)

    def test_binary_utf8_json(self):
        """A binary payload holding UTF-8 JSON is handled like text."""
        payload = _request("echo", {"word": "naïve"}).encode("utf-8")
        self.assertEqual(
            self.response(payload),
            {"jsonrpc": "2.0", "id": 1, "result": {"word": "naïve"}},
        )

    def test_no_after_actions(self):
        """A parse error carries no after-reply actions."""
        self.assertEqual(self.reply("nope").after, [])


class InvalidRequestTests(DispatcherTestsMixin, SynchronousTestCase):
    """
    Messages that are JSON but not JSON-RPC requests get -32600.
    """

    def test_not_objects(self):
        """Numbers, strings, null and booleans are not requests."""
        for payload in ("1", '"echo"', "null", "true"):
            self.assertError(self.response(payload), -32600)

    def test_missing_jsonrpc(self):
        """A message without "jsonrpc" is refused, echoing its id."""
        response = self.response('{"id": 4, "method": "echo"}')
        self.assertError(response, -32600, 4)
        self.assertEqual(self.calls, [])

    def test_wrong_jsonrpc(self):
        """"jsonrpc" must be the string "2.0"."""
        for version in ('"1.0"', "2.0", "2", "null"):
            payload = '{"jsonrpc": %s, "id": "a", "method": "echo"}' % (version,)
            self.assertError(self.response(payload), -32600, "a")

    def test_method_not_string(self):
        """A method that is not a string is refused."""
        for method in ("1", "null", '["echo"]'):
            payload = '{"jsonrpc": "2.0", "id": 2, "method": %s}' % (method,)
            error = self.assertError(self.response(payload), -32600, 2)
            self.assertIn('"method"', error["message"])

    def test_missing_method(self):
        """A message without a method is refused."""
        self.assertError(self.response('{"jsonrpc": "2.0", "id": 3}'), -32600, 3)

    def test_bool_id(self):
        """A boolean id is refused and answered with a null id."""
        payload = '{"jsonrpc": "2.0", "id": true, "method": "echo"}'
        error = self.assertError(self.response(payload), -32600)
        self.assertIn('"id"', error["message"])
        self.assertEqual(self.calls, [])

    def test_object_id(self):
        """An object or array id is refused and answered with a null id."""
        for request_id in ("{}", "[1]"):
            payload = '{"jsonrpc": "2.0", "id": %s, "method": "echo"}' % (request_id,)
            self.assertError(self.response(payload), -32600)

    def test_string_params(self):
        """Params that are a string are refused."""
        payload = '{"jsonrpc": "2.0", "id": 5, "method": "echo", "params": "x"}'
        error = self.assertError(self.response(payload), -32600, 5)
        self.assertIn('"params"', error["message"])
        self.assertEqual(self.calls, [])

    def test_number_params(self):
        """Params that are a number are refused."""
        payload = '{"jsonrpc": "2.0", "id": 5, "method": "echo", "params": 3}'
        self.assertError(self.response(payload), -32600, 5)

    def test_invalid_notification_answered(self):
        """An invalid message without an id is answered with a null id."""
        self.assertError(self.response('{"jsonrpc": "2.0", "method": 7}'), -32600)


class CallTests(DispatcherTestsMixin, SynchronousTestCase):
    """
    Valid requests reach their handler and are answered.
    """

    def test_result(self):
        """A handler's result is sent with the request's id."""
        self.assertEqual(
            self.response(_request("echo", {"a": 1}, 9)),
            {"jsonrpc": "2.0", "id": 9, "result": {"a": 1}},
        )

    def test_handler_sees_call(self):
        """The handler gets the params and a Call describing the request."""
        self.response(_request("echo", [1, 2], "r1"))
        [(params, call)] = self.calls
        self.assertEqual(params, [1, 2])
        self.assertEqual(
            (call.method, call.request_id, call.is_notification), ("echo", "r1", False)
        )

    def test_absent_params(self):
        """Absent params reach the handler as None."""
        self.response(_request("echo"))
        self.assertIsNone(self.calls[0][0])

    def test_null_params(self):
        """Null params are accepted and reach the handler as None."""
        payload = '{"jsonrpc": "2.0", "id": 1, "method": "echo", "params": null}'
        self.assertEqual(self.response(payload)["result"], None)

    def test_string_id(self):
        """A string id is echoed."""
        self.assertEqual(self.response(_request("echo", request_id="abc"))["id"], "abc")

    def test_float_id(self):
        """A fractional id is echoed."""
        self.assertEqual(self.response(_request("echo", request_id=1.5))["id"], 1.5)

    def test_null_id(self):
        """A null id is a request, not a notification: it is answered."""
        response = self.response(_request("echo", request_id=None))
        self.assertEqual(response, {"jsonrpc": "2.0", "id": None, "result": None})
        self.assertFalse(self.calls[0][1].is_notification)

    def test_huge_id_reply_is_strict_json(self):
        """The reply to a request whose id overflows a float is strict JSON."""
        payload = '{"jsonrpc": "2.0", "id": 1e400, "method": "echo"}'
        text = self.reply(payload).payload
        try:
            _strict_loads(text)
        except ValueError:
            self.fail(f"the reply is not strict JSON: {text}")

    def test_id_beyond_64_bits(self):
        """An integer id too large to echo back is an invalid request, answered with id null."""
        payload = '{"jsonrpc": "2.0", "id": %d, "method": "echo"}' % 2**70
        response = _strict_loads(self.reply(payload).payload)
        self.assertError(response, -32600, None)

    def test_method_not_found(self):
        """An unknown method gets -32601 naming the method."""
        error = self.assertError(self.response(_request("exeucte", {}, 6)), -32601, 6)
        self.assertIn("'exeucte'", error["message"])
        self.assertIn("echo", error["message"])

    def test_rpc_error(self):
        """A handler's RPCError is sent with its code, message and data."""
        error = self.assertError(self.response(_request("fail", {}, 8)), -32003, 8)
        self.assertEqual(error, {"code": -32003, "message": "no such process",
                                 "data": {"id": "p9"}})

    def test_other_exception(self):
        """Any other exception is -32603, and the failure is logged."""
        error = self.assertError(self.response(_request("crash", {}, 2)), -32603, 2)
        self.assertIn("'crash'", error["message"])
        self.assertNotIn("division", error["message"])
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_unserialisable_result(self):
        """A result that is not JSON still gets an answer (-32603)."""
        self.methods["bad"] = lambda params, call: {1, 2}
        outcome = []
        d = Dispatcher(self.methods).dispatch(_request("bad", {}, 3))
        d.addBoth(outcome.append)
        [reply] = outcome
        self.assertIsInstance(reply, Reply, f"dispatch failed: {reply}")
        self.assertError(_strict_loads(reply.payload), -32603, 3)
        self.flushLoggedErrors(TypeError)

    def test_deferred_result(self):
        """A Deferred result is sent once it fires."""
        later = Deferred()
        self.methods["slow"] = lambda params, call: later
        d = Dispatcher(self.methods).dispatch(_request("slow", {}, 1))
        self.assertNoResult(d)
        later.callback({"done": True})
        reply = self.successResultOf(d)
        self.assertEqual(_strict_loads(reply.payload)["result"], {"done": True})

    def test_deferred_rpc_error(self):
        """A Deferred failing with RPCError is sent as that error."""
        later = Deferred()
        self.methods["slow"] = lambda params, call: later
        d = Dispatcher(self.methods).dispatch(_request("slow", {}, 1))
        later.errback(RPCError(errors.INVALID_STATE, "stdin is closed"))
        error = self.assertError(_strict_loads(self.successResultOf(d).payload), -32004, 1)
        self.assertEqual(error["message"], "stdin is closed")

    def test_deferred_other_failure(self):
        """A Deferred failing with another exception is -32603, logged."""
        later = Deferred()
        self.methods["slow"] = lambda params, call: later
        d = Dispatcher(self.methods).dispatch(_request("slow", {}, 1))
        later.errback(KeyError("x"))
        self.assertError(_strict_loads(self.successResultOf(d).payload), -32603, 1)
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)


class NotificationTests(DispatcherTestsMixin, SynchronousTestCase):
    """
    Notifications are never answered.
    """

    def test_called(self):
        """A notification reaches its handler, marked as a notification."""
        reply = self.reply(_notification("echo", {"x": 1}))
        self.assertIsNone(reply.payload)
        [(params, call)] = self.calls
        self.assertEqual(params, {"x": 1})
        self.assertTrue(call.is_notification)
        self.assertIsNone(call.request_id)

    def test_method_not_found(self):
        """An unknown method in a notification gets no reply."""
        self.assertIsNone(self.reply(_notification("pong")).payload)

    def test_rpc_error(self):
        """A handler's RPCError in a notification gets no reply."""
        self.assertIsNone(self.reply(_notification("fail")).payload)

    def test_other_exception(self):
        """A crash in a notification gets no reply but is logged."""
        self.assertIsNone(self.reply(_notification("crash")).payload)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)


class BatchTests(DispatcherTestsMixin, SynchronousTestCase):
    """
    Batches are answered with an array of the responses due.
    """

    def batch(self, *messages):
        return "[" + ", ".join(messages) + "]"

    def test_mixed(self):
        """Requests are answered in order; notifications are left out."""
        payload = self.batch(
            _request("echo", [1], 1),
            _notification("echo", [2]),
            _request("nosuch", None, 2),
            _request("echo", [3], 3),
        )
        responses = self.response(payload)
        self.assertEqual([r["id"] for r in responses], [1, 2, 3])
        self.assertEqual(responses[0]["result"], [1])
        self.assertEqual(responses[1]["error"]["code"], -32601)
        self.assertEqual(responses[2]["result"], [3])
        self.assertEqual(len(self.calls), 3)

    def test_invalid_members(self):
        """Invalid members are answered in place with a null id."""
        responses = self.response(self.batch("1", _request("echo", [], 7)))
        self.assertError(responses[0], -32600)
        self.assertEqual(responses[1], {"jsonrpc": "2.0", "id": 7, "result": []})

    def test_all_notifications(self):
        """A batch of notifications gets no reply at all."""
        reply = self.reply(self.batch(_notification("echo"), _notification("nosuch")))
        self.assertIsNone(reply.payload)
        self.assertEqual(len(self.calls), 1)

    def test_empty(self):
        """An empty batch gets one -32600 error, not an array."""
        self.assertError(self.response("[]"), -32600)

    def test_oversized(self):
        """A batch larger than max_batch is refused as a whole."""
        payload = self.batch(*[_request("echo", [], i) for i in range(3)])
        error = self.assertError(self.response(payload, max_batch=2), -32600)
        self.assertIn("at most 2", error["message"])
        self.assertEqual(self.calls, [])

    def test_at_limit(self):
        """A batch of exactly max_batch calls is handled."""
        payload = self.batch(*[_request("echo", [], i) for i in range(2)])
        self.assertEqual(len(self.response(payload, max_batch=2)), 2)

    def test_order_of_deferreds(self):
        """Responses follow the batch's order, not completion order."""
        pending = {"a": Deferred(), "b": Deferred()}
        self.methods["wait"] = lambda params, call: pending[params[0]]
        payload = self.batch(_request("wait", ["a"], 1), _request("wait", ["b"], 2))
        d = Dispatcher(self.methods).dispatch(payload)
        pending["b"].callback("second")
        self.assertNoResult(d)
        pending["a"].callback("first")
        responses = _strict_loads(self.successResultOf(d).payload)
        self.assertEqual(
            [(r["id"], r["result"]) for r in responses], [(1, "first"), (2, "second")]
        )

    def test_crash_in_batch(self):
        """A crashing member is -32603; the others are answered."""
        responses = self.response(
            self.batch(_request("crash", None, 1), _request("echo", [1], 2))
        )
        self.assertError(responses[0], -32603, 1)
        self.assertEqual(responses[1]["result"], [1])
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)


class AfterReplyTests(DispatcherTestsMixin, SynchronousTestCase):
    """
    Actions registered with L{Call.after_reply} come back in L{Reply.after}.
    """

    def setUp(self):
        super().setUp()
        self.done = []
        self.methods["later"] = self.later

    def later(self, params, call):
        for name in params["names"]:
            call.after_reply(lambda name=name: self.done.append(name))
        if params.get("fail"):
            raise RPCError(errors.INVALID_STATE, "no")
        return succeed("ok")

    def run_after(self, reply):
        for action in reply.after:
            action()
        return self.done

    def test_none(self):
        """A call that registers nothing has no actions."""
        self.assertEqual(self.reply(_request("echo", [])).after, [])

    def test_not_run_by_dispatch(self):
        """Actions are returned, not run."""
        reply = self.reply(_request("later", {"names": ["a"]}))
        self.assertEqual(self.done, [])
        self.assertEqual(len(reply.after), 1)

    def test_order(self):
        """Actions come back in the order they were registered."""
        reply = self.reply(_request("later", {"names": ["a", "b", "c"]}))
        self.assertEqual(self.run_after(reply), ["a", "b", "c"])

    def test_on_error(self):
        """Actions registered before an error are still returned."""
        reply = self.reply(_request("later", {"names": ["a"], "fail": True}))
        self.assertEqual(_strict_loads(reply.payload)["error"]["code"], -32004)
        self.assertEqual(self.run_after(reply), ["a"])

    def test_notification(self):
        """A notification's actions are returned although nothing is sent."""
        reply = self.reply(_notification("later", {"names": ["a", "b"]}))
        self.assertIsNone(reply.payload)
        self.assertEqual(self.run_after(reply), ["a", "b"])

    def test_batch(self):
        """A batch's actions come back in the order of its members."""
        payload = "[%s, %s, %s]" % (
            _request("later", {"names": ["a", "b"]}, 1),
            _notification("later", {"names": ["c"]}),
            _request("later", {"names": ["d"]}, 2),
        )
        reply = self.reply(payload)
        self.assertEqual(len(_strict_loads(reply.payload)), 2)
        self.assertEqual(self.run_after(reply), ["a", "b", "c", "d"])
