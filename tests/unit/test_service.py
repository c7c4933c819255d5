"""The HTTP layer through Flask's test client, with real collaborators and no network:
the LLM answers come from a pre-filled answer cache (the endpoint is a closed port), the
job state and the registry are real files, training runners are only recorded."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from backend.config import Settings, load_settings
from backend.domain import policy, queue, roles
from backend.domain.taxonomy import Taxonomy, parse_taxonomy
from backend.inference.predictor import Opinions, Predictor
from backend.jobs.state import JobState
from backend.llm.cache import CachedAnswer
from backend.llm.labeler import LLMOpinion
from backend.llm.labeler import from_settings as labeler_from_settings
from backend.model.registry import Registry
from backend.service.app import create_app
from backend.workflows.sync import ProjectSync
from tests.conftest import GUARDED_ENDPOINTS
from tests.doubles.label_studio import FakeLabelStudio

ROOT = Path(__file__).resolve().parents[2]
LABEL_CONFIG = (ROOT / "label_config.xml").read_text()
TAXONOMY = parse_taxonomy(LABEL_CONFIG)
AUTH = ("takemeter", "backend-secret")
LLM = "test-llm"
PROJECT = 7
POSTS = {
    "Has anyone else had lows after swimming? What do you do?": "seeking_support",
    "Cinnamon lowers A1c for everyone, doctors just won't say it.": "health_claim",
    "My A1c went from 8.2 to 6.9 this spring, so happy.": "personal_experience",
}


def header(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@dataclass
class Service:
    """The app under test and the collaborators it was given."""

    client: FlaskClient
    settings: Settings
    predictor: Predictor
    jobs: JobState
    started: list[int] = field(default_factory=list)  # training lane kicks
    prelabels: list[int] = field(default_factory=list)  # pre-labeling lane kicks
    existing: set[int] = field(default_factory=set)

    @property
    def auth(self) -> dict[str, str]:
        return header(*AUTH) if self.settings.basic_auth else {}

    def get(self, path: str, **kwargs):
        return self.client.get(path, headers=self.auth, **kwargs)

    def post(self, path: str, **kwargs):
        return self.client.post(path, headers=self.auth, **kwargs)

    def cache(self, taxonomy: Taxonomy, answers: dict[str, str]) -> None:
        """Put LLM answers in the answer cache, so /predict needs no LLM."""
        labeler = self.predictor.labeler
        for text, label in answers.items():
            labeler.cache.put(
                labeler.key(taxonomy, text),
                CachedAnswer(label, 0.9, json.dumps({"label": label})),
                model=labeler.model,
            )

    def registry(self, project: int = PROJECT) -> Registry:
        return Registry(self.settings.model_dir, project)


def commit_version(registry: Registry, labels: tuple[str, ...] = TAXONOMY.names) -> str:
    """A complete (though not loadable) version: config.json and meta.json."""
    staging = registry.staging_dir()
    (staging / "config.json").write_text("{}")
    name = registry.new_version_name()
    registry.commit(staging, name, {"created": time.time(), "labels": list(labels)})
    return name


def build_service(
    model_dir: Path,
    *,
    auth: bool = True,
    existing: tuple[int, ...] = (PROJECT,),
    connect: Callable[[], object] | None = None,
    **env: str,
) -> Service:
    """An app over `model_dir`; `auth=False` turns basic auth off, keywords are settings."""
    values = {
        "MODEL_DIR": str(model_dir),
        "LLM_BASE_URL": "http://127.0.0.1:9/v1",
        "LLM_MODEL": LLM,
        "LLM_TIMEOUT": "0.5",
        "LLM_MAX_RETRIES": "0",
        "TRAIN_AFTER_ANNOTATIONS": "3",
        "BLIND_LABELS": "false",  # every task pre-labeled; the blind ones have their tests
        **env,
    }
    if auth:
        values.update(BASIC_AUTH_USER=AUTH[0], BASIC_AUTH_PASS=AUTH[1])
    settings = load_settings(values)
    predictor = Predictor(settings, labeler_from_settings(settings))
    jobs = JobState(settings.model_dir)
    service = Service(
        None,
        settings,
        predictor,
        jobs,  # type: ignore[arg-type]
        existing=set(existing),
    )
    app = create_app(
        settings,
        predictor=predictor,
        jobs=jobs,
        sync=ProjectSync(settings, predictor, connect=connect),
        start_lane=lambda project, lane: (
            service.started if lane == "training" else service.prelabels
        ).append(project),
        project_exists=lambda project: project in service.existing,
    )
    service.client = app.test_client()
    return service


@pytest.fixture
def make_service(tmp_path) -> Callable[..., Service]:
    """A fresh app per call, for tests that change state."""
    made: list[Service] = []

    def make(**options) -> Service:
        made.append(build_service(tmp_path / f"models-{len(made)}", **options))
        return made[-1]

    yield make
    for service in made:
        service.predictor.labeler.close()


@pytest.fixture
def service(make_service) -> Service:
    return make_service()


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> Service:
    """One app for the many requests that must be refused and change nothing."""
    service = build_service(tmp_path_factory.mktemp("shared"))
    yield service
    service.predictor.labeler.close()


# ------------------------------------------------------------------------------ auth


def test_the_guarded_list_is_every_route_but_health(shared):
    routes = {
        (method.lower(), rule.rule)
        for rule in shared.client.application.url_map.iter_rules()
        if rule.endpoint != "static"
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    assert routes == {*GUARDED_ENDPOINTS, ("get", "/health")}


def test_health_is_open_even_with_basic_auth(shared):
    response = shared.client.get("/health")
    assert response.status_code == 200
    assert response.json["status"] == "UP" and response.json["llm"] == LLM


@pytest.mark.parametrize("method, path", GUARDED_ENDPOINTS)
@pytest.mark.parametrize(
    "credentials",
    [
        None,
        (AUTH[0], "wrong"),
        ("wrong", AUTH[1]),
        ("", ""),
        (AUTH[0], AUTH[1] + "x"),
        (AUTH[0].upper(), AUTH[1]),
    ],
    ids=["none", "wrong-password", "wrong-user", "empty", "longer", "case"],
)
def test_every_other_endpoint_needs_the_right_credentials(shared, method, path, credentials):
    headers = header(*credentials) if credentials else {}
    response = getattr(shared.client, method)(
        f"{path}?project={PROJECT}",
        json={"project": PROJECT, "action": "START_TRAINING"},
        headers=headers,
    )
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Basic")
    assert response.json == {"error": "basic auth required"}
    assert shared.started == []  # nothing happened behind the refusal


def test_a_malformed_authorization_header_is_refused(shared):
    for value in (
        "Basic !!!not-base64",
        "Bearer abc",
        "Basic " + base64.b64encode(b"no-colon").decode(),
    ):
        response = shared.client.get("/metrics", headers={"Authorization": value})
        assert response.status_code == 401, value


def test_the_right_credentials_pass(shared):
    assert shared.get("/metrics").status_code == 200


def test_without_basic_auth_configured_no_credentials_are_needed(make_service):
    open_service = make_service(auth=False)
    assert open_service.client.get("/metrics").status_code == 200


# ----------------------------------------------------------------------------- /setup


def test_setup_returns_the_model_version(service):
    response = service.post(
        "/setup", json={"project": f"{PROJECT}.1700000000", "schema": LABEL_CONFIG}
    )
    assert response.status_code == 200
    assert response.json == {"model_version": f"zero-shot:{LLM}"}


@pytest.mark.parametrize(
    "schema",
    [
        "this is not XML",
        "<View",
        ["<View/>"],
        {"a": 1},
        42,
        None,
        "",
        "<View><Text name='t' value='$t'/></View>",
    ],
)
def test_setup_refuses_a_bad_schema(shared, schema):
    response = shared.post("/setup", json={"project": PROJECT, "schema": schema})
    assert response.status_code == 400
    assert "label config" in response.json["error"]


@pytest.mark.parametrize(
    ("schema", "named"),
    [
        (
            '<View><Text name="title" value="$title"/><Text name="text" value="$text"/>'
            '<Choices name="topic" toName="title"><Choice value="a"/><Choice value="b"/>'
            '</Choices><Choices name="tone" toName="text"><Choice value="a"/>'
            '<Choice value="b"/></Choices></View>',
            "questions are about different task fields (['text', 'title'])",
        ),
        (
            '<View><Text name="text" value="$text"/><Choices name="span" toName="text" '
            'perRegion="true"><Choice value="a"/><Choice value="b"/></Choices></View>',
            "<Choices name='span'> is per region",
        ),
    ],
    ids=["questions about two texts", "per-region choices"],
)
def test_setup_names_what_a_config_asks_that_is_not_supported(shared, schema, named):
    response = shared.post("/setup", json={"project": PROJECT, "schema": schema})
    assert response.status_code == 400 and named in response.json["error"]


def test_setup_refuses_a_body_that_is_not_an_object(shared):
    for payload in ("[1, 2]", "{not json", '"a string"'):
        response = shared.post("/setup", data=payload, content_type="application/json")
        assert response.status_code == 400
        assert "JSON object" in response.json["error"]


def test_setup_syncs_the_project_in_label_studio(make_service):
    """With Label Studio configured, /setup fixes webhook auth, the review tab and the
    sampling "Label All Tasks" follows."""
    fake = FakeLabelStudio()
    project = fake.add_project(LABEL_CONFIG)
    own = fake.add_webhook(project, "http://backend:9090/webhook")
    other = fake.add_webhook(project, "http://elsewhere.example/webhook")
    synced = make_service(
        connect=lambda: fake,
        existing=(project,),
        LABEL_STUDIO_URL="http://label-studio.invalid:8080",
        LABEL_STUDIO_API_KEY="token",
        BACKEND_URL="http://backend:9090",
    )
    response = synced.post(
        "/setup", json={"project": f"{project}.1700000000", "schema": LABEL_CONFIG}
    )
    assert response.status_code == 200
    deadline = time.monotonic() + 5  # the sync runs in a background thread
    while len(fake.called("projects.update")) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    views = fake.project(project).views
    assert [v.data["title"] for v in views] == [queue.REVIEW_TAB]
    hooks = {h.id: h for h in fake.project(project).webhooks}
    assert hooks[own].headers == header(*AUTH)  # the backend's own webhook only
    assert hooks[other].headers == {}
    # No prediction carries the LLM version yet: Label Studio refuses it, nothing breaks.
    assert fake.called("projects.update") == [
        {"id": project, "model_version": f"zero-shot:{LLM}"},
        {"id": project, "sampling": "Uncertainty sampling"},
    ]
    assert fake.project(project).model_version == ""
    assert fake.project(project).sampling == "Uncertainty sampling"


# --------------------------------------------------------------------------- /predict


def predict(service: Service, tasks: object, **extra):
    return service.post(
        "/predict",
        json={
            "tasks": tasks,
            "label_config": LABEL_CONFIG,
            "project": f"{PROJECT}.1700000000",
            **extra,
        },
    )


def test_predict_answers_from_the_cache_in_order_with_empty_results_for_no_text(service):
    service.cache(TAXONOMY, POSTS)
    texts = list(POSTS)
    tasks = [
        {"id": 1, "data": {"text": texts[2]}},
        {"id": 2, "data": {"other": "x"}},
        {"id": 3, "data": {"text": texts[0]}},
        {"id": 4, "data": {"text": "   "}},
        {"id": 5, "data": {"text": texts[1]}},
        "not a task",
    ]
    response = predict(service, tasks)
    assert response.status_code == 200
    results = response.json["results"]
    assert len(results) == len(tasks)
    assert [results[i] for i in (1, 3, 5)] == [[], [], []]
    labels = [TAXONOMY.label_of(results[i]["result"]) for i in (0, 2, 4)]
    assert labels == [POSTS[texts[2]], POSTS[texts[0]], POSTS[texts[1]]]
    assert all(results[i]["model_version"] == f"zero-shot:{LLM}" for i in (0, 2, 4))
    assert all(results[i]["score"] == pytest.approx(0.9) for i in (0, 2, 4))
    assert response.json["model_version"] == f"zero-shot:{LLM}"
    usage = service.get("/metrics").json
    assert usage["cache_hits"] == 3 and usage["llm_calls"] == 0


def test_predict_leaves_held_out_tasks_and_judge_posts_blind_by_default(make_service):
    service = make_service(BLIND_LABELS="true")
    service.cache(TAXONOMY, POSTS)
    texts = list(POSTS)
    judge = next(i for i in range(1, 1000) if roles.is_judge_post(i))
    plain = [i for i in range(1, 1000) if not roles.is_judge_post(i)][:2]
    tasks = [
        {"id": judge, "data": {"text": texts[0]}},
        {"id": plain[0], "data": {"text": texts[1], "split": "test"}},
        {"id": plain[1], "data": {"text": texts[2], "split": "train"}},
    ]
    results = predict(service, tasks).json["results"]
    # The blind ones: an empty result (nothing pre-selected) at its place in the queue,
    # which is the only shown pre-label's score here.
    assert [r["result"] for r in results[:2]] == [[], []]
    assert results[0]["score"] == results[1]["score"] == results[2]["score"]
    assert TAXONOMY.label_of(results[2]["result"]) == POSTS[texts[2]]


def test_predict_gives_no_prelabel_quickly_when_the_llm_is_down(service):
    service.cache(TAXONOMY, {"cached post": "health_claim"})
    started = time.monotonic()
    response = predict(
        service,
        [
            {"id": 1, "data": {"text": "never asked before"}},
            {"id": 2, "data": {"text": "cached post"}},
        ],
    )
    assert time.monotonic() - started < 10
    assert response.status_code == 200
    first, second = response.json["results"]
    assert first == []
    assert TAXONOMY.label_of(second["result"]) == "health_claim"
    assert service.get("/metrics").json["llm_failures"] >= 1


PUSHING = {"LABEL_STUDIO_URL": "http://127.0.0.1:9", "LABEL_STUDIO_API_KEY": "token"}


def test_predict_with_label_studio_answers_from_the_cache_and_queues_the_rest(make_service):
    """With Label Studio configured the pre-labeling job pushes what is missing: /predict
    never waits for the LLM, however many posts are new."""
    pushing = make_service(**PUSHING)
    pushing.cache(TAXONOMY, {"cached post": "health_claim"})
    started = time.monotonic()
    response = predict(
        pushing,
        [
            {"id": 1, "data": {"text": "never asked before"}},
            {"id": 2, "data": {"text": "cached post"}},
            {"id": 3, "data": {"text": "also new"}},
        ],
    )
    assert time.monotonic() - started < 2
    first, second, third = response.json["results"]
    assert first == [] and third == []
    assert TAXONOMY.label_of(second["result"]) == "health_claim"
    assert pushing.prelabels == [PROJECT]  # the job was asked for, once
    usage = pushing.get("/metrics").json
    assert usage["llm_calls"] == 0 and usage["llm_failures"] == 0  # nothing asked here
    jobs = pushing.get(f"/jobs?project={PROJECT}").json
    assert jobs["mode"] == "embedded"
    assert jobs["prelabel"]["state"] == "queued"
    assert jobs["prelabel"]["requested_by"] == "Retrieve Predictions: 2 posts not asked yet"


def test_predict_with_everything_cached_queues_nothing(make_service):
    pushing = make_service(**PUSHING)
    pushing.cache(TAXONOMY, POSTS)
    response = predict(pushing, [{"id": i, "data": {"text": t}} for i, t in enumerate(POSTS)])
    assert all(r for r in response.json["results"])
    assert pushing.prelabels == []


def test_tasks_created_requests_the_prelabeling_job(make_service):
    pushing = make_service(**PUSHING)
    response = pushing.post(
        "/webhook",
        json={"action": "TASKS_CREATED", "project": {"id": PROJECT}, "tasks": [{"id": 1}]},
    )
    assert response.status_code == 201 and response.json["status"] == "pre-labeling requested"
    assert pushing.prelabels == [PROJECT] and pushing.started == []
    assert pushing.get(f"/jobs?project={PROJECT}").json["prelabel"]["requested_by"] == (
        "tasks imported"
    )


def test_tasks_created_without_label_studio_is_ignored(service):
    response = service.post(
        "/webhook", json={"action": "TASKS_CREATED", "project": {"id": PROJECT}}
    )
    assert response.json["status"] == "ignored" and service.prelabels == []


@pytest.mark.parametrize("query", ["", "?project=abc", "?project=-1"])
def test_jobs_needs_a_project(shared, query):
    response = shared.get(f"/jobs{query}")
    assert response.status_code == 400 and "project" in response.json["error"]


def test_jobs_of_an_untouched_project_are_idle(service):
    jobs = service.get(f"/jobs?project={PROJECT}").json
    assert (jobs["prelabel"]["state"], jobs["training"]["state"]) == ("idle", "idle")
    assert jobs["training"]["annotations_since_last_run"] == 0


@pytest.mark.parametrize(
    "body",
    [
        {"label_config": LABEL_CONFIG},
        {"tasks": [], "label_config": LABEL_CONFIG},
        {"tasks": "abc", "label_config": LABEL_CONFIG},
        {"tasks": {"id": 1}, "label_config": LABEL_CONFIG},
    ],
)
def test_predict_needs_a_list_of_tasks(shared, body):
    response = shared.post("/predict", json=body)
    assert response.status_code == 400
    assert "'tasks'" in response.json["error"]


def test_predict_refuses_a_bad_label_config(shared):
    response = predict(shared, [{"id": 1, "data": {"text": "x"}}], label_config=["x"])
    assert response.status_code == 400
    assert "label config" in response.json["error"]


def test_predict_refuses_more_tasks_than_max_predict_tasks(make_service):
    limited = make_service(MAX_PREDICT_TASKS="3")
    limited.cache(TAXONOMY, POSTS)
    tasks = [{"id": i, "data": {"text": text}} for i, text in enumerate(POSTS)]
    assert predict(limited, tasks).status_code == 200  # exactly at the limit
    response = predict(limited, [*tasks, {"id": 9, "data": {"text": "one more"}}])
    assert response.status_code == 413
    assert "MAX_PREDICT_TASKS=3" in response.json["error"]


def test_a_body_over_max_request_bytes_is_refused(make_service):
    limited = make_service(MAX_REQUEST_BYTES="2048")
    response = limited.post(
        "/webhook", json={"action": "START_TRAINING", "project": PROJECT, "padding": "x" * 4000}
    )
    assert response.status_code == 413
    assert "MAX_REQUEST_BYTES=2048" in response.json["error"]
    assert limited.started == []
    small = limited.post("/webhook", json={"action": "START_TRAINING", "project": PROJECT})
    assert small.status_code == 201


@pytest.mark.parametrize(
    "method, path",
    [
        ("post", "/setup"),
        ("post", "/predict"),
        ("post", "/webhook"),
        ("get", "/versions"),
        ("post", "/versions/promote"),
    ],
)
def test_deeply_nested_json_is_a_400_not_a_500(shared, method, path):
    response = getattr(shared.client, method)(
        path, data="[" * 100000, content_type="application/json", headers=shared.auth
    )
    assert response.status_code == 400
    assert "error" in response.json


# --------------------------------------------------------------------------- /webhook


def test_start_training_for_an_existing_project_queues_one_run(service):
    response = service.post(
        "/webhook", json={"action": "START_TRAINING", "project": {"id": PROJECT}}
    )
    assert response.status_code == 201
    assert response.json["status"] == "training requested"
    assert service.started == [PROJECT]
    status = service.get(f"/training?project={PROJECT}").json
    assert status["state"] == "queued" and status["pending"] is True
    assert status["requested_by"] == "Start Training"


def test_start_training_for_a_project_label_studio_lacks_is_a_404(service):
    response = service.post("/webhook", json={"action": "START_TRAINING", "project": 8})
    assert response.status_code == 404
    assert "project 8" in response.json["error"]
    assert service.started == []
    status = service.get("/training?project=8").json
    assert status["state"] == "idle" and status["pending"] is False


def test_annotation_events_count_up_to_the_threshold_then_request_a_run(service):
    answers = [
        service.post("/webhook", json={"action": action, "project": PROJECT})
        for action in ("ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_DELETED")
    ]
    assert [r.json["status"] for r in answers] == ["counted", "counted", "training requested"]
    assert [r.status_code for r in answers] == [200, 200, 201]
    assert service.started == [PROJECT]
    status = service.get(f"/training?project={PROJECT}").json
    assert status["requested_by"] == "3 annotations"
    assert status["annotations_since_last_run"] == 0


def test_annotation_events_count_before_knowing_the_project(service):
    for _ in range(2):
        counted = service.post("/webhook", json={"action": "ANNOTATION_CREATED", "project": 8})
        assert counted.json["status"] == "counted"
    refused = service.post("/webhook", json={"action": "ANNOTATION_CREATED", "project": 8})
    assert refused.status_code == 404 and service.started == []


def test_an_unknown_action_is_ignored(shared):
    response = shared.post("/webhook", json={"action": "PROJECT_UPDATED", "project": PROJECT})
    assert response.status_code == 200
    assert response.json == {"status": "ignored", "action": "PROJECT_UPDATED"}
    assert shared.started == []


@pytest.mark.parametrize("action", [None, "", 5, "x" * 101])
def test_a_webhook_without_a_usable_action_is_a_400(shared, action):
    response = shared.post("/webhook", json={"action": action, "project": PROJECT})
    assert response.status_code == 400
    assert "'action'" in response.json["error"]


BAD_PROJECTS = [
    "-1",
    "1.abc",
    "../",
    "²",
    "9" * 5000,
    str(2**63),
    "0",
    "",
    "1/2",
    "1e3",
    -1,
    0,
    2**63,
    None,
]


@pytest.mark.parametrize("project", BAD_PROJECTS, ids=[repr(p)[:20] for p in BAD_PROJECTS])
def test_a_bad_project_id_is_a_400_on_every_endpoint(shared, project):
    as_query = "" if project is None else str(project)
    requests = [
        shared.post("/webhook", json={"action": "START_TRAINING", "project": project}),
        shared.post("/versions/promote", json={"project": project, "version": "v1.x"}),
        shared.get("/versions", query_string={"project": as_query}),
        shared.get("/versions", json={"project": project}),
        shared.get("/training", query_string={"project": as_query}),
        shared.get("/queue", query_string={"project": as_query}),
    ]
    assert [r.status_code for r in requests] == [400] * len(requests)
    assert all("'project'" in r.json["error"] for r in requests)
    assert shared.started == []
    assert not (shared.settings.model_dir / "projects").exists()  # no folder was made


@pytest.mark.parametrize("project", [1.5, True, [1], {"id": "x"}, {"id": -1}])
def test_a_json_project_that_is_no_id_is_a_400(shared, project):
    """ "1.5" is Label Studio's "<id>.<timestamp>" shape; the JSON number 1.5 is no id."""
    response = shared.post("/webhook", json={"action": "START_TRAINING", "project": project})
    assert response.status_code == 400
    assert shared.started == []


