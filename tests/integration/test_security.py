"""Security checks against the backend under gunicorn: promotion cannot reach another
project's versions, a 50 MB label config is refused at once, and slow clients do not
starve the service."""

from __future__ import annotations

import json
import socket
import time

import pytest
import requests

from backend.model.registry import Registry
from tests.conftest import basic_auth_header

AUTH = ("sec", "sec-secret-1")
DEAD_LLM = dict(
    LLM_BASE_URL="http://127.0.0.1:9/v1",
    LLM_MAX_RETRIES="0",
    LLM_TIMEOUT="1",
    LABEL_STUDIO_URL="",
    LABEL_STUDIO_API_KEY="",
)
READ_TIMEOUT = 2
SMALL_LIMIT = 1024 * 1024


@pytest.fixture(scope="module")
def guarded(start_backend):
    """Basic auth, the default MAX_REQUEST_BYTES (64 MB), no Label Studio, a dead LLM."""
    return start_backend(auth=AUTH, **DEAD_LLM)


@pytest.fixture(scope="module")
def small(start_backend):
    """One worker with two threads, a 2 s READ_TIMEOUT and a 1 MB MAX_REQUEST_BYTES."""
    return start_backend(
        auth=AUTH,
        READ_TIMEOUT=str(READ_TIMEOUT),
        WORKERS="1",
        THREADS="2",
        MAX_REQUEST_BYTES=str(SMALL_LIMIT),
        **DEAD_LLM,
    )


def assert_clean_log(backend) -> None:
    text = backend.log_path.read_text()
    for sign in ("Traceback", "WORKER TIMEOUT", "was sent SIG", "internal error"):
        assert sign not in text, sign


def test_promote_cannot_reach_another_projects_version(guarded):
    # A real, complete version of project 2, made as the runner makes one.
    other = Registry(guarded.model_dir, 2)
    staging = other.staging_dir()
    (staging / "config.json").write_text("{}")
    name = other.new_version_name()
    folder = other.commit(staging, name, {"created": time.time(), "labels": ["a", "b"]})
    assert other.meta(name) is not None
    assert guarded.get("/versions?project=2").json()["versions"] == [name]
    before = guarded.get("/versions?project=1").json()

    for version in (
        str(folder),
        str(folder) + "/",
        f"../../2/versions/{name}",
        f"../2/versions/{name}",
        f"{name}/../../../2/versions/{name}",
        f"versions/{name}",
        f"./{name}",
        f"{name}\x00",
        f"{name}/",
        str(folder.relative_to(guarded.model_dir)),
        "/etc/passwd",
        "../../../../../../etc/passwd",
        f"file://{folder}",
    ):
        response = guarded.post("/versions/promote", json={"project": 1, "version": version})
        assert response.status_code == 400, (version, response.status_code, response.text)
    # The bare name is project 2's: project 1 has no such version.
    response = guarded.post("/versions/promote", json={"project": 1, "version": name})
    assert response.status_code == 404
    # Nor can the project id lead to project 2's folder.
    for project in ("../2", "1/../2", "2/../1", f"{folder}", -2, "1.2/../2", [2], "²"):
        response = guarded.post("/versions/promote", json={"project": project, "version": name})
        assert response.status_code == 400, (project, response.status_code)

    assert guarded.get("/versions?project=1").json() == before
    assert before["serving"].startswith("zero-shot:") and before["versions"] == []
    assert not (guarded.model_dir / "projects" / "1" / "serving").exists()
    assert other.serving() is None  # project 2 serves what it served: nothing promoted
    assert not (guarded.model_dir / "logs").exists()  # no runner was started
    assert_clean_log(guarded)


