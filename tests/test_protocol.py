"""
Tests for L{ccx.protocol}: the wire contract's names and JSON rules, shared
by the service and the command-line client.
"""

import os
import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

from ccx import protocol
from ccx.protocol import JSONError, dumps, error_response, id_key, loads, valid_id

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class DependencyTests(SynchronousTestCase):
    def test_imports_nothing_but_the_standard_library(self):
        """Importing ccx.protocol in a fresh interpreter loads no Twisted, Autobahn or other ccx module."""
        script = (
            "import sys\n"
            "import ccx.protocol\n"
            "print('\\n'.join(sorted(sys.modules)))\n"
        )
        loaded = subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            check=True,
            text=True,
            cwd=ROOT,
            env=dict(os.environ, PYTHONPATH=ROOT),
        ).stdout.split()
        self.assertIn("ccx.protocol", loaded)
        foreign = [
            name
            for name in loaded
            if name.split(".")[0] in ("twisted", "autobahn", "zope", "orjson", "txaio")
            or (name.startswith("ccx.") and name != "ccx.protocol")
        ]
        self.assertEqual(foreign, [])


class SharedNamesTests(SynchronousTestCase):
    def test_one_definition(self):
        """The service's error codes, streams and names are the protocol's own objects."""
        from ccx.native import methods
        from ccx.native import wire
        from ccx.output import fanout
        from ccx.rpc import errors

        for name in ("PARSE_ERROR", "INVALID_PARAMS", "LIMIT_EXCEEDED", "SPAWN_FAILED"):
            self.assertIs(getattr(errors, name), getattr(protocol, name))
        self.assertIs(fanout.STREAMS, protocol.STREAMS)
        self.assertIs(wire.UTF8, protocol.UTF8)
        self.assertIs(methods.SIGNALS, protocol.SIGNALS)
        self.assertIs(methods.CONTROLS, protocol.CONTROLS)

    def test_codes(self):
        """The codes of docs/protocol.md section 4."""
        self.assertEqual(
            (
                protocol.PARSE_ERROR,
                protocol.INVALID_REQUEST,
                protocol.METHOD_NOT_FOUND,
                protocol.INVALID_PARAMS,
                protocol.INTERNAL_ERROR,
                protocol.LIMIT_EXCEEDED,
                protocol.COMMAND_NOT_ALLOWED,
                protocol.PROCESS_NOT_FOUND,
                protocol.INVALID_STATE,
                protocol.SPAWN_FAILED,
            ),
            (-32700, -32600, -32601, -32602, -32603, -32001, -32002, -32003, -32004, -32005),
        )


class LoadsTests(SynchronousTestCase):
    def test_json(self):
        """Text and UTF-8 bytes parse."""
        self.assertEqual(loads('{"a": [1, 2.5, "é"]}'), {"a": [1, 2.5, "é"]})
        self.assertEqual(loads('["é"]'.encode("utf-8")), ["é"])

    def test_constants(self):
        """NaN, Infinity and -Infinity are refused, saying which."""
        for constant in ("NaN", "Infinity", "-Infinity"):
            error = self.assertRaises(JSONError, loads, f"[{constant}]")
            self.assertEqual(str(error), f"{constant} is not valid JSON")

    def test_too_large(self):
        """A number too large for a float is refused; the largest float is not."""
        error = self.assertRaises(JSONError, loads, "[1e309]")
        self.assertEqual(str(error), "the number 1e309 is too large")
        self.assertEqual(loads("[1.7976931348623157e308]"), [1.7976931348623157e308])

    def test_not_utf8(self):
        """Bytes that are not UTF-8 are refused, saying so."""
        error = self.assertRaises(JSONError, loads, b'["\xff"]')
        self.assertEqual(str(error), "the message is not valid UTF-8")

    def test_nested(self):
        """Nesting deeper than the parser goes is refused, not a crash."""
        error = self.assertRaises(JSONError, loads, "[" * 100000)
        self.assertEqual(str(error), "the message is nested too deeply")

    def test_not_json(self):
        """Text that is not JSON is a JSONError, a ValueError."""
        error = self.assertRaises(JSONError, loads, "{")
        self.assertIsInstance(error, ValueError)


class DumpsTests(SynchronousTestCase):
    def test_compact_ascii(self):
        """Compact JSON, ASCII with other characters escaped, a lone surrogate included."""
        self.assertEqual(
            dumps({"a": [1, "é\udcff"]}), b'{"a":[1,"\\u00e9\\udcff"]}'
        )

    def test_refuses_nan(self):
        """NaN and infinities are refused rather than sent as what JSON is not."""
        for value in (float("nan"), float("inf"), float("-inf")):
            self.assertRaises(ValueError, dumps, [value])

    def test_round_trip(self):
        """What dumps writes, loads reads back."""
        message = {"jsonrpc": "2.0", "id": 7, "method": "m", "params": {"x": [1.5, None]}}
        self.assertEqual(loads(dumps(message)), message)


class IdTests(SynchronousTestCase):
    def test_valid(self):
        """Strings, floats, null and 64-bit integers are ids; booleans and the rest are not."""
        for value in ("a", 1.5, None, 0, -(2**63), 2**64 - 1):
            self.assertTrue(valid_id(value), value)
        for value in (True, False, -(2**63) - 1, 2**64, [], {}):
            self.assertFalse(valid_id(value), value)

    def test_key(self):
        """1 and "1" are different requests."""
        self.assertNotEqual(id_key(1), id_key("1"))
        self.assertEqual(id_key(1), id_key(1))


class ErrorResponseTests(SynchronousTestCase):
    def test_response(self):
        """An error response; data only when given."""
        self.assertEqual(
            error_response(3, -32602, "bad"),
            {"jsonrpc": "2.0", "id": 3, "error": {"code": -32602, "message": "bad"}},
        )
        self.assertEqual(
            error_response(None, -32001, "busy", {"limit": 3})["error"],
            {"code": -32001, "message": "busy", "data": {"limit": 3}},
        )
