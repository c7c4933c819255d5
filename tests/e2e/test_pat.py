"""Personal access tokens (PAT) end to end, with legacy tokens switched OFF.

Label Studio 1.23 makes a PAT for the logged-in user with POST /api/token/ (the SDK's
tokens.create; 409 while the user holds one) and turns the organization's legacy tokens
on or off with POST /api/jwt/settings (jwt_settings.update). This module switches legacy
tokens off on the session's Label Studio while it runs, and back on afterwards (revoking
its PAT). With the PAT as LABEL_STUDIO_API_KEY: `takemeter setup`, `export` and
`evaluate` work, and a backend under gunicorn keeps the project in sync and exports it for
a "Start Training" sent by Label Studio. A wrong token fails the scripts with one line and
exit code 2, and a backend started with one logs one error line and still serves."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from pathlib import Path

import jwt
import pytest
import requests
from label_studio_sdk import LabelStudio
from label_studio_sdk.core.api_error import ApiError

from backend.config import load_settings
from backend.domain import queue
from backend.domain.taxonomy import parse_taxonomy
from backend.labelstudio import client as ls_client
from backend.llm import prompt
from backend.llm.cache import AnswerCache, CachedAnswer
from tests.conftest import takemeter, wait_for

pytestmark = pytest.mark.e2e

AUTH = ("pat-user", "pat-secret")
LLM_MODEL = "smollm2-135m-instruct"
HOLDOUT = 50
TITLE = "pat"


def one_line_error(done: subprocess.CompletedProcess) -> str:
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, (done.returncode, done.stderr)
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.fixture(scope="module")
def pat(ls, label_studio) -> str:
    """A PAT of the session's user; legacy tokens off while this module runs."""
    for old in ls.tokens.list():  # one valid PAT per user: revoke any left over
        ls.tokens.blacklist(refresh=old.token)
    token = ls.tokens.create(request_options={"max_retries": 0}).token
    client = LabelStudio(base_url=label_studio.url, api_key=token, timeout=120)
    before = client.jwt_settings.get()
    client.jwt_settings.update(
        api_token_ttl_days=before.api_token_ttl_days,
        api_tokens_enabled=True,
        legacy_api_tokens_enabled=False,
    )
    try:
        yield token
    finally:
        client.jwt_settings.update(
            api_token_ttl_days=before.api_token_ttl_days,
            api_tokens_enabled=before.api_tokens_enabled,
            legacy_api_tokens_enabled=before.legacy_api_tokens_enabled,
        )
        ls.tokens.blacklist(refresh=token)


@pytest.fixture(scope="module")
def pat_client(pat, label_studio) -> LabelStudio:
    return LabelStudio(base_url=label_studio.url, api_key=pat, timeout=120)


@pytest.fixture(scope="module")
def sample(posts) -> list[dict]:
    return [p for p in posts if len(p["text"]) < 300][:16]


@pytest.fixture(scope="module")
def llm_cache(tmp_path_factory, sample, label_config) -> Path:
    """This module's own answer cache, holding an answer for every post: pre-labels and
    the evaluation need no LLM call (the answers are made up: gold, some wrong)."""
    path = tmp_path_factory.mktemp("pat-llm-cache") / "answers.sqlite"
    cache, taxonomy = AnswerCache(path), parse_taxonomy(label_config)
    for index, post in enumerate(sample):
        label = post["label"]
        if index % 4 == 0:
            label = next(name for name in taxonomy.names if name != label)
        key = prompt.cache_key(LLM_MODEL, taxonomy, post["text"], max_chars=4000)
        cache.put(key, CachedAnswer(label, 0.6, json.dumps({"label": label})), model=LLM_MODEL)
    return path


@pytest.fixture(scope="module")
def pat_backend(start_backend, label_studio, pat, llm_cache):
    """A backend holding only the PAT; it never trains for real (TRAIN_MIN_PER_LABEL)."""
    backend = start_backend(
        auth=AUTH,
        LABEL_STUDIO_URL=label_studio.url,
        LABEL_STUDIO_API_KEY=pat,
        LLM_CACHE=str(llm_cache),
        TRAIN_AFTER_ANNOTATIONS="100000",
        TRAIN_MIN_PER_LABEL="1000",
        HOLDOUT_PERCENT=str(HOLDOUT),
    )
    # Label Studio gives /health 1 s when connecting: wait until both workers have booted.
    pids: set[int] = set()

    def both_answer() -> bool:
        with contextlib.suppress(requests.RequestException):
            pids.add(requests.get(backend.url + "/health", timeout=5).json()["pid"])
        return len(pids) == 2

    wait_for(both_answer, timeout=180, what="both backend workers to answer")
    return backend


