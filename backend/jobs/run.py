"""The embedded mode's runner process: `python -m backend.jobs.run <lane> <project>
[--lock-fd=N]`, started by dispatch.start_runner (or by hand). It works through the
lane's pending bits (lane.work), then starts what waited for a free runner.
"""

from __future__ import annotations

import logging
import sys

from backend.config import load_settings
from backend.jobs.compose import Parts
from backend.jobs.dispatch import LOCK_FD
from backend.jobs.lane import work
from backend.jobs.state import FileLease, JobStore, Lease


def handed_lease(state: JobStore, project: int, lane: str, args: list[str]) -> Lease | None:
    """The lease start_runner handed over (--lock-fd=N), else (a runner started by hand)
    one taken here, or None when another runner has it."""
    for arg in args:
        if arg.startswith(LOCK_FD):
            return FileLease(project, lane, open(int(arg[len(LOCK_FD) :]), "a+"))
    return state.acquire(project, lane)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    lane, project = argv[0], int(argv[1])
    settings = load_settings()
    logging.basicConfig(
        level=settings.log_level,
        format=f"%(asctime)s %(levelname)s {lane}[%(process)d] %(message)s",
    )
    parts = Parts(settings)
    lease = handed_lease(parts.jobs, project, lane, argv[2:])
    if lease is None:
        return 0  # another runner owns this lane and will see the pending request
    try:
        work(settings, parts.jobs, lease, predictor=parts.predictor)
    finally:
        lease.release()
    parts.dispatcher.recover()  # start what waited for a free runner
    return 0


if __name__ == "__main__":
    sys.exit(main())
