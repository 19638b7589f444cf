"""
Telling systemd how the service is doing (C{Type=notify}): the
C{sd_notify(3)} protocol, one datagram to C{$NOTIFY_SOCKET}.
"""

import os
import socket
from typing import Mapping, Optional


def notify_address(environ: Mapping[str, str]) -> Optional[str]:
    """
    Where systemd listens for this service's notifications, or L{None}
    when it does not (not run by systemd, or not as C{Type=notify}).

    An address starting with C{@} is in the abstract namespace, which
    Python spells with a leading NUL byte.
    """
    address = environ.get("NOTIFY_SOCKET", "")
    if address.startswith("@"):
        return "\0" + address[1:]
    if address.startswith("/"):
        return address
    return None


def notify(state: str, environ: Mapping[str, str] = os.environ) -> bool:
    """
    Send C{state} (C{"READY=1"}, C{"STOPPING=1"}, ...) to systemd.

    @return: whether it was sent; never raises, as a service must run the
        same whether or not anyone listens.
    """
    address = notify_address(environ)
    if address is None:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(state.encode("utf-8"), address)
    except OSError:
        return False
    return True
