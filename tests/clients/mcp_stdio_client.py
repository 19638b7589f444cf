"""
The official MCP Python SDK (PyPI C{mcp}) launches C{ccx mcp-stdio} as a
stdio server, as a desktop assistant or coding agent would, and drives ccx
through it: initialize, list the tools, run an allowed and a refused
command, and shut down (the SDK closes the bridge's stdin and waits for it
to exit).

Usage: python mcp_stdio_client.py WS_URL [TOKEN].  Starts
C{sys.executable -m ccx mcp-stdio --url WS_URL} (with C{PYTHONPATH} as this
process has it, and C{CCX_TOKEN} when TOKEN is given).  Prints one line per
check; exits 0 when all hold.
"""

import os
import sys
import tempfile
import time

import anyio
from mcp import Client
from mcp.client import stdio
from mcp.client.stdio import StdioServerParameters, stdio_client


async def main(url, token):
    env = {"PYTHONPATH": os.environ.get("PYTHONPATH", "")}
    if token:
        env["CCX_TOKEN"] = token
    server = StdioServerParameters(
        command=sys.executable, args=["-m", "ccx", "mcp-stdio", "--url", url], env=env
    )
    errlog = tempfile.TemporaryFile("w+")
    async with Client(stdio_client(server, errlog=errlog)) as client:
        # The SDK's default mode probes server/discover: through the bridge,
        # ccx answers it, so the session is stateless-era.
        path = "discover" if client.session.discover_result is not None else "initialize"
        print(f"{path}: {client.protocol_version} {client.server_info.name}")

        tools = await client.list_tools()
        print("tools: " + " ".join(sorted(tool.name for tool in tools.tools)))

        result = await client.call_tool("execute", {"command": ["seq", "1", "3"]})
        out = result.structured_content
        assert not result.is_error, result
        assert out["stdout"] == "1\n2\n3\n", out
        assert (out["status"], out["exit_code"]) == ("completed", 0), out
        print("execute: completed, exit 0, 1 2 3")

        result = await client.call_tool("execute", {"command": "id -u"})
        text = result.content[0].text
        assert result.is_error, result
        assert "not on the allow-list" in text, text
        print("refused: isError, not on the allow-list")
        # Leaving the block: the SDK closes the bridge's stdin, waits up to
        # PROCESS_TERMINATION_TIMEOUT for it to exit, then kills it.
        closing = time.monotonic()
    took = time.monotonic() - closing
    assert took < stdio.PROCESS_TERMINATION_TIMEOUT, f"the bridge was killed after {took:.1f} s"
    errlog.seek(0)
    said = errlog.read()
    assert said == "", f"the bridge said on stderr: {said!r}"
    print("closed: the bridge exited by itself, nothing on stderr")


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None)
