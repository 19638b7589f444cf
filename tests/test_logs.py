"""
Tests for L{ccx.logs}.
"""

import io
import json
from datetime import datetime

from twisted.logger import LogLevel, Logger
from twisted.trial.unittest import SynchronousTestCase

from ccx.logs import event_as_json_line, make_observer


class Unserialisable:
    def __repr__(self):
        return "<Unserialisable>"


class LogTestsMixin:
    def logger(self, log_format="json", log_level="info"):
        self.out = io.StringIO()
        observer = make_observer(log_format, log_level, self.out)
        return Logger(namespace="ccx.test", observer=observer)

    def records(self):
        text = self.out.getvalue()
        self.assertTrue(text == "" or text.endswith("\n"))
        return [json.loads(line) for line in text.splitlines()]


class JSONFormatTests(LogTestsMixin, SynchronousTestCase):
    """
    Tests for C{--log-format json}.
    """

    def test_one_object_per_line(self):
        """Each event is one JSON object on its own line."""
        log = self.logger()
        log.info("first")
        log.warn("second")
        lines = self.out.getvalue().splitlines()
        self.assertEqual(len(lines), 2)
        self.assertEqual([json.loads(line)["message"] for line in lines],
                         ["first", "second"])

    def test_record(self):
        """A record has time, level, namespace, message and the event's fields."""
        log = self.logger()
        log.info("session {session_id} opened", session_id="s1", peer="127.0.0.1")
        [record] = self.records()
        self.assertEqual(record["level"], "info")
        self.assertEqual(record["namespace"], "ccx.test")
        self.assertEqual(record["message"], "session s1 opened")
        self.assertEqual(record["session_id"], "s1")
        self.assertEqual(record["peer"], "127.0.0.1")
        self.assertIsNotNone(datetime.fromisoformat(record["time"]).tzinfo)

    def test_no_internal_keys(self):
        """Twisted's own log_* keys are left out."""
        log = self.logger()
        log.info("x", n=1)
        [record] = self.records()
        self.assertEqual(set(record), {"time", "level", "namespace", "message", "n"})

    def test_multiline_message(self):
        """A message with newlines still takes exactly one line."""
        log = self.logger()
        log.info("a\nb {x}", x="c\nd")
        lines = self.out.getvalue().splitlines()
        self.assertEqual(len(lines), 1)
        self.assertEqual(json.loads(lines[0])["message"], "a\nb c\nd")

    def test_values(self):
        """Values that are not JSON are written as their repr."""
        log = self.logger()
        log.info("x", pair=(1, 2), nested={"k": [None, Unserialisable()]},
                 thing=Unserialisable(), text="é")
        [record] = self.records()
        self.assertEqual(record["pair"], [1, 2])
        self.assertEqual(record["nested"], {"k": [None, "<Unserialisable>"]})
        self.assertEqual(record["thing"], "<Unserialisable>")
        self.assertEqual(record["text"], "é")

    def test_fields_do_not_replace_record(self):
        """An event field named like a record key does not replace it."""
        line = event_as_json_line(
            {"log_time": 0, "log_level": LogLevel.info, "log_namespace": "real",
             "log_format": "real", "namespace": "fake", "time": "fake"}
        )
        record = json.loads(line)
        self.assertEqual(record["namespace"], "real")
        self.assertEqual(record["message"], "real")
        self.assertEqual(record["time"], "1970-01-01T00:00:00.000+00:00")

    def test_failure(self):
        """A failure is logged with its traceback."""
        log = self.logger()
        try:
            1 / 0
        except ZeroDivisionError:
            log.failure("method {method} failed", method="execute")
        [record] = self.records()
        self.assertEqual(record["level"], "critical")
        self.assertEqual(record["message"], "method execute failed")
        self.assertEqual(record["method"], "execute")
        self.assertIn("Traceback", record["traceback"])
        self.assertIn("ZeroDivisionError", record["traceback"])

    def test_time(self):
        """The time is UTC ISO 8601 with milliseconds."""
        line = event_as_json_line(
            {"log_time": 86400.5, "log_level": LogLevel.warn,
             "log_namespace": "n", "log_format": "m"}
        )
        self.assertEqual(
            json.loads(line),
            {"time": "1970-01-02T00:00:00.500+00:00", "level": "warn",
             "namespace": "n", "message": "m"},
        )
        self.assertTrue(line.endswith("}\n"))

    def test_legacy_keys(self):
        """Keys of legacy events that repeat the record are left out."""
        line = event_as_json_line(
            {"log_time": 0, "log_format": "hi", "message": ("hi",),
             "isError": 0, "format": "%(x)s", "time": 0, "system": "-"}
        )
        record = json.loads(line)
        self.assertEqual(record["message"], "hi")
        self.assertEqual(record["level"], "info")
        self.assertEqual(record["system"], "-")
        self.assertNotIn("isError", record)
        self.assertNotIn("format", record)


class LevelTests(LogTestsMixin, SynchronousTestCase):
    """
    Tests for C{--log-level}.
    """

    def levels(self, log_level):
        log = self.logger(log_level=log_level)
        log.debug("d")
        log.info("i")
        log.warn("w")
        log.error("e")
        log.critical("c")
        return [record["level"] for record in self.records()]

    def test_info(self):
        """At info, debug is dropped."""
        self.assertEqual(self.levels("info"), ["info", "warn", "error", "critical"])

    def test_debug(self):
        """At debug, everything is kept."""
        self.assertEqual(
            self.levels("debug"), ["debug", "info", "warn", "error", "critical"]
        )

    def test_warn(self):
        """At warn, debug and info are dropped."""
        self.assertEqual(self.levels("warn"), ["warn", "error", "critical"])

    def test_error(self):
        """At error, only errors and worse are kept."""
        self.assertEqual(self.levels("error"), ["error", "critical"])


class TextFormatTests(LogTestsMixin, SynchronousTestCase):
    """
    Tests for C{--log-format text}.
    """

    def test_text(self):
        """Text lines carry the namespace, level and message."""
        log = self.logger("text")
        log.info("listening on {port}", port="tcp:8003")
        text = self.out.getvalue()
        self.assertEqual(len(text.splitlines()), 1)
        self.assertIn("[ccx.test#info] listening on tcp:8003", text)

    def test_filtered(self):
        """Text output is filtered by level too."""
        log = self.logger("text", "warn")
        log.info("quiet")
        log.warn("loud")
        text = self.out.getvalue()
        self.assertNotIn("quiet", text)
        self.assertIn("loud", text)

    def test_failure(self):
        """A failure in text output includes its traceback."""
        log = self.logger("text")
        try:
            {}["missing"]
        except KeyError:
            log.failure("lookup failed")
        text = self.out.getvalue()
        self.assertIn("lookup failed", text)
        self.assertIn("Traceback", text)
        self.assertIn("KeyError", text)