def test_a_project_id_with_more_digits_than_python_parses_is_a_400(shared):
    body = '{"action": "START_TRAINING", "project": ' + "9" * 5000 + "}"
    response = shared.post("/webhook", data=body, content_type="application/json")
    assert response.status_code == 400
    assert shared.started == []


# -------------------------------------------------------------------------- /versions


def test_versions_by_query_and_by_json_body(service):
    registry = service.registry()
    name = commit_version(registry)
    by_query = service.get(f"/versions?project={PROJECT}.1700000000")
    by_body = service.get("/versions", json={"project": PROJECT})
    assert by_query.status_code == by_body.status_code == 200
    assert by_query.json == by_body.json
    assert by_query.json["versions"] == [name]
    assert by_query.json["serving"] == f"zero-shot:{LLM}"  # committed, not promoted
    assert by_query.json["details"][0]["version"] == name


def test_versions_of_a_project_without_any(shared):
    response = shared.get("/versions?project=12")
    assert response.json == {"versions": [], "serving": f"zero-shot:{LLM}", "details": []}


@pytest.mark.parametrize(
    "version",
    ["/etc", "../../x", "v1.x/../..", "v1.x/", "v1..x", "", None, 1, ["v1.x"], "v1.x\x00", "V1.x"],
)
def test_promote_refuses_a_malformed_version_name(shared, version):
    response = shared.post("/versions/promote", json={"project": PROJECT, "version": version})
    assert response.status_code == 400
    assert "not a model version name" in response.json["error"]
    assert shared.started == []


