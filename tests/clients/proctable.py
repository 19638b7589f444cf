"""
The process table for the client scripts, which run in interpreters that
may not have ccx installed (the MCP SDK 1.x virtualenv): the service's own
/proc walk, L{ccx.process.group}, imported from this checkout (it needs the
standard library only).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from ccx.process.group import group_states  # noqa: E402

__all__ = ["group_states"]
