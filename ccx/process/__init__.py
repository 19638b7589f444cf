"""
Running programs: the allow-list, spawning into a process group of their own,
the managed process's state machine, and the registry of processes.
"""
