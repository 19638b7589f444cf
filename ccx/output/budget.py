"""
The output one service holds for its subscribers, and its limit.
"""

from typing import TYPE_CHECKING, Dict

if TYPE_CHECKING:  # pragma: no cover
    from ccx.output.fanout import ProcessOutput


class OutputBudget:
    """
    The bytes held by every L{ProcessOutput} of a service, bounded by
    C{max_bytes}.

    Past the bound, the output of finished processes is released: the
    oldest finished first, and within it the oldest bytes first, just
    enough to come back under the bound.  Its subscribers then get an
    exact L{ccx.output.events.OutputDropped} for what they had not read,
    and go on.  A running program's output is never released here: it is
    bounded per program by its buffer (and block mode promises to lose
    nothing), so the total held stays under C{max_bytes}, or under what
    the running programs hold when that alone is more.

    @ivar held_bytes: bytes held now, by all the outputs reporting here.
    @ivar released_bytes: bytes released to keep within C{max_bytes}.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.held_bytes = 0
        self.released_bytes = 0
        # Finished outputs that hold something, oldest finished first
        # (dicts keep insertion order).
        self._finished: Dict["ProcessOutput", None] = {}
        self._releasing = False

    def change(self, delta: int) -> None:
        """
        An output now holds C{delta} more (or, negative, fewer) bytes.
        """
        self.held_bytes += delta
        if delta > 0:
            self._release()

    def finished(self, output: "ProcessOutput") -> None:
        """
        C{output}'s process is over: what it holds may be released.
        """
        self._finished[output] = None
        self._release()

    def forget(self, output: "ProcessOutput") -> None:
        """
        C{output} is no longer kept (it reports having released what it held).
        """
        self._finished.pop(output, None)

    @property
    def finished_count(self) -> int:
        """
        How many finished outputs hold something the budget may release.
        """
        return len(self._finished)

    def _release(self) -> None:
        # Releasing reports back through change(): do not start again from
        # inside.
        if self._releasing:
            return
        self._releasing = True
        try:
            while self.held_bytes > self.max_bytes and self._finished:
                output = next(iter(self._finished))
                released = output.shed(self.held_bytes - self.max_bytes)
                self.released_bytes += released
                if not released:
                    del self._finished[output]
        finally:
            self._releasing = False
