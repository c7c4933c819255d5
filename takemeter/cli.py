"""The `takemeter` command: one entry point for every tool, `takemeter <command> --help`
for each. Every command takes --json for machine-readable output."""

from __future__ import annotations

import importlib
import sys

from takemeter import common

COMMANDS = {
    "up": (
        "takemeter.local_stack",
        "Label Studio, the backend, the LLM and a demo project on this machine",
    ),
    "serve": ("takemeter.serve", "run the backend under gunicorn"),
    "worker": (
        "backend.jobs.worker",
        "run jobs from the queue (distributed mode: REDIS_URL, BROKER_URL)",
    ),
    "setup": (
        "takemeter.setup_project",
        "create or update a project, import posts, connect the backend",
    ),
    "export": ("takemeter.export", "export annotations (JSONL, CSV, Label Studio JSON)"),
    "evaluate": (
        "takemeter.evaluate",
        "held-out evaluation: fine-tuned model vs zero-shot LLM vs humans",
    ),
    "report": (
        "takemeter.report",
        "what pre-labels did: acceptance, time saved, anchoring, cost (--plan: before a run)",
    ),
    "learning-curve": (
        "takemeter.learning_curve",
        "held-out accuracy of models trained on growing shares",
    ),
    "queue": ("takemeter.review_queue", "the review queue and its disagreements"),
    "label-issues": (
        "takemeter.label_issues",
        "annotated tasks whose label the model and the LLM doubt, ranked",
    ),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {about}" for name, (_, about) in COMMANDS.items()]
    return (
        "usage: takemeter <command> [options]   (takemeter <command> --help)\n\n"
        "commands:\n" + "\n".join(lines)
    )


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        sys.exit(0 if argv else common.EXIT_FAILURE)
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(usage(), file=sys.stderr)
        common.fail(f"unknown command {name!r}")
    module = importlib.import_module(COMMANDS[name][0])
    sys.argv[0] = f"takemeter {name}"  # argparse shows it in usage lines
    common.run(lambda: module.main(rest))
