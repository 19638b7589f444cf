"""
Tests for L{ccx.rpc.params}.
"""

from twisted.trial.unittest import SynchronousTestCase

from ccx.rpc.errors import INVALID_PARAMS, RPCError
from ccx.rpc.params import REQUIRED, ParamReader

KNOWN = ("command", "shell", "timeout", "offset", "env", "options", "mode", "data")


def reader(params):
    return ParamReader(params, "execute", KNOWN)


class ParamReaderTestsMixin:
    def assertInvalid(self, f, *args, **kwargs):
        """
        C{f(*args, **kwargs)} raises -32602; return its message.
        """
        error = self.assertRaises(RPCError, f, *args, **kwargs)
        self.assertEqual(error.code, INVALID_PARAMS)
        return error.message


class ConstructionTests(ParamReaderTestsMixin, SynchronousTestCase):
    """
    Tests for the params as a whole.
    """

    def test_none_is_empty(self):
        """Absent params read as an empty object."""
        self.assertEqual(reader(None).string("mode", "x"), "x")

    def test_empty_list_is_empty(self):
        """An empty array reads as an empty object."""
        self.assertEqual(reader([]).boolean("shell", False), False)

    def test_empty_object(self):
        """An empty object is accepted."""
        self.assertIsNone(reader({}).number("timeout"))

    def test_positional_refused(self):
        """Params given as a non-empty array are refused."""
        message = self.assertInvalid(reader, ["ls"])
        self.assertIn("execute", message)
        self.assertIn("object of named members", message)

    def test_scalar_refused(self):
        """Params that are neither object nor array are refused."""
        self.assertInvalid(reader, "ls")
        self.assertInvalid(reader, 3)

    def test_unknown_refused(self):
        """Unknown params are refused with a message naming each of them."""
        message = self.assertInvalid(reader, {"command": "ls", "cmd": 1, "zz": 2})
        self.assertIn("execute has no parameter 'cmd', 'zz'", message)
        self.assertIn("it accepts: command, shell", message)

    def test_unknown_when_none_accepted(self):
        """A method taking no params says it accepts none."""
        message = self.assertInvalid(ParamReader, {"x": 1}, "list", ())
        self.assertIn("'x'", message)
        self.assertIn("it accepts: none", message)


class StringTests(ParamReaderTestsMixin, SynchronousTestCase):
    """
    Tests for L{ParamReader.string}.
    """

    def test_value(self):
        """A string is returned."""
        self.assertEqual(reader({"command": "ls"}).string("command"), "ls")

    def test_required_missing(self):
        """A missing required string is refused, naming it."""
        message = self.assertInvalid(reader({}).string, "command")
        self.assertEqual(message, "invalid params: execute needs 'command'")

    def test_null_is_missing(self):
        """A null value counts as missing."""
        self.assertInvalid(reader({"command": None}).string, "command")
        self.assertEqual(reader({"mode": None}).string("mode", "block"), "block")

    def test_explicit_required(self):
        """REQUIRED as the default means the same as no default."""
        self.assertInvalid(reader({}).string, "command", REQUIRED)

    def test_default(self):
        """The default is returned when absent."""
        self.assertIsNone(reader({}).string("mode", None))
        self.assertEqual(reader({}).string("mode", "block"), "block")

    def test_wrong_type(self):
        """A non-string is refused, saying what is expected."""
        for value in (1, True, ["ls"], {"a": "b"}):
            message = self.assertInvalid(reader({"command": value}).string, "command")
            self.assertEqual(
                message, "invalid params: execute's 'command' must be a string"
            )

    def test_choice(self):
        """A value among the choices is returned."""
        params = reader({"mode": "drop"})
        self.assertEqual(params.string("mode", "block", ("block", "drop")), "drop")

    def test_not_a_choice(self):
        """A value outside the choices is refused, listing them."""
        params = reader({"mode": "DROP"})
        message = self.assertInvalid(params.string, "mode", "block", ("block", "drop"))
        self.assertIn("'mode' must be one of 'block', 'drop'", message)


class BooleanTests(ParamReaderTestsMixin, SynchronousTestCase):
    """
    Tests for L{ParamReader.boolean}.
    """

    def test_values(self):
        """true and false are returned."""
        self.assertIs(reader({"shell": True}).boolean("shell", False), True)
        self.assertIs(reader({"shell": False}).boolean("shell", True), False)

    def test_default(self):
        """The default is returned when absent or null."""
        self.assertIs(reader({}).boolean("shell", True), True)
        self.assertIs(reader({"shell": None}).boolean("shell", False), False)

    def test_wrong_type(self):
        """Numbers and strings are not booleans."""
        for value in (1, 0, "true", []):
            params = reader({"shell": value})
            message = self.assertInvalid(params.boolean, "shell", False)
            self.assertIn("'shell' must be true or false", message)


class NumberTests(ParamReaderTestsMixin, SynchronousTestCase):
    """
    Tests for L{ParamReader.number}.
    """

    def number(self, value):
        return reader({"timeout": value}).number("timeout")

    def test_int(self):
        """An integer is returned as a float."""
        result = self.number(3)
        self.assertEqual(result, 3.0)
        self.assertIsInstance(result, float)

    def test_float(self):
        """A fraction is returned."""
        self.assertEqual(self.number(0.25), 0.25)

    def test_largest(self):
        """1e9 is accepted."""
        self.assertEqual(self.number(10**9), 1e9)

    def test_absent(self):
        """An absent number is the default, None unless given."""
        self.assertIsNone(reader({}).number("timeout"))
        self.assertEqual(reader({}).number("timeout", 5.0), 5.0)

    def test_bool(self):
        """true is not a number."""
        message = self.assertInvalid(self.number, True)
        self.assertIn("'timeout' must be a number", message)

    def test_string(self):
        """A numeric string is not a number."""
        self.assertInvalid(self.number, "5")

    def test_not_finite(self):
        """NaN and infinities are refused."""
        for value in (float("nan"), float("inf"), float("-inf")):
            message = self.assertInvalid(self.number, value)
            self.assertIn("a positive number no larger than 1e9", message)

    def test_not_positive(self):
        """Zero and negative numbers are refused."""
        for value in (0, 0.0, -1, -0.5):
            self.assertInvalid(self.number, value)

    def test_too_large(self):
        """Numbers above 1e9 are refused."""
        for value in (10**9 + 1, 1e10):
            self.assertInvalid(self.number, value)

    def test_huge_int(self):
        """An integer too large for a float is refused as invalid params."""
        self.assertInvalid(self.number, 10**400)


