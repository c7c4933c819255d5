"""Job requests, coalescing, leases and status, shared by every process that triggers or
runs jobs.

Work is organised in lanes, one run at a time per project and lane: "prelabel" (ask the
LLM for every task with no pre-label and push the predictions) and "training" (fine-tune,
judge, publish; or re-score after a promotion by hand). A trigger sets a `pending` bit
and kicks a runner; a runner holds the lane's lease while it works through the pending
bits, so a click or an annotation burst during a run becomes exactly one follow-up run.
The runner gives its lease up inside the same transaction that finds nothing pending,
so no trigger is lost. The bits a runner took stay recorded as `running` until it takes
the next ones: a runner that dies mid-run leaves them behind, and the next holder of the
lease runs them again.

Two stores, one interface: SQLite + flock in MODEL_DIR (embedded mode: a dead process
drops its flock at once) and Redis (distributed mode: the lease is a key with a time to
live that its holder renews, so a dead host's lease lapses within LEASE_SECONDS).
"""

from __future__ import annotations

import fcntl
import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Protocol, Unpack, cast

from backend.config import Settings
from backend.connections import redis_client
from backend.domain.jobs import (
    JobStatus,
    Kind,
    Lane,
    RunState,
    StatusFields,
    StatusStore,
    lane_of,
)
from backend.model.registry import Registry

LEASE_SECONDS = 30.0


def _loaded(stored: str | bytes | None) -> JobStatus:
    """A status as either store keeps it (JSON; nothing before the first write)."""
    return cast(JobStatus, json.loads(stored or "{}"))


def public_status(status: JobStatus, *, pending: int, running: int, busy: bool) -> JobStatus:
    """The stored status as GET /training and GET /jobs show it."""
    shown: JobStatus = {"state": RunState.IDLE, **status, "pending": bool(pending)}
    if shown["state"] in (RunState.RUNNING, RunState.QUEUED) and not busy and not pending:
        if running:
            shown.update(
                {
                    "state": RunState.INTERRUPTED,
                    "reason": "the job's process ended before it finished; it runs again "
                    "when a runner picks the project up",
                }
            )
        elif shown["state"] == RunState.RUNNING:
            shown.update(
                {"state": RunState.FAILED, "reason": "the job's process ended unexpectedly"}
            )
    return shown


def shown_status(store: JobStore, project: int, lane: str) -> JobStatus:
    """What GET /jobs shows of a lane, from either store's row."""
    pending, running, since, status = store.row(project, lane)
    shown = public_status(status, pending=pending, running=running, busy=store.busy(project, lane))
    if lane == Lane.TRAINING:
        shown["annotations_since_last_run"] = since
    return shown


def mark_requested(status: JobStatus, reason: str) -> None:
    """A request noted on the lane's status: queued unless a run is under way."""
    status.update({"requested_by": reason, "requested_at": time.time()})
    if status.get("state") not in (RunState.RUNNING, RunState.RETRYING):
        status["state"] = RunState.QUEUED


class Lease:
    """The right to run one project's lane; `fresh` until its first take_pending."""

    def __init__(self, project: int, lane: str) -> None:
        self.project = project
        self.lane = lane
        self.fresh = True

    def release(self) -> None:
        raise NotImplementedError


class FileLease(Lease):
    def __init__(self, project: int, lane: str, handle) -> None:
        super().__init__(project, lane)
        self.handle = handle

    def release(self) -> None:
        if not self.handle.closed:
            fcntl.flock(self.handle, fcntl.LOCK_UN)
            self.handle.close()


