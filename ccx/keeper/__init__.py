"""
The keeper: one small process per state directory that starts durable
programs, holds their pipes, writes their output to their journal and
records how they end, while ccx comes and goes (docs/architecture.md,
"Programs that outlive ccx").

Standard library only: it must stay small, and it runs with C{python -S}.
"""
