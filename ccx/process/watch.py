"""
Who hears of every process's changes of state, whoever started it: what a
dashboard needs to keep its table of programs live.
"""

from typing import Any, Callable, List

# What happens to a process, as observers are told it.
STARTED = "started"
ENDED = "ended"
FORGOTTEN = "forgotten"

Observer = Callable[[str, Any], None]


class ProcessWatch:
    """
    The observers of a registry's processes.  Each is called with what
    happened (L{STARTED} once it runs, C{paused}, C{resumed},
    C{cancelled}, L{ENDED} once finished, L{FORGOTTEN}) and the process.
    An observer must not raise; it is called where the change happens.
    """

    def __init__(self) -> None:
        self._observers: List[Observer] = []

    def __len__(self) -> int:
        return len(self._observers)

    def add(self, observer: Observer) -> None:
        self._observers.append(observer)

    def remove(self, observer: Observer) -> None:
        if observer in self._observers:
            self._observers.remove(observer)

    def notify(self, event: str, process: Any) -> None:
        for observer in list(self._observers):
            observer(event, process)
