"""
Control groups (cgroup v2): one per program, so that every process it
starts, wherever it goes (a double fork, C{setsid}), can be frozen, counted
and killed.

Standard library only: the service and a helper that outlives it (the
keeper) both use it.  Every file operation of ccx on a cgroup is here.
"""

import errno
import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Set, Tuple

# What a program's cgroup needs from the kernel: freeze (5.2) and kill (5.14).
_REQUIRED = ("cgroup.freeze", "cgroup.kill", "cgroup.events")

# The name of the leaf ccx moves itself into when its own cgroup is not the
# root of the hierarchy (a subtree delegated to it): a cgroup with processes
# may not enable controllers for its children ("no internal processes").
SERVICE_LEAF = "service"

# The controllers a limit needs, by the name of the limit.
LIMIT_CONTROLLERS = {"memory": "memory", "cpu": "cpu", "pids": "pids"}

# cpu.max's period, in microseconds: a limit of 0.5 CPU is "50000 100000".
CPU_PERIOD = 100000


class CgroupError(Exception):
    """
    A cgroup operation failed, or no cgroup can be used; the message says
    which file or what is missing.
    """


class ControllersMissing(CgroupError):
    """
    A limit needs a controller that is not enabled for program cgroups.

    @ivar missing: the names of the missing controllers.
    """

    def __init__(self, missing: List[str]) -> None:
        self.missing = missing
        super().__init__(
            "the cgroup controller"
            + ("s " if len(missing) > 1 else " ")
            + ", ".join(missing)
            + (" are" if len(missing) > 1 else " is")
            + " not enabled for ccx's program cgroups"
        )


@dataclass(frozen=True)
class Limits:
    """
    What a program may use, all of its processes together.

    @ivar memory: bytes (C{memory.max}).
    @ivar cpu: CPUs, a fraction of one or several (C{cpu.max}: 0.5 is half
        of one CPU's time).
    @ivar pids: processes and threads (C{pids.max}).
    """

    memory: Optional[int] = None
    cpu: Optional[float] = None
    pids: Optional[int] = None

    def controllers(self) -> List[str]:
        """
        The controllers these limits need.
        """
        return [LIMIT_CONTROLLERS[n] for n in ("memory", "cpu", "pids") if getattr(self, n) is not None]


@dataclass(frozen=True)
class Usage:
    """
    What a program has used.

    @ivar cpu_seconds: CPU time of all its processes, living and ended.
    @ivar memory_bytes: memory it holds now, or L{None} where the memory
        controller is not enabled.
    """

    cpu_seconds: float
    memory_bytes: Optional[int] = None


def _read(path: str) -> str:
    """
    @raise FileNotFoundError: also when the cgroup was removed between the
        open and the read (the kernel says ENODEV then): gone either way.
    """
    try:
        with open(path) as f:
            return f.read()
    except OSError as e:
        if e.errno == errno.ENODEV:
            raise FileNotFoundError(errno.ENOENT, "cgroup removed", path) from None
        raise


def _write(path: str, value: str) -> None:
    try:
        with open(path, "w") as f:
            f.write(value)
    except OSError as e:
        raise CgroupError(f"cannot write {value!r} to {path}: {e.strerror}") from None


def _keyed(path: str) -> Dict[str, str]:
    """
    A flat-keyed cgroup file (C{cgroup.events}, C{cpu.stat}) as a dict.
    """
    values = {}
    for line in _read(path).splitlines():
        key, _, value = line.partition(" ")
        values[key] = value
    return values