def test_promote_refuses_an_absolute_path_to_another_projects_version(service):
    other = Registry(service.settings.model_dir, PROJECT + 1)
    name = commit_version(other)
    for version in (str(other.path(name)), f"../../{PROJECT + 1}/versions/{name}"):
        response = service.post("/versions/promote", json={"project": PROJECT, "version": version})
        assert response.status_code == 400, version
    assert service.registry().serving() is None and service.started == []
    # The other project's own name is well formed but not a version of this project.
    response = service.post("/versions/promote", json={"project": PROJECT, "version": name})
    assert response.status_code == 404


def test_promote_an_unknown_well_formed_version_is_a_404(shared):
    response = shared.post(
        "/versions/promote", json={"project": PROJECT, "version": "v9.20260101T000000"}
    )
    assert response.status_code == 404
    assert "v9.20260101T000000" in response.json["error"]
    assert shared.started == []


def test_promote_an_incomplete_version_is_a_404(service):
    registry = service.registry()
    name = commit_version(registry)
    (registry.path(name) / "config.json").unlink()
    response = service.post("/versions/promote", json={"project": PROJECT, "version": name})
    assert response.status_code == 404


def test_promote_a_committed_version_serves_it_and_asks_for_a_rescore(service):
    registry = service.registry()
    first = commit_version(registry)
    second = commit_version(registry)
    response = service.post("/versions/promote", json={"project": PROJECT, "version": first})
    assert response.status_code == 200
    assert response.json == {"project": PROJECT, "serving": first}
    assert registry.serving() == first
    assert service.get(f"/versions?project={PROJECT}").json["serving"] == first
    setup = service.post("/setup", json={"project": PROJECT, "schema": LABEL_CONFIG})
    assert setup.json["model_version"] == first
    assert service.started == [PROJECT]
    status = service.get(f"/training?project={PROJECT}").json
    assert status["pending"] is True and status["requested_by"] == f"promoted {first} by hand"
    # Roll forward again.
    again = service.post("/versions/promote", json={"project": PROJECT, "version": second})
    assert again.status_code == 200 and registry.serving() == second
    assert service.started == [PROJECT, PROJECT]


