"""
Keeping secrets out of log lines: the token in every spelling it can take on
its way into a line, and any credential a request carries, right or wrong.

A token reaches a log line through a request: in a query string
(percent-encoded, in either case of hex digit, C{+} for a space), in an
C{Authorization} header (a Bearer token, or base64 in a Basic one), inside
the Python repr of the raw request bytes (Autobahn logs those at debug
level), and inside a JSON string (C{--log-format json}), or both.
"""

import base64
import json
import re
from typing import List, Optional, Pattern, Sequence, Set, Tuple

REDACTED = "[redacted]"

# Base64 fragments shorter than this would also match ordinary words.
_MIN_BASE64 = 8


def _hex(byte: int) -> str:
    """
    A pattern for C{%XX} of one byte, hex digits in either case.
    """
    return "%" + "".join(
        f"[{digit.upper()}{digit.lower()}]" if digit.isalpha() else digit
        for digit in f"{byte:02x}"
    )


def _escapes(text: str) -> Set[str]:
    """
    C{text} itself and as Python's and JSON's string escapes write it, once
    or twice over (a JSON log line holding the repr of request bytes).
    """
    once = {
        text,
        repr(text)[1:-1],
        repr(text.encode("utf-8"))[2:-1],
        json.dumps(text)[1:-1],
        # A repr holding both kinds of quote escapes them.
        text.replace("'", "\\'").replace('"', '\\"'),
    }
    return once | {json.dumps(form, ensure_ascii=False)[1:-1] for form in once} | {
        json.dumps(form)[1:-1] for form in once
    }


def _spelling(char: str) -> str:
    """
    A pattern for one character in any of the spellings it may take.
    """
    forms = sorted(_escapes(char), key=len, reverse=True)
    alternatives = [re.escape(form) for form in forms]
    alternatives.append("".join(_hex(byte) for byte in char.encode("utf-8")))
    if char == " ":
        alternatives.append(r"\+")
    return "(?:" + "|".join(alternatives) + ")"


def _spelled(text: str) -> str:
    """
    A pattern matching C{text} with each of its characters in any spelling
    (raw, percent-encoded, escaped).
    """
    return "".join(_spelling(char) for char in text)


def _base64_fragments(secret: str) -> List[str]:
    """
    What base64 of any text holding C{secret} contains whatever precedes it
    (C{user:} in a Basic header): one fragment per alignment, in the
    standard and the URL-safe alphabets.
    """
    data = secret.encode("utf-8")
    fragments = []
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + data).decode("ascii")
        # Characters made of the secret's bits only.
        first = -(-8 * offset // 6)
        last = 8 * (offset + len(data)) // 6
        fragment = encoded[first:last]
        if len(fragment) >= _MIN_BASE64:
            fragments.append(fragment)
            fragments.append(fragment.replace("+", "-").replace("/", "_"))
    return fragments


# A query parameter named token (its name spelled any way the query parser
# decodes), up to the end of its value.
_QUERY_TOKEN = re.compile("([?&;]" + _spelled("token") + "=)[^&#\\s'\"\\\\<>]+")
# An Authorization (or Proxy-Authorization) header's value: in the raw request,
# in a dict of headers, or in twisted.web's Headers.
_AUTHORIZATION = re.compile(
    "(?i)(authorization['\"]?\\s*[:=,]\\s*\\[?\\s*(?:b?['\"])?)[^\\r\\n'\"\\\\\\]]+"
)


def _keep_name(match: "re.Match[str]") -> str:
    return match.group(1) + REDACTED


class Redactor:
    """
    Replaces secrets in text by C{[redacted]}: every C{token} query
    parameter's and C{Authorization} header's value, whatever it is (a
    mistyped token is nearly the token), and the given secrets in any
    spelling, wherever they appear.

    Every log line goes through it, so each pattern is tried only where it
    can match: a substring test comes first where one exists.
    """

    def __init__(self, secrets: Sequence[str] = ()) -> None:
        secrets = [secret for secret in secrets if secret]
        self._secrets: Optional[Pattern[str]] = (
            re.compile("|".join(_spelled(secret) for secret in secrets)) if secrets else None
        )
        # Each fragment with the characters at either end, which hold some
        # of the secret's bits too.
        self._base64: List[Tuple[str, Pattern[str]]] = [
            (fragment, re.compile(f"[A-Za-z0-9+/_-]?{re.escape(fragment)}[A-Za-z0-9+/_-]?"))
            for secret in secrets
            for fragment in _base64_fragments(secret)
        ]

    def __call__(self, text: str) -> str:
        text = _QUERY_TOKEN.sub(_keep_name, text)
        if "uthorization" in text.lower():
            text = _AUTHORIZATION.sub(_keep_name, text)
        if self._secrets is not None:
            text = self._secrets.sub(REDACTED, text)
        for fragment, pattern in self._base64:
            if fragment in text:
                text = pattern.sub(REDACTED, text)
        return text
