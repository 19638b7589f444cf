"""
The contract of a channel that carries JSON-RPC notifications to a client.
"""

from zope.interface import Attribute, Interface


class INotificationChannel(Interface):
    """
    Where JSON-RPC notifications for one client go: a WebSocket connection,
    or the SSE stream of an MCP HTTP request.
    """

    writable = Attribute(
        "True while the channel can take more; its consumer turns it False "
        "(pauseProducing) when it cannot."
    )

    def send_notification(method: str, params: dict) -> None:
        """
        Send one notification.
        """


class IFrameChannel(INotificationChannel):
    """
    A channel that can also carry binary frames: a native WebSocket.
    """

    def send_frame(payload: bytes) -> None:
        """
        Send one binary message.
        """