def test_versions_and_promote_speak_the_names_label_studio_shows(service):
    """A measured version is listed, served and promoted by its shown name; the folder
    name still works for promote, and each detail names the folder."""
    registry = service.registry()
    folders = []
    for accuracy in (0.84, 0.7):
        staging = registry.staging_dir()
        (staging / "config.json").write_text("{}")
        folders.append(registry.new_version_name())
        registry.commit(
            staging,
            folders[-1],
            {
                "created": time.time(),
                "labels": list(TAXONOMY.names),
                "validation": {"model_accuracy": accuracy, "judge_posts": 20},
                "data": {"n_examples": 140, "trained_on": [str(i) for i in range(140)]},
            },
        )
    names = ["v1 tune 84%/20", "v2 tune 70%/20"]
    listed = service.get(f"/versions?project={PROJECT}").json
    assert listed["versions"] == names
    # Each detail says its kind; the task ids it learned from stay on disk.
    assert [(d["kind"], d["data"]) for d in listed["details"]] == [
        ("fine-tune", {"n_examples": 140})
    ] * 2
    assert [(d["version"], d["folder"]) for d in listed["details"]] == list(
        zip(names, folders, strict=True)
    )

    response = service.post("/versions/promote", json={"project": PROJECT, "version": names[1]})
    assert response.status_code == 200
    assert response.json == {"project": PROJECT, "serving": names[1]}
    setup = service.post("/setup", json={"project": PROJECT, "schema": LABEL_CONFIG})
    assert setup.json["model_version"] == names[1]
    status = service.get(f"/training?project={PROJECT}").json
    assert status["requested_by"] == f"promoted {names[1]} by hand"
    by_folder = service.post("/versions/promote", json={"project": PROJECT, "version": folders[0]})
    assert by_folder.json == {"project": PROJECT, "serving": names[0]}
    assert service.get(f"/versions?project={PROJECT}").json["serving"] == names[0]
    # A well-formed name of no version is a 404, like an unknown folder name.
    unknown = service.post(
        "/versions/promote", json={"project": PROJECT, "version": "v1 tune 99%/20"}
    )
    assert unknown.status_code == 404 and "v1 tune 99%/20" in unknown.json["error"]


