"""
A ccx service run from outside: C{twistd -n ccx} as a child process on a
free loopback port, from the checkout (or installation) that holds this
package, ready once C{/health} says so.
"""

import http.client
import json
import os
import shutil
import sys
import tempfile
from typing import Any, Dict, List, Optional, Sequence

import ccx
from ccx.testing.cgroups import cgroups_left
from ccx.testing.child import ListeningChild
from ccx.testing.ports import HOST, free_port

# The directory that holds the ccx package, and twisted/plugins with it.
SOURCE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(ccx.__file__)))


def default_python() -> str:
    """
    The interpreter that runs the service: C{$CCX_PYTHON}, or this one.
    """
    return os.environ.get("CCX_PYTHON") or sys.executable


class ServiceProcess(ListeningChild):
    """
    A ccx service run with twistd as a child of this process.

    @param allow: the programs to put on the allow-list.
    @param settings: further C{twistd ccx} options by name (C{kill_grace}
        for C{--kill-grace}), C{log_level} and C{log_format} among them.
    @param options: further C{twistd ccx} options, as they are written.
    @param python: the interpreter to run it with (L{default_python}).
    @param source_root: the directory holding the C{ccx} to run.
    @param wrapper: a command that runs the service's command line given
        after it (C{unshare -m sh -c '...; exec "$@"' sh}, say).
    @ivar state_dir: its C{--state-dir}: the C{state_dir} setting when
        given (its caller's to remove), else a temporary directory of its
        own, removed once it has stopped, so that no service run from here
        ever writes to the user's state dir.
    """

    def __init__(
        self,
        allow: Sequence[str],
        settings: Optional[Dict[str, Any]] = None,
        options: Sequence[str] = (),
        python: Optional[str] = None,
        source_root: str = SOURCE_ROOT,
        wrapper: Sequence[str] = (),
    ) -> None:
        self.settings = {"log_level": "warn", **(settings or {})}
        self._own_state_dir: Optional[str] = None
        if "state_dir" not in self.settings:
            self._own_state_dir = tempfile.mkdtemp(prefix="ccx-state-")
            self.settings["state_dir"] = self._own_state_dir
        self.state_dir = str(self.settings["state_dir"])
        port = free_port()
        argv = [
            python or default_python(),
            "-c",
            "from twisted.scripts.twistd import run; run()",
            "-n",
            "--pidfile=",
            "ccx",
            "--port",
            f"tcp:{port}:interface={HOST}",
        ]
        for name in allow:
            argv += ["--allow", name]
        for name, value in self.settings.items():
            argv += [f"--{name.replace('_', '-')}", str(value)]
        argv += options
        argv = [*wrapper, *argv]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [source_root, env.get("PYTHONPATH")]))
        # "python -c" puts the working directory first on sys.path: run in
        # the source root, so that its ccx is the one imported.
        super().__init__(argv, port, env=env, cwd=source_root)

    def _ended(self) -> Optional[int]:
        returncode = super()._ended()
        if self._own_state_dir is not None and not self.running:
            shutil.rmtree(self._own_state_dir, ignore_errors=True)
        return returncode

    def cgroups_left(self) -> List[str]:
        """
        The cgroups this service left once it has ended (none, unless it
        was killed: a killed service cannot remove them).
        """
        return [] if self.pid is None else cgroups_left(self.pid)

    @property
    def url(self) -> str:
        return f"ws://{HOST}:{self.port}/ws/mcp"

    def ready(self) -> bool:
        self.check_running()
        try:
            return self.health()["status"] == "ok"
        except (OSError, ValueError, http.client.HTTPException):
            return False

    def health(self) -> dict:
        """
        C{GET /health} (blocking).
        """
        connection = http.client.HTTPConnection(HOST, self.port, timeout=5)
        try:
            connection.request("GET", "/health")
            return json.loads(connection.getresponse().read())
        finally:
            connection.close()

    def errors(self) -> List[dict]:
        """
        The error (and critical) records it has logged so far (with
        C{log_format} C{json}).
        """
        found = []
        for line in self.log_lines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and record.get("level") in ("error", "critical"):
                found.append(record)
        return found
