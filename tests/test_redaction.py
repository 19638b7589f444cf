"""
Tests for L{ccx.redaction}: the token in every spelling a log line can hold.
"""

import base64
import io
import json
import re
from urllib.parse import quote, quote_plus

from twisted.internet.testing import MemoryReactorClock
from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyChannel

from ccx.config import build_config
from ccx.logs import make_observer
from ccx.node import Node
from ccx.redaction import REDACTED, Redactor
from ccx.web.site import build_site

# Characters that percent-encoding, Python's repr and JSON all change.
TOKEN = "Zm9v+bar/baz== qu'o\"te\\é"
PLAIN = "s3cret-token-for-tests"


def lower_hex(encoded: str) -> str:
    """Percent escapes with lower-case hex digits (the rest as it was)."""
    return re.sub("%[0-9A-F]{2}", lambda m: m.group().lower(), encoded)


def mixed_case(encoded: str) -> str:
    """Percent escapes with hex digits alternately upper and lower case."""
    out, upper = [], True
    for i, char in enumerate(encoded):
        if i >= 1 and encoded[i - 1] == "%" or i >= 2 and encoded[i - 2] == "%":
            char = char.upper() if upper else char.lower()
            upper = not upper
        out.append(char)
    return "".join(out)


def spellings(token: str):
    """Every spelling of C{token} a request can put in a log line."""
    encoded = quote(token, safe="")
    raw = token.encode("utf-8")
    return {
        "raw": token,
        "percent upper": encoded,
        "percent lower": lower_hex(encoded),
        "percent mixed": mixed_case(encoded),
        "plus for space": quote_plus(token),
        "only some escaped": quote(token, safe="+/= "),
        "bytes repr": repr(raw),
        "str repr": repr(token),
        "JSON": json.dumps(token),
        "JSON ascii": json.dumps(token, ensure_ascii=True),
        "JSON of bytes repr": json.dumps(repr(raw)),
    }


class RedactorTests(SynchronousTestCase):
    def test_every_spelling(self):
        """The token is replaced raw, percent-encoded in either case, with + for space, and escaped."""
        redact = Redactor([TOKEN])
        for name, form in spellings(TOKEN).items():
            text = redact(f"before {form} after")
            self.assertNotIn(form, text, name)
            self.assertIn(REDACTED, text, name)
            self.assertTrue(text.startswith("before ") and text.endswith(" after"), name)

    def test_plain_token_spellings(self):
        """A token of URL-safe characters is replaced in each spelling too."""
        redact = Redactor([PLAIN])
        for name, form in spellings(PLAIN).items():
            self.assertNotIn(PLAIN, redact(f"x {form} y"), name)

    def test_base64_at_every_alignment(self):
        """Base64 of anything holding the token (user:TOKEN in a Basic header) loses the token."""
        for token in (TOKEN, PLAIN):
            redact = Redactor([token])
            for user in ("", "u", "us", "use"):
                for tail in ("", "x", "xy"):
                    credentials = f"{user}:{token}{tail}".encode("utf-8")
                    for encode in (base64.b64encode, base64.urlsafe_b64encode):
                        encoded = encode(credentials).decode("ascii")
                        text = redact(f"creds {encoded} end")
                        self.assertIn(REDACTED, text)
                        # What is left encodes the user and the tail, not the token.
                        left = text[len("creds "):-len(" end")].replace(REDACTED, "")
                        around = base64.b64encode(f"{user}:{tail}".encode())
                        self.assertLessEqual(len(left), len(around) + 4, (user, tail, text))

    def test_token_parameter_whatever_its_value(self):
        """Any value of a token query parameter is replaced: a mistyped token is nearly the token."""
        redact = Redactor([PLAIN])
        for line, expected in (
            ("GET /ws?token=s3cret-token-for-testX HTTP/1.1", "GET /ws?token=[redacted] HTTP/1.1"),
            ("GET /ws?a=1&token=abc&b=2", "GET /ws?a=1&token=[redacted]&b=2"),
            ("uri=/health?%74%6Fken=abc clientproto", "uri=/health?%74%6Fken=[redacted] clientproto"),
            ("b'GET /ws?token=abc HTTP/1.1\\r\\n'", "b'GET /ws?token=[redacted] HTTP/1.1\\r\\n'"),
        ):
            self.assertEqual(redact(line), expected)

    def test_other_parameters_kept(self):
        """Near misses: tokens=, a token= outside a query, an empty token= stay as they are."""
        redact = Redactor([PLAIN])
        for line in (
            "GET /ws?tokens=5&mytoken=1 HTTP/1.1",
            "--token-file /etc/ccx/token",
            "token=abc",
            "GET /ws?token=&a=1",
            "GET /ws?TOKEN=abc",
        ):
            self.assertEqual(redact(line), line)

    def test_authorization_whatever_its_value(self):
        """An Authorization header's value is replaced in raw requests, header dicts and Headers."""
        redact = Redactor()
        for line, expected in (
            (
                "b'GET / HTTP/1.1\\r\\nAuthorization: Basic dXNlcjpwYXNz\\r\\nHost: x\\r\\n'",
                "b'GET / HTTP/1.1\\r\\nAuthorization: [redacted]\\r\\nHost: x\\r\\n'",
            ),
            (
                "{'authorization': 'Bearer wrong token', 'host': 'x'}",
                "{'authorization': '[redacted]', 'host': 'x'}",
            ),
            (
                "Headers({b'authorization': [b'Bearer abc'], b'host': [b'x']})",
                "Headers({b'authorization': [b'[redacted]'], b'host': [b'x']})",
            ),
            ("Proxy-Authorization: Basic abc", "Proxy-Authorization: [redacted]"),
        ):
            self.assertEqual(redact(line), expected)

    def test_prefix_not_replaced(self):
        """Only the whole token is a secret: a prefix of it, on its own, is left alone."""
        redact = Redactor([PLAIN])
        self.assertEqual(redact(f"x {PLAIN[:-1]} y"), f"x {PLAIN[:-1]} y")
        self.assertEqual(redact(f"x {PLAIN} y"), "x [redacted] y")

    def test_no_secrets(self):
        """Without secrets, ordinary text is unchanged; an empty secret is no secret."""
        for redact in (Redactor(), Redactor([""])):
            self.assertEqual(redact("session s1 opened from tcp4:127.0.0.1:1"),
                             "session s1 opened from tcp4:127.0.0.1:1")