def test_start_training_answers_where_to_follow_the_run(service):
    response = service.post(
        "/webhook", json={"action": "START_TRAINING", "project": {"id": PROJECT}}
    )
    assert response.status_code == 201
    assert "Settings > Model" in response.json["message"]
    assert f"/training?project={PROJECT}" in response.json["message"]


def test_predict_falls_back_to_the_llm_when_the_serving_version_cannot_load(service):
    registry = service.registry()
    name = commit_version(registry)  # config.json "{}": no weights, no tokenizer
    registry.promote(name)
    service.cache(TAXONOMY, POSTS)
    response = predict(service, [{"id": 1, "data": {"text": next(iter(POSTS))}}])
    assert response.status_code == 200
    assert response.json["model_version"] == f"zero-shot:{LLM}"
    assert TAXONOMY.label_of(response.json["results"][0]["result"]) == "seeking_support"


# ----------------------------------------------------------------------------- /queue


def review_summary(version: str) -> dict:
    texts = list(POSTS)
    model = policy.ModelOpinion(
        "personal_experience",
        {"seeking_support": 0.1, "health_claim": 0.1, "personal_experience": 0.8},
    )
    opinions = []
    for text in texts:
        llm = LLMOpinion(POSTS[text], 0.9)
        opinions.append(
            Opinions(
                llm, model, policy.decide(llm.label, llm.confidence, model, prefer_model=False)
            )
        )
    rows = queue.rows([11, 12, 13], texts, opinions)
    return queue.summary(version, rows, unlabeled=3)


