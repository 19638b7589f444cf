"""
A client written with another library (websockets), as a new user would:
run seq 1 400000 and get every line; pause and cancel a program with children.

Usage: python websockets_client.py URL.  Prints one line per check; exits 0
when all hold.
"""

import json
import sys
import time

from websockets.sync.client import connect

from proctable import group_states  # beside this script


def wait_until(predicate, what, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.005)


class Client:
    def __init__(self, url):
        self.ws = connect(url, max_size=None)
        self.next_id = 0
        self.pending = []
        connected = json.loads(self.ws.recv())
        assert connected["method"] == "connected", connected

    def call(self, method, params):
        self.next_id += 1
        self.ws.send(json.dumps({"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self.next_id:
                assert "result" in message, message
                return message["result"]
            self.pending.append(message)

    def messages(self):
        while self.pending:
            yield self.pending.pop(0)
        while True:
            yield json.loads(self.ws.recv())


def main(url):
    client = Client(url)
    started = client.call("execute", {"command": "seq 1 400000"})
    text = []
    for message in client.messages():
        if message["method"] == "process.output":
            text.append(message["params"]["data"])
        elif message["method"] == "process.completed":
            assert message["params"]["status"] == "completed", message
            break
    lines = "".join(text).splitlines()
    assert lines == [str(i) for i in range(1, 400001)], len(lines)
    print("seq: all 400000 lines")

    started = client.call("execute", {"command": ["sh", "-c", "sleep 1000 & sleep 1000 & echo ready; wait"]})
    pgid = started["pgid"]
    for message in client.messages():
        if message["method"] == "process.output":
            break
    wait_until(lambda: len(group_states(pgid)) == 3, "the group's three members")
    client.call("control", {"type": "PAUSE", "process_id": started["process_id"]})
    wait_until(lambda: set(group_states(pgid)) == {"T"}, "the group to stop")
    print("pause: every member of the group stopped")
    client.call("control", {"type": "CANCEL", "process_id": started["process_id"]})
    for message in client.messages():
        if message["method"] == "process.completed":
            assert message["params"]["status"] == "cancelled", message
            break
    assert group_states(pgid) == [], group_states(pgid)
    print("cancel: nothing of the group is left")
    client.ws.close()


if __name__ == "__main__":
    main(sys.argv[1])