def fifty_mb_config_bodies() -> dict[str, bytes]:
    config = "<View>" + "<Header value='x'/>" * (50 * 1024 * 1024 // 19) + "</View>"
    task = [{"id": 1, "data": {"text": "a post"}}]
    return {
        "/setup": json.dumps({"project": "1.1", "schema": config}).encode(),
        "/predict": json.dumps({"project": "1.1", "tasks": task, "label_config": config}).encode(),
    }


def test_a_50_mb_label_config_is_refused_quickly(guarded, small):
    bodies = fifty_mb_config_bodies()
    assert all(len(body) > 50 * 1024 * 1024 for body in bodies.values())
    for backend, status, message in ((guarded, 400, "at most"), (small, 413, "MAX_REQUEST_BYTES")):
        for path, body in bodies.items():
            started = time.monotonic()
            response = requests.post(
                backend.url + path,
                data=body,
                auth=AUTH,
                timeout=60,
                headers={"Content-Type": "application/json"},
            )
            elapsed = time.monotonic() - started
            assert response.status_code == status, (path, response.text[:200])
            assert message in response.json()["error"]
            assert elapsed < 5, f"{path} took {elapsed:.1f} s"
        assert backend.get("/health").status_code == 200
        assert_clean_log(backend)


def stalled_socket(url: str, sent: bytes) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    if sent:
        sock.sendall(sent)
    return sock


def closed_by_server(sock: socket.socket) -> bool:
    sock.settimeout(0.2)
    try:
        while True:
            if not sock.recv(65536):
                return True
    except TimeoutError:
        return False
    except OSError:  # reset
        return True


def test_slow_clients_do_not_starve_the_backend(small, label_config):
    workers = {small.get("/health").json()["pid"]}
    partial = [
        b"GET /health HTTP/1.1\r\nHost: x\r\n",  # headers, never ended
        b"G",  # a request line begun
        b"POST /setup HTTP/1.1\r\nContent-Type: application/json\r\n",
        b"",  # connected, nothing sent
        b"POST /setup HTTP/1.1\r\nHost: x\r\nContent-Le",
    ]
    # A full request whose client never reads the answer nor closes.
    never_closes = b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    sent = [partial[i % len(partial)] for i in range(20)] + [never_closes] * 10
    opened = time.monotonic()
    sockets = [stalled_socket(small.url, data) for data in sent]
    try:
        # One worker with two threads answers at once while 30 slow clients hang on.
        for _ in range(5):
            started = time.monotonic()
            response = small.get("/health")
            assert response.status_code == 200
            assert time.monotonic() - started < 1.5, "a slow client held the worker"
        response = small.post("/setup", json={"project": "1.1", "schema": label_config})
        assert response.status_code == 200
        assert time.monotonic() - opened < READ_TIMEOUT + 3  # all while they were open

        # A client that sends its request a byte at a time is cut off after READ_TIMEOUT.
        drip = stalled_socket(small.url, b"G")
        started = time.monotonic()
        for byte in b"ET /health HTTP/1.1\r\nHost: x\r\n\r\n":
            time.sleep(0.25)
            try:
                drip.sendall(bytes([byte]))
            except OSError:
                break
            if closed_by_server(drip):
                break
        assert time.monotonic() - started < READ_TIMEOUT + 3
        assert closed_by_server(drip)
        drip.close()

        # The partial requests are dropped once silent for READ_TIMEOUT.
        time.sleep(max(0.0, opened + READ_TIMEOUT + 1.5 - time.monotonic()))
        assert all(closed_by_server(sock) for sock in sockets[:20])
    finally:
        for sock in sockets:
            sock.close()

    # A body that stalls holds a thread, for READ_TIMEOUT at most: with both threads
    # held, /health waits for one of them, no longer. One has credentials (its body is
    # read, never comes: 400), one has none (401 unread, gthread drains the body).
    head = (
        b"POST /setup HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1000\r\n"
    )
    slow_bodies = [
        stalled_socket(small.url, head + auth + b'\r\n{"pro')
        for auth in (f"Authorization: {basic_auth_header(AUTH)}\r\n".encode(), b"")
    ]
    try:
        time.sleep(0.2)  # both threads have taken theirs
        started = time.monotonic()
        assert small.get("/health").status_code == 200
        assert time.monotonic() - started < READ_TIMEOUT + 2
        for sock, status in zip(slow_bodies, (b"400", b"401"), strict=True):
            assert sock.recv(100).startswith(b"HTTP/1.1 " + status)
    finally:
        for sock in slow_bodies:
            sock.close()
    assert small.get("/health").json()["pid"] in workers  # the same worker, never replaced
    assert_clean_log(small)
