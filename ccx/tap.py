"""
What C{twistd ccx} runs: L{Options} and L{makeService}.
"""

from ccx.config import Options
from ccx.service import CCXService

__all__ = ["Options", "makeService"]


def makeService(options: Options) -> CCXService:
    return CCXService(options.config)
