"""
Durable programs in ccx: the link to the keeper (L{ccx.keeper}) and the
process transport of a program it holds, whose output ccx reads from the
program's journal.  Core: no wire format here.
"""
