"""
The network edge: one HTTP port serving the WebSocket and plain HTTP resources.
"""
