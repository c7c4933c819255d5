"""The Label Studio side, through label-studio-sdk: pull tasks, push predictions, keep the
project's model version, webhook auth and review-queue tab right."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
from label_studio_sdk import LabelStudio
from label_studio_sdk.core.api_error import ApiError

from backend.config import ConfigError, Settings
from backend.domain import queue

log = logging.getLogger(__name__)

# Why Label Studio refuses a token: the same words at the backend's start and in the CLI.
REJECTED_WHY = (
    "it is wrong, expired or revoked, or a legacy token while the organization "
    "has legacy tokens disabled (use a personal access token)"
)


def connect(settings: Settings, *, timeout: float = 120) -> LabelStudio:
    """An SDK client. LABEL_STUDIO_API_KEY may be a personal access token (a JWT refresh
    token, which the SDK exchanges for access tokens itself) or a legacy token."""
    if not settings.label_studio_url or not settings.label_studio_api_key:
        raise ConfigError(
            "LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY must be set to reach Label Studio"
        )
    try:
        return LabelStudio(
            base_url=settings.label_studio_url,
            api_key=settings.label_studio_api_key,
            timeout=timeout,
        )
    except ApiError as exc:  # the SDK refuses an expired personal access token itself
        raise ConfigError(
            f"LABEL_STUDIO_API_KEY was rejected before asking Label Studio "
            f"({_detail(exc)}): create a new personal access token"
        ) from None


def _detail(exc: ApiError) -> str:
    body = exc.body
    detail = body.get("detail") if isinstance(body, dict) else None
    return " ".join(str(detail or json.dumps(body, default=str)).split())[:200]


def describe_error(exc: Exception) -> str:
    """A one-line reason: the SDK's ApiError text carries every response header."""
    if isinstance(exc, ApiError):
        hint = " (check LABEL_STUDIO_API_KEY)" if exc.status_code in (401, 403) else ""
        return f"Label Studio answered {exc.status_code}: {json.dumps(exc.body)[:300]}{hint}"
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"


@dataclass(frozen=True)
class AccessProblem:
    """Why Label Studio cannot be used as configured, in one line, and which setting to
    check: LABEL_STUDIO_API_KEY (refused) or LABEL_STUDIO_URL (unreachable, not Label
    Studio)."""

    setting: str
    message: str

    def __str__(self) -> str:
        return self.message


def check_access(
    settings: Settings, *, client: LabelStudio | None = None, timeout: float = 10
) -> AccessProblem | None:
    """One cheap call (users.whoami, no retries); None when the URL and token work."""
    url = settings.label_studio_url

    def not_label_studio(why: str) -> AccessProblem:
        return AccessProblem(
            "LABEL_STUDIO_URL",
            f"{url} did not answer like Label Studio ({why}): check LABEL_STUDIO_URL",
        )

    try:
        client = client or connect(settings, timeout=timeout)
        client.users.whoami(request_options={"max_retries": 0})
    except ConfigError as exc:
        setting = "LABEL_STUDIO_URL" if not url else "LABEL_STUDIO_API_KEY"
        return AccessProblem(setting, str(exc))
    except httpx.HTTPError as exc:
        return AccessProblem(
            "LABEL_STUDIO_URL",
            f"cannot reach Label Studio at {url} ({type(exc).__name__}): check LABEL_STUDIO_URL",
        )
    except ApiError as exc:
        if exc.status_code in (401, 403):
            return AccessProblem(
                "LABEL_STUDIO_API_KEY",
                (
                    f"Label Studio at {url} rejected LABEL_STUDIO_API_KEY ({exc.status_code}: "
                    f"{_detail(exc)}): {REJECTED_WHY}"
                ),
            )
        return not_label_studio(f"it answered {exc.status_code} to the API")
    except ValueError:  # a token exchange answered by something that is not Label Studio
        return not_label_studio("its answer is not JSON")
    return None


def all_tasks(client: LabelStudio, project: int) -> list[dict]:
    """Every task of the project with its annotations (a JSON export of all tasks)."""
    chunks = client.projects.exports.download_sync(
        id=project, export_type="JSON", download_all_tasks=True
    )
    return json.loads(b"".join(chunks))


# What the pre-labeling job needs of each listed task. With fields="all" Label Studio
# computes these columns; naming them keeps it from rendering every annotation and
# prediction in full, which costs it about 15 times as much (a page of 1,000: 0.5 s vs 9 s).
LISTED_FIELDS = "id,data,total_annotations,predictions_model_versions"
VERSIONS_CUT_AT = 500  # Label Studio's limit on the joined versions column, in characters


