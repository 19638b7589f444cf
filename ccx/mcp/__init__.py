"""
MCP (the Model Context Protocol) on top of ccx's process layer: the same
programs, allow-list and limits as the native dialect, offered as MCP tools
over Streamable HTTP (C{/mcp}) and over the WebSocket (subprotocol C{mcp}).
See docs/mcp.md.
"""
