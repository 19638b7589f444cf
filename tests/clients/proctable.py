"""
The /proc process table for the client scripts, which run in interpreters
that may not have ccx (the MCP SDK 1.x virtualenv); the service and the
trial tests use L{ccx.process.group.process_table}.  Standard library only.
"""

import os


def group_states(pgid):
    """
    The state letter of each live (non-zombie) member of a process group.
    """
    states = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    fields = f.read().rsplit(b")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != b"Z":
                states.append(fields[0].decode())
    return states
