"""
The machine a benchmark or a stress run is on, for its report.
"""

import os
import platform
import sys
from typing import Any, Dict

import psutil
import twisted

from ccx.testing.proc import MIB


def cpu_model() -> str:
    """
    The CPU's model name, as the kernel gives it (psutil does not).
    """
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def machine() -> Dict[str, Any]:
    """
    The facts about this machine that the figures depend on.
    """
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model(),
        "memory_gib": round(psutil.virtual_memory().total / MIB / 1024, 1),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "twisted": twisted.__version__,
    }
