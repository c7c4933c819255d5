"""The Label Studio side, through label-studio-sdk: pull tasks, push predictions, keep the
project's model version, webhook auth and review-queue tab right."""

from __future__ import annotations

import base64
import json
import logging

from label_studio_sdk import LabelStudio
from label_studio_sdk.core.api_error import ApiError

from backend.config import ConfigError, Settings
from backend.policy import QUEUE_BELOW

log = logging.getLogger(__name__)

REVIEW_TAB = "Review queue"


def connect(settings: Settings) -> LabelStudio:
    if not settings.label_studio_url or not settings.label_studio_api_key:
        raise ConfigError("LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY must be set to reach "
                          "Label Studio")
    return LabelStudio(base_url=settings.label_studio_url,
                       api_key=settings.label_studio_api_key, timeout=120)


def describe_error(exc: Exception) -> str:
    """A one-line reason: the SDK's ApiError text carries every response header."""
    if isinstance(exc, ApiError):
        return f"Label Studio answered {exc.status_code}: {json.dumps(exc.body)[:300]}"
    return f"{type(exc).__name__}: {str(exc)[:300]}"


def all_tasks(client: LabelStudio, project: int) -> list[dict]:
    """Every task of the project with its annotations (a JSON export of all tasks)."""
    chunks = client.projects.exports.download_sync(id=project, export_type="JSON",
                                                   download_all_tasks=True)
    return json.loads(b"".join(chunks))


def set_model_version(client: LabelStudio, project: int, version: str) -> bool:
    """Score columns and filters in the Data Manager follow project.model_version.
    Label Studio refuses a version that no prediction or live backend carries yet."""
    try:
        client.projects.update(id=project, model_version=version)
        return True
    except ApiError as exc:
        log.warning("could not set project %d's model_version to %s: %s", project, version,
                    describe_error(exc))
        return False


def import_predictions(client: LabelStudio, project: int, predictions: list[dict]) -> None:
    for start in range(0, len(predictions), 500):
        client.projects.import_predictions(id=project, request=predictions[start:start + 500])


def review_tab_data(from_name_score_below: float = QUEUE_BELOW) -> dict:
    """Unlabeled tasks whose prediction score is under the threshold, lowest first."""
    return {
        "title": REVIEW_TAB,
        "filters": {"conjunction": "and", "items": [
            {"filter": "filter:tasks:total_annotations", "operator": "equal",
             "type": "Number", "value": 0},
            {"filter": "filter:tasks:predictions_score", "operator": "less",
             "type": "Number", "value": from_name_score_below},
        ]},
        "ordering": ["tasks:predictions_score"],
        "hiddenColumns": {"explore": [], "labeling": []},
    }


def ensure_review_tab(client: LabelStudio, project: int) -> int:
    """Create the review-queue tab, or put its filters back if someone changed them."""
    data = review_tab_data()
    for view in client.views.list(project=project):
        if (view.data or {}).get("title") == REVIEW_TAB:
            current = view.data or {}
            if (current.get("filters") != data["filters"]
                    or current.get("ordering") != data["ordering"]):
                client.views.update(id=view.id, project=project, data={**current, **data})
            return view.id
    return client.views.create(project=project, data=data).id


def ensure_webhook_auth(client: LabelStudio, project: int, backend_url_prefix: str | None,
                        auth: tuple[str, str] | None) -> None:
    """Label Studio's annotation webhooks do not carry the backend's basic auth by
    themselves: give the project's webhooks to this backend the Authorization header."""
    if auth is None:
        return
    header = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    for hook in client.webhooks.list(project=project):
        if not hook.url.rstrip("/").endswith("/webhook"):
            continue
        if backend_url_prefix and not hook.url.startswith(backend_url_prefix):
            continue
        if (hook.headers or {}).get("Authorization") != header:
            client.webhooks.update(id=hook.id, url=hook.url,
                                   headers={**(hook.headers or {}), "Authorization": header})
