"""Label Studio's ML-backend protocol: what its requests carry, checked before any work.

Every check raises ProtocolError with the HTTP status and a message for the client, so a
malformed request gets a 4xx that says what is wrong, never a 500.
"""

from __future__ import annotations

import re

from backend.model.registry import InvalidName, check_project_id

ANNOTATION_EVENTS = frozenset(
    {
        "ANNOTATION_CREATED",
        "ANNOTATION_UPDATED",
        "ANNOTATION_DELETED",
        "ANNOTATIONS_CREATED",
        "ANNOTATIONS_DELETED",
    }
)
TRAINING_EVENT = "START_TRAINING"
TASKS_EVENT = "TASKS_CREATED"  # data import: the pre-labeling job takes the new tasks
# Label Studio names projects "<id>.<created timestamp>" in /setup and /predict.
_PROJECT = re.compile(r"([0-9]{1,10})(\.[0-9]{1,20})?")


class ProtocolError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def project_id(value: object) -> int | None:
    """The project id in any of the shapes Label Studio sends (an int, "3", "3.1716...",
    {"id": 3}); None when absent or malformed."""
    if isinstance(value, dict):
        value = value.get("id")
    if isinstance(value, str):
        match = _PROJECT.fullmatch(value.strip())
        value = int(match.group(1)) if match else None
    try:
        return check_project_id(value)  # the registry's rule: one range for every id
    except InvalidName:
        return None


def required_project(value: object) -> int:
    project = project_id(value)
    if project is None:
        shown = "" if value is None else f", got {str(value)[:40]!r}"
        raise ProtocolError(400, f"a 'project' (a Label Studio project id) is required{shown}")
    return project


def body_object(data: object) -> dict:
    if not isinstance(data, dict):
        raise ProtocolError(400, "the request body must be a JSON object")
    return data


def predict_tasks(data: dict, *, limit: int) -> list:
    tasks = data.get("tasks")
    if not isinstance(tasks, list) or not tasks:
        raise ProtocolError(400, "'tasks' must be a non-empty list of Label Studio tasks")
    if len(tasks) > limit:
        raise ProtocolError(
            413,
            f"{len(tasks)} tasks in one /predict; at most MAX_PREDICT_TASKS={limit} are accepted",
        )
    return tasks


def action(data: dict) -> str:
    value = data.get("action")
    if not isinstance(value, str) or not value or len(value) > 100:
        raise ProtocolError(400, "'action' (a Label Studio webhook action) is required")
    return value