def task_pages(client: LabelStudio, project: int, *, page_size: int = 1000) -> Iterator[list[dict]]:
    """The project's tasks a page at a time, so work can start before Label Studio lists
    them all: {"id", "data", "total_annotations" (not skipped), "model_versions" (the set
    of its predictions' versions)}."""
    page = 1
    while True:
        try:
            items: list[Any] = (
                client.tasks.list(
                    project=project,
                    page=page,
                    page_size=page_size,
                    fields="all",
                    include=LISTED_FIELDS,
                ).items
                or []
            )
        except ApiError as exc:
            if exc.status_code == 404:  # Label Studio's answer past the last page
                return
            raise
        tasks = [
            {
                "id": item.id,
                "data": item.data,
                "total_annotations": item.total_annotations or 0,
                "model_versions": shown_versions(item.predictions_model_versions),
            }
            for item in items
        ]
        cut = [task["id"] for task in tasks if task["model_versions"] is None]
        if cut:
            exact = exact_versions(client, project, cut)
            for task in tasks:
                if task["model_versions"] is None:
                    task["model_versions"] = exact.get(task["id"], set())
        if tasks:
            yield tasks
        if len(tasks) < page_size:
            return
        page += 1


def shown_versions(shown: str | None) -> set[str] | None:
    """The versions in Label Studio's joined column ("a,b" on SQLite, "a, b" on
    PostgreSQL, quotes taken out), or None where it may have been cut short."""
    versions = {v.strip() for v in (shown or "").split(",") if v.strip()}
    # PostgreSQL's form is cut before two quotes a version are taken out.
    if len(shown or "") + 2 * len(versions) >= VERSIONS_CUT_AT:
        return None
    return versions


def exact_versions(client: LabelStudio, project: int, tasks: list[int]) -> dict[int, set[str]]:
    """The model versions of these tasks' predictions, in full."""
    query = json.dumps({"selectedItems": {"all": False, "included": tasks}})
    items: list[Any] = (
        client.tasks.list(
            project=project,
            page=1,
            page_size=len(tasks),
            fields="all",
            include="id,predictions",
            query=query,
        ).items
        or []
    )
    return {
        item.id: {prediction.model_version or "" for prediction in item.predictions or []}
        for item in items
    }


def prediction_versions(client: LabelStudio, project: int) -> dict[int, set[str]]:
    """The model versions of the predictions each task holds (exports list only ids)."""
    found: dict[int, set[str]] = {}
    for prediction in client.predictions.list(project=project):
        found.setdefault(prediction.task, set()).add(prediction.model_version or "")
    return found


def with_predictions(client: LabelStudio, project: int, tasks: list[dict]) -> list[dict]:
    """The tasks with their predictions in full: an export lists only their ids, and what
    an annotator had in view (domain.labelings) needs their results and times."""
    by_task: dict[object, list[dict]] = {}
    for prediction in client.predictions.list(project=project):
        by_task.setdefault(prediction.task, []).append(prediction.model_dump(mode="json"))
    return [{**task, "predictions": by_task.get(task.get("id"), [])} for task in tasks]


def set_model_version(
    client: LabelStudio, project: int, version: str, *, quiet: bool = False
) -> bool:
    """Score columns and filters in the Data Manager follow project.model_version.
    Label Studio refuses a version that no prediction or live backend carries yet."""
    try:
        client.projects.update(id=project, model_version=version)
        return True
    except ApiError as exc:
        report = log.debug if quiet else log.info
        report(
            "could not set project %d's model_version to %s yet: %s",
            project,
            version,
            describe_error(exc),
        )
        return False


# Predictions per import request (about 1 MB). Few, large requests: Label Studio 1.23 at
# its defaults updates every task of the project on each one.
IMPORT_CHUNK = 5000


def import_predictions(client: LabelStudio, project: int, predictions: list[dict]) -> None:
    for start in range(0, len(predictions), IMPORT_CHUNK):
        # The SDK sends plain dicts as they are; its types name its request models.
        chunk: list[Any] = predictions[start : start + IMPORT_CHUNK]
        client.projects.import_predictions(id=project, request=chunk)


