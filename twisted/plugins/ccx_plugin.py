"""
The C{twistd ccx} plugin.
"""

from twisted.application.service import ServiceMaker

ccx = ServiceMaker(
    "ccx",
    "ccx.tap",
    "Run and steer programs over a WebSocket speaking JSON-RPC 2.0.",
    "ccx",
)
