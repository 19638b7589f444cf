"""
What C{twistd ccx} runs: L{Options} and L{makeService}.
"""

from ccx.config import Options
from ccx.service import CCXService, show_refusals_briefly

__all__ = ["Options", "makeService"]


def makeService(options: Options) -> CCXService:
    # Under twistd, a refused start is one line, not a traceback.
    show_refusals_briefly()
    return CCXService(options.config)
