"""
The systemd unit runs ccx the way the service expects to be run.
"""

import configparser
import os
import shutil
import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

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
