"""
A L{ProgramJournal} is the output's backing store (L{IOutputStore}).

Declared here, apart from the journal's own modules, so that they stay
standard-library only (the keeper process imports them without
zope.interface or Twisted).
"""

from zope.interface import classImplements

from ccx.journal.program import ProgramJournal
from ccx.output.interfaces import IOutputStore

classImplements(ProgramJournal, IOutputStore)

__all__ = ["ProgramJournal"]
