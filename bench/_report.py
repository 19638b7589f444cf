"""
The benchmarks' reports: the human-readable lines, then one JSON line; the
figures' sizes and rounding.
"""

import json
from typing import Any, Iterable, Sequence, Tuple

import _checkout  # noqa: F401  (puts ccx.testing on the path)

from ccx.testing.proc import MIB

GIB = 1024 * MIB


def percentile(values: Sequence[float], fraction: float) -> float:
    """
    The nearest-rank percentile of C{values} (0 < fraction <= 1).
    """
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * fraction // 1))
    return ordered[int(rank) - 1]


def print_report(title: str, rows: Iterable[Tuple[str, Any]], record: dict) -> None:
    """
    Print C{rows} as aligned C{label: value} lines under C{title}, then
    C{record} as one JSON line.
    """
    rows = list(rows)
    width = max((len(label) for label, _ in rows), default=0)
    print()
    print(title)
    print("-" * len(title))
    for label, value in rows:
        print(f"  {label.ljust(width)}  {value}")
    print()
    print(json.dumps(record, sort_keys=True), flush=True)


def rounded(value: float, digits: int = 2) -> float:
    return round(value, digits)
