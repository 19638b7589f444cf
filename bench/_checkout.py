"""
Which checkouts the benchmarks use: the client side (L{ccx.testing}) comes
from the checkout that holds these scripts; the service is run from
C{$CCX_CHECKOUT} when set (to compare a change against it), else from the
same one.
"""

import os
import sys

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO = os.environ.get("CCX_CHECKOUT") or HERE

if HERE not in sys.path:
    sys.path.insert(0, HERE)
