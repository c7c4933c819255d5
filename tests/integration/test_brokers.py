"""A job sent through each broker the distributed mode supports (Redis, RabbitMQ) is run
by a real `takemeter worker` process, which reports on it in the shared job state."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time

import pytest

from backend.config import load_settings
from backend.domain.jobs import Kind
from backend.jobs.dispatch import Dispatcher
from backend.jobs.state import open_state
from tests.conftest import RABBITMQ_URL, live_redis, need_service

REDIS_DB_URL = "redis://127.0.0.1:6379/9"  # a database of its own: the state keys are fixed


@pytest.fixture
def redis_db():
    client = live_redis(REDIS_DB_URL)
    client.flushdb()
    yield client
    client.flushdb()


def broker_url(name: str) -> str:
    if name == "redis":
        return REDIS_DB_URL
    import pika

    try:
        pika.BlockingConnection(pika.URLParameters(RABBITMQ_URL)).close()
    except Exception as exc:
        need_service("RabbitMQ", exc)
    return RABBITMQ_URL


@pytest.mark.parametrize("broker", ["redis", "rabbitmq"])
def test_a_job_goes_through_the_broker_to_a_worker(tmp_path, redis_db, broker):
    env = {
        "REDIS_URL": REDIS_DB_URL,
        "BROKER_URL": broker_url(broker),
        "MODEL_DIR": str(tmp_path),
        "LABEL_STUDIO_URL": "http://127.0.0.1:9",
        "LABEL_STUDIO_API_KEY": "token",
        "LLM_BASE_URL": "http://127.0.0.1:9/v1",
        "JOB_RETRIES": "2",
        "LOG_LEVEL": "INFO",
    }
    worker = subprocess.Popen(
        [sys.executable, "-m", "backend.jobs.worker", "--threads", "1", "--no-reconcile"],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        settings = load_settings(env)
        state = open_state(settings)
        project = random.randint(10**6, 10**7)  # a queue may hold an older run's messages
        Dispatcher(settings, state).request(project, "tasks imported", kind=Kind.PRELABEL)
        deadline = time.monotonic() + 90
        status = state.status(project, "prelabel")
        while time.monotonic() < deadline and status["state"] not in ("retrying", "failed"):
            time.sleep(0.5)
            status = state.status(project, "prelabel")
        # Label Studio is unreachable on purpose: the worker ran the job, which says why.
        assert status["state"] in ("retrying", "failed"), status
        assert "Connect" in status["reason"], status
        assert worker.poll() is None  # a failing job does not take the worker down
    finally:
        worker.terminate()
        worker.wait(timeout=30)
