"""
The reference a scenario checks the service against: a program run here,
as the service would run it, with its standard output hashed.
"""

import hashlib
import os
import shutil
from typing import Any, Sequence

from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure


def reference_digest(reactor: Any, argv: Sequence[str]) -> Deferred:
    """
    Run C{argv} here, as the service would, and hash its standard output.

    @return: a Deferred firing with C{(sha256 hex digest, size)}.
    """
    protocol = _Hashing()
    reactor.spawnProcess(protocol, shutil.which(argv[0]) or argv[0], list(argv), env=os.environ)
    return protocol.done


class _Hashing(ProcessProtocol):
    def __init__(self) -> None:
        self.done: Deferred = Deferred()
        self._hash = hashlib.sha256()
        self._size = 0

    def connectionMade(self) -> None:
        self.transport.closeStdin()

    def outReceived(self, data: bytes) -> None:
        self._hash.update(data)
        self._size += len(data)

    def processEnded(self, reason: Failure) -> None:
        self.done.callback((self._hash.hexdigest(), self._size))
