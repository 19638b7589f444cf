"""
Test doubles shared by the unit tests.
"""

from typing import Any, List, Optional, Tuple

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.interfaces import IAddress, IListeningPort
from twisted.internet.testing import MemoryReactor
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


@implementer(IListeningPort)
class FakePort:
    """
    A listening port at a given address, that records being stopped.
    """

    def __init__(self, address: IAddress) -> None:
        self.address = address
        self.listening = True

    def startListening(self) -> None:
        self.listening = True

    def stopListening(self) -> None:
        self.listening = False

    def getHost(self) -> IAddress:
        return self.address


class BindingReactor(MemoryReactor):
    """
    A L{MemoryReactor} whose ports report the address asked for, as a real
    port reports the one it bound: the interface given (IPv4 or IPv6, or a
    name as it was given), or every interface when none was.

    @ivar ports: the ports it made, in order.
    """

    def __init__(self) -> None:
        super().__init__()
        self.ports: List[FakePort] = []

    def _port(self, port: int, interface: str) -> FakePort:
        if ":" in interface:
            address: IAddress = IPv6Address("TCP", interface, port)
        else:
            address = IPv4Address("TCP", interface or "0.0.0.0", port)
        self.ports.append(FakePort(address))
        return self.ports[-1]

    def listenTCP(self, port: int, factory: Any, backlog: int = 50, interface: str = "") -> FakePort:
        super().listenTCP(port, factory, backlog, interface)
        return self._port(port, interface)

    def listenSSL(
        self, port: int, factory: Any, contextFactory: Any, backlog: int = 50, interface: str = ""
    ) -> FakePort:
        super().listenSSL(port, factory, contextFactory, backlog, interface)
        return self._port(port, interface)

    def listenUNIX(
        self, address: str, factory: Any, backlog: int = 50, mode: int = 0o666, wantPID: int = 0
    ) -> FakePort:
        super().listenUNIX(address, factory, backlog, mode, wantPID)
        self.ports.append(FakePort(UNIXAddress(address)))
        return self.ports[-1]