class Cgroup:
    """
    One program's cgroup.

    @ivar path: its directory, in full (what a record keeps to find it again).
    @ivar home: the cgroup ccx lives in, where it goes back after spawning.
    """

    def __init__(self, path: str, home: str) -> None:
        self.path = path
        self.home = home

    def _file(self, name: str) -> str:
        return os.path.join(self.path, name)

    @contextmanager
    def joined(self) -> Iterator[None]:
        """
        Move the calling process into this cgroup for the C{with} block and
        back home after it, whatever happens: a child forked inside starts
        in this cgroup.

        @raise CgroupError: when either move failed (the block did not run
            when the first did).
        """
        pid = str(os.getpid())
        _write(self._file("cgroup.procs"), pid)
        try:
            yield
        finally:
            _write(os.path.join(self.home, "cgroup.procs"), pid)

    def procs(self) -> List[int]:
        """
        The pids of the processes in it (only living ones: the kernel takes
        an exiting process out before it is a zombie).
        """
        try:
            return [int(line) for line in _read(self._file("cgroup.procs")).split()]
        except FileNotFoundError:
            return []

    def populated(self) -> bool:
        """
        Whether any process is left in it (or in a cgroup below it).
        """
        try:
            return _keyed(self._file("cgroup.events")).get("populated") == "1"
        except FileNotFoundError:
            return False

    def frozen(self) -> bool:
        """
        Whether the kernel reports it frozen (every process stopped).
        """
        try:
            return _keyed(self._file("cgroup.events")).get("frozen") == "1"
        except FileNotFoundError:
            return False

    def freeze(self) -> None:
        _write(self._file("cgroup.freeze"), "1")

    def thaw(self) -> None:
        _write(self._file("cgroup.freeze"), "0")

    def kill(self) -> None:
        """
        SIGKILL every process in it, escapees included (C{cgroup.kill}).

        @raise CgroupError: when ccx itself is in it (a move back home that
            failed): ccx does not kill itself.
        """
        if os.getpid() in self.procs():
            raise CgroupError(f"ccx itself is in {self.path}; not killing it")
        _write(self._file("cgroup.kill"), "1")

    def usage(self) -> Usage:
        """
        CPU time (C{cpu.stat}) and memory (C{memory.current}, where the
        memory controller is enabled).
        """
        cpu = int(_keyed(self._file("cpu.stat")).get("usage_usec", "0")) / 1e6
        try:
            memory: Optional[int] = int(_read(self._file("memory.current")))
        except (FileNotFoundError, ValueError):
            memory = None
        return Usage(cpu, memory)

    def apply(self, limits: Limits) -> None:
        """
        Write C{limits} into the cgroup's files.

        @raise ControllersMissing: when a limit's controller is not enabled.
        """
        missing = [c for c in limits.controllers() if not os.path.exists(self._file(f"{c}.max"))]
        if missing:
            raise ControllersMissing(missing)
        if limits.memory is not None:
            _write(self._file("memory.max"), str(limits.memory))
        if limits.cpu is not None:
            quota = max(1000, round(limits.cpu * CPU_PERIOD))
            _write(self._file("cpu.max"), f"{quota} {CPU_PERIOD}")
        if limits.pids is not None:
            _write(self._file("pids.max"), str(limits.pids))

    def remove(self) -> bool:
        """
        Remove the cgroup, once nothing is in it.

        @return: whether it is gone (it was removed, or was gone already).
        """
        try:
            os.rmdir(self.path)
        except FileNotFoundError:
            return True
        except OSError:
            return False
        return True


def _unescape(field: str) -> str:
    """
    A mountinfo path: spaces, tabs, newlines and backslashes are octal escapes.
    """
    for code in ("\\040", "\\011", "\\012", "\\134"):
        field = field.replace(code, chr(int(code[1:], 8)))
    return field


def own_cgroup(
    mountinfo: str = "/proc/self/mountinfo", cgroup: str = "/proc/self/cgroup"
) -> Tuple[str, str]:
    """
    Where the calling process's cgroup v2 is: its directory, and the mount
    point of the hierarchy it is in.

    @param mountinfo: the mount table (C{/proc/self/mountinfo}'s format).
    @param cgroup: the process's cgroups (C{/proc/self/cgroup}'s format).
    @raise CgroupError: when the process has no cgroup v2, or no mount
        shows its cgroup.
    """
    try:
        lines = _read(cgroup).splitlines()
        mounts = _read(mountinfo).splitlines()
    except OSError as e:
        raise CgroupError(f"cannot read {e.filename}: {e.strerror}") from None
    own = next((line[3:] for line in lines if line.startswith("0::")), None)
    if own is None:
        raise CgroupError("this process is in no cgroup v2 hierarchy")
    for line in mounts:
        before, _, after = line.partition(" - ")
        fields = before.split()
        if not after.startswith("cgroup2 ") or len(fields) < 5:
            continue
        root, point = _unescape(fields[3]), _unescape(fields[4])
        relative = os.path.relpath(own, root)
        if relative == ".":
            return point, point
        if not relative.startswith(".."):
            return os.path.join(point, relative), point
    raise CgroupError(f"no cgroup v2 mount shows this process's cgroup {own}")


class CgroupTree:
    """
    Where ccx makes its programs' cgroups, and the cgroup it lives in.

    Two layouts, chosen by L{open_tree}:
      - ccx is in the hierarchy's root (a hybrid C{unified} mount, a host
        without systemd): it stays there, and makes C{ccx-PID} below it to
        hold its programs.
      - ccx is in a cgroup of its own (a subtree systemd delegates with
        C{Delegate=yes}): it moves itself into the leaf C{service} below
        it, so that its cgroup has no process of its own and may enable
        controllers for the programs' cgroups beside that leaf.

    @ivar base: the directory program cgroups are made in.
    @ivar home: the cgroup ccx lives in.
    @ivar owned: whether C{base} is ccx's to remove when it stops.
    """

    def __init__(self, base: str, home: str, owned: bool) -> None:
        self.base = base
        self.home = home
        self.owned = owned

    def controllers(self) -> Set[str]:
        """
        The controllers enabled for program cgroups.
        """
        try:
            return set(_read(os.path.join(self.base, "cgroup.subtree_control")).split())
        except OSError:
            return set()

    def check(self, limits: Limits) -> None:
        """
        @raise ControllersMissing: when C{limits} need a controller that
            program cgroups do not have.
        """
        enabled = self.controllers()
        missing = [c for c in limits.controllers() if c not in enabled]
        if missing:
            raise ControllersMissing(missing)

    def create(self, name: str, limits: Optional[Limits] = None) -> Cgroup:
        """
        Make a program's cgroup, with its limits.

        @raise ControllersMissing: when a limit cannot be applied; nothing
            is left then.
        @raise CgroupError: when the cgroup cannot be made.
        """
        if limits is not None:
            self.check(limits)
        path = os.path.join(self.base, name)
        try:
            os.mkdir(path)
        except OSError as e:
            raise CgroupError(f"cannot make cgroup {path}: {e.strerror}") from None
        cgroup = Cgroup(path, self.home)
        if limits is not None:
            try:
                cgroup.apply(limits)
            except BaseException:
                cgroup.remove()
                raise
        return cgroup

    def close(self) -> bool:
        """
        Remove the directory of program cgroups if it is ccx's own and empty.

        @return: whether nothing of it is left.
        """
        if not self.owned:
            return True
        return Cgroup(self.base, self.home).remove()


