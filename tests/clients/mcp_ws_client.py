"""
The WebSocket client of the official MCP Python SDK (C{mcp.client.websocket},
in the 1.x releases; it asks for the subprotocol C{mcp}) drives ccx:
initialize, list the tools, run an allowed and a refused command, stream
progress, and cancel a long call with C{notifications/cancelled}.

Usage: python mcp_ws_client.py URL (put a token in the URL as ?token=...).
Prints one line per check; exits 0 when all hold.  Run by mcp_ws_check.sh
in a virtualenv with an mcp 1.x release.
"""

import re
import sys
import time
import warnings

import anyio
from mcp import ClientSession, types
from mcp.client.websocket import websocket_client

from proctable import group_states  # beside this script

warnings.simplefilter("ignore", DeprecationWarning)


async def wait_until(predicate, what, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        await anyio.sleep(0.02)


async def main(url):
    async with websocket_client(url) as (read, write):
        async with ClientSession(read, write) as session:
            init = await session.initialize()
            print(f"initialize: {init.protocolVersion} {init.serverInfo.name}")

            tools = await session.list_tools()
            print("tools: " + " ".join(sorted(tool.name for tool in tools.tools)))

            result = await session.call_tool("execute", {"command": ["printf", "hello\\n"]})
            assert not result.isError, result
            out = result.structuredContent
            assert (out["stdout"], out["status"], out["exit_code"]) == ("hello\n", "completed", 0), out
            print("execute: completed, exit 0")

            result = await session.call_tool("execute", {"command": "id -u"})
            assert result.isError and "not on the allow-list" in result.content[0].text, result
            print("refused: isError")

            seen = []

            async def on_progress(progress, total, message):
                seen.append((progress, message))

            result = await session.call_tool(
                "execute",
                {"command": "for i in 1 2 3; do echo line $i; sleep 0.2; done", "shell": True},
                progress_callback=on_progress,
            )
            assert "".join(m for _, m in seen[1:]) == result.structuredContent["stdout"], seen
            print(f"progress: {len(seen)} notifications")

            announced = anyio.Event()
            pids = []

            async def on_start(progress, total, message):
                pids.extend(int(p) for p in re.findall(r"pid (\d+)", message or ""))
                announced.set()

            async with anyio.create_task_group() as tg:

                async def long_call():
                    await session.call_tool(
                        "execute",
                        {"command": "sleep 1000 & sleep 1000; wait", "shell": True},
                        progress_callback=on_start,
                    )
                    raise SystemExit("the cancelled call was answered")

                tg.start_soon(long_call)
                with anyio.fail_after(10):
                    await announced.wait()
                # The 1.x session numbers its requests from 0 and does not
                # send notifications/cancelled itself.
                request_id = session._request_id - 1
                await session.send_notification(
                    types.ClientNotification(
                        types.CancelledNotification(
                            params=types.CancelledNotificationParams(
                                requestId=request_id, reason="check"
                            )
                        )
                    )
                )

                async def gone():
                    return group_states(pids[0]) == []

                await wait_until(gone, "the cancelled group to end")
                tg.cancel_scope.cancel()

            listed = await session.call_tool("list", {})
            mine = [p for p in listed.structuredContent["processes"] if p["pid"] == pids[0]]

            async def cancelled():
                status = await session.call_tool("status", {"process_id": mine[0]["process_id"]})
                return status.structuredContent["status"] == "cancelled"

            await wait_until(cancelled, "the cancelled status")
            print("cancel: the program and its children are gone")


if __name__ == "__main__":
    anyio.run(main, sys.argv[1])
