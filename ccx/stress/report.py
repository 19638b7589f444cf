"""
What a scenario found, and the report: one line per scenario, then one JSON
line with every figure.
"""

from dataclasses import dataclass, field
from typing import Any, Dict, List, Sequence

from ccx.testing.machine import machine

MIB = 1024 * 1024


@dataclass
class Result:
    """
    The outcome of one scenario.

    @ivar summary: the key figures, in words, for the report line.
    @ivar figures: the same and more, for the JSON line.
    @ivar problems: what went wrong; the scenario passed if there is none.
    """

    name: str
    summary: str = ""
    figures: Dict[str, Any] = field(default_factory=dict)
    problems: List[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return not self.problems

    def check(self, condition: bool, problem: str) -> None:
        """
        Record C{problem} unless C{condition} holds.
        """
        if not condition:
            self.problems.append(problem)

    def as_dict(self) -> Dict[str, Any]:
        return {
            "name": self.name,
            "passed": self.passed,
            "seconds": round(self.seconds, 2),
            "figures": self.figures,
            "problems": self.problems,
        }


# Problems shown under a failed scenario's line (all are in the JSON line).
SHOWN_PROBLEMS = 8


def format_result(result: Result, width: int = 9) -> str:
    """
    C{PASS  name  summary  (seconds)}, and the first problems on the lines
    below when it failed.
    """
    verdict = "PASS" if result.passed else "FAIL"
    line = f"{verdict}  {result.name.ljust(width)}  {result.summary}  ({result.seconds:.1f} s)"
    shown = [f"      - {problem}" for problem in result.problems[:SHOWN_PROBLEMS]]
    if len(result.problems) > SHOWN_PROBLEMS:
        shown.append(f"      - ... and {len(result.problems) - SHOWN_PROBLEMS} more")
    return "\n".join([line, *shown])


def record(profile: str, seed: int, results: Sequence[Result], **extra: Any) -> Dict[str, Any]:
    """
    Everything, for the JSON line.
    """
    return {
        "profile": profile,
        "seed": seed,
        "passed": all(r.passed for r in results),
        "machine": machine(),
        "scenarios": [r.as_dict() for r in results],
        **extra,
    }


def mib(size: float) -> float:
    return round(size / MIB, 2)
