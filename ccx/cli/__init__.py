"""
The C{ccx} command: a console client of the ccx service (docs/cli.md).

It is not part of the service: it writes to its own standard output and
error, which is its job, and talks to the service only over the WebSocket.
"""
