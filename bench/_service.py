"""
The servers a benchmark runs: a ccx service from a checkout (this one,
unless C{$CCX_CHECKOUT} names another, to compare a change against it) and
any other server (websocketd), each stopped again whatever happens, with
every process it started; and the limits and signals of the benchmark
process itself.

The launcher is the one the tests and the stress tool use
(L{ccx.testing.service}), from the checkout that holds this script; the
scripts import the rest of L{ccx.testing} themselves.
"""

import resource
import signal
import subprocess
import sys
from typing import Any, Optional, Sequence

from _checkout import REPO

from ccx.testing.service import ServiceProcess


class Service(ServiceProcess):
    """
    A ccx service run from L{REPO}, logging warnings only (its own logging
    must not weigh on the figures).
    """

    def __init__(
        self, allow: Sequence[str], options: Sequence[str] = (), python: Optional[str] = None
    ) -> None:
        super().__init__(allow, options=options, python=python, source_root=REPO)


def raise_fd_limit(wanted: int) -> int:
    """
    Raise this process's open-files soft limit to C{wanted} (at most the hard
    limit); children started afterwards inherit it.

    @return: the soft limit now in force.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


def unwind_on_signals() -> None:
    """
    Make SIGTERM, and SIGINT even where it was inherited ignored (a
    background job), unwind like Ctrl-C: every C{finally} and context
    manager then stops what it started.
    """

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, signal.default_int_handler)


def check_python(python: str) -> None:
    """
    Fail early, with a hint, when C{python} cannot run ccx.
    """
    probe = subprocess.run(
        [python, "-c", "import twisted, autobahn"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    if probe.returncode != 0:
        sys.exit(
            f"{python} cannot import twisted and autobahn: run this script with the "
            "virtualenv's python, or give --python (or $CCX_PYTHON)"
        )

