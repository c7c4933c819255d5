"""Real parts for the tests: a Label Studio, the local llama.cpp LLM, the backend under
gunicorn, and a tiny DistilBERT to train. Each starts once per session."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from takemeter import stack
from takemeter.offline_models import build_distilbert

ROOT = Path(__file__).resolve().parent.parent
# The tests reach no model hub: a hub name (the default BASE_MODEL) fails at once, not
# after a minute of retries, wherever a test leaves BASE_MODEL unset.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
BACKEND_AUTH = ("takemeter", "backend-secret")


# The demo's config with a second question about the same post, a multiple-choice one.
TOPICS_CONFIG = (
    (ROOT / "label_config.xml")
    .read_text()
    .replace(
        "</View>",
        '<Choices name="topics" toName="text" choice="multiple">'
        '<Choice value="food"/><Choice value="exercise"/></Choices></View>',
    )
)


def load_posts() -> list[dict]:
    lines = (ROOT / "data" / "demo_posts.jsonl").read_text().splitlines()
    return [row for row in map(json.loads, lines) if "text" in row]


# How to get each service the tests use; the end of the run names those that were missing.
SERVICES = {
    "Redis": "apt-get install redis-server && redis-server --daemonize yes",
    "RabbitMQ": "apt-get install rabbitmq-server && rabbitmq-server -detached",
    "PostgreSQL": "apt-get install postgresql, a server on 127.0.0.1:5432 with trust auth",
    "chromium": "apt-get install chromium",
    "network namespaces": "run the tests as root (they make hosts with ip netns)",
    "ip": "apt-get install iproute2",
}
_missing: dict[str, int] = {}


def need_service(name: str, problem: Exception) -> None:
    """A local service the test needs is down: a failure under CI=true (no silent
    skips there), a skip on a developer's machine without it, counted for the summary."""
    message = f"{name} is not reachable: {type(problem).__name__}: {problem}"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(message)
    _missing[name] = _missing.get(name, 0) + 1
    pytest.skip(message)


def pytest_terminal_summary(terminalreporter) -> None:
    """Which groups of tests did not run for want of a service, and how to get it."""
    if not _missing:
        return
    terminalreporter.section("skipped: services this machine lacks")
    for name, count in sorted(_missing.items()):
        how = next((h for key, h in SERVICES.items() if name.startswith(key)), "")
        terminalreporter.write_line(
            f"{name}: {count} skipped" + (f"; to get it: {how}" if how else "")
        )
    terminalreporter.write_line("CI=true make test fails instead of skipping.")


REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
RABBITMQ_URL = os.environ.get("TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")


def live_redis(url: str = REDIS_URL):
    """A client of the machine's Redis (a failure under CI=true when it is down)."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        client.ping()
    except redis.RedisError as exc:
        need_service("Redis", exc)
    return client


@pytest.fixture
def redis_prefix():
    """A real Redis and a key prefix of this test's own, removed afterwards."""
    client = live_redis()
    prefix = f"test-{uuid.uuid4().hex[:10]}"
    yield client, prefix
    for key in client.scan_iter(f"{prefix}:*"):
        client.delete(key)


@pytest.fixture(scope="session")
def posts() -> list[dict]:
    return load_posts()


@pytest.fixture(scope="session")
def label_config() -> str:
    return (ROOT / "label_config.xml").read_text()


@pytest.fixture(scope="session")
def logs(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("logs")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return build_distilbert(tmp_path_factory.mktemp("models") / "tiny-distilbert", tiny=True)


@pytest.fixture(scope="session")
def llm_url(logs) -> str:
    port = stack.free_port()
    process = stack.start_local_llm(port=port, log_path=logs / "llm.log")
    yield f"http://127.0.0.1:{port}/v1"
    stack.stop(process)


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory, logs) -> stack.LabelStudioLogin:
    port = stack.free_port()
    login = stack.LabelStudioLogin(
        url=f"http://127.0.0.1:{port}",
        email="test@example.com",
        password="test-password-1",
        token="test-token-12345",
    )
    process = stack.start_label_studio(
        data_dir=tmp_path_factory.mktemp("label-studio"),
        port=port,
        login=login,
        log_path=logs / "ls.log",
    )
    yield login
    stack.stop(process)


@pytest.fixture(scope="session")
def ls(label_studio):
    from label_studio_sdk import LabelStudio

    return LabelStudio(base_url=label_studio.url, api_key=label_studio.token, timeout=120)


