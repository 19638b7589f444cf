"""
The process table for the client scripts, which run in interpreters that
may not have ccx installed (the MCP SDK 1.x virtualenv): the service's own
/proc walk, L{ccx.process.group.process_table}, imported from this checkout
(it needs the standard library only).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from ccx.process.group import process_table  # noqa: E402


def group_states(pgid):
    """
    The state letter of each live (non-zombie) member of a process group.
    """
    return [p.state for p in process_table() if p.pgid == pgid and p.state != "Z"]
