"""
The native ccx dialect: the JSON-RPC methods of docs/protocol.md.
"""