def _enable_controllers(path: str) -> None:
    """
    Enable for the children of C{path} every controller it has; those the
    kernel refuses (another process in C{path}, a threaded subtree) stay
    off, and limits needing them are refused later with their names.
    """
    try:
        available = _read(os.path.join(path, "cgroup.controllers")).split()
    except OSError:
        return
    for name in available:
        if name not in LIMIT_CONTROLLERS.values():
            continue
        try:
            _write(os.path.join(path, "cgroup.subtree_control"), "+" + name)
        except CgroupError:
            continue


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _populated(path: str) -> bool:
    try:
        return _keyed(os.path.join(path, "cgroup.events")).get("populated") != "0"
    except OSError:
        return True


def remove_stale(directory: str, own_pid: int) -> List[str]:
    """
    Remove the C{ccx-PID} cgroups that services killed with SIGKILL left in
    C{directory} (a service removes its own when it stops): only those of a
    PID that is no longer running, and only when no process is left in them
    (with the empty program cgroups in them).  Another running service's,
    and a killed one's that still holds programs, are never touched.

    @return: the cgroups removed.
    """
    removed: List[str] = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in names:
        prefix, _, number = name.partition("-")
        if prefix != "ccx" or not number.isdigit() or number.startswith("0"):
            continue
        pid = int(number)
        path = os.path.join(directory, name)
        # A PID in use may be another service's, even when it is not
        # recognisably ccx (a test runner embeds one): never touched.
        if pid == own_pid or _alive(pid) or _populated(path):
            continue
        inside = [os.path.join(p, d) for p, dirs, _ in os.walk(path) for d in dirs]
        # The deepest first, the service's own last.
        for cgroup in [*reversed(inside), path]:
            try:
                os.rmdir(cgroup)
            except OSError:
                break
            removed.append(cgroup)
    return removed


def remove_with_stale_parent(cgroup: "Cgroup", own_pid: int) -> bool:
    """
    Remove C{cgroup}, and then its parent when that is the C{ccx-PID} of a
    service no longer running and is now empty: a durable program that an
    earlier, killed service started, and this one took back, leaves nothing
    when it ends (L{remove_stale} could not remove that parent at start,
    the program was still in it).

    @return: whether C{cgroup} is gone.
    """
    if not cgroup.remove():
        return False
    parent = os.path.dirname(cgroup.path)
    prefix, _, number = os.path.basename(parent).partition("-")
    if prefix == "ccx" and number.isdigit() and int(number) != own_pid:
        remove_stale(os.path.dirname(parent), own_pid)
    return True


def open_tree(
    mountinfo: str = "/proc/self/mountinfo",
    cgroup: str = "/proc/self/cgroup",
    pid: Optional[int] = None,
) -> CgroupTree:
    """
    Find a writable cgroup v2 hierarchy for this process and set it up for
    program cgroups (L{CgroupTree} says how).

    @param pid: the process that lives in it (this one by default).
    @raise CgroupError: when none can be used, saying why.
    """
    if pid is None:
        pid = os.getpid()
    own, _ = own_cgroup(mountinfo, cgroup)
    # The root cgroup has no cgroup.type; it alone may hold processes and
    # enable controllers for its children at once.
    is_root = not os.path.exists(os.path.join(own, "cgroup.type"))
    if is_root:
        base, home = os.path.join(own, f"ccx-{pid}"), own
        remove_stale(own, pid)
        try:
            os.mkdir(base)
        except FileExistsError:
            # Left by an earlier ccx with this pid, which cannot be running.
            if not os.path.isdir(base):
                raise CgroupError(f"cannot make cgroup {base}: File exists") from None
        except OSError as e:
            raise CgroupError(f"cannot make cgroup {base}: {e.strerror}") from None
    else:
        base, home = own, os.path.join(own, SERVICE_LEAF)
        try:
            os.makedirs(home, exist_ok=True)
        except OSError as e:
            raise CgroupError(f"cannot make cgroup {home}: {e.strerror}") from None
        _write(os.path.join(home, "cgroup.procs"), str(pid))
    tree = CgroupTree(base, home, owned=is_root)
    missing = [n for n in _REQUIRED if not os.path.exists(os.path.join(base, n))]
    if missing:
        tree.close()
        raise CgroupError(f"the kernel's cgroups lack {', '.join(missing)} (Linux 5.14 or later)")
    _enable_controllers(base)
    return tree
