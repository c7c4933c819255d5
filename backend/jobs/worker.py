"""A job worker of the distributed mode: `takemeter worker [--queues prelabel,training]`.

Runs on any host that reaches Redis (and the broker), Label Studio, the LLM endpoint and
the shared MODEL_DIR. Start several: each message is run by one of them, a killed one's
messages go to another, and the reconcile runs in each (its requests coalesce). A GPU
host takes training alone with `--queues training`.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

from backend.config import ConfigError, load_settings
from backend.domain.jobs import Lane, RetryPolicy
from backend.jobs import reconcile
from backend.jobs.compose import Parts
from backend.jobs.dispatch import QUEUES, broker
from backend.jobs.lane import declare_actors


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="takemeter worker",
        description="Run pre-labeling and training jobs from the "
        "queue at BROKER_URL (REDIS_URL must be set: the distributed mode).",
    )
    parser.add_argument(
        "--queues",
        default=",".join(QUEUES),
        help="lanes to take, comma-separated (default: %(default)s)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=4,
        help="jobs run at once by this worker (default: %(default)s)",
    )
    parser.add_argument(
        "--no-reconcile", action="store_true", help="do not run the periodic reconcile here"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    if not settings.broker_url:
        print(
            "configuration error: takemeter worker needs REDIS_URL (and BROKER_URL for "
            "RabbitMQ); without them the backend runs its jobs itself",
            file=sys.stderr,
        )
        return 2
    lanes = [lane.strip() for lane in args.queues.split(",") if lane.strip()]
    unknown = sorted(set(lanes) - set(QUEUES))
    if unknown or not lanes:
        print(f"--queues takes {', '.join(QUEUES)}; got {args.queues!r}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)s worker[%(process)d] %(name)s: %(message)s",
    )
    for noisy in ("httpx", "openai", "pika"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    import dramatiq

    queue_broker = broker(settings.broker_url)
    declare_actors(queue_broker, RetryPolicy.from_settings(settings))
    worker = dramatiq.Worker(
        queue_broker, queues={QUEUES[Lane(lane)] for lane in lanes}, worker_threads=args.threads
    )
    worker.start()
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    stop_reconcile = None
    if not args.no_reconcile:
        parts = Parts(settings)
        stop_reconcile = reconcile.start(parts.dispatcher, parts.connect)
    logging.getLogger(__name__).info(
        "worker up: lanes %s, %d threads, broker %s",
        ", ".join(lanes),
        args.threads,
        settings.broker_url.split("@")[-1],
    )
    stop.wait()
    if stop_reconcile is not None:
        stop_reconcile.set()
    worker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
