"""
What is left of a ccx service's cgroups, seen from outside: after a test
or a benchmark, nothing should be.
"""

import os
import time
from typing import List, Optional

from ccx.process.cgroup import CgroupError, own_cgroup


def programs_dir(pid: Optional[int] = None) -> Optional[str]:
    """
    Where a ccx service whose process is C{pid} (this one by default), in
    this process's cgroup, makes its programs' cgroups; L{None} when there
    is no cgroup v2 here.
    """
    if pid is None:
        pid = os.getpid()
    try:
        own, _ = own_cgroup()
    except CgroupError:
        return None
    return os.path.join(own, f"ccx-{pid}")


def cgroups_left(pid: Optional[int] = None) -> List[str]:
    """
    The cgroups a ccx service (process C{pid}, this one by default) left:
    its directory of program cgroups and every cgroup in it.
    """
    top = programs_dir(pid)
    if top is None or not os.path.isdir(top):
        return []
    left = [top]
    for path, names, _ in os.walk(top):
        left += [os.path.join(path, name) for name in names]
    return left


def remove_cgroups(pid: int) -> None:
    """
    End and remove what a ccx service (process C{pid}) that was killed left
    of its cgroups: a killed service cannot remove them itself.
    """
    for path in reversed(cgroups_left(pid)):
        if os.path.exists(os.path.join(path, "cgroup.kill")) and path != programs_dir(pid):
            with open(os.path.join(path, "cgroup.kill"), "w") as f:
                f.write("1")
        for _ in range(1000):
            try:
                os.rmdir(path)
                break
            except FileNotFoundError:
                break
            except OSError:
                # Still populated for the moment the kill takes.
                time.sleep(0.001)
