"""
How output bytes are carried in JSON text.
"""

import base64
from typing import Callable

from ccx.protocol import BASE64, ENCODINGS, UTF8

__all__ = ["BASE64", "ENCODINGS", "UTF8", "complete_utf8_length", "decoder", "encoder"]


def complete_utf8_length(data: bytes) -> int:
    """
    The length of the longest prefix of C{data} that does not end inside a
    UTF-8 character, so that a chunk never splits one.
    """
    size = len(data)
    for back in range(1, min(4, size) + 1):
        byte = data[size - back]
        if byte & 0xC0 != 0x80:
            if byte >= 0xF0:
                needed = 4
            elif byte >= 0xE0:
                needed = 3
            elif byte >= 0xC0:
                needed = 2
            else:
                needed = 1
            return size if needed <= back else size - back
    return size


def _utf8(data: bytes) -> str:
    return data.decode("utf-8", "replace")


def _base64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def encoder(encoding: str) -> Callable[[bytes], str]:
    """
    The function that turns a chunk into the C{data} string of C{process.output}.
    """
    return _utf8 if encoding == UTF8 else _base64


def decoder(encoding: str) -> Callable[[str], bytes]:
    """
    The function that turns C{write}'s C{data} into bytes.

    @raise ValueError: when C{data} is not valid base64.
    """
    if encoding == UTF8:
        return lambda text: text.encode("utf-8", "surrogatepass")
    return lambda text: base64.b64decode(text, validate=True)
