"""
The journal on disk: each program's record and output, in the state dir.

Standard library only: the keeper process, which writes the journals of
durable programs while ccx is away, imports it without Twisted.
"""
