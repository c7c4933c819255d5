"""The HTTP layer: Label Studio 1.23's ML protocol on Flask, plus status endpoints.

    GET  /health     liveness (Label Studio calls it before everything else; no auth)
    POST /setup      {"project", "schema"} -> {"model_version"}
    POST /predict    {"tasks", "label_config", "project"} -> {"results": [...]}
    POST /webhook    START_TRAINING and ANNOTATION_* events -> training triggers;
                     TASKS_CREATED -> the pre-labeling job
    GET  /versions   the project's model versions
    POST /versions/promote  {"project", "version"}: serve a kept or older version
    GET  /training   the project's training status
    GET  /jobs       the project's jobs: pre-labeling and training, with counts
    GET  /queue      the review queue (JSON, or CSV of the queued tasks with ?format=csv,
                     of every unlabeled task with &all=1)
    GET  /metrics    LLM calls, cache hits and token usage

Handlers only check the request and call the collaborators create_app is given.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
from collections.abc import Callable

from flask import Flask, Response, jsonify, request
from redis.exceptions import RedisError
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from backend.config import Settings, load_settings
from backend.domain import queue
from backend.domain.jobs import Kind, Lane
from backend.domain.taxonomy import Form, TaxonomyError, parse_form
from backend.inference.predictor import Predictor
from backend.jobs.compose import Parts
from backend.jobs.state import JobStore
from backend.labelstudio import client as ls_client
from backend.model.registry import SHOWN_NAME, InvalidName, kind_of, name_in
from backend.service import protocol
from backend.service.protocol import ProtocolError
from backend.workflows.sync import ProjectSync
from backend.workflows.triggers import training_due

log = logging.getLogger(__name__)


def _form(config: object) -> Form:
    try:
        return parse_form(config)
    except TaxonomyError as exc:
        raise ProtocolError(400, f"unsupported label config: {exc}") from None


def create_app(
    settings: Settings | None = None,
    *,
    predictor: Predictor | None = None,
    jobs: JobStore | None = None,
    sync: ProjectSync | None = None,
    start_lane: Callable[[int, str], object] | None = None,
    project_exists: Callable[[int], bool] | None = None,
) -> Flask:
    """The Flask app. Collaborators left out are built by backend.jobs.compose from
    `settings`: the predictor (LLM labeler + serving models), the job state, the Label
    Studio sync, what gets a project's job lane run (a runner process or a queue message;
    `start_lane(project, lane)` instead) and the project check (Label Studio's, when it
    is configured)."""
    settings = settings or load_settings()
    parts = Parts(settings, jobs=jobs, predictor=predictor, start_lane=start_lane)
    predictor, jobs, request_job = parts.predictor, parts.jobs, parts.dispatcher.request
    sync = sync or ProjectSync(settings, predictor, jobs=jobs, request_job=request_job)
    # With Label Studio configured, the pre-labeling job pushes what /predict lacks.
    pushes = bool(settings.label_studio_url and settings.label_studio_api_key)

    if project_exists is None:

        def project_exists(project: int) -> bool:
            if not settings.label_studio_url:
                return True  # nothing to ask; the runner reports a missing project
            try:
                return ls_client.project_exists(parts.connect(), project)
            except Exception as exc:  # Label Studio down: the runner retries and reports
                log.warning(
                    "could not check project %d in Label Studio: %s",
                    project,
                    ls_client.describe_error(exc),
                )
                return True

    app = Flask("takemeter")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes
    expected = settings.basic_auth

    @app.before_request
    def check_auth():
        if expected is None or request.path == "/health":
            return None
        auth = request.authorization
        given = (auth.username or "", auth.password or "") if auth else ("", "")
        # Both compared in full and in constant time: no early exit on the user name.
        user_ok = hmac.compare_digest(given[0].encode(), expected[0].encode())
        pass_ok = hmac.compare_digest(given[1].encode(), expected[1].encode())
        if auth is None or not (user_ok & pass_ok):
            return Response(
                json.dumps({"error": "basic auth required"}),
                401,
                {"WWW-Authenticate": 'Basic realm="takemeter"'},
                mimetype="application/json",
            )
        return None

    @app.errorhandler(ProtocolError)
    def protocol_error(exc: ProtocolError):
        return jsonify(error=exc.message), exc.status

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(exc: RequestEntityTooLarge):
        return jsonify(
            error=f"the request body is larger than MAX_REQUEST_BYTES={settings.max_request_bytes}"
        ), 413

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        return jsonify(error=exc.description or exc.name), exc.code

    @app.errorhandler(RedisError)
    def shared_state_away(exc: RedisError):
        log.warning("Redis unreachable on %s %s: %s", request.method, request.path, exc)
        return jsonify(
            error=f"the job state's Redis (REDIS_URL) is unreachable: "
            f"{type(exc).__name__}; try again shortly"
        ), 503

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        log.exception("unexpected error on %s %s", request.method, request.path)
        return jsonify(error=f"internal error: {type(exc).__name__}"), 500

    def parsed_json() -> object:
        try:
            return request.get_json(silent=True)
        except RecursionError:
            raise ProtocolError(400, "the request body nests too deeply") from None

    def body() -> dict:
        return protocol.body_object(parsed_json())

    def query_project() -> int:
        return protocol.required_project(request.args.get("project"))

    @app.get("/health")
    def health():
        return jsonify(
            status="UP", model_class="TakeMeter", llm=predictor.labeler.model, pid=os.getpid()
        )

    @app.post("/setup")
    def setup():
        data = body()
        _form(data.get("schema"))
        project = protocol.project_id(data.get("project"))
        if project is not None:
            sync.soon(project, settings.backend_url or request.url_root)
        return jsonify(model_version=predictor.model_version(project))

    @app.post("/predict")
    def predict():
        data = body()
        tasks = protocol.predict_tasks(data, limit=settings.max_predict_tasks)
        form = _form(data.get("label_config"))
        project = protocol.project_id(data.get("project"))
        queue_rest = pushes and project is not None
        version, results, missing = predictor.predict(project, form, tasks, ask_llm=not queue_rest)
        if queue_rest and missing:
            try:
                request_job(
                    project,
                    f"Retrieve Predictions: {missing} posts not asked yet",
                    kind=Kind.PRELABEL,
                )
            except Exception as exc:  # the queue away: still answer with what is cached
                log.warning(
                    "project %d: could not queue pre-labeling: %s",
                    project,
                    ls_client.describe_error(exc),
                )
        return jsonify(results=results, model_version=version)

    @app.post("/webhook")
    def webhook():
        data = body()
        action = protocol.action(data)
        if action == protocol.TASKS_EVENT and pushes:
            project = protocol.required_project(data.get("project"))
            request_job(project, "tasks imported", kind=Kind.PRELABEL)
            return jsonify(status="pre-labeling requested", action=action, project=project), 201
        if action != protocol.TRAINING_EVENT and action not in protocol.ANNOTATION_EVENTS:
            return jsonify(status="ignored", action=action)
        project = protocol.required_project(data.get("project"))
        reason = training_due(
            jobs,
            project,
            clicked=action == protocol.TRAINING_EVENT,
            every=settings.train_after_annotations,
        )
        if reason is None:
            return jsonify(status="counted", action=action)
        if not project_exists(project):
            raise ProtocolError(404, f"project {project} does not exist in Label Studio")
        request_job(project, reason, kind=Kind.TRAIN)
        return jsonify(
            status="training requested",
            action=action,
            project=project,
            message=f"Training of project {project} requested ({reason}); its "
            f"progress shows on the model's card in Settings > Model "
            f"and at GET /training?project={project}",
        ), 201

    @app.get("/versions")
    def versions():
        # Label Studio asks with ?project=; older callers sent it in a JSON body.
        data = parsed_json() if request.is_json else None
        given = request.args.get("project")
        if given is None and isinstance(data, dict):
            given = data.get("project")
        project = protocol.required_project(given)
        registry = predictor.registry(project)
        found = registry.versions()
        # Versions by the names Label Studio shows; each detail names its folder too. The
        # task ids a version learned from stay on disk: a large project has thousands.
        return jsonify(
            versions=[name_in(m) for m in found],
            serving=predictor.model_version(project),
            details=[
                {
                    **{
                        k: m.get(k)
                        for k in ("created", "promoted", "validation", "base_model", "metrics")
                    },
                    "kind": kind_of(m),
                    "data": {k: v for k, v in (m.get("data") or {}).items() if k != "trained_on"},
                    "version": name_in(m),
                    "folder": m["version"],
                }
                for m in found
            ],
        )

    @app.post("/versions/promote")
    def promote():
        """Serve a kept version (or roll back to an older one) and re-score."""
        data = body()
        project = protocol.required_project(data.get("project"))
        registry = predictor.registry(project)
        given = data.get("version")  # a folder name or a shown name ("v3 head 84%/25")
        try:
            folder = registry.folder(given)
        except InvalidName as exc:
            shown = isinstance(given, str) and SHOWN_NAME.fullmatch(given)
            raise ProtocolError(404 if shown else 400, str(exc)) from None
        if registry.meta(folder) is None:
            raise ProtocolError(404, f"no complete model version {given} in project {project}")
        registry.promote(folder)
        version = registry.name(folder)
        request_job(project, f"promoted {version} by hand", kind=Kind.RESCORE)
        return jsonify(project=project, serving=version)

    @app.get("/training")
    def training():
        return jsonify(project=(project := query_project()), **jobs.status(project))

    @app.get("/jobs")
    def job_status():
        project = query_project()
        return jsonify(
            project=project,
            mode="distributed" if settings.broker_url else "embedded",
            prelabel=jobs.status(project, Lane.PRELABEL),
            training=jobs.status(project, Lane.TRAINING),
        )

    @app.get("/queue")
    def review_queue():
        project = query_project()
        summary = predictor.registry(project).read_queue()
        if summary is None:
            raise ProtocolError(
                404, "no review queue yet: it is built after the first promoted training run"
            )
        if request.args.get("format") != "csv":
            return jsonify(summary)
        rows = (
            summary["rows"]
            if request.args.get("all")
            else [r for r in summary["rows"] if r["in_queue"]]
        )
        return Response(queue.to_csv(rows), mimetype="text/csv")

    @app.get("/metrics")
    def metrics():
        return jsonify(llm_model=predictor.labeler.model, **predictor.labeler.cache.usage())

    return app
