"""An in-process Label Studio for fast tests.

`FakeLabelStudio` answers exactly the label-studio-sdk calls the backend makes (see
backend/labelstudio/client.py, backend/workflows/rescore.py, backend/workflows/training.py,
backend/workflows/sync.py and backend/labelstudio/card.py) from memory, with the SDK's
own response types, and records every call. Like Label Studio it refuses a project
`model_version` that no prediction carries yet, a sampling it does not offer, and an ML
connection update without url and project (500) or, for a basic-auth connection, without
its auth fields; and it answers 404 for a project it does not know.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from label_studio_sdk.core.api_error import ApiError
from label_studio_sdk.projects.types import ImportPredictionsProjectsResponse
from label_studio_sdk.types import (
    LseProjectResponse,
    LseTask,
    MlBackend,
    Prediction,
    View,
    Webhook,
    WebhookSerializerForUpdate,
)

SAMPLINGS = ("Sequential sampling", "Uniform sampling", "Uncertainty sampling")


def not_found(what: str) -> ApiError:
    """The error the SDK raises for Label Studio's 404."""
    return ApiError(status_code=404, body={"detail": f"{what}: Not found."})


@dataclass
class FakeProject:
    """One project's state: what Label Studio would keep in its database."""

    id: int
    title: str
    label_config: str
    model_version: str = ""
    sampling: str = "Sequential sampling"  # Label Studio's default for a new project
    from_name: str = "label"
    to_name: str = "text"
    tasks: list[dict] = field(default_factory=list)
    predictions: list[Prediction] = field(default_factory=list)
    views: list[View] = field(default_factory=list)
    webhooks: list[Webhook] = field(default_factory=list)
    ml_backends: list[MlBackend] = field(default_factory=list)


class FakeLabelStudio:
    """Stands in for `label_studio_sdk.LabelStudio` (the calls the backend uses)."""

    def __init__(self) -> None:
        self.store: dict[int, FakeProject] = {}
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.fail_with: Exception | None = None  # raised by every SDK call when set
        self._ids = itertools.count(1)
        self.projects = _Projects(self)
        self.predictions = _Predictions(self)
        self.tasks = _Tasks(self)
        self.views = _Views(self)
        self.webhooks = _Webhooks(self)
        self.ml = _Ml(self)

    # ------------------------------------------------------------------ test setup

    def add_project(
        self, label_config: str, *, title: str = "Test project", model_version: str = ""
    ) -> int:
        """Create a project; return its id."""
        project = next(self._ids)
        self.store[project] = FakeProject(project, title, label_config, model_version)
        return project

    def add_task(
        self,
        project: int,
        text: str | None,
        *,
        label: str | None = None,
        split: str | None = None,
        cancelled: bool = False,
        data: dict | None = None,
    ) -> int:
        """Add a task (annotated with `label` when given); return its id."""
        state = self.project(project)
        task_data = dict(data or {})
        if text is not None:
            task_data["text"] = text
        if split is not None:
            task_data["split"] = split
        task_id = next(self._ids)
        state.tasks.append(
            {"id": task_id, "project": project, "data": task_data, "annotations": []}
        )
        if label is not None:
            self.annotate(project, task_id, label, cancelled=cancelled)
        return task_id

    def annotate(
        self,
        project: int,
        task: int,
        label: str | None,
        *,
        cancelled: bool = False,
        result: list[dict] | None = None,
    ) -> None:
        """An annotator labels `task` with `label` (or gives the whole `result`, for a
        config of several questions)."""
        state = self.project(project)
        stamp = datetime.now(UTC).isoformat()
        next(t for t in state.tasks if t["id"] == task)["annotations"].append(
            {
                "id": next(self._ids),
                "completed_by": 1,
                "was_cancelled": cancelled,
                "created_at": stamp,
                "updated_at": stamp,
                "result": result
                if result is not None
                else [
                    {
                        "from_name": state.from_name,
                        "to_name": state.to_name,
                        "type": "choices",
                        "value": {"choices": [label]},
                    }
                ],
            }
        )

    def add_webhook(self, project: int, url: str, headers: dict | None = None) -> int:
        """Register a webhook on the project; return its id."""
        hook = Webhook(id=next(self._ids), project=project, url=url, headers=headers or {})
        self.project(project).webhooks.append(hook)
        return hook.id

    def add_ml_backend(
        self,
        project: int,
        url: str,
        *,
        title: str = "TakeMeter",
        model_version: str = "",
        basic_auth_user: str | None = None,
    ) -> int:
        """Connect an ML backend to the project (with basic auth when a user is given);
        return the connection's id."""
        backend = MlBackend(
            id=next(self._ids),
            project=project,
            url=url,
            title=title,
            description="",
            model_version=model_version,
            auth_method="BASIC_AUTH" if basic_auth_user else "NONE",
            basic_auth_user=basic_auth_user or "",
        )
        self.project(project).ml_backends.append(backend)
        return backend.id

    # ------------------------------------------------------------------ inspection

    def project(self, project: int) -> FakeProject:
        """The project's state (a KeyError for an unknown id, unlike the SDK calls)."""
        return self.store[project]

    def called(self, name: str) -> list[dict[str, Any]]:
        """The keyword arguments of each call to `name` (e.g. "projects.update")."""
        return [kwargs for called, kwargs in self.calls if called == name]

    def predictions_of(self, project: int, task: int | None = None) -> list[Prediction]:
        """The predictions the project holds, optionally of one task."""
        return [p for p in self.project(project).predictions if task is None or p.task == task]

    # ------------------------------------------------------------------ internals

    def _call(self, name: str, **kwargs: Any) -> None:
        self.calls.append((name, kwargs))
        if self.fail_with is not None:
            raise self.fail_with

    def _known(self, project: object) -> FakeProject:
        try:
            return self.store[int(project)]  # type: ignore[arg-type]
        except (KeyError, TypeError, ValueError):
            raise not_found(f"project {project}") from None

    def _response(self, state: FakeProject) -> LseProjectResponse:
        return LseProjectResponse.model_validate(
            {
                "id": state.id,
                "title": state.title,
                "label_config": state.label_config,
                "model_version": state.model_version,
                "task_number": len(state.tasks),
                "sampling": state.sampling,
                "assignment_settings": {},
                "review_settings": {},
            }
        )


