#!/usr/bin/env bash
# WebSocket conformance: Autobahn|Testsuite's fuzzing client against
#  1. tests/conformance/echo_server.py, an echo WebSocket with ccx's own
#     settings and serving path: families 1-7 and 10 (ccx's exact settings)
#     and 9 (the same with 16 MiB messages allowed); every case must be OK,
#     NON-STRICT or INFORMATIONAL, and close OK or INFORMATIONAL;
#  2. the real service (twistd ccx), which answers JSON-RPC instead of
#     echoing: families 1-7 and 10; every case must close OK or
#     INFORMATIONAL, and /health must still answer afterwards.
# See docs/conformance.md. Everything listens on and connects to 127.0.0.1.
#
# Environment: PYTHON (the project's Python 3, default .venv/bin/python),
# PYTHON2 (a Python 2.7, default: pyenv's 2.7.x, else python2.7 on PATH).
# wstest is installed once into .venv-wstest/ (rebuilt when
# requirements-wstest.txt changes); reports go to tests/conformance/reports/.
set -euo pipefail

cd "$(dirname "$0")/../.."
REPO=$PWD
HERE=$REPO/tests/conformance
PYTHON=${PYTHON:-.venv/bin/python}
WSTEST_VENV=$REPO/.venv-wstest
REPORTS=$HERE/reports
# The last virtualenv that can create Python 2.7 environments.
VIRTUALENV_PIN='virtualenv==20.21.1'
# ccx does not echo, so every case that waits for an echo waits for its own
# timeout (1 to 10 s): in one run, families 1-7 and 10 take 150 s, nearly all
# of it idle. They run as four concurrent shards of at most 50 s instead.
CCX_SHARDS=("1.1" "1.2" "3 4 6" "2 5 7 10")

pids=()

