"""
Test doubles shared by the unit tests.
"""

from typing import List, Optional, Tuple

from zope.interface import implementer

from ccx.output.interfaces import IOutputSink


@implementer(IOutputSink)
class FakeSink:
    """
    A sink that records the notifications sent to it.
    """

    def __init__(self, writable: bool = True) -> None:
        self.writable = writable
        self.sent: List[Tuple[str, dict]] = []

    def send_notification(self, method: str, params: dict) -> None:
        self.sent.append((method, params))

    def methods(self) -> List[str]:
        return [method for method, _ in self.sent]

    def params(self, method: str, stream: Optional[str] = None) -> List[dict]:
        return [
            params
            for sent, params in self.sent
            if sent == method and stream in (None, params.get("type"))
        ]

    def data(self, stream: str = "stdout") -> bytes:
        """
        The bytes of C{stream} given in C{process.output}, joined.
        """
        return b"".join(
            params["data"].encode("utf-8")
            for params in self.params("process.output", stream)
        )