@pytest.fixture(scope="module")
def env(label_studio, pat, pat_backend, llm_url, llm_cache, tiny_model) -> dict:
    return {
        **os.environ,
        "LABEL_STUDIO_URL": label_studio.url,
        "LABEL_STUDIO_API_KEY": pat,
        "LLM_CACHE": str(llm_cache),
        "MODEL_DIR": str(pat_backend.model_dir),
        "LLM_BASE_URL": llm_url,
        "LLM_MODEL": LLM_MODEL,
        "LLM_MAX_RETRIES": "0",
        "BASE_MODEL": str(tiny_model),
        "BASIC_AUTH_USER": AUTH[0],
        "BASIC_AUTH_PASS": AUTH[1],
        "HOLDOUT_PERCENT": str(HOLDOUT),
    }


@pytest.fixture(scope="module")
def setup_summary(env, pat_backend, sample, tmp_path_factory) -> dict:
    path = tmp_path_factory.mktemp("pat-posts") / "posts.jsonl"
    path.write_text("".join(json.dumps({"id": p["id"], "text": p["text"]}) + "\n" for p in sample))
    done = takemeter(
        "setup",
        "--posts",
        str(path),
        "--title",
        TITLE,
        "--backend-url",
        pat_backend.url,
        "--retrieve-predictions",
        "--json",
        env=env,
    )
    return json.loads(done.stdout)


def test_legacy_token_is_refused_and_the_pat_accepted(pat, pat_client, label_studio):
    answer = requests.get(
        label_studio.url + "/api/current-user/whoami",
        timeout=30,
        headers={"Authorization": f"Token {label_studio.token}"},
    )
    assert answer.status_code == 401, answer.text
    assert "legacy token authentication has been disabled" in answer.json()["detail"]
    legacy = LabelStudio(base_url=label_studio.url, api_key=label_studio.token)
    with pytest.raises(ApiError) as refused:
        legacy.users.whoami()
    assert refused.value.status_code == 401
    problem = ls_client.check_access(
        load_settings(
            {"LABEL_STUDIO_URL": label_studio.url, "LABEL_STUDIO_API_KEY": label_studio.token}
        )
    )
    assert problem is not None and problem.setting == "LABEL_STUDIO_API_KEY"
    assert "rejected LABEL_STUDIO_API_KEY" in problem.message
    assert "legacy" in problem.message

    assert pat.count(".") == 2  # a JWT, which the SDK exchanges for access tokens
    assert pat_client.users.whoami().email == label_studio.email
    assert (
        ls_client.check_access(
            load_settings({"LABEL_STUDIO_URL": label_studio.url, "LABEL_STUDIO_API_KEY": pat})
        )
        is None
    )


def test_backend_with_the_pat_says_so_at_start(pat_backend):
    lines = [
        line
        for line in pat_backend.log_path.read_text().splitlines()
        if "LABEL_STUDIO_API_KEY" in line
    ]
    assert (
        len(lines) == 1 and "accepts LABEL_STUDIO_API_KEY (a personal access token)" in lines[0]
    ), lines


def test_setup_with_the_pat_connects_the_backend(
    pat_client, pat_backend, setup_summary, sample, label_config
):
    project = setup_summary["project"]
    assert setup_summary["imported"] == setup_summary["tasks"] == len(sample)
    assert setup_summary["backend_connection"] is not None
    # Pre-labels: Label Studio asked the backend, which answered from the cache.
    assert setup_summary["predictions"] == len(sample)
    assert 0 < setup_summary["held_out"] < len(sample)
    # The backend's own calls with the PAT (after /setup): webhook auth, the review tab,
    # and the project's model_version following the version it serves.
    setup = {"project": f"{project}.0", "schema": label_config}
    served = pat_backend.post("/setup", json=setup).json()["model_version"]
    # Each /setup lets the backend sync (at most every few seconds), as Label Studio's do.
    wait_for(
        lambda: (
            pat_backend.post("/setup", json=setup).ok
            and pat_client.projects.get(id=project).model_version == served
        ),
        timeout=60,
        what="the backend to set the project's model_version with the PAT",
    )
    assert [
        v
        for v in pat_client.views.list(project=project)
        if (v.data or {}).get("title") == queue.REVIEW_TAB
    ]
    hooks = [
        h for h in pat_client.webhooks.list(project=project) if h.url.startswith(pat_backend.url)
    ]
    assert hooks and all((h.headers or {}).get("Authorization") for h in hooks)
    log = pat_backend.log_path.read_text()
    assert "could not update project" not in log and "check LABEL_STUDIO_API_KEY" not in log


