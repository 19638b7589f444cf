"""
The state dir: a format version, and a directory per program.

    STATE_DIR/format                    "ccx-state 1"
    STATE_DIR/programs/ID/record.json   the program's record (Record)
    STATE_DIR/programs/ID/stdout/       its stdout journal: N.out, N.idx
    STATE_DIR/programs/ID/stderr/       its stderr journal
    STATE_DIR/programs/ID/pty/          instead of both, a program on a terminal's
"""

import os
import shutil
import stat
from typing import List, Optional, Tuple

from ccx.journal.program import STREAMS, ProgramJournal, Space
from ccx.journal.record import RECORD_NAME, Record, RecordError, read_record
from ccx.journal.stream import Write

FORMAT_NAME = "format"
FORMAT_TAG = "ccx-state"
# The layout this release writes; it reads every version up to it.
FORMAT_VERSION = 1
PROGRAMS = "programs"


class StateDirError(Exception):
    """
    The state dir cannot be used: the message says why, in plain words.
    """


def default_state_dir(environ: Optional[dict] = None) -> str:
    """
    Where the state dir is by default: systemd's C{$STATE_DIRECTORY}
    (C{StateDirectory=ccx}; the first when it names several), else
    C{$XDG_STATE_HOME/ccx}, else C{~/.local/state/ccx}.
    """
    environ = os.environ if environ is None else environ
    systemd = environ.get("STATE_DIRECTORY")
    if systemd:
        return systemd.split(":")[0]
    xdg = environ.get("XDG_STATE_HOME")
    if xdg and os.path.isabs(xdg):
        return os.path.join(xdg, "ccx")
    return os.path.join(os.path.expanduser("~"), ".local", "state", "ccx")


class StateDir:
    """
    One service's state dir, opened (created when missing) and checked.

    @param journal_bytes: the most output journaled per program.
    @param total_bytes: the most output journaled by all programs together.
    @param write: how journal bytes are written (C{os.write}).
    @ivar space: the L{Space} that bounds the total.
    """

    def __init__(
        self,
        path: str,
        journal_bytes: int,
        total_bytes: int,
        write: Write = os.write,
    ) -> None:
        self.path = os.path.abspath(path)
        self.journal_bytes = journal_bytes
        self.space = Space(total_bytes)
        self._write = write
        self.programs = os.path.join(self.path, PROGRAMS)

    @property
    def segment_bytes(self) -> int:
        """
        Segments of an eighth of a program's limit (eviction is exact to
        the byte but frees that much at once), between 4 KiB and 16 MiB.
        """
        return max(4096, min(16 * 1024 * 1024, self.journal_bytes // 8))

    def open(self) -> "StateDir":
        """
        Create the state dir, or check that this release can read it.

        @raise StateDirError: when it cannot be created or written, or a
            later release's format is in it.
        """
        try:
            os.makedirs(self.programs, mode=0o700, exist_ok=True)
            self._check_owned()
            version = self._read_format()
            if version is None:
                with open(os.path.join(self.path, FORMAT_NAME), "w") as f:
                    f.write(f"{FORMAT_TAG} {FORMAT_VERSION}\n")
            else:
                self._check_writable()
        except OSError as e:
            raise StateDirError(f"state dir {self.path}: {e.strerror}") from None
        if version is not None and version > FORMAT_VERSION:
            raise StateDirError(
                f"state dir {self.path} was written by a later ccx (format {version}; "
                f"this one reads up to {FORMAT_VERSION}): give another --state-dir"
            )
        return self

    def _check_owned(self) -> None:
        """
        The state dir and its C{programs/} must be this user's, and not
        writable by every user (a C{/tmp}-like directory): whoever else
        could write there could plant links that this service, root
        perhaps, would write through, or records and journals it would
        serve as its own.  (Group write is left to whoever shares a group
        on purpose.)

        @raise StateDirError: when they are not.
        """
        for path, status in ((self.path, os.stat(self.path)), (self.programs, os.lstat(self.programs))):
            if not stat.S_ISDIR(status.st_mode):
                raise StateDirError(f"state dir {path}: not a directory")
            if status.st_uid != os.geteuid():
                raise StateDirError(
                    f"state dir {path} belongs to uid {status.st_uid}, not to this "
                    f"user (uid {os.geteuid()}): give a state dir of your own"
                )
            if status.st_mode & stat.S_IWOTH:
                raise StateDirError(
                    f"state dir {path} may be written by every user "
                    f"(mode {stat.S_IMODE(status.st_mode):o}): chmod o-w it, or give "
                    "another --state-dir"
                )

    def _check_writable(self) -> None:
        """
        Make and remove a file where programs' directories go: a state dir
        already there may have become read-only (a mount, a permission), and
        would otherwise fail each program in turn.

        @raise OSError: when it cannot be written.
        """
        probe = os.path.join(self.programs, f".probe-{os.getpid()}")
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600))
        os.unlink(probe)

    def _read_format(self) -> Optional[int]:
        try:
            with open(os.path.join(self.path, FORMAT_NAME)) as f:
                text = f.read().split()
        except FileNotFoundError:
            return None
        if len(text) != 2 or text[0] != FORMAT_TAG or not text[1].isdigit():
            raise StateDirError(
                f"state dir {self.path}: {FORMAT_NAME} does not say '{FORMAT_TAG} N': "
                "not a ccx state dir?"
            )
        return int(text[1])

    def directory(self, process_id: str) -> str:
        return os.path.join(self.programs, process_id)

    def create(self, process_id: str, streams: Tuple[str, ...] = STREAMS) -> ProgramJournal:
        """
        A new program's journal, with a journal for each of C{streams}.

        @raise OSError: when it cannot be created.
        """
        journal = ProgramJournal.create(
            self.directory(process_id),
            self.journal_bytes,
            self.segment_bytes,
            self.space,
            self._write,
            streams,
        )
        self.space.add(journal)
        return journal

    def load(self, process_id: str, streams: Optional[Tuple[str, ...]] = None) -> ProgramJournal:
        """
        The journal a program left (by this service or an earlier one).

        @param streams: its streams, as its record says (see
            L{ProgramJournal.open}).

        @raise OSError: when it cannot be read.
        """
        journal = ProgramJournal.open(
            self.directory(process_id),
            self.journal_bytes,
            self.segment_bytes,
            self.space,
            self._write,
            streams,
        )
        self.space.add(journal)
        return journal

    def records(self) -> List[Record]:
        """
        Every readable record, oldest started first; a directory whose
        record cannot be read is skipped (and left alone).
        """
        found = []
        for name in sorted(os.listdir(self.programs)):
            try:
                record = read_record(self.directory(name))
            except RecordError:
                continue
            if record.process_id == name:
                found.append(record)
        found.sort(key=lambda r: (r.started_at or 0.0, r.process_id))
        return found

    def finished_records(self) -> List[Record]:
        return [r for r in self.records() if r.finished]

    def unfinished_records(self) -> List[Record]:
        """
        Programs that were still running when the service that started them
        stopped: left for whoever re-adopts them.
        """
        return [r for r in self.records() if not r.finished]

    def remove(self, process_id: str) -> None:
        directory = self.directory(process_id)
        try:
            # Most programs' directories hold their record alone (streams
            # that printed nothing make no files): two calls, not a walk.
            os.unlink(os.path.join(directory, RECORD_NAME))
            os.rmdir(directory)
        except OSError:
            shutil.rmtree(directory, ignore_errors=True)
