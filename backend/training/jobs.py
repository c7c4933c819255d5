"""Training triggers, coalescing and status, shared by every gunicorn worker.

State lives in MODEL_DIR/jobs.sqlite; one runner process per project holds an flock on
the project's train lock (Registry.lock_file) while it works. A trigger sets `pending` and starts a
runner unless one holds the lock; the runner trains while `pending` is set, so a click or
an annotation burst during a run becomes exactly one follow-up run. The runner gives up
its lock inside the same transaction that finds nothing pending, so no trigger is lost.
A SIGKILLed runner drops its lock with its process.

`pending` is a set of bits: TRAIN (a run was asked for) and RESCORE (a version was
promoted by hand; re-score the unlabeled tasks). A training run re-scores by itself.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import closing, contextmanager
from pathlib import Path

from backend.config import Settings
from backend.model.registry import Registry

log = logging.getLogger(__name__)

TRAIN = 1
RESCORE = 2


class JobState:
    def __init__(self, model_dir: Path) -> None:
        self.model_dir = model_dir
        self.path = model_dir / "jobs.sqlite"
        model_dir.mkdir(parents=True, exist_ok=True)
        with self.transaction() as db:
            db.execute("CREATE TABLE IF NOT EXISTS projects (project INTEGER PRIMARY KEY, "
                       "pending INTEGER DEFAULT 0, since_run INTEGER DEFAULT 0, "
                       "status TEXT DEFAULT '{}', updated REAL DEFAULT 0)")

    @contextmanager
    def transaction(self):
        """An immediate (write-locked) transaction: check-and-set across processes."""
        with closing(sqlite3.connect(self.path, timeout=30, isolation_level=None)) as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def lock_path(self, project: int, *, create: bool = True) -> Path:
        return Registry(self.model_dir, project).lock_file("train", create=create)

    def runner_alive(self, project: int) -> bool:
        path = self.lock_path(project, create=False)
        if not path.exists():
            return False
        with open(path, "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(handle, fcntl.LOCK_UN)
            return False

    def _row(self, db: sqlite3.Connection, project: int) -> tuple[int, int, dict]:
        db.execute("INSERT OR IGNORE INTO projects (project) VALUES (?)", (project,))
        pending, since, status = db.execute(
            "SELECT pending, since_run, status FROM projects WHERE project = ?",
            (project,)).fetchone()
        return pending, since, json.loads(status or "{}")

    def status(self, project: int) -> dict:
        with self.transaction() as db:
            pending, since, status = self._row(db, project)
        status = {"state": "idle", **status, "pending": bool(pending),
                  "annotations_since_last_run": since}
        stale = status["state"] == "running" or (status["state"] == "queued" and not pending)
        if stale and not self.runner_alive(project):
            status = {**status, "state": "failed",
                      "reason": "the training process ended unexpectedly"}
        return status

    def set_status(self, project: int, **fields: object) -> dict:
        with self.transaction() as db:
            _, _, status = self._row(db, project)
            status.update(fields, updated=time.time())
            db.execute("UPDATE projects SET status = ?, updated = ? WHERE project = ?",
                       (json.dumps(status), time.time(), project))
        return status

    def request(self, project: int, reason: str, *, kind: int = TRAIN) -> None:
        """Ask for a run: now if no runner works on the project, else right after."""
        with self.transaction() as db:
            _, _, status = self._row(db, project)
            fields = {"requested_by": reason, "requested_at": time.time()}
            if status.get("state") != "running":
                fields["state"] = "queued"
            status.update(fields)
            db.execute("UPDATE projects SET pending = pending | ?, since_run = 0, status = ? "
                       "WHERE project = ?", (kind, json.dumps(status), project))

    def count_annotation(self, project: int, threshold: int) -> bool:
        """Count a new, changed or deleted annotation; True when it reaches the threshold."""
        with self.transaction() as db:
            _, since, _ = self._row(db, project)
            since += 1
            db.execute("UPDATE projects SET since_run = ? WHERE project = ?", (since, project))
        return since >= threshold

    def take_pending(self, project: int, handle) -> int:
        """Runner side: take and clear the pending bits, or release the lock when there is
        nothing to do (both inside one transaction, see the module docstring)."""
        with self.transaction() as db:
            pending, _, _ = self._row(db, project)
            if pending:
                db.execute("UPDATE projects SET pending = 0 WHERE project = ?", (project,))
                return pending
            fcntl.flock(handle, fcntl.LOCK_UN)
            return 0


    def projects(self) -> list[tuple[int, int]]:
        """(project, pending bits) of every project with a row."""
        with self.transaction() as db:
            return list(db.execute("SELECT project, pending FROM projects"))

    def live_runners(self) -> int:
        return sum(self.runner_alive(project) for project, _ in self.projects())


LOCK_FD = "--lock-fd="


def start_runner(settings: Settings, state: JobState, project: int) -> bool:
    """Start a runner process for `project` unless one is alive or MAX_TRAINING_RUNNERS
    are busy (then the request waits: a runner that finishes starts the waiting ones).
    A fresh interpreter (spawn, not fork): CUDA and forked gunicorn workers do not mix.

    The project's lock is taken here and handed to the runner (--lock-fd), so a runner
    counts as busy from its start, not seconds later once its imports are done; and one
    start at a time (runners.lock) across workers and runners, so the count is right."""
    with open(settings.model_dir / "runners.lock", "a+") as starting:
        fcntl.flock(starting, fcntl.LOCK_EX)
        if state.runner_alive(project):
            return False
        busy = state.live_runners()
        if busy >= settings.max_training_runners:
            log.info("project %d: training waits, %d of MAX_TRAINING_RUNNERS=%d runners "
                     "busy", project, busy, settings.max_training_runners)
            return False
        with open(state.lock_path(project), "a+") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False  # a runner started by hand took it meanwhile
            log_dir = settings.model_dir / "logs"
            log_dir.mkdir(parents=True, exist_ok=True)
            with open(log_dir / f"train-{project}.log", "ab") as log_file:
                process = subprocess.Popen(
                    [sys.executable, "-m", "backend.training.runner", str(project),
                     f"{LOCK_FD}{lock.fileno()}"], pass_fds=(lock.fileno(),),
                    stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    start_new_session=True, env=os.environ.copy(),
                    cwd=Path(__file__).resolve().parents[2])
        # Closing this copy keeps the lock: the runner's copy holds it until it is done.
    # Reap it when it ends, so finished runners leave no zombies behind.
    threading.Thread(target=process.wait, daemon=True).start()
    return True


def runner_lock(state: JobState, project: int, args: list[str]):
    """The runner's lock handle: the one start_runner handed over (--lock-fd=N), else
    (a runner started by hand) the lock taken here, or None when another runner has it."""
    for arg in args:
        if arg.startswith(LOCK_FD):
            return os.fdopen(int(arg[len(LOCK_FD):]), "a+")
    return acquire_runner_lock(state, project)


def start_waiting(settings: Settings, state: JobState) -> None:
    """Start runners for projects whose requests wait for a free runner."""
    for project, pending in state.projects():
        if pending:
            start_runner(settings, state, project)


def acquire_runner_lock(state: JobState, project: int, *, wait: float = 3.0):
    """The runner's lock handle, or None when another runner holds it."""
    handle = open(state.lock_path(project), "a+")  # noqa: SIM115 - held for the run
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return handle
        except BlockingIOError:
            # A worker's liveness probe holds it for microseconds: retry briefly.
            if time.monotonic() > deadline:
                handle.close()
                return None
            time.sleep(0.1)
