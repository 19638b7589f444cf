"""
The modules a Twisted-free process (the keeper, which holds durable programs
while ccx is away) imports: the journal and the cgroups.  Imported in a
fresh interpreter, they load no Twisted, zope.interface, Autobahn or any
ccx module beyond themselves.
"""

import os
import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

STANDALONE = (
    "ccx.journal",
    "ccx.journal.program",
    "ccx.journal.record",
    "ccx.journal.statedir",
    "ccx.journal.stream",
    "ccx.process.cgroup",
    "ccx.process.terminal",
)
# The packages they sit in (their __init__ modules, docstrings only).
PACKAGES = ("ccx", "ccx.process")
FOREIGN = ("twisted", "zope", "autobahn", "txaio", "orjson", "prometheus_client", "treq")


def loaded_by(modules) -> list:
    """
    The modules a fresh interpreter holds after importing C{modules}.
    """
    script = "import sys\n" + "".join(f"import {m}\n" for m in modules) + (
        "print('\\n'.join(sorted(sys.modules)))\n"
    )
    return subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        check=True,
        text=True,
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=ROOT),
    ).stdout.split()


class StandaloneTests(SynchronousTestCase):
    def test_journal_and_cgroups_import_no_twisted(self):
        loaded = loaded_by(STANDALONE)
        for name in STANDALONE:
            self.assertIn(name, loaded)
        foreign = [
            name
            for name in loaded
            if name.split(".")[0] in FOREIGN
            or (name.split(".")[0] == "ccx" and name not in STANDALONE + PACKAGES)
        ]
        self.assertEqual(foreign, [])

    def test_the_check_sees_twisted(self):
        """The near miss: the store declaration (zope.interface, the output's interfaces) is caught."""
        loaded = loaded_by(["ccx.journal.store"])
        self.assertIn("zope.interface", loaded)
        self.assertIn("ccx.output.interfaces", loaded)