def test_queue_is_a_404_before_any_rescore(shared):
    response = shared.get(f"/queue?project={PROJECT}")
    assert response.status_code == 404
    assert "no review queue yet" in response.json["error"]


def test_queue_as_json_and_csv(service):
    summary = review_summary("v1.20260101T000000")
    assert summary["in_queue"] == 2 and summary["disagreements"] == 2  # a sanity check
    service.registry().write_queue(summary)
    as_json = service.get(f"/queue?project={PROJECT}")
    assert as_json.status_code == 200 and as_json.json == summary
    as_csv = service.get(f"/queue?project={PROJECT}&format=csv")
    assert as_csv.status_code == 200 and as_csv.mimetype == "text/csv"
    lines = as_csv.get_data(as_text=True).splitlines()
    assert lines[0].split(",") == queue.FIELDS
    assert sorted(int(line.split(",")[0]) for line in lines[1:]) == [11, 12]  # queued only
    every = service.get(f"/queue?project={PROJECT}&format=csv&all=1").get_data(as_text=True)
    assert len(every.splitlines()) == 4 and every.splitlines()[-1].startswith("13,")


# --------------------------------------------------------------------------- /metrics


def test_metrics_report_the_llm_and_the_cache(service):
    service.cache(TAXONOMY, POSTS)
    before = service.get("/metrics").json
    assert before["llm_model"] == LLM and before["cached_answers"] == 3
    assert before["cache_hits"] == 0
    predict(service, [{"id": 1, "data": {"text": text}} for text in POSTS])
    after = service.get("/metrics").json
    assert after["cache_hits"] == 3 and after["cache_misses"] == 0


