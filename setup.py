import glob
import re

from setuptools import find_packages, setup

with open("ccx/__init__.py", encoding="utf-8") as f:
    __version__ = re.search(r'__version__ = "([^"]+)"', f.read()).group(1)

setup(
    name="ccx",
    version=__version__,
    description="Run and steer long-running programs over a WebSocket speaking JSON-RPC 2.0",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    packages=find_packages(include=["ccx", "ccx.*"]) + ["twisted.plugins"],
    # The dashboard's files (ccx/web/dashboard/static), vendored
    # JavaScript and its licences included: nothing is fetched at install.
    package_data={
        "twisted": ["plugins/ccx_plugin.py"],
        "ccx.web.dashboard": ["static/*", "static/vendor/*", "static/vendor/*/*"],
    },
    # Installed beside the package (PREFIX/share/doc/ccx), where the systemd
    # unit's Documentation= points.
    data_files=[("share/doc/ccx", ["README.md", *sorted(glob.glob("docs/*.md"))])],
    install_requires=[
        "twisted[tls]>=24.3",
        "autobahn>=24.4",
        "txaio",
        "zope.interface",
        "treq",
        "prometheus_client",
        "orjson",
        "tomli; python_version < '3.11'",
    ],
    extras_require={
        # psutil: the client-side toolkit (ccx.testing) the tests, the
        # benchmarks and the stress tool share; the service never needs it.
        # playwright: the dashboard's browser tests, driving Debian's
        # chromium (scripts/ensure-chromium.sh), never a downloaded browser.
        "test": [
            "websockets>=12",
            "hypothesis",
            "mcp>=2; python_version >= '3.10'",
            "psutil",
            "playwright",
        ],
        "stress": ["psutil"],
        "bench": ["psutil"],
    },
    entry_points={
        "console_scripts": ["ccx = ccx.cli.main:main"],
    },
    classifiers=[
        "Framework :: Twisted",
        "Programming Language :: Python :: 3",
        "Operating System :: POSIX :: Linux",
    ],
)