class _Resource:
    """One resource of the client (projects, views, ...), reading the fake's state."""

    def __init__(self, fake: FakeLabelStudio) -> None:
        self._fake = fake


class _Exports(_Resource):
    def download_sync(
        self, id: int, *, export_type: str = "JSON", download_all_tasks: bool = False, **_: Any
    ) -> Iterator[bytes]:
        """A JSON export in small chunks; predictions appear as ids, as in Label Studio."""
        self._fake._call(
            "projects.exports.download_sync",
            id=id,
            export_type=export_type,
            download_all_tasks=download_all_tasks,
        )
        state = self._fake._known(id)
        if export_type != "JSON":
            raise ApiError(status_code=400, body={"detail": f"unsupported {export_type}"})
        tasks = state.tasks if download_all_tasks else [t for t in state.tasks if t["annotations"]]
        exported = [
            {**task, "predictions": [p.id for p in state.predictions if p.task == task["id"]]}
            for task in tasks
        ]
        payload = json.dumps(exported).encode()
        return iter([payload[i : i + 256] for i in range(0, len(payload), 256)])


class _Projects(_Resource):
    def __init__(self, fake: FakeLabelStudio) -> None:
        super().__init__(fake)
        self.exports = _Exports(fake)

    def get(self, id: int, **_: Any) -> LseProjectResponse:
        self._fake._call("projects.get", id=id)
        return self._fake._response(self._fake._known(id))

    def update(self, id: int, **fields: Any) -> LseProjectResponse:
        self._fake._call("projects.update", id=id, **fields)
        state = self._fake._known(id)
        version = fields.get("model_version")
        if version is not None:
            if version and not any(p.model_version == version for p in state.predictions):
                raise ApiError(
                    status_code=400,
                    body={
                        "model_version": [
                            f"Model version doesn't exist either as live model or as static "
                            f"predictions: {version}"
                        ]
                    },
                )
            state.model_version = version
        sampling = fields.get("sampling")
        if sampling is not None:
            if sampling not in SAMPLINGS:
                raise ApiError(
                    status_code=400, body={"sampling": [f'"{sampling}" is not a valid choice.']}
                )
            state.sampling = sampling
        for name in ("title", "label_config"):
            if name in fields:
                setattr(state, name, fields[name])
        return self._fake._response(state)

    def import_predictions(
        self, id: int, *, request: list[dict], **_: Any
    ) -> ImportPredictionsProjectsResponse:
        self._fake._call("projects.import_predictions", id=id, request=list(request))
        state = self._fake._known(id)
        task_ids = {t["id"] for t in state.tasks}
        for item in request:
            if item.get("task") not in task_ids:
                raise ApiError(
                    status_code=400,
                    body={"detail": f"task {item.get('task')} is not in project {id}"},
                )
        for item in request:
            state.predictions.append(
                Prediction(
                    id=next(self._fake._ids),
                    project=id,
                    task=item["task"],
                    model_version=item.get("model_version"),
                    score=item.get("score"),
                    result=item.get("result") or [],
                )
            )
        return ImportPredictionsProjectsResponse(created=len(request))


class _Predictions(_Resource):
    def list(self, *, project: int | None = None, **_: Any) -> list[Prediction]:
        self._fake._call("predictions.list", project=project)
        return list(self._fake._known(project).predictions)


@dataclass
class _Page:
    items: list[LseTask]


