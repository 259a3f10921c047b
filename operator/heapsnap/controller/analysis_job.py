"""Comparison and leak suspects for the operator, computed in a child process.

The operator stays small whatever the snapshot size: it starts
``python -m heapsnap.controller.analysis_job`` with a JSON request on stdin, S3
credentials in the environment, and reads one JSON object from stdout: the results, or
``{"error": {"reason", "message"}}``.

Request: ``{"endpoint", "region", "pathStyle", "top", "compare": [base, current] | null,
"leaks": [baseline, target, final] | null}`` (``s3://`` URIs).
"""

from __future__ import annotations

import json
import sys
from typing import Any

from heapsnap.errors import HeapsnapError

_PATH_STEPS = 12


def _top(rows: list[dict[str, Any]], key: str, top: int) -> list[dict[str, Any]]:
    return sorted(rows, key=lambda r: (-abs(int(r.get(key) or 0)), str(r.get("name"))))[:top]


def run_request(request: dict[str, Any]) -> dict[str, Any]:
    from heapsnap.analysis.reader import read_snapshot
    from heapsnap.analysis.s3 import S3Options
    from heapsnap.analysis.views import analyze, compare, find_leaks

    options = S3Options(
        endpoint_url=request.get("endpoint"),
        region=request.get("region"),
        path_style=bool(request.get("pathStyle")),
    )
    top = int(request.get("top") or 10)
    result: dict[str, Any] = {}
    if request.get("compare"):
        base_uri, current_uri = request["compare"]
        comparison = compare(
            read_snapshot(base_uri, s3=options, edges=False),
            read_snapshot(current_uri, s3=options, edges=False),
        )
        data = comparison.to_dict()
        data["classes"] = _top(data["classes"], "sizeDelta", top)
        result["comparison"] = {"baseline": base_uri, "current": current_uri, **data}
    if request.get("leaks"):
        baseline_uri, target_uri, final_uri = request["leaks"]
        baseline = read_snapshot(baseline_uri, s3=options, edges=False)
        target = read_snapshot(target_uri, s3=options, edges=False)
        report = find_leaks(baseline, target, analyze(read_snapshot(final_uri, s3=options))).to_dict()
        suspects = report["suspects"][:top]
        for suspect in suspects:
            suspect["retainerPath"] = suspect["retainerPath"][-_PATH_STEPS:]
        result["leakSuspects"] = {
            "baseline": baseline_uri,
            "target": target_uri,
            "final": final_uri,
            "targetNewObjects": report["targetNewObjects"],
            "leakedObjects": report["leakedObjects"],
            "suspects": suspects,
        }
    return result


def main() -> int:
    try:
        print(json.dumps(run_request(json.load(sys.stdin))))
    except HeapsnapError as error:
        print(json.dumps({"error": {"reason": error.reason, "message": error.message}}))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
