"""
The systemd unit runs ccx the way the service expects to be run.
"""

import configparser
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile

from twisted.trial.unittest import SynchronousTestCase

from ccx.sdnotify import notify
from ccx.testing.ports import HOST
from ccx.testing.service import ServiceProcess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read(os.path.join(ROOT, "systemd", name))
    return parser


class UnitTests(SynchronousTestCase):
    def test_foreground_and_clean_stop(self):
        """
        twistd runs in the foreground and signals go to it alone: ccx cancels
        what is not durable, and durable programs and their keeper run on.
        """
        service = unit("ccx.service")["Service"]
        command = service["ExecStart"].split()
        self.assertTrue(command[0].endswith("twistd"))
        self.assertIn("--nodaemon", command)
        self.assertIn("ccx", command)
        self.assertEqual(service["KillSignal"], "SIGTERM")
        self.assertEqual(service["KillMode"], "process")
        self.assertEqual(service["Restart"], "on-failure")

    def test_state_and_cgroups(self):
        """
        The state dir is systemd's to make (ccx's default --state-dir under
        it), and the unit's cgroup subtree is ccx's to manage.
        """
        service = unit("ccx.service")["Service"]
        self.assertEqual(service["StateDirectory"], "ccx")
        self.assertEqual(service["WorkingDirectory"], "/var/lib/ccx")
        self.assertEqual(service["Delegate"], "yes")
        # A read-only /sys/fs/cgroup would make the delegation useless.
        self.assertNotEqual(service.get("ProtectControlGroups"), "yes")

    def test_unprivileged_and_hardened(self):
        """It runs as its own user with no way to gain privileges."""
        service = unit("ccx.service")["Service"]
        self.assertEqual(service["User"], "ccx")
        self.assertEqual(service["NoNewPrivileges"], "yes")
        self.assertEqual(service["CapabilityBoundingSet"], "")
        for setting in ("PrivateTmp", "ProtectSystem", "ProtectKernelTunables", "RestrictSUIDSGID"):
            self.assertIn(setting, service)

    def test_open_file_limit(self):
        """The unit gives ccx room for --max-connections' sockets, programs' pipes and the reserve."""
        service = unit("ccx.service")["Service"]
        self.assertGreaterEqual(int(service["LimitNOFILE"]), 1024 + 64 * 3 + 128)

    def test_socket_activation_unit(self):
        """The optional socket unit listens on loopback, where ccx needs no token."""
        socket = unit("ccx.socket")["Socket"]
        self.assertTrue(socket["ListenStream"].startswith("127.0.0.1:"))


class VerifyTests(SynchronousTestCase):
    if shutil.which("systemd-analyze") is None:
        skip = "systemd-analyze is not installed"

    def test_systemd_analyze_verify(self):
        """systemd-analyze verify accepts both units (with twistd where this Python has it)."""
        twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
        if not os.path.exists(twistd):
            twistd = shutil.which("twistd")
        directory = self.mktemp()
        os.makedirs(directory)
        paths = []
        for name in ("ccx.service", "ccx.socket"):
            with open(os.path.join(ROOT, "systemd", name)) as f:
                text = f.read().replace("/opt/ccx/bin/twistd", twistd)
            paths.append(os.path.join(directory, name))
            with open(paths[-1], "w") as f:
                f.write(text)
        result = subprocess.run(
            ["systemd-analyze", "verify", "--man=no", *paths], capture_output=True, text=True
        )
        self.assertEqual((result.returncode, result.stdout + result.stderr), (0, ""))


def short_temp_dir(case: SynchronousTestCase) -> str:
    """
    A temporary directory removed after C{case}, short enough for a UNIX
    socket's path (trial's own are too long).
    """
    directory = tempfile.mkdtemp(prefix="ccx-notify-")
    case.addCleanup(shutil.rmtree, directory, True)
    return directory


class NotifyTests(SynchronousTestCase):
    """
    C{sd_notify(3)}: one datagram to C{$NOTIFY_SOCKET}, and nothing at all
    without it.
    """

    def listen(self, address: str) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.addCleanup(sock.close)
        sock.bind(address)
        sock.settimeout(10)
        return sock

    def test_path(self):
        path = os.path.join(short_temp_dir(self), "notify")
        sock = self.listen(path)
        self.assertTrue(notify("READY=1", {"NOTIFY_SOCKET": path}))
        self.assertEqual(sock.recv(64), b"READY=1")

    def test_abstract(self):
        """An address starting with @ is in the abstract namespace."""
        name = f"ccx-test-{os.getpid()}-{id(self)}"
        sock = self.listen("\0" + name)
        self.assertTrue(notify("STOPPING=1", {"NOTIFY_SOCKET": "@" + name}))
        self.assertEqual(sock.recv(64), b"STOPPING=1")

    def test_nobody_listens(self):
        """No NOTIFY_SOCKET, a relative one, or one nobody binds: nothing sent, nothing raised."""
        self.assertFalse(notify("READY=1", {}))
        self.assertFalse(notify("READY=1", {"NOTIFY_SOCKET": "relative/notify"}))
        missing = os.path.join(os.path.abspath(self.mktemp()), "notify")
        self.assertFalse(notify("READY=1", {"NOTIFY_SOCKET": missing}))


class RunBySystemdTests(SynchronousTestCase):
    """
    A real twistd as systemd runs it: C{Type=notify} hears READY=1 once it
    listens, and socket activation hands it the socket named by the unit.
    """

    def test_ready_once_listening(self):
        path = os.path.join(short_temp_dir(self), "notify")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.addCleanup(sock.close)
        sock.bind(path)
        sock.settimeout(30)
        service = ServiceProcess(allow=[], wrapper=["env", f"NOTIFY_SOCKET={path}"])
        service.spawn()
        self.addCleanup(service.stop)
        self.assertEqual(sock.recv(64), b"READY=1")
        # Ready means listening: /health answers at once.
        self.assertEqual(service.health()["status"], "ok")
        # twistd re-raises SIGTERM once stopped: systemd's clean stop.
        self.assertEqual(service.stop(), -signal.SIGTERM)
        self.assertEqual(sock.recv(64), b"STOPPING=1")

    def test_socket_activation_by_name(self):
        """
        The socket unit names its socket (FileDescriptorName=), and ccx takes
        it by that name, as systemd-socket-activate --fdname hands it over.
        """
        name = unit("ccx.socket")["Socket"]["FileDescriptorName"]
        service = ServiceProcess(allow=[], options=["--port", f"systemd:domain=INET:name={name}"])
        service.argv = [
            "systemd-socket-activate",
            "-l",
            f"{HOST}:{service.port}",
            f"--fdname={name}",
            *service.argv,
        ]
        service.start()
        self.addCleanup(service.stop)
        self.assertEqual(service.health()["status"], "ok")
        self.assertEqual(service.stop(), -signal.SIGTERM)


class DocumentationTests(SynchronousTestCase):
    def test_documentation_is_installed(self):
        """
        Every file the unit's Documentation= names, under the prefix its
        comment installs ccx to, is installed there with the package (this
        Python's prefix holds the ccx under test).
        """
        prefix = "file:///opt/ccx/"
        named = unit("ccx.service")["Unit"]["Documentation"].split()
        self.assertTrue(named)
        for url in named:
            self.assertTrue(url.startswith(prefix), url)
            self.assertTrue(
                os.path.isfile(os.path.join(sys.prefix, url[len(prefix):])), url
            )
