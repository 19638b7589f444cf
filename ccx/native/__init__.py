"""
The native ccx dialect: the JSON-RPC methods of PROTOCOL.md.
"""
