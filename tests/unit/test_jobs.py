"""Training triggers: coalescing, the threshold, and the runner lock, across processes."""

from __future__ import annotations

import subprocess
import sys
import time

from backend.training.jobs import RESCORE, TRAIN, JobState, acquire_runner_lock


def test_requests_coalesce_into_one_pending_run(tmp_path):
    state = JobState(tmp_path)
    for _ in range(5):
        state.request(3, "Start Training")
    handle = acquire_runner_lock(state, 3)
    assert handle is not None
    assert state.take_pending(3, handle) == TRAIN  # one run for five clicks
    assert state.runner_alive(3)
    state.request(3, "Start Training")  # a click during the run: one follow-up
    state.request(3, "Start Training")
    state.request(3, "promoted by hand", kind=RESCORE)
    assert state.take_pending(3, handle) == TRAIN | RESCORE
    assert state.take_pending(3, handle) == 0  # nothing left: the lock is released
    assert not state.runner_alive(3)


def test_a_second_runner_backs_off_while_one_holds_the_project(tmp_path):
    state = JobState(tmp_path)
    first = acquire_runner_lock(state, 1)
    assert first is not None
    assert acquire_runner_lock(state, 1, wait=0.2) is None
    assert acquire_runner_lock(state, 2, wait=0.2) is not None  # other projects are free


def test_annotation_threshold_counts_then_resets_on_request(tmp_path):
    state = JobState(tmp_path)
    assert [state.count_annotation(4, threshold=3) for _ in range(3)] == [False, False, True]
    state.request(4, "3 annotations")
    status = state.status(4)
    assert status["annotations_since_last_run"] == 0
    assert status["pending"] is True and status["state"] == "queued"


def test_a_runner_killed_mid_run_is_reported_and_frees_the_project(tmp_path):
    state = JobState(tmp_path)
    state.request(5, "Start Training")
    code = (f"import time; from pathlib import Path; from backend.training.jobs import JobState, "
            f"acquire_runner_lock; s = JobState(Path({str(tmp_path)!r})); "
            f"h = acquire_runner_lock(s, 5); s.take_pending(5, h); "
            f"s.set_status(5, state='running'); print('ready', flush=True); time.sleep(60)")
    runner = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert runner.stdout.readline().strip() == b"ready"
    assert state.runner_alive(5) and state.status(5)["state"] == "running"
    runner.kill()
    runner.wait()
    status = state.status(5)
    assert status["state"] == "failed" and "ended unexpectedly" in status["reason"]
    assert acquire_runner_lock(state, 5, wait=0.5) is not None


def test_concurrent_triggers_from_many_processes_lose_nothing(tmp_path):
    state = JobState(tmp_path)
    code = (f"from pathlib import Path; from backend.training.jobs import JobState; "
            f"s = JobState(Path({str(tmp_path)!r})); "
            f"[s.count_annotation(6, threshold=1000) for _ in range(25)]")
    workers = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(4)]
    assert [w.wait(timeout=60) for w in workers] == [0, 0, 0, 0]
    assert state.status(6)["annotations_since_last_run"] == 100
    started = time.monotonic()
    state.request(6, "x")
    assert time.monotonic() - started < 1.0  # a webhook must answer within Label Studio's 1 s