@pytest.fixture(scope="module")
def annotated(pat_client, setup_summary, sample, label_config) -> dict:
    """Every task annotated with its gold label, through the PAT."""
    project = setup_summary["project"]
    taxonomy = parse_taxonomy(label_config)
    gold = {p["id"]: p["label"] for p in sample}
    tasks = ls_client.all_tasks(pat_client, project)
    for task in tasks:
        pat_client.annotations.create(
            id=task["id"], result=taxonomy.result(gold[task["data"]["ref_id"]])
        )
    return {
        "project": project,
        "tasks": len(tasks),
        "held_out": sum(t["data"]["split"] == "test" for t in tasks),
    }


def test_start_training_from_label_studio_exports_with_the_pat(
    pat_client, pat_backend, setup_summary, annotated
):
    project = annotated["project"]
    since = time.time()
    pat_client.ml.train(id=setup_summary["backend_connection"])  # "Start Training"
    status = pat_backend.wait_training(project, since=since, timeout=300)
    # The runner pulled every task with the PAT, then found too few per label (by design
    # here: TRAIN_MIN_PER_LABEL=1000), not an authentication failure.
    assert status["state"] == "skipped", status
    assert status["requested_by"] == "Start Training", status
    assert status["held_out_tasks"] == annotated["held_out"], status
    trained_on = annotated["tasks"] - annotated["held_out"]
    assert f"({trained_on} training annotations in all)" in status["reason"], status


def test_export_and_evaluate_with_the_pat(env, annotated, tmp_path):
    project = str(annotated["project"])
    out = tmp_path / "annotations.jsonl"
    takemeter("export", "--project", project, "--format", "jsonl", "--out", str(out), env=env)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == annotated["tasks"] and all(row["label"] for row in rows)

    report_dir = tmp_path / "evaluation"
    done = takemeter(
        "evaluate", "--project", project, "--out", str(report_dir), "--resamples", "100", env=env
    )
    assert "evaluating the zero-shot LLM alone" in done.stdout
    report = json.loads((report_dir / "report.json").read_text())
    assert report["n"] == annotated["held_out"] and list(report["systems"]) == ["zero-shot"]


def test_wrong_tokens_fail_the_scripts_with_one_line(env, pat, label_studio, annotated, tmp_path):
    out = tmp_path / "never.jsonl"
    args = (
        "export",
        "--project",
        str(annotated["project"]),
        "--format",
        "jsonl",
        "--out",
        str(out),
    )
    expired = jwt.encode(
        {"token_type": "refresh", "exp": int(time.time()) - 60, "user_id": "1"},
        "x" * 32,
        algorithm="HS256",
    )
    tampered = pat[:-6] + ("AAAAAA" if not pat.endswith("AAAAAA") else "BBBBBB")
    for token, why in (
        ("not-a-token", "Invalid token"),
        (tampered, "invalid"),
        (label_studio.token, "disabled for this organization"),
        (expired, "expired"),
    ):
        done = takemeter(*args, env={**env, "LABEL_STUDIO_API_KEY": token}, expect=None)
        line = one_line_error(done)
        assert "LABEL_STUDIO_API_KEY" in line and "rejected" in line, line
        assert why in line, line
    assert not out.exists()


def test_backend_with_a_garbage_token_logs_one_error_and_serves(start_backend, label_studio):
    backend = start_backend(LABEL_STUDIO_URL=label_studio.url, LABEL_STUDIO_API_KEY="garbage-token")
    assert backend.get("/health").status_code == 200
    lines = [
        line for line in backend.log_path.read_text().splitlines() if "LABEL_STUDIO_API_KEY" in line
    ]
    assert len(lines) == 1, lines
    assert "ERROR" in lines[0] and "rejected LABEL_STUDIO_API_KEY" in lines[0], lines
    assert "legacy" in lines[0] and "expired" in lines[0]