class ObserverRedactionTests(SynchronousTestCase):
    """
    What reaches the log through L{make_observer}, in both formats.
    """

    def test_request_bytes_in_both_formats(self):
        """Request bytes carrying the token, as Autobahn logs them at debug level, lose it."""
        encoded = lower_hex(quote(TOKEN, safe=""))
        data = (
            f"GET /ws/mcp?x={encoded} HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
        ).encode("utf-8")
        for log_format in ("json", "text"):
            out = io.StringIO()
            log = Logger(observer=make_observer(log_format, "debug", out, secrets=[TOKEN]))
            log.debug("received HTTP request:\n\n{data}\n\n", data=data)
            log.debug("headers {headers}", headers={"authorization": f"Bearer {TOKEN}"})
            text = out.getvalue()
            self.assertIn(REDACTED, text, log_format)
            self.assertNotIn(encoded, text, log_format)
            self.assertNotIn("Zm9v+bar", text, log_format)
            self.assertNotIn("Zm9v%2bbar", text, log_format)


class RequestReprTests(SynchronousTestCase):
    """
    twisted.web logs a request's repr (a C{HEAD} answered with a body); the
    service's requests leave the query string out of it.
    """

    def request(self, uri: bytes):
        node = Node(build_config({"port": "tcp:0:interface=127.0.0.1"}), MemoryReactorClock())
        request = build_site(node).requestFactory(DummyChannel())
        request.method, request.uri, request.clientproto = b"HEAD", uri, b"HTTP/1.1"
        return request

    def test_no_query_string(self):
        """The path stays, the query string (any token in it) goes."""
        text = repr(self.request(b"/health?token=" + PLAIN.encode() + b"&a=1"))
        self.assertIn("method=HEAD path=/health clientproto=HTTP/1.1", text)
        self.assertNotIn(PLAIN, text)
        self.assertNotIn("token", text)

    def test_any_bytes(self):
        """A path that is not ASCII does not make the repr raise."""
        self.assertIn("path=/\\xff", repr(self.request(b"/\xff?token=x")))
