"""
ccx: run and steer long-running programs over one WebSocket speaking JSON-RPC 2.0.
"""

__version__ = "0.1.0"
