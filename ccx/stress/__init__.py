"""
The ccx stress suite: named scenarios run against a ccx service over
loopback, each checking every byte it is sent, with a report at the end.

Run it with C{python -m ccx.stress} (see C{--help} and C{docs/stress.md}).
"""
