"""
The official MCP Python SDK (PyPI C{mcp}, the current release) drives ccx
over Streamable HTTP, as a new user would: initialize, list the tools, run
an allowed and a refused command, stream progress, set a log level, and
cancel a long call.

Usage: python mcp_http_client.py URL [TOKEN [MODE]].  MODE is the SDK's
connect mode: auto (its default: it probes server/discover and takes the
stateless era when the server answers) or legacy (the initialize
handshake).  Prints one line per check; exits 0 when all hold.
"""

import re
import sys
import time

import anyio
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from proctable import group_states  # beside this script


async def wait_until(predicate, what, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        await anyio.sleep(0.02)


async def main(url, token, mode="auto"):
    headers = {"Authorization": f"Bearer {token}"} if token else None
    logged = []
    # The stateless era has no logging/setLevel: each request asks for its level.
    options = {"log_level": "info"} if mode == "auto" else {}

    async def on_log(params):
        logged.append(params)

    async with httpx2.AsyncClient(
        headers=headers, timeout=httpx2.Timeout(30, read=300)
    ) as http:
        transport = streamable_http_client(url, http_client=http)
        async with Client(transport, logging_callback=on_log, mode=mode, **options) as client:
            path = "discover" if client.session.discover_result is not None else "initialize"
            print(f"{path}: {client.protocol_version} {client.server_info.name}")

            tools = await client.list_tools()
            print("tools: " + " ".join(sorted(tool.name for tool in tools.tools)))

            result = await client.call_tool(
                "execute", {"command": ["printf", "hello\\nworld\\n"]}
            )
            out = result.structured_content
            assert not result.is_error, result
            assert out["stdout"] == "hello\nworld\n", out
            assert (out["status"], out["exit_code"]) == ("completed", 0), out
            print("execute: completed, exit 0, 2 lines")

            result = await client.call_tool("execute", {"command": "id -u"})
            text = result.content[0].text
            assert result.is_error, result
            assert "not on the allow-list" in text, text
            print("refused: isError, not on the allow-list")

            seen = []

            async def on_progress(progress, total, message):
                seen.append((progress, message))

            script = "for i in 1 2 3; do echo line $i; sleep 0.3; done"
            result = await client.call_tool(
                "execute", {"command": script, "shell": True}, progress_callback=on_progress
            )
            out = result.structured_content
            assert out["stdout"] == "line 1\nline 2\nline 3\n", out
            values = [p for p, _ in seen]
            assert values == sorted(set(values)) and len(values) >= 3, seen
            streamed = "".join(m for _, m in seen[1:])
            assert streamed == out["stdout"], seen
            print(f"progress: {len(values)} increasing notifications carried the output")

            if mode != "auto":
                await client.set_logging_level("info")
            logged.clear()
            await client.call_tool("execute", {"command": ["true"]})
            events = [entry.data.get("event") for entry in logged]
            assert events == ["started", "finished"], logged
            print("logging: started and finished messages")

            announced = anyio.Event()
            pids = []

            async def on_start(progress, total, message):
                pids.extend(int(p) for p in re.findall(r"pid (\d+)", message or ""))
                announced.set()

            command = "sleep 1000 & sleep 1000; wait"
            async with anyio.create_task_group() as tg:

                async def long_call():
                    await client.call_tool(
                        "execute", {"command": command, "shell": True}, progress_callback=on_start
                    )
                    raise SystemExit("the long call was answered")

                tg.start_soon(long_call)
                with anyio.fail_after(10):
                    await announced.wait()
                await wait_until(
                    lambda: anyio.to_thread.run_sync(lambda: len(group_states(pids[0])) == 3),
                    "the group's members",
                )
                tg.cancel_scope.cancel()

            async def cancelled():
                listed = await client.call_tool("list", {})
                mine = [
                    p for p in listed.structured_content["processes"] if p["pid"] == pids[0]
                ]
                if not mine or mine[0]["state"] != "exited":
                    return False
                status = await client.call_tool("status", {"process_id": mine[0]["process_id"]})
                return status.structured_content["status"] == "cancelled"

            await wait_until(cancelled, "the cancelled status")
            assert group_states(pids[0]) == [], group_states(pids[0])
            print("cancel: the program and its children are gone")

            started = await client.call_tool(
                "start", {"command": "sh -c 'sleep 0.2; echo late; exit 5'"}
            )
            process_id = started.structured_content["process_id"]
            read = await client.call_tool(
                "output", {"process_id": process_id, "wait_seconds": 30}
            )
            assert read.structured_content["stdout"]["text"] == "late\n", read
            waited = await client.call_tool("wait", {"process_id": process_id})
            out = waited.structured_content
            assert (out["status"], out["exit_code"]) == ("failed", 5), out
            assert waited.content[0].text.startswith("failed: exit 5 after "), waited
            print("start + output wait_seconds + wait: exit 5")
            result = await client.call_tool("cancel", {"process_id": process_id})
            assert not result.is_error and result.structured_content["status"] == "failed"
            print("cancel after the end: its final status")


if __name__ == "__main__":
    token = sys.argv[2] if len(sys.argv) > 2 and sys.argv[2] else None
    anyio.run(main, sys.argv[1], token, sys.argv[3] if len(sys.argv) > 3 else "auto")