class Backend:
    def __init__(
        self, url: str, model_dir: Path, auth: tuple[str, str] | None, log_path: Path
    ) -> None:
        self.url = url
        self.model_dir = model_dir
        self.auth = auth
        self.log_path = log_path

    def get(self, path: str, **kwargs) -> requests.Response:
        return requests.get(self.url + path, auth=self.auth, timeout=120, **kwargs)

    def post(self, path: str, **kwargs) -> requests.Response:
        return requests.post(self.url + path, auth=self.auth, timeout=120, **kwargs)

    def metrics(self) -> dict:
        return self.get("/metrics").json()

    def wait_training(self, project: int, *, since: float, timeout: float = 600) -> dict:
        """Wait for a run requested after `since` to end; return its status."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.get(f"/training?project={project}").json()
            if (
                status.get("state") in ("finished", "failed", "skipped")
                and status.get("finished", 0) > since
                and not status.get("pending")
            ):
                return status
            time.sleep(0.5)
        raise TimeoutError(f"training of project {project} did not end: {status}")


@pytest.fixture(scope="session")
def start_backend(tmp_path_factory, logs, llm_url, tiny_model) -> Callable[..., Backend]:
    """Start a backend under gunicorn with overrides of the test settings."""
    started = []
    # One LLM answer cache for every test backend: the same post is asked once a session.
    llm_cache = tmp_path_factory.mktemp("llm-cache") / "answers.sqlite"

    def start(auth: tuple[str, str] | None = None, **env: str) -> Backend:
        port = stack.free_port()
        model_dir = tmp_path_factory.mktemp("model-dir")
        settings = {
            "MODEL_DIR": str(model_dir),
            "LLM_BASE_URL": llm_url,
            "LLM_CACHE": str(llm_cache),
            "LLM_CONCURRENCY": "4",  # the session's llama.cpp server has 4 slots
            "LLM_MODEL": "smollm2-135m-instruct",
            "BASE_MODEL": str(tiny_model),
            "WORKERS": "2",
            "THREADS": "4",
            "TRAIN_EPOCHS": "3",
            "TRAIN_DEBOUNCE": "0.5",
            "TRAIN_MIN_PER_LABEL": "2",
            "TRAIN_BATCH_SIZE": "8",
            "TRAIN_MAX_LENGTH": "128",
            "TRAIN_LEARNING_RATE": "1e-3",
            "LOG_LEVEL": "INFO",
            # Every task pre-labeled, so tests of other behaviour may pick any task;
            # tests/e2e/test_blind.py runs the default (held-out and judge posts blind).
            "BLIND_LABELS": "false",
            **env,
        }
        if auth:
            settings.update(BASIC_AUTH_USER=auth[0], BASIC_AUTH_PASS=auth[1])
        log_path = logs / f"backend-{port}.log"
        process = stack.start_backend(env=settings, port=port, log_path=log_path)
        started.append(process)
        return Backend(f"http://127.0.0.1:{port}", model_dir, auth, log_path)

    yield start
    for process in started:
        stack.stop(process)


@pytest.fixture(scope="session")
def backend(start_backend, label_studio) -> Backend:
    """The shared backend: basic auth on, connected to the session's Label Studio."""
    return start_backend(
        auth=BACKEND_AUTH,
        LABEL_STUDIO_URL=label_studio.url,
        LABEL_STUDIO_API_KEY=label_studio.token,
        # Room for a burst of SDK annotations to land before a run
        # exports them (the debounce's purpose), also on a busy CI box.
        TRAIN_AFTER_ANNOTATIONS="6",
        TRAIN_DEBOUNCE="2",
    )


def basic_auth_header(auth: tuple[str, str]) -> str:
    return "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()


def wait_for(check: Callable[[], object], *, timeout: float, what: str) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.5)
    raise TimeoutError(f"timed out waiting for {what}")


def takemeter(
    *args: str, env: dict, expect: int | None = 0, cwd: Path = ROOT
) -> subprocess.CompletedProcess:
    """`takemeter <args>`, the installed command line, run in `cwd` (the clone);
    `expect`: the exit code it must end with (None: any)."""
    command = [str(Path(sys.executable).parent / "takemeter"), *args]
    done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=300)
    if expect is not None:
        assert done.returncode == expect, (
            done.returncode,
            done.stdout[-3000:],
            done.stderr[-3000:],
        )
    return done


# Every endpoint but /health, which basic auth guards (tests/unit/test_service.py checks
# that this list is the app's whole URL map).
GUARDED_ENDPOINTS = [
    ("post", "/setup"),
    ("post", "/predict"),
    ("post", "/webhook"),
    ("get", "/jobs"),
    ("get", "/versions"),
    ("post", "/versions/promote"),
    ("get", "/training"),
    ("get", "/queue"),
    ("get", "/metrics"),
]