class OffsetTests(ParamReaderTestsMixin, SynchronousTestCase):
    """
    Tests for L{ParamReader.offset}.
    """

    def offset(self, value):
        return reader({"offset": value}).offset("offset")

    def test_values(self):
        """Zero and positive integers are returned."""
        self.assertEqual(self.offset(0), 0)
        self.assertEqual(self.offset(12345678901234), 12345678901234)

    def test_absent(self):
        """An absent offset is the default."""
        self.assertIsNone(reader({}).offset("offset"))
        self.assertEqual(reader({}).offset("offset", 0), 0)

    def test_refused(self):
        """Negative numbers, fractions, booleans and strings are refused."""
        for value in (-1, 1.5, 2.0, True, False, "3"):
            message = self.assertInvalid(self.offset, value)
            self.assertIn(
                "'offset' must be a whole number of bytes, 0 or more", message
            )


class MapTests(ParamReaderTestsMixin, SynchronousTestCase):
    """
    Tests for L{ParamReader.string_map}, L{ParamReader.object} and
    L{ParamReader.any}.
    """

    def test_string_map(self):
        """An object of strings is returned."""
        self.assertEqual(reader({"env": {"A": "1"}}).string_map("env"), {"A": "1"})

    def test_string_map_absent(self):
        """An absent map is empty."""
        self.assertEqual(reader({}).string_map("env"), {})
        self.assertEqual(reader({"env": None}).string_map("env"), {})

    def test_string_map_wrong_values(self):
        """Values that are not strings are refused."""
        for value in (1, None, True, ["x"]):
            params = reader({"env": {"A": "1", "B": value}})
            message = self.assertInvalid(params.string_map, "env")
            self.assertIn("'env' must be an object whose values are strings", message)

    def test_string_map_not_object(self):
        """A non-object is refused."""
        for value in (["A=1"], "A=1", 1):
            self.assertInvalid(reader({"env": value}).string_map, "env")

    def test_object(self):
        """An object is returned, and absent means empty."""
        self.assertEqual(reader({"options": {"a": [1]}}).object("options"), {"a": [1]})
        self.assertEqual(reader({}).object("options"), {})

    def test_object_wrong_type(self):
        """A non-object is refused."""
        message = self.assertInvalid(reader({"options": [1]}).object, "options")
        self.assertIn("'options' must be an object", message)

    def test_any(self):
        """Any value is returned; a missing required one is refused."""
        self.assertEqual(reader({"data": [1, "x"]}).any("data"), [1, "x"])
        self.assertEqual(reader({}).any("data", "d"), "d")
        self.assertInvalid(reader({}).any, "data")


class LimitsTests(ParamReaderTestsMixin, SynchronousTestCase):
    """
    C{limits}: memory, cpu and pids, each checked at its bounds.
    """

    def limits(self, value):
        return ParamReader({"limits": value}, "execute", ("limits",)).limits()

    def test_absent_or_empty(self):
        self.assertIsNone(ParamReader({}, "execute", ("limits",)).limits())
        self.assertIsNone(self.limits({}))
        self.assertIsNone(self.limits(None))

    def test_bounds_accepted(self):
        from ccx.process.cgroup import Limits

        self.assertEqual(
            self.limits({"memory": 1024 * 1024, "cpu": 0.01, "pids": 1}),
            Limits(memory=1024 * 1024, cpu=0.01, pids=1),
        )
        self.assertEqual(
            self.limits({"memory": 2**62, "cpu": 1024, "pids": 4 * 1024 * 1024}),
            Limits(memory=2**62, cpu=1024.0, pids=4 * 1024 * 1024),
        )

    def test_near_misses(self):
        """One past each bound, and the wrong kinds, are refused naming the limit."""
        for value, words in [
            ({"memory": 1024 * 1024 - 1}, "limits.memory must be a whole number of bytes from 1048576"),
            ({"memory": 2**62 + 1}, "limits.memory"),
            ({"memory": float(1 << 20)}, "limits.memory"),
            ({"memory": True}, "limits.memory"),
            ({"memory": "1M"}, "limits.memory"),
            ({"cpu": 0.0099}, "limits.cpu must be a number of CPUs from 0.01 to 1024"),
            ({"cpu": 1024.001}, "limits.cpu"),
            ({"cpu": True}, "limits.cpu"),
            ({"cpu": float("nan")}, "limits.cpu"),
            ({"pids": 0}, "limits.pids must be a whole number from 1 to 4194304"),
            ({"pids": 4 * 1024 * 1024 + 1}, "limits.pids"),
            ({"pids": 1.0}, "limits.pids"),
            ({"swap": 1}, "'limits' has no limit 'swap' (limits: memory, cpu, pids)"),
        ]:
            self.assertIn(words, self.assertInvalid(self.limits, value), value)
        self.assertIn("'limits' must be an object", self.assertInvalid(self.limits, [1]))
