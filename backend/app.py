"""The HTTP layer: Label Studio 1.23's ML protocol on Flask, plus status endpoints.

    GET  /health     liveness (Label Studio calls it before everything else)
    POST /setup      {"project", "schema"} -> {"model_version"}
    POST /predict    {"tasks", "label_config", "project"} -> {"results": [...]}
    POST /webhook    START_TRAINING and ANNOTATION_* events -> training triggers
    GET  /versions   the project's model versions
    POST /versions/promote  {"project", "version"}: serve a kept or older version
    GET  /training   the project's training status
    GET  /queue      the review queue (JSON, or CSV of the queued tasks with ?format=csv,
                     of every unlabeled task with &all=1)
    GET  /metrics    LLM calls, cache hits and token usage
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
import time

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from backend import ls_client
from backend.config import Settings, load_settings
from backend.jobs import RESCORE, JobState, start_runner
from backend.llm import from_settings as labeler_from_settings
from backend.predictor import Predictor, project_id
from backend.rescore import queue_csv
from backend.taxonomy import TaxonomyError, parse_taxonomy

log = logging.getLogger(__name__)

ANNOTATION_EVENTS = {"ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATION_DELETED",
                     "ANNOTATIONS_CREATED", "ANNOTATIONS_DELETED"}


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def body() -> dict:
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise ApiError(400, "the request body must be a JSON object")
    return data


def required_project(data: dict | None = None) -> int:
    value = (data or {}).get("project", request.args.get("project"))
    project = project_id(value)
    if project is None:
        raise ApiError(400, "a 'project' (Label Studio project id) is required")
    return project


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or load_settings()
    app = Flask("takemeter")
    app.config["MAX_CONTENT_LENGTH"] = 256 * 1024 * 1024
    predictor = Predictor(settings, labeler_from_settings(settings))
    jobs = JobState(settings.model_dir)
    last_sync: dict[int, float] = {}
    refused: set[tuple[int, str]] = set()

    @app.before_request
    def check_auth():
        if settings.basic_auth is None:
            return None
        auth = request.authorization
        if auth is None or (auth.username, auth.password) != settings.basic_auth:
            return Response(json.dumps({"error": "basic auth required"}), 401,
                            {"WWW-Authenticate": 'Basic realm="takemeter"'},
                            mimetype="application/json")
        return None

    @app.errorhandler(ApiError)
    def api_error(exc: ApiError):
        return jsonify(error=exc.message), exc.status

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        return jsonify(error=exc.description or exc.name), exc.code

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        log.exception("unexpected error on %s %s", request.method, request.path)
        return jsonify(error=f"internal error: {type(exc).__name__}"), 500

    def sync_project(project: int) -> None:
        """In the background, at most every few seconds per project: keep Label Studio's
        side right (webhook auth, review tab, project model_version). Label Studio calls
        /setup before every prediction, so a change there is picked up soon."""
        now = time.monotonic()
        if not settings.label_studio_url or now - last_sync.get(project, -60.0) < 5.0:
            return
        last_sync[project] = now

        def work() -> None:
            lock_path = predictor.registry(project).root / "sync.lock"
            lock_path.parent.mkdir(parents=True, exist_ok=True)
            try:
                # One worker at a time: check-then-create would otherwise make two tabs.
                with open(lock_path, "a+") as lock:
                    fcntl.flock(lock, fcntl.LOCK_EX)
                    client = ls_client.connect(settings)
                    ls_client.ensure_webhook_auth(client, project, None, settings.basic_auth)
                    ls_client.ensure_review_tab(client, project)
                    version = predictor.model_version(project)
                    # Label Studio refuses a version no prediction carries yet: try again
                    # on later /setup calls, with one log line, not one each time.
                    if client.projects.get(id=project).model_version != version:
                        key = (project, version)
                        if not ls_client.set_model_version(client, project, version,
                                                           quiet=key in refused):
                            refused.add(key)
            except Exception as exc:
                last_sync.pop(project, None)
                log.warning("could not update project %d in Label Studio: %s", project,
                            ls_client.describe_error(exc))

        threading.Thread(target=work, daemon=True).start()

    @app.get("/health")
    def health():
        return jsonify(status="UP", model_class="TakeMeter", llm=predictor.labeler.model,
                       pid=os.getpid())

    @app.post("/setup")
    def setup():
        data = body()
        try:
            parse_taxonomy(data.get("schema") or "")
        except TaxonomyError as exc:
            raise ApiError(400, f"unsupported label config: {exc}") from None
        project = project_id(data.get("project"))
        if project is not None:
            sync_project(project)
        return jsonify(model_version=predictor.model_version(project))

    @app.post("/predict")
    def predict():
        data = body()
        tasks = data.get("tasks")
        if not isinstance(tasks, list) or not tasks:
            raise ApiError(400, "'tasks' must be a non-empty list of Label Studio tasks")
        try:
            taxonomy = parse_taxonomy(data.get("label_config") or "")
        except TaxonomyError as exc:
            raise ApiError(400, f"unsupported label config: {exc}") from None
        project = project_id(data.get("project"))
        version, results = predictor.predict(project, taxonomy, tasks)
        return jsonify(results=results, model_version=version)

    @app.post("/webhook")
    def webhook():
        data = body()
        action = data.get("action")
        if not isinstance(action, str):
            raise ApiError(400, "'action' is required")
        if action != "START_TRAINING" and action not in ANNOTATION_EVENTS:
            return jsonify(status="ignored", action=action)
        project = required_project(data)
        if action == "START_TRAINING":
            jobs.request(project, "Start Training")
        elif not jobs.count_annotation(project, settings.train_after_annotations):
            return jsonify(status="counted", action=action)
        else:
            jobs.request(project, f"{settings.train_after_annotations} annotations")
        start_runner(settings, jobs, project)
        return jsonify(status="training requested", action=action, project=project), 201

    @app.get("/versions")
    def versions():
        project = required_project(request.get_json(silent=True) or {})
        registry = predictor.registry(project)
        found = registry.versions()
        return jsonify(versions=[m["version"] for m in found],
                       serving=predictor.model_version(project),
                       details=[{k: m.get(k) for k in ("version", "created", "promoted",
                                                       "validation", "data", "base_model")}
                                for m in found])

    @app.post("/versions/promote")
    def promote():
        """Serve a kept version (or roll back to an older one) and re-score."""
        data = body()
        project = required_project(data)
        registry = predictor.registry(project)
        version = data.get("version")
        if not isinstance(version, str) or registry.meta(version) is None:
            raise ApiError(404, f"no complete model version {version!r} in project {project}")
        registry.promote(version)
        jobs.request(project, f"promoted {version} by hand", kind=RESCORE)
        start_runner(settings, jobs, project)
        return jsonify(project=project, serving=version)

    @app.get("/training")
    def training():
        return jsonify(project=(project := required_project()), **jobs.status(project))

    @app.get("/queue")
    def queue():
        project = required_project()
        path = predictor.registry(project).root / "queue.json"
        if not path.is_file():
            raise ApiError(404, "no review queue yet: it is built after the first promoted "
                                "training run")
        summary = json.loads(path.read_text())
        if request.args.get("format") != "csv":
            return jsonify(summary)
        rows = summary["rows"] if request.args.get("all") else [
            r for r in summary["rows"] if r["in_queue"]]
        return Response(queue_csv(rows), mimetype="text/csv")

    @app.get("/metrics")
    def metrics():
        return jsonify(llm_model=predictor.labeler.model, **predictor.labeler.cache.usage())

    return app
