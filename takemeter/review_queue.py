"""The review queue of a project: where the fine-tuned model and the zero-shot LLM disagree,
which label pairs they disagree on most (with example posts), and an export of the queue
with both labels, the model's probabilities and the priority.

Reads the backend's GET /queue (built after each promoted training run), so it works
wherever the backend is reachable:

    takemeter queue --project 1
    takemeter queue --project 1 --export queue.csv   (or .jsonl)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import requests

from backend.files import write_text_atomic


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--project", type=int, required=True, help="Label Studio project id")
    parser.add_argument(
        "--backend-url", default=os.environ.get("BACKEND_URL", "http://127.0.0.1:9090")
    )
    parser.add_argument("--export", type=Path, help="write the queue to a .csv or .jsonl file")
    parser.add_argument(
        "--all", action="store_true", help="export every unlabeled task, not only the queued ones"
    )
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = parser.parse_args(argv)

    auth = None
    if os.environ.get("BASIC_AUTH_USER"):
        auth = (os.environ["BASIC_AUTH_USER"], os.environ.get("BASIC_AUTH_PASS", ""))
    try:
        response = requests.get(
            f"{args.backend_url}/queue", params={"project": args.project}, auth=auth, timeout=60
        )
    except requests.RequestException as exc:
        print(f"cannot reach the backend at {args.backend_url}: {exc}", file=sys.stderr)
        return 2
    if response.status_code != 200:
        message = (
            response.json().get("error")
            if response.headers.get("content-type", "").startswith("application/json")
            else response.text[:200]
        )
        print(f"the backend answered {response.status_code}: {message}", file=sys.stderr)
        return 2
    summary = response.json()
    rows = summary["rows"] if args.all else [r for r in summary["rows"] if r["in_queue"]]
    if args.export and args.export.suffix == ".jsonl":
        write_text_atomic(args.export, "".join(json.dumps(row) + "\n" for row in rows))
    elif args.export and args.export.suffix == ".csv":
        params = {"project": args.project, "format": "csv", **({"all": 1} if args.all else {})}
        write_text_atomic(
            args.export,
            requests.get(f"{args.backend_url}/queue", params=params, auth=auth, timeout=60).text,
        )
    elif args.export:
        print("--export must end in .csv or .jsonl", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({k: v for k, v in summary.items() if k != "rows"}, indent=2))
        return 0
    print(
        f"model version {summary['model_version']}: {summary['unlabeled']} unlabeled tasks, "
        f"{summary['in_queue']} in the review queue, {summary['disagreements']} "
        f"model-vs-LLM disagreements"
    )
    for pair in summary["pairs"]:
        print(
            f"\n  LLM says {pair['llm_label']}, model says {pair['model_label']}: "
            f"{pair['count']} posts"
        )
        for text in pair["examples"]:
            print(f"    - {text[:160]}")
    if args.export:
        print(f"\nwrote {len(rows)} rows to {args.export}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
