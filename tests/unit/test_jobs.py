"""Job requests: coalescing, lanes, leases and a dead runner's unfinished work, on both
stores (SQLite + flock, and a real Redis)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from backend.domain.jobs import Kind, lane_of
from backend.jobs.lane import settle_time
from backend.jobs.state import (
    LEASE_SECONDS,
    JobState,
    LeaseLost,
    RedisJobState,
)
from backend.workflows.triggers import CLICKED


@pytest.fixture(params=["sqlite", "redis"])
def state(request, tmp_path):
    if request.param == "sqlite":
        return JobState(tmp_path)
    client, prefix = request.getfixturevalue("redis_prefix")
    return RedisJobState(client, prefix=prefix)


def test_lanes_of_kinds():
    assert (lane_of(Kind.TRAIN), lane_of(Kind.RESCORE), lane_of(Kind.PRELABEL)) == (
        "training",
        "training",
        "prelabel",
    )


def test_requests_coalesce_into_one_pending_run(state):
    for _ in range(5):
        state.request(3, "Start Training")
    lease = state.acquire(3, "training")
    assert lease is not None
    assert state.take_pending(lease) == Kind.TRAIN  # one run for five clicks
    assert state.busy(3, "training")
    state.request(3, "Start Training")  # a click during the run: one follow-up
    state.request(3, "Start Training")
    state.request(3, "promoted by hand", kind=Kind.RESCORE)
    assert state.take_pending(lease) == Kind.TRAIN | Kind.RESCORE
    assert state.take_pending(lease) == 0  # nothing left: the lease is given up
    assert not state.busy(3, "training")


def test_a_run_waits_for_a_burst_to_settle_counted_from_the_latest_request(state):
    assert settle_time(state, 3, 3.0) == 3.0  # no request recorded: the whole wait
    state.request(3, "20 annotations")
    assert 2.5 < settle_time(state, 3, 3.0) <= 3.0
    # A runner that took longer than that to start waits no more.
    state.set_status(3, "training", requested_at=time.time() - 5)
    assert settle_time(state, 3, 3.0) == 0.0
    state.set_status(3, "training", requested_at=time.time() - 1)
    assert 1.5 < settle_time(state, 3, 3.0) <= 2.0
    # A clock ahead on the requesting host: never more than the debounce.
    state.set_status(3, "training", requested_at=time.time() + 60)
    assert settle_time(state, 3, 3.0) == 3.0
    # "Start Training" is no burst: the run starts at once.
    state.request(3, CLICKED)
    assert settle_time(state, 3, 3.0) == 0.0


def test_lanes_run_independently(state):
    state.request(1, "Start Training")
    state.request(1, "tasks imported", kind=Kind.PRELABEL)
    training = state.acquire(1, "training")
    prelabel = state.acquire(1, "prelabel")
    assert training is not None and prelabel is not None
    assert state.take_pending(prelabel) == Kind.PRELABEL
    assert state.take_pending(training) == Kind.TRAIN
    assert state.status(1, "prelabel")["state"] == "queued"
    assert sorted(lane for _, lane, _, _ in state.lanes()) == ["prelabel", "training"]


def test_a_second_runner_backs_off_while_one_holds_the_lane(state):
    first = state.acquire(1, "training")
    assert first is not None
    assert state.acquire(1, "training", wait=0.2) is None
    assert state.acquire(2, "training", wait=0.2) is not None  # other projects are free
    assert state.acquire(1, "prelabel", wait=0.2) is not None  # and other lanes


def test_a_fresh_lease_runs_again_what_a_dead_runner_took(state):
    state.request(7, "tasks imported", kind=Kind.PRELABEL)
    lease = state.acquire(7, "prelabel")
    assert state.take_pending(lease) == Kind.PRELABEL
    state.set_status(7, "prelabel", state="running")
    # The runner dies without finishing: its lease goes (flock closed, or the key lapses).
    lease.release()
    status = state.status(7, "prelabel")
    assert status["state"] == "interrupted" and "runs again" in status["reason"]
    again = state.acquire(7, "prelabel")
    assert state.take_pending(again) == Kind.PRELABEL  # the unfinished run, once
    assert state.take_pending(again) == 0


def test_annotation_threshold_counts_then_resets_on_request(state):
    assert [state.count_annotation(4, threshold=3) for _ in range(3)] == [False, False, True]
    state.request(4, "3 annotations")
    status = state.status(4)
    assert status["annotations_since_last_run"] == 0
    assert status["pending"] is True and status["state"] == "queued"


def test_status_fields_merge(state):
    lease = state.acquire(2, "prelabel")  # a live runner reports
    assert lease is not None
    state.set_status(2, "prelabel", state="running", done=10)
    state.set_status(2, "prelabel", done=20, failed=1)
    status = state.status(2, "prelabel")
    assert (status["state"], status["done"], status["failed"]) == ("running", 20, 1)
    assert "annotations_since_last_run" not in status


def test_a_redis_lease_lapses_when_its_holder_stops_renewing(redis_prefix, monkeypatch):
    client, prefix = redis_prefix
    state = RedisJobState(client, prefix=prefix)
    state.request(9, "Start Training")
    lease = state.acquire(9, "training")
    lease._stop.set()  # a frozen holder: no more renewals
    client.pexpire(state.lock_key(9, "training"), 100)  # its time to live runs out
    time.sleep(0.3)
    assert not state.busy(9, "training")
    other = state.acquire(9, "training")
    assert other is not None and state.take_pending(other) == Kind.TRAIN
    with pytest.raises(LeaseLost):
        state.take_pending(lease)  # the stalled holder learns it lost the lease
    assert LEASE_SECONDS >= 10  # long enough for a busy host to renew in time


def test_a_redis_lease_is_renewed_while_held(redis_prefix, monkeypatch):
    client, prefix = redis_prefix
    monkeypatch.setattr("backend.jobs.state.LEASE_SECONDS", 0.6)
    state = RedisJobState(client, prefix=prefix)
    lease = state.acquire(4, "training")
    time.sleep(1.5)  # several lifetimes: the renewals keep it
    assert state.busy(4, "training")
    lease.release()
    assert not state.busy(4, "training")


def test_a_killed_runner_frees_the_sqlite_lane_at_once(tmp_path):
    state = JobState(tmp_path)
    state.request(5, "Start Training")
    code = (
        f"import time; from pathlib import Path; from backend.jobs.state import JobState; "
        f"s = JobState(Path({str(tmp_path)!r})); l = s.acquire(5, 'training'); "
        f"s.take_pending(l); s.set_status(5, state='running'); print('ready', flush=True);"
        f" time.sleep(60)"
    )
    runner = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert runner.stdout.readline().strip() == b"ready"
    assert state.busy(5, "training") and state.status(5)["state"] == "running"
    runner.kill()
    runner.wait()
    assert state.status(5)["state"] == "interrupted"
    lease = state.acquire(5, "training", wait=0.5)
    assert lease is not None and state.take_pending(lease) == Kind.TRAIN


def test_concurrent_triggers_from_many_processes_lose_nothing(tmp_path):
    state = JobState(tmp_path)
    code = (
        f"from pathlib import Path; from backend.jobs.state import JobState; "
        f"s = JobState(Path({str(tmp_path)!r})); "
        f"[s.count_annotation(6, threshold=1000) for _ in range(25)]"
    )
    workers = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(4)]
    assert [w.wait(timeout=60) for w in workers] == [0, 0, 0, 0]
    assert state.status(6)["annotations_since_last_run"] == 100
    started = time.monotonic()
    state.request(6, "x")
    assert time.monotonic() - started < 1.0  # a webhook must answer within Label Studio's 1 s
