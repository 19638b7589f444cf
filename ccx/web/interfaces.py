"""
The contract of a client connection, whatever carries it.
"""

from typing import Optional

from twisted.internet.defer import Deferred
from zope.interface import Attribute, Interface


class IConnection(Interface):
    """
    One client's connection to the service: a WebSocket, or an MCP session
    over HTTP.  The L{ccx.node.Node} holds the open ones: they show in
    C{/health} and are closed when the service stops.
    """

    session = Attribute("The connection's L{ccx.session.Session}.")
    holds_socket = Attribute(
        "Whether it holds a socket of its own (a WebSocket), and so counts "
        "against --max-connections; an MCP session over HTTP does not."
    )

    def close(reason: str) -> Optional[Deferred]:
        """
        The service is stopping: close the connection from the server's
        side, once it has delivered what it holds, telling the client
        C{reason} where the transport can carry one.  The connection's
        session then closes as when the client leaves.

        @return: L{None} when closed at once, or a L{Deferred} that fires
            once closed; either within a few seconds, delivered or not.
        """
