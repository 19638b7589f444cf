"""
C{python -m ccx}: the same command-line client as the C{ccx} console script.
"""

from ccx.cli.main import main

if __name__ == "__main__":
    main()
