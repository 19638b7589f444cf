#!/bin/sh
# Check ccx's MCP over WebSocket with the WebSocket client of the official MCP
# Python SDK (mcp.client.websocket, subprotocol "mcp"), which only the 1.x
# releases have: it is installed in a virtualenv of its own, kept between runs.
#
# Usage: tests/clients/mcp_ws_check.sh      (from anywhere; the first run needs PyPI)
#
#   PYTHON       the Python that has ccx's dependencies and runs ccx and trial
#                (default: python3)
#   MCP_WS_SPEC  what to install in the check's virtualenv
#                (default: "mcp[ws]>=1,<2", the last 1.x release)
#   MCP_WS_VENV  where that virtualenv is kept
#                (default: build/mcp-ws-check/venv, which git ignores; delete it
#                to pick up a newer 1.x release)
#
# It runs tests.test_mcp.SdkWebSocketTests, which starts ccx on 127.0.0.1 port 0
# and runs tests/clients/mcp_ws_client.py against it with the virtualenv's Python.
set -eu

root=$(cd "$(dirname "$0")/../.." && pwd)
python=${PYTHON:-python3}
spec=${MCP_WS_SPEC:-"mcp[ws]>=1,<2"}
venv=${MCP_WS_VENV:-"$root/build/mcp-ws-check/venv"}

if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
stamp="$venv/.ccx-mcp-spec"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$spec" ]; then
    "$venv/bin/python" -m pip install --quiet --upgrade "$spec"
    printf '%s\n' "$spec" > "$stamp"
fi
if ! "$venv/bin/python" -c "import mcp.client.websocket" 2>/dev/null; then
    echo "mcp_ws_check: $spec has no mcp.client.websocket" >&2
    exit 1
fi
echo "mcp_ws_check: mcp $("$venv/bin/python" -c 'from importlib.metadata import version; print(version("mcp"))') in $venv"

cd "$root"
CCX_MCP_WS_PYTHON="$venv/bin/python" PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" \
    exec "$python" -m twisted.trial --temp-directory "$root/build/mcp-ws-check/trial" tests.clients.sdk1_websocket
