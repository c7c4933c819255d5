"""The periodic check that no task is left without a pre-label and no job is left behind.

Label Studio sends TASKS_CREATED for imports through its API and UI, but not for every
path (storage syncs, tasks made while the backend was down, a lost webhook): so every
RECONCILE_SECONDS the known projects' task counts are compared with what the last
pre-labeling run saw, and lanes with work but no runner (a killed process, a request
that waited for a free runner) are started again.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Callable

from backend.domain.jobs import Kind
from backend.jobs.dispatch import Dispatcher
from backend.labelstudio import client as ls_client
from backend.workflows.triggers import prelabel_due

log = logging.getLogger(__name__)

ORPHAN_CHECK_SECONDS = 5.0


def reconcile_projects(client, dispatcher: Dispatcher) -> list[int]:
    """Request the pre-labeling job where it is due; the projects it was requested for."""
    requested = []
    for project in sorted({project for project, *_ in dispatcher.state.lanes()}):
        try:
            reason = prelabel_due(client, dispatcher.state, project)
        except Exception as exc:  # one project's trouble must not stop the others
            log.warning("reconcile: project %d: %s", project, ls_client.describe_error(exc))
            continue
        if reason:
            log.info("reconcile: project %d: pre-labeling (%s)", project, reason)
            dispatcher.request(project, reason, kind=Kind.PRELABEL)
            requested.append(project)
    return requested


def run_forever(
    dispatcher: Dispatcher, connect: Callable[[], object], stop: threading.Event
) -> None:
    """Recover orphaned lanes every few seconds, reconcile every RECONCILE_SECONDS."""
    every = dispatcher.settings.reconcile_seconds
    since = every  # first reconcile right away
    while not stop.is_set():
        try:
            for project, lane in dispatcher.recover():
                log.info("reconcile: project %d: %s had work and no runner; started", project, lane)
            if since >= every:
                since = 0.0
                reconcile_projects(connect(), dispatcher)
        except Exception as exc:  # Label Studio or Redis away: try at the next tick
            log.warning("reconcile: %s", ls_client.describe_error(exc))
        since += ORPHAN_CHECK_SECONDS
        # Always one tick between passes: a wait chosen from `since` was 0 on every pass
        # once RECONCILE_SECONDS <= ORPHAN_CHECK_SECONDS, a busy loop on Label Studio.
        stop.wait(ORPHAN_CHECK_SECONDS)


def start(dispatcher: Dispatcher, connect: Callable[[], object]) -> threading.Event:
    """The reconcile loop in a daemon thread; set the returned event to stop it."""
    stop = threading.Event()
    threading.Thread(
        target=run_forever, args=(dispatcher, connect, stop), daemon=True, name="reconcile"
    ).start()
    return stop


def main() -> int:
    """`python -m backend.jobs.reconcile`: the embedded mode's reconcile, a process of its
    own beside gunicorn (a thread in the master would fork into workers mid-transaction
    and leave SQLite's locks in them)."""
    from backend.config import load_settings
    from backend.jobs.compose import Parts

    settings = load_settings()
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)s reconcile[%(process)d] %(message)s",
    )
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    parts = Parts(settings)
    run_forever(parts.dispatcher, parts.connect, stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