class JobState:
    """SQLite + flock: processes on one machine (the embedded mode)."""

    def __init__(self, model_dir: Path) -> None:
        self.model_dir = model_dir
        self.path = model_dir / "jobs.sqlite"
        model_dir.mkdir(parents=True, exist_ok=True)
        with self.transaction() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS lanes (project INTEGER, lane TEXT, "
                "pending INTEGER DEFAULT 0, running INTEGER DEFAULT 0, "
                "since_run INTEGER DEFAULT 0, status TEXT DEFAULT '{}', "
                "updated REAL DEFAULT 0, PRIMARY KEY (project, lane))"
            )

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

    def _row(
        self, db: sqlite3.Connection, project: int, lane: str
    ) -> tuple[int, int, int, JobStatus]:
        db.execute("INSERT OR IGNORE INTO lanes (project, lane) VALUES (?, ?)", (project, lane))
        pending, running, since, status = db.execute(
            "SELECT pending, running, since_run, status FROM lanes WHERE project = ? AND lane = ?",
            (project, lane),
        ).fetchone()
        return pending, running, since, _loaded(status)

    def lock_path(self, project: int, lane: str, *, create: bool = True) -> Path:
        return Registry(self.model_dir, project).lock_file(lane, create=create)

    def busy(self, project: int, lane: str = Lane.TRAINING) -> bool:
        """A runner holds the lane's lease now."""
        path = self.lock_path(project, lane, create=False)
        if not path.exists():
            return False
        with open(path, "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(handle, fcntl.LOCK_UN)
            return False

    def acquire(self, project: int, lane: str, *, wait: float = 3.0) -> FileLease | None:
        """The lane's lease, or None when another runner holds it."""
        handle = open(self.lock_path(project, lane), "a+")  # noqa: SIM115 - held for the run
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return FileLease(project, lane, handle)
            except BlockingIOError:
                # A liveness probe holds it for microseconds: retry briefly.
                if time.monotonic() > deadline:
                    handle.close()
                    return None
                time.sleep(0.1)

    def status(self, project: int, lane: str = Lane.TRAINING) -> JobStatus:
        return shown_status(self, project, lane)

    def row(self, project: int, lane: str) -> tuple[int, int, int, JobStatus]:
        with self.transaction() as db:
            return self._row(db, project, lane)

    def set_status(
        self, project: int, lane: str = Lane.TRAINING, **fields: Unpack[StatusFields]
    ) -> JobStatus:
        with self.transaction() as db:
            _, _, _, status = self._row(db, project, lane)
            status.update({**fields, "updated": time.time()})
            db.execute(
                "UPDATE lanes SET status = ?, updated = ? WHERE project = ? AND lane = ?",
                (json.dumps(status), time.time(), project, lane),
            )
        return status

    def request(self, project: int, reason: str, *, kind: int = Kind.TRAIN) -> None:
        """Ask for a run: now if no runner works on the lane, else right after."""
        lane = lane_of(kind)
        with self.transaction() as db:
            _, _, _, status = self._row(db, project, lane)
            mark_requested(status, reason)
            db.execute(
                "UPDATE lanes SET pending = pending | ?, since_run = 0, status = ? "
                "WHERE project = ? AND lane = ?",
                (int(kind), json.dumps(status), project, lane),
            )

    def count_annotation(self, project: int, threshold: int) -> bool:
        """Count a new, changed or deleted annotation; True when it reaches the threshold."""
        with self.transaction() as db:
            _, _, since, _ = self._row(db, project, Lane.TRAINING)
            since += 1
            db.execute(
                "UPDATE lanes SET since_run = ? WHERE project = ? AND lane = ?",
                (since, project, Lane.TRAINING),
            )
        return since >= threshold

    def take_pending(self, lease: Lease) -> int:
        """Runner side: the bits to work on now (with a dead runner's unfinished ones on
        a fresh lease), or 0 and the lease given up, in one transaction."""
        with self.transaction() as db:
            pending, running, _, _ = self._row(db, lease.project, lease.lane)
            work = pending | (running if lease.fresh else 0)
            lease.fresh = False
            db.execute(
                "UPDATE lanes SET pending = 0, running = ? WHERE project = ? AND lane = ?",
                (work, lease.project, lease.lane),
            )
            if not work:
                lease.release()
            return work

    def lanes(self) -> list[tuple[int, str, int, int]]:
        """(project, lane, pending bits, running bits) of every lane with a row."""
        with self.transaction() as db:
            return list(db.execute("SELECT project, lane, pending, running FROM lanes"))

    def live_runners(self, lane: str) -> int:
        return live_runners(self, lane)


_TAKE = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return -1 end
local pending = tonumber(redis.call('HGET', KEYS[1], 'pending') or '0')
local work = pending
if ARGV[2] == '1' then
  work = bit.bor(work, tonumber(redis.call('HGET', KEYS[1], 'running') or '0'))
end
redis.call('HSET', KEYS[1], 'pending', 0, 'running', work)
if work == 0 then redis.call('DEL', KEYS[2]) end
return work
"""
_REQUEST = """
local pending = tonumber(redis.call('HGET', KEYS[1], 'pending') or '0')
redis.call('HSET', KEYS[1], 'pending', bit.bor(pending, tonumber(ARGV[1])), 'since_run', 0)
redis.call('SADD', KEYS[2], ARGV[2])
"""
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RedisLease(Lease):
    """A lock key with a time to live, renewed by a thread while the holder lives."""

    def __init__(self, state: RedisJobState, project: int, lane: str, token: str) -> None:
        super().__init__(project, lane)
        self.state = state
        self.token = token
        self.key = state.lock_key(project, lane)
        self._stop = threading.Event()
        threading.Thread(target=self._renew, daemon=True, name="lease").start()

    def _renew(self) -> None:
        while not self._stop.wait(LEASE_SECONDS / 3):
            try:
                if not self.state.renew(self.key, self.token):
                    return  # lost: take_pending will say so
            except Exception:  # Redis away for a moment: try again at the next tick
                continue

    def release(self) -> None:
        self._stop.set()
        self.state.script_release(keys=[self.key], args=[self.token])


class LeaseLost(RuntimeError):
    """The lease lapsed (the holder stalled past LEASE_SECONDS); another runner may own it."""


class RedisJobState:
    """Redis: processes on any host (the distributed mode)."""

    def __init__(self, client, *, prefix: str = "takemeter") -> None:
        self.redis = client
        self.prefix = prefix
        self.index = f"{prefix}:jobs"
        self.script_take = client.register_script(_TAKE)
        self.script_request = client.register_script(_REQUEST)
        self.script_renew = client.register_script(_RENEW)
        self.script_release = client.register_script(_RELEASE)

    def key(self, project: int, lane: str) -> str:
        return f"{self.prefix}:job:{project}:{lane}"

    def lock_key(self, project: int, lane: str) -> str:
        return f"{self.prefix}:lease:{project}:{lane}"

    def renew(self, key: str, token: str) -> bool:
        return bool(self.script_renew(keys=[key], args=[token, int(LEASE_SECONDS * 1000)]))

    def busy(self, project: int, lane: str = Lane.TRAINING) -> bool:
        return bool(self.redis.exists(self.lock_key(project, lane)))

    def acquire(self, project: int, lane: str, *, wait: float = 0.0) -> RedisLease | None:
        token = uuid.uuid4().hex
        deadline = time.monotonic() + wait
        while not self.redis.set(
            self.lock_key(project, lane), token, nx=True, px=int(LEASE_SECONDS * 1000)
        ):
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.1)
        return RedisLease(self, project, lane, token)

    def row(self, project: int, lane: str) -> tuple[int, int, int, JobStatus]:
        raw = self.redis.hmget(self.key(project, lane), "pending", "running", "since_run", "status")
        pending, running, since = (int(v or 0) for v in raw[:3])
        return pending, running, since, _loaded(raw[3])

    def status(self, project: int, lane: str = Lane.TRAINING) -> JobStatus:
        return shown_status(self, project, lane)

    def _update(self, project: int, lane: str, change: Callable[[JobStatus], None]) -> JobStatus:
        """Read-modify-write of the status JSON, retried when another writer raced us."""
        key = self.key(project, lane)
        result: JobStatus = {}

        def apply(pipe) -> None:
            status = _loaded(pipe.hget(key, "status"))
            change(status)
            pipe.multi()
            pipe.hset(key, "status", json.dumps(status))
            pipe.sadd(self.index, f"{project}:{lane}")
            result.update(status)

        self.redis.transaction(apply, key)
        return result

    def set_status(
        self, project: int, lane: str = Lane.TRAINING, **fields: Unpack[StatusFields]
    ) -> JobStatus:
        return self._update(
            project, lane, lambda status: status.update({**fields, "updated": time.time()})
        )

    def request(self, project: int, reason: str, *, kind: int = Kind.TRAIN) -> None:
        lane = lane_of(kind)
        self._update(project, lane, lambda status: mark_requested(status, reason))
        self.script_request(
            keys=[self.key(project, lane), self.index], args=[int(kind), f"{project}:{lane}"]
        )

    def count_annotation(self, project: int, threshold: int) -> bool:
        since = self.redis.hincrby(self.key(project, Lane.TRAINING), "since_run", 1)
        self.redis.sadd(self.index, f"{project}:training")
        return since >= threshold

    def take_pending(self, lease: Lease) -> int:
        if not isinstance(lease, RedisLease):
            raise TypeError("a Redis job store takes only its own leases")
        work = int(
            self.script_take(
                keys=[self.key(lease.project, lease.lane), lease.key],
                args=[lease.token, "1" if lease.fresh else "0"],
            )
        )
        lease.fresh = False
        if work < 0:
            lease._stop.set()
            raise LeaseLost(f"project {lease.project}: the {lease.lane} lease lapsed")
        if work == 0:
            lease._stop.set()
        return work

    def lanes(self) -> list[tuple[int, str, int, int]]:
        out = []
        for member in sorted(m.decode() for m in self.redis.smembers(self.index)):
            project, lane = member.split(":", 1)
            pending, running, _, _ = self.row(int(project), lane)
            out.append((int(project), lane, pending, running))
        return out

    def live_runners(self, lane: str) -> int:
        return live_runners(self, lane)


class JobStore(StatusStore, Protocol):
    """The job store every trigger and runner uses; JobState (SQLite, one machine) and
    RedisJobState (any host) implement it."""

    def busy(self, project: int, lane: str = Lane.TRAINING) -> bool: ...
    def row(self, project: int, lane: str) -> tuple[int, int, int, JobStatus]:
        """(pending bits, running bits, annotations since the last run, status)."""
        ...

    def acquire(self, project: int, lane: str, *, wait: float = ...) -> Lease | None: ...
    def request(self, project: int, reason: str, *, kind: int = Kind.TRAIN) -> None: ...
    def count_annotation(self, project: int, threshold: int) -> bool: ...
    def take_pending(self, lease: Lease) -> int: ...
    def lanes(self) -> list[tuple[int, str, int, int]]: ...
    def live_runners(self, lane: str) -> int: ...


def live_runners(store: JobStore, lane: str) -> int:
    """How many runners hold a lease of `lane` now."""
    return sum(
        store.busy(project, lane) for project, row_lane, _, _ in store.lanes() if row_lane == lane
    )


def open_state(settings: Settings) -> JobStore:
    """The job store the configuration asks for: Redis with REDIS_URL, else SQLite."""
    if settings.redis_url:
        return RedisJobState(redis_client(settings))
    return JobState(settings.model_dir)