class _Tasks(_Resource):
    def list(
        self,
        *,
        project: int,
        page: int = 1,
        page_size: int = 100,
        fields: str = "task_only",
        include: str | None = None,
        query: str | None = None,
        **_: Any,
    ) -> _Page:
        """A page of tasks, 404 past the last page, as in Label Studio. With fields="all"
        the computed columns (total_annotations counts the kept annotations;
        predictions_model_versions is the SQLite form, cut at 500 characters), and the
        annotations and predictions; `include` keeps only the fields it names; `query`
        may select tasks by id."""
        self._fake._call(
            "tasks.list",
            project=project,
            page=page,
            page_size=page_size,
            fields=fields,
            include=include,
            query=query,
        )
        state = self._fake._known(project)
        tasks = state.tasks
        if query:
            chosen_ids = set(json.loads(query)["selectedItems"]["included"])
            tasks = [task for task in tasks if task["id"] in chosen_ids]
        chosen = tasks[(page - 1) * page_size : page * page_size]
        if not chosen and page > 1:
            raise not_found("Invalid page")
        listed = []
        for stored in chosen:
            task = {k: v for k, v in stored.items() if k != "annotations"}
            if fields == "all":
                held = [p for p in state.predictions if p.task == task["id"]]
                task.update(
                    annotations=stored["annotations"],
                    predictions=[p.model_dump(mode="json") for p in held],
                    total_annotations=sum(not a["was_cancelled"] for a in stored["annotations"]),
                    predictions_model_versions=",".join(
                        dict.fromkeys(p.model_version or "" for p in held)
                    )[:500],
                )
            if include:
                task = {k: v for k, v in task.items() if k in include.split(",")}
            listed.append(LseTask.model_validate({"data": {}, **task}))
        return _Page(listed)


class _Views(_Resource):
    def list(self, *, project: int | None = None, **_: Any) -> list[View]:
        self._fake._call("views.list", project=project)
        return list(self._fake._known(project).views)

    def create(self, *, project: int, data: dict | None = None, **_: Any) -> View:
        self._fake._call("views.create", project=project, data=data)
        view = View(id=next(self._fake._ids), project=project, data=data or {})
        self._fake._known(project).views.append(view)
        return view

    def update(self, id: int | str, *, project: int, data: dict | None = None, **_: Any) -> View:
        self._fake._call("views.update", id=id, project=project, data=data)
        state = self._fake._known(project)
        for index, view in enumerate(state.views):
            if str(view.id) == str(id):
                state.views[index] = View(id=view.id, project=project, data=data or {})
                return state.views[index]
        raise not_found(f"view {id}")


class _Webhooks(_Resource):
    def list(self, *, project: int | str | None = None, **_: Any) -> list[Webhook]:
        self._fake._call("webhooks.list", project=project)
        return list(self._fake._known(project).webhooks)

    def update(
        self, id: int, *, url: str | None = None, headers: dict | None = None, **_: Any
    ) -> WebhookSerializerForUpdate:
        self._fake._call("webhooks.update", id=id, url=url, headers=headers)
        for state in self._fake.store.values():
            for index, hook in enumerate(state.webhooks):
                if hook.id == id:
                    state.webhooks[index] = Webhook(
                        id=id,
                        project=hook.project,
                        url=url or hook.url,
                        headers=hook.headers if headers is None else headers,
                    )
                    return WebhookSerializerForUpdate(id=id, url=url or hook.url, headers=headers)
        raise not_found(f"webhook {id}")


class _Ml(_Resource):
    def list(self, *, project: int | None = None, **_: Any) -> list[MlBackend]:
        self._fake._call("ml.list", project=project)
        return list(self._fake._known(project).ml_backends)

    def update(self, id: int, **fields: Any) -> MlBackend:
        fields.pop("request_options", None)
        self._fake._call("ml.update", id=id, **fields)
        if "url" not in fields or "project" not in fields:  # what Label Studio 1.23 does
            raise ApiError(status_code=500, body={"detail": "url and project are required"})
        state = self._fake._known(fields["project"])
        for index, backend in enumerate(state.ml_backends):
            if backend.id != id:
                continue
            # Label Studio re-checks the connection with the fields sent: a basic-auth
            # backend answers its /setup with 401 without them.
            if backend.auth_method == "BASIC_AUTH" and not (
                fields.get("auth_method") == "BASIC_AUTH"
                and fields.get("basic_auth_user") == backend.basic_auth_user
                and "basic_auth_pass" in fields
            ):
                raise ApiError(
                    status_code=400,
                    body={
                        "non_field_errors": [
                            "Successfully connected but it doesn't look like a valid ML backend"
                        ]
                    },
                )
            changed = {k: fields[k] for k in ("title", "description", "url") if k in fields}
            state.ml_backends[index] = backend.model_copy(update=changed)
            return state.ml_backends[index]
        raise not_found(f"ML backend {id}")