stop_all() {
    local pid
    for pid in ${pids[@]+"${pids[@]}"}; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in ${pids[@]+"${pids[@]}"}; do
        for _ in $(seq 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    pids=()
}
# The service's state dir is the run's own, never the user's.
STATE_DIR=$(mktemp -d "${TMPDIR:-/tmp}/ccx-conformance-state.XXXXXX")
finish() {
    stop_all
    rm -rf "$STATE_DIR"
}
trap finish EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

say() { printf 'conformance: %s\n' "$*"; }
die() {
    say "$*" >&2
    exit 1
}

find_python2() {
    local candidate
    if [ -n "${PYTHON2:-}" ]; then
        echo "$PYTHON2"
        return
    fi
    for candidate in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/2.7*/bin/python2.7; do
        if [ -x "$candidate" ]; then
            echo "$candidate"
            return
        fi
    done
    command -v python2.7 || die "no Python 2.7 found: set PYTHON2"
}

# Build the Python 2.7 virtualenv with wstest, once.
build_wstest() {
    local python2 wanted
    python2=$(find_python2)
    wanted="$python2 $(sha256sum "$HERE/requirements-wstest.txt" | cut -d' ' -f1)"
    if [ -f "$WSTEST_VENV/built" ] && [ "$(cat "$WSTEST_VENV/built")" = "$wanted" ]; then
        return
    fi
    say "building $WSTEST_VENV (Python 2.7: $python2)"
    rm -rf "$WSTEST_VENV"
    "$PYTHON" -m pip install --quiet --target "$WSTEST_VENV/virtualenv" "$VIRTUALENV_PIN"
    PYTHONPATH="$WSTEST_VENV/virtualenv" "$PYTHON" -m virtualenv --quiet \
        --python "$python2" "$WSTEST_VENV/py27"
    "$WSTEST_VENV/py27/bin/pip" install --quiet --disable-pip-version-check --no-python-version-warning \
        -r "$HERE/requirements-wstest.txt"
    echo "$wanted" >"$WSTEST_VENV/built"
}

free_port() {
    "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# health_ok PORT: whether GET /health answers 200 with status "ok" (no proxy).
health_ok() {
    "$PYTHON" - "http://127.0.0.1:$1/health" <<'PY'
import json, sys, urllib.request
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
with opener.open(sys.argv[1], timeout=5) as response:
    sys.exit(0 if response.status == 200 and json.load(response)["status"] == "ok" else 1)
PY
}

# start_wstest NAME: run the spec REPORTS/NAME-spec.json in the background,
# output in REPORTS/NAME-wstest.log; wait_wstest waits for every one started.
wstest_runs=()
start_wstest() {
    PYTHONWARNINGS=ignore timeout 900 "$WSTEST_VENV/py27/bin/wstest" -m fuzzingclient \
        -s "$REPORTS/$1-spec.json" >"$REPORTS/$1-wstest.log" 2>&1 &
    pids+=("$!")
    wstest_runs+=("$1:$!")
}

wait_wstest() {
    local run status=0
    for run in ${wstest_runs[@]+"${wstest_runs[@]}"}; do
        if ! wait "${run#*:}"; then
            tail -n 20 "$REPORTS/${run%%:*}-wstest.log" >&2
            say "wstest failed or timed out (log: $REPORTS/${run%%:*}-wstest.log)"
            status=1
        fi
    done
    wstest_runs=()
    return "$status"
}

# cases_json PATTERN...: the spec's case patterns: cases_json 1 2.1 gives
# ["1.*", "2.1.*"].
cases_json() {
    local pattern list=""
    for pattern in "$@"; do
        list+="${list:+, }\"$pattern.*\""
    done
    echo "[$list]"
}

# --- 1. the echo WebSocket ----------------------------------------------------

run_echo() {
    local port="" pid status=0
    PYTHONPATH=$REPO "$PYTHON" "$HERE/echo_server.py" 0 \
        >"$REPORTS/echo-server.out" 2>"$REPORTS/echo-server.log" &
    pid=$!
    pids+=("$pid")
    for _ in $(seq 300); do
        port=$(head -n 1 "$REPORTS/echo-server.out")
        [ -n "$port" ] && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    [ -n "$port" ] || die "the echo server did not start (log: $REPORTS/echo-server.log)"

    # Family 9 sends messages of up to 16 MiB: it runs against /large, where
    # only the two payload limits are raised (see echo_server.py).
    cat >"$REPORTS/echo-spec.json" <<JSON
{
    "outdir": "$REPORTS/echo",
    "servers": [
        {"agent": "ccx-echo", "url": "ws://127.0.0.1:$port/ws/mcp"},
        {"agent": "ccx-echo-16MiB", "url": "ws://127.0.0.1:$port/large/mcp"}
    ],
    "cases": $(cases_json 1 2 3 4 5 6 7 9 10),
    "exclude-cases": [],
    "exclude-agent-cases": {
        "ccx-echo": $(cases_json 9),
        "ccx-echo-16MiB": $(cases_json 1 2 3 4 5 6 7 10)
    }
}
JSON
    say "echo WebSocket on 127.0.0.1:$port: families 1-7, 10 (ccx's settings) and 9 (16 MiB messages)"
    start_wstest echo
    wait_wstest || status=1
    stop_all
    "$PYTHON" "$HERE/check_report.py" "$REPORTS/echo-spec.json" || status=1
    return "$status"
}

# --- 2. the real service ------------------------------------------------------

run_ccx() {
    local port pid up="" shard n=0 specs=() status=0 errors
    port=$(free_port)
    PYTHONPATH=$REPO "$PYTHON" -c 'from twisted.scripts.twistd import run; run()' \
        -n --pidfile= ccx --port "tcp:$port:interface=127.0.0.1" --state-dir "$STATE_DIR" \
        >"$REPORTS/ccx-service.log" 2>&1 &
    pid=$!
    pids+=("$pid")
    for _ in $(seq 150); do
        kill -0 "$pid" 2>/dev/null || break
        if health_ok "$port" 2>/dev/null; then
            up=1
            break
        fi
        sleep 0.2
    done
    [ -n "$up" ] || die "ccx did not start (log: $REPORTS/ccx-service.log)"

    say "ccx on 127.0.0.1:$port: families 1-7, 10 in ${#CCX_SHARDS[@]} concurrent shards (closing behaviour only)"
    for shard in "${CCX_SHARDS[@]}"; do
        n=$((n + 1))
        # shellcheck disable=SC2086 # a shard is a list of patterns
        cat >"$REPORTS/ccx$n-spec.json" <<JSON
{
    "outdir": "$REPORTS/ccx$n",
    "servers": [{"agent": "ccx", "url": "ws://127.0.0.1:$port/ws/mcp"}],
    "cases": $(cases_json $shard),
    "exclude-cases": [],
    "exclude-agent-cases": {}
}
JSON
        specs+=("$REPORTS/ccx$n-spec.json")
        start_wstest "ccx$n"
    done
    wait_wstest || status=1
    "$PYTHON" "$HERE/check_report.py" --close-only "${specs[@]}" || status=1
    if kill -0 "$pid" 2>/dev/null && health_ok "$port"; then
        say "ccx still answers GET /health after the run"
    else
        say "ccx no longer answers GET /health (log: $REPORTS/ccx-service.log)"
        status=1
    fi
    errors=$(grep -cE '#(error|critical)\]' "$REPORTS/ccx-service.log" || true)
    if [ "$errors" != 0 ]; then
        say "warning: ccx logged $errors errors (log: $REPORTS/ccx-service.log)"
    fi
    stop_all
    return "$status"
}

command -v "$PYTHON" >/dev/null || die "no Python 3 at $PYTHON: set PYTHON"
build_wstest
rm -rf "$REPORTS"
mkdir -p "$REPORTS"

failed=0
run_echo || failed=1
run_ccx || failed=1
if [ "$failed" = 0 ]; then
    say "passed in ${SECONDS}s (reports: $REPORTS)"
else
    say "FAILED after ${SECONDS}s (reports: $REPORTS)"
fi
exit "$failed"
