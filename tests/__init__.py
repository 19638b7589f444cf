"""
ccx's tests.

No test may write to the user's state dir: a service a test starts without
naming one (twistd children inherit this environment) gets a directory of
this test run's own, removed when it ends.
"""

import atexit
import os
import shutil
import tempfile

_STATE_HOME = tempfile.mkdtemp(prefix="ccx-tests-state-")
os.environ["XDG_STATE_HOME"] = _STATE_HOME
os.environ.pop("STATE_DIRECTORY", None)
atexit.register(shutil.rmtree, _STATE_HOME, True)
