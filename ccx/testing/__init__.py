"""
The toolkit for driving a ccx service from outside, shared by the
benchmarks (C{bench/}), the stress tool (L{ccx.stress}) and the tests:
starting a service as a child process and stopping it with everything it
started, the figures C{/proc} gives about it, the machine a run is on, free
ports and waiting for a condition.

Only clients import this package; the service never does (its modules may
need C{psutil}, which the service does not depend on).
"""
