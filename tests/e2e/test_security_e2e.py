"""Security end to end with a real Label Studio: its SSRF check stays on with the
backend's network alone exempt, the backend's credentials reach its own webhook only,
START_TRAINING for unknown projects starts nothing, and MAX_TRAINING_RUNNERS holds when
several projects ask for training at once."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psutil
import pytest

from backend.domain.taxonomy import parse_taxonomy
from backend.labelstudio import client as ls_client
from tests.conftest import BACKEND_AUTH, basic_auth_header, wait_for

pytestmark = pytest.mark.e2e

DEAD_LLM = dict(LLM_BASE_URL="http://127.0.0.1:9/v1", LLM_MAX_RETRIES="0", LLM_TIMEOUT="1")


class Listener:
    """A small HTTP server on 127.0.0.1 that records the path, headers and body of every
    request it gets."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, str], bytes]] = []
        received = self.received

        class Record(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                received.append((self.path, dict(self.headers), body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_PUT = do_POST

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Record)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> Listener:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def actions(self) -> list[str]:
        found = []
        for _, _, body in self.received:
            try:
                found.append(json.loads(body).get("action"))
            except (ValueError, AttributeError):
                found.append(None)
        return found


def test_label_studio_refuses_a_backend_at_a_reserved_address_outside_the_backends_network(
    ls, backend, label_config
):
    """The test Label Studio runs as the compose file does: SSRF check on, loopback (where
    the backends listen) cut out of the reserved ranges. The backend connects; a cloud
    metadata address or a private network elsewhere does not."""
    from label_studio_sdk.core.api_error import ApiError

    project = ls_client.ensure_project(ls, title="ssrf", label_config=label_config).id
    ls_client.connect_backend(ls, project, url=backend.url, title="takemeter", auth=backend.auth)
    for url in ("http://169.254.169.254/latest", "http://10.1.2.3:9090", "http://192.168.1.1"):
        with pytest.raises(ApiError) as refused:
            ls.ml.create(project=project, url=url, title="elsewhere")
        assert refused.value.status_code in (400, 403), (url, refused.value.body)
        assert "reserved" in json.dumps(refused.value.body).lower(), refused.value.body
    assert [b.url for b in ls.ml.list(project=project)] == [backend.url]


def test_the_backends_credentials_reach_only_its_own_webhook(ls, backend, posts, label_config):
    taxonomy = parse_taxonomy(label_config)
    project = ls.projects.create(title="leak-check", label_config=label_config)
    sample = [p for p in posts if len(p["text"]) < 300][:3]
    ls_client.import_posts(ls, project.id, [{"text": p["text"], "ref_id": p["id"]} for p in sample])
    header = basic_auth_header(BACKEND_AUTH)
    own = backend.url + "/webhook"
    with Listener() as listener:
        # Foreign webhooks that end in /webhook, one even in the backend's own URL.
        foreign = [f"{listener.url}/webhook", f"{listener.url}/{own}", f"{listener.url}/webhook/"]
        for url in foreign:
            ls.webhooks.create(
                project=project.id, url=url, send_payload=True, send_for_all_actions=True
            )
        ls_client.connect_backend(
            ls, project.id, url=backend.url, title="takemeter", auth=BACKEND_AUTH
        )
        setup = backend.post("/setup", json={"project": f"{project.id}.1", "schema": label_config})
        assert setup.status_code == 200

        def hooks() -> dict[str, dict]:
            return {h.url: h.headers or {} for h in ls.webhooks.list(project=project.id)}

        wait_for(
            lambda: hooks().get(own, {}).get("Authorization") == header,
            timeout=60,
            what="the backend's webhook to carry its basic auth",
        )
        task = ls_client.all_tasks(ls, project.id)[0]
        ls.annotations.create(id=task["id"], result=taxonomy.result(taxonomy.names[0]))
        wait_for(
            lambda: listener.actions().count("ANNOTATION_CREATED") >= len(foreign),
            timeout=60,
            what="the annotation webhooks at the listener",
        )

        # Another sync (Label Studio calls /setup before each prediction; a project is
        # synced at most every few seconds) leaves the foreign webhooks alone. It shows
        # that it ran by putting the project's sampling back to the review order.
        ls.projects.update(id=project.id, sampling="Sequential sampling")

        def synced_again() -> bool:
            backend.post("/setup", json={"project": f"{project.id}.1", "schema": label_config})
            time.sleep(0.5)
            return ls.projects.get(id=project.id).sampling == ls_client.UNCERTAINTY_SAMPLING

        wait_for(synced_again, timeout=60, what="another sync of the project")
        after = hooks()
        received = list(listener.received)
    assert {path for path, _, _ in received} <= {"/webhook", f"/{own}", "/webhook/"}
    for path, headers, body in received:
        lowered = {k.lower(): v for k, v in headers.items()}
        assert "authorization" not in lowered, (path, lowered)
        for secret in (BACKEND_AUTH[1], header.split()[1]):  # the password, the token
            assert secret not in json.dumps(headers) and secret.encode() not in body
    for url in foreign:
        assert "Authorization" not in after[url], url
    assert after[own]["Authorization"] == header  # the backend's own webhook has them


def test_start_training_for_unknown_projects_starts_nothing(backend):
    unknown = list(range(990001, 990011))
    for project in unknown:
        response = backend.post(
            "/webhook", json={"action": "START_TRAINING", "project": {"id": project}}
        )
        assert response.status_code == 404, response.text
        assert "does not exist" in response.json()["error"]
    # Annotation events count up to the threshold (6), then meet the same check.
    statuses = [
        backend.post(
            "/webhook", json={"action": "ANNOTATION_CREATED", "project": {"id": unknown[0]}}
        ).status_code
        for _ in range(6)
    ]
    assert statuses == [200] * 5 + [404]
    # A handler that requests a run opens the runner's log before it answers: nothing to
    # wait for.
    for project in unknown:
        for lane in ("training", "prelabel"):
            assert not (backend.model_dir / "logs" / f"{lane}-{project}.log").exists()
        assert not (backend.model_dir / "projects" / str(project)).exists()
        status = backend.get(f"/training?project={project}").json()
        assert status["state"] == "idle" and not status["pending"], status


def working_runners(model_dir) -> set[int]:
    """Training runner processes (`python -m backend.jobs.run training <project>
    --lock-fd=N`) of the backend that uses `model_dir`. A runner that has started the next
    one (its last step) is done and only exiting: not counted."""
    found: dict[int, int] = {}
    for process in psutil.process_iter(["cmdline", "ppid"]):
        try:
            command = process.info["cmdline"] or []
            if (
                command[-3:-2] == ["training"]
                and "backend.jobs.run" in command
                and process.environ().get("MODEL_DIR") == str(model_dir)
            ):
                found[process.pid] = process.info["ppid"]
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
    return set(found) - set(found.values())


def test_max_training_runners_holds_for_simultaneous_requests(
    ls, start_backend, label_studio, posts, label_config
):
    capped = start_backend(
        LABEL_STUDIO_URL=label_studio.url,
        LABEL_STUDIO_API_KEY=label_studio.token,
        MAX_TRAINING_RUNNERS="1",
        TRAIN_AFTER_ANNOTATIONS="100000",
        TRAIN_DEBOUNCE="0",
        **DEAD_LLM,
    )
    taxonomy = parse_taxonomy(label_config)
    sample = [p for p in posts if len(p["text"]) < 300][:20]
    projects = []
    for title in ("capped-a", "capped-b"):
        project = ls_client.ensure_project(ls, title=title, label_config=label_config)
        if not ls_client.all_tasks(ls, project.id):  # fully annotated: nothing to re-score
            ls.projects.import_tasks(
                id=project.id,
                request=[
                    {
                        "data": {"text": p["text"]},
                        "annotations": [{"result": taxonomy.result(p["label"])}],
                    }
                    for p in sample
                ],
            )
        projects.append(project.id)

    since = time.time()
    for project in projects:  # both at once
        response = capped.post(
            "/webhook", json={"action": "START_TRAINING", "project": {"id": project}}
        )
        assert response.status_code == 201
    most = 0
    deadline = time.monotonic() + 240
    statuses: dict[int, dict] = {}
    while time.monotonic() < deadline:
        most = max(most, len(working_runners(capped.model_dir)))
        statuses = {p: capped.get(f"/training?project={p}").json() for p in projects}
        if all(
            s.get("state") in ("finished", "failed", "skipped")
            and s.get("finished", 0) > since
            and not s.get("pending")
            for s in statuses.values()
        ):
            break
        time.sleep(0.2)
    assert all(s["state"] == "finished" for s in statuses.values()), statuses
    assert most == 1, f"{most} runners at once with MAX_TRAINING_RUNNERS=1"
    first, second = sorted(statuses.values(), key=lambda s: s["started"])
    assert second["started"] >= first["finished"]  # the second waited, then ran
    log = capped.log_path.read_text()
    assert "training waits, 1 of MAX_TRAINING_RUNNERS=1 runners busy" in log
    assert "Traceback" not in log
