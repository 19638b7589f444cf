"""
Judge the reports of Autobahn|Testsuite fuzzingclient runs.

    python tests/conformance/check_report.py [--close-only] SPEC.json...

reads the report (C{index.json} in the spec's C{outdir}) of each spec, and
prints, for each agent (server), its case count and the counts of each
behaviour and closing behaviour (an agent run in several specs, shards of
one run, is summed up), then every case that is not accepted, with the
suite's own explanation. Exits 1 if a case is not accepted, or if a spec has
no report, an agent of it no result or a case pattern of it no case.

Accepted:
  - C{behavior}: OK, NON-STRICT or INFORMATIONAL (not checked with
    C{--close-only}, for servers that answer but do not echo);
  - C{behaviorClose}: OK or INFORMATIONAL.

With C{--close-only} it also says, without judging, how many cases get what
the suite expects once the server's JSON-RPC messages are set aside.
"""

import argparse
import json
import os
import re
import sys
from collections import Counter
from typing import Dict, List

ACCEPTED_BEHAVIOR = ("OK", "NON-STRICT", "INFORMATIONAL")
ACCEPTED_CLOSE = ("OK", "INFORMATIONAL")


def case_key(case_id: str):
    return tuple(int(part) for part in case_id.split("."))


def counts(results: Dict[str, dict], field: str) -> str:
    tally = Counter(result[field] for result in results.values())
    return ", ".join(f"{name} {count}" for name, count in sorted(tally.items()))


def details(result: dict) -> dict:
    """
    The case's own report (its C{result} and C{resultClose} say why).
    """
    try:
        with open(os.path.join(result["outdir"], result["reportfile"]), encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError, KeyError):
        return {}


def check_agent(agent: str, results: Dict[str, dict], close_only: bool) -> List[str]:
    """
    Print the agent's summary.

    @return: a line for each case that is not accepted.
    """
    print(f"{agent}: {len(results)} cases")
    print(f"  behavior:      {counts(results, 'behavior')}")
    print(f"  behaviorClose: {counts(results, 'behaviorClose')}")
    noted: Dict[str, List[str]] = {}
    failures = []
    for case_id in sorted(results, key=case_key):
        result = results[case_id]
        behavior, close = result["behavior"], result["behaviorClose"]
        if behavior in ("NON-STRICT", "INFORMATIONAL"):
            noted.setdefault(behavior, []).append(case_id)
        bad_behavior = not close_only and behavior not in ACCEPTED_BEHAVIOR
        if bad_behavior or close not in ACCEPTED_CLOSE:
            report = details(result)
            failures.append(
                f"{agent} {case_id}: behavior {behavior}, behaviorClose {close}, "
                f"remote close code {result.get('remoteCloseCode')}\n"
                f"    expected: {report.get('expectation', '?')}\n"
                f"    result: {report.get('result', '?')}\n"
                f"    closing: {report.get('resultClose', '?')}"
            )
    if close_only:
        print(f"  behavior with JSON-RPC messages set aside: {jsonrpc_aside(results)}")
    else:
        for behavior, case_ids in sorted(noted.items()):
            print(f"  {behavior}: {' '.join(case_ids)}")
    return failures


def is_jsonrpc(event: list) -> bool:
    # The report truncates long payloads, so the message cannot be parsed.
    return event[0] == "message" and not event[2] and event[1].startswith('{"jsonrpc":"2.0"')


def jsonrpc_aside(results: Dict[str, dict]) -> str:
    """
    For a server that answers JSON-RPC instead of echoing (not judged): how
    many FAILED cases get what the suite expects once the JSON-RPC messages
    (ccx's C{connected} notification, its error replies) are set aside, how
    many expected an echo, and which are neither.
    """
    tally: Counter = Counter()
    neither = []
    for case_id in sorted(results, key=case_key):
        if results[case_id]["behavior"] != "FAILED":
            continue
        report = details(results[case_id])
        expected = list(report.get("expected", {}).values())
        received = [event for event in report.get("received", []) if not is_jsonrpc(event)]
        if received in expected:
            tally["as expected"] += 1
        elif expected and all(any(e[0] == "message" for e in events) for events in expected):
            tally["expected an echo"] += 1
        else:
            tally["neither"] += 1
            neither.append(case_id)
    text = ", ".join(f"{name} {count}" for name, count in sorted(tally.items()))
    return text + (f" ({' '.join(neither)})" if neither else "")


def pattern_matches(pattern: str, case_id: str) -> bool:
    # As the suite reads its spec's case patterns.
    return re.match(pattern.replace(".", r"\.").replace("*", ".*"), case_id) is not None


def read_results(spec_path: str, results: Dict[str, Dict[str, dict]]) -> List[str]:
    """
    Add the results of one spec's run to C{results} (agent -> case -> result).

    @return: what is missing from the run.
    """
    with open(spec_path, encoding="utf-8") as f:
        spec = json.load(f)
    index = os.path.join(spec["outdir"], "index.json")
    try:
        with open(index, encoding="utf-8") as f:
            report = json.load(f)
    except OSError as e:
        return [f"{spec_path}: no report: {index}: {e.strerror}"]
    missing = []
    run = set()
    for server in spec["servers"]:
        agent = server["agent"]
        if not report.get(agent):
            missing.append(f"{spec_path}: no case was run against {agent}")
            continue
        for case_id, result in report[agent].items():
            results.setdefault(agent, {})[case_id] = dict(result, outdir=spec["outdir"])
            run.add(case_id)
    for pattern in spec["cases"]:
        if not any(pattern_matches(pattern, case_id) for case_id in run):
            missing.append(f"{spec_path}: no case of {pattern} was run")
    return missing


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--close-only", action="store_true", help="judge closing behaviour only")
    parser.add_argument("specs", nargs="+", metavar="SPEC", help="a fuzzingclient spec that was run")
    args = parser.parse_args(argv)

    results: Dict[str, Dict[str, dict]] = {}
    failures = []
    for spec in args.specs:
        failures += read_results(spec, results)
    for agent, agent_results in results.items():
        failures += check_agent(agent, agent_results, args.close_only)
    for failure in failures:
        print("NOT ACCEPTED " + failure)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
