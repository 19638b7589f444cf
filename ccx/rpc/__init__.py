"""
JSON-RPC 2.0: message framing, error values and method dispatch, independent of transport.
"""
