"""
Loopback ports for servers a client starts.
"""

import socket

HOST = "127.0.0.1"


def free_port() -> int:
    """
    A TCP port on 127.0.0.1 that nothing listens on right now (bound, then
    released: another process could take it before it is used).
    """
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]