def test_a_dead_redis_leaves_predict_and_setup_answering(tmp_path):
    """The distributed mode with its Redis gone: /predict and /setup answer, the job
    endpoints say why with a 503, nothing answers 500."""
    settings = load_settings(
        {
            "MODEL_DIR": str(tmp_path),
            "LLM_BASE_URL": "http://127.0.0.1:9/v1",
            "LLM_MODEL": LLM,
            "REDIS_URL": "redis://127.0.0.1:1/0",
            **PUSHING,
        }
    )
    kicked: list[tuple[int, str]] = []
    app = create_app(
        settings,
        start_lane=lambda project, lane: kicked.append((project, lane)),
        project_exists=lambda project: True,
    ).test_client()
    tasks = [{"id": 1, "data": {"text": "a post"}}]
    response = app.post(
        "/predict",
        json={"tasks": tasks, "label_config": LABEL_CONFIG, "project": f"{PROJECT}.1700000000"},
    )
    assert response.status_code == 200 and response.json["results"] == [[]]
    setup = app.post("/setup", json={"project": f"{PROJECT}.1", "schema": LABEL_CONFIG})
    assert setup.status_code == 200 and setup.json["model_version"] == f"zero-shot:{LLM}"
    jobs = app.get(f"/jobs?project={PROJECT}")
    assert jobs.status_code == 503 and "REDIS_URL" in jobs.json["error"]
    training = app.post("/webhook", json={"action": "START_TRAINING", "project": {"id": PROJECT}})
    assert training.status_code == 503 and kicked == []