def ensure_review_tab(client: LabelStudio, project: int) -> int:
    """Create the review-queue tab, or put its filters back if someone changed them."""
    data = queue.review_tab()
    for view in client.views.list(project=project):
        if (view.data or {}).get("title") == queue.REVIEW_TAB:
            current = view.data or {}
            if (
                current.get("filters") != data["filters"]
                or current.get("ordering") != data["ordering"]
            ):
                client.views.update(id=view.id, project=project, data={**current, **data})
            return view.id
    return client.views.create(project=project, data=data).id


UNCERTAINTY_SAMPLING = "Uncertainty sampling"


def ensure_sampling(client: LabelStudio, project: int, current: object = None) -> bool:
    """Make "Label All Tasks" walk the review order. Label Studio serves that button by
    the project's sampling, not by any tab; uncertainty sampling serves unlabeled tasks
    lowest prediction score first (among predictions of the project's model_version),
    at random among the first (annotators + 1) so several annotators do not get the same
    task. `current` is the project's sampling when the caller has it; True when it had
    to be set."""
    if current is None:
        current = client.projects.get(id=project).sampling
    if current == UNCERTAINTY_SAMPLING:
        return False
    client.projects.update(id=project, sampling=UNCERTAINTY_SAMPLING)
    return True


def ensure_webhook_auth(
    client: LabelStudio, project: int, backend_url: str, auth: tuple[str, str] | None
) -> bool:
    """Label Studio's annotation webhooks do not carry the backend's basic auth by
    themselves: give the Authorization header to the project's webhook that points at
    this backend (exactly `backend_url` + "/webhook"), and to no other. False when that
    webhook does not exist yet (Label Studio calls /setup before it creates it)."""
    if auth is None:
        return True
    own = backend_url.rstrip("/") + "/webhook"
    header = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    found = False
    for hook in client.webhooks.list(project=project):
        if hook.url.rstrip("/") != own:
            continue
        found = True
        if (hook.headers or {}).get("Authorization") != header:
            client.webhooks.update(
                id=hook.id, url=hook.url, headers={**(hook.headers or {}), "Authorization": header}
            )
    return found


def project_exists(client: LabelStudio, project: int) -> bool:
    try:
        client.projects.get(id=project)
        return True
    except ApiError as exc:
        if exc.status_code == 404:
            return False
        raise


def ensure_project(client: LabelStudio, *, title: str, label_config: str, instructions: str = ""):
    """The project with this title, created or brought up to date with the config."""
    extra: dict[str, Any] = (
        {"expert_instruction": instructions, "show_instruction": True} if instructions else {}
    )
    listed: list[Any] = list(client.projects.list(title=title))
    for project in listed:
        if project.title != title:
            continue
        if project.label_config != label_config or (
            instructions and project.expert_instruction != instructions
        ):
            client.projects.update(id=project.id, label_config=label_config, **extra)
        return client.projects.get(id=project.id)
    return client.projects.create(title=title, label_config=label_config, **extra)


def import_posts(
    client: LabelStudio, project: int, rows: list[dict], *, key_field: str = "ref_id"
) -> list[int]:
    """Import task data rows, skipping those whose `key_field` is already in the project."""
    present = {str((t.get("data") or {}).get(key_field)) for t in all_tasks(client, project)}
    new = [row for row in rows if str(row.get(key_field)) not in present]
    ids: list[int] = []
    for start in range(0, len(new), 500):
        chunk: list[Any] = new[start : start + 500]
        response = client.projects.import_tasks(id=project, request=chunk, return_task_ids=True)
        ids += list(getattr(response, "task_ids", None) or [])  # not in the SDK's type
    return ids


def connect_backend(
    client: LabelStudio, project: int, *, url: str, title: str, auth: tuple[str, str] | None = None
) -> int:
    """Connect the backend at `url` to the project once; return the connection id."""
    for backend in client.ml.list(project=project):
        if backend.url.rstrip("/") == url.rstrip("/"):
            return backend.id
    options: dict = {"project": project, "url": url, "title": title}
    if auth:
        options.update(auth_method="BASIC_AUTH", basic_auth_user=auth[0], basic_auth_pass=auth[1])
    return client.ml.create(**options).id


def retrieve_predictions(client: LabelStudio, project: int) -> None:
    """What the Data Manager's "Retrieve Predictions" does, for all tasks."""
    client.actions.create(
        id="retrieve_tasks_predictions",
        project=project,
        selected_items={"all": True, "excluded": []},
    )
