"""
Where clients reach the service, from the address its port bound.
"""

from typing import Any, Dict
from urllib.parse import quote

from twisted.internet.address import UNIXAddress


def service_urls(address: Any, tls: bool = False) -> Dict[str, str]:
    """
    Where clients connect, built from the address the port bound: the
    WebSocket (C{websocket}, C{websocket_mcp}), MCP over HTTP (C{mcp}),
    C{health} and C{metrics}.  On a UNIX socket the WebSocket's are as the
    ccx CLI takes them (C{ws://unix:PATH:/ws}), the others C{http+unix:}
    URLs with the socket's path quoted.
    """
    web, ws = ("https", "wss") if tls else ("http", "ws")
    if isinstance(address, UNIXAddress):
        path = address.name.decode() if isinstance(address.name, bytes) else str(address.name)
        sockets, web = f"{ws}://unix:{path}:", f"{web}+unix://{quote(path, safe='')}"
    else:
        host = getattr(address, "host", "localhost")
        authority = f"[{host}]" if ":" in host else host
        authority = f"{authority}:{getattr(address, 'port', '')}"
        sockets, web = f"{ws}://{authority}", f"{web}://{authority}"
    return {
        "websocket": f"{sockets}/ws",
        "websocket_mcp": f"{sockets}/ws/mcp",
        "mcp": f"{web}/mcp",
        "health": f"{web}/health",
        "metrics": f"{web}/metrics",
    }
