"""
ccx's tests.

A service a test builds without a state dir of its own uses the default
one (--state-dir): here a temporary directory for the whole run, never the
user's own (~/.local/state/ccx), removed when the run ends.
"""

import atexit
import os
import shutil
import tempfile

_STATE_HOME = tempfile.mkdtemp(prefix="ccx-tests-state-")
os.environ.pop("STATE_DIRECTORY", None)
os.environ["XDG_STATE_HOME"] = _STATE_HOME
atexit.register(shutil.rmtree, _STATE_HOME, True)
