"""When a workflow is due: the pre-labeling rule the project sync (on /setup) and the
periodic reconcile (backend/jobs/reconcile.py) both apply, and the training rule the
webhook applies to Label Studio's events."""

from __future__ import annotations

from backend.domain.jobs import AnnotationCounter, Lane, RunState, StatusStore

CLICKED = "Start Training"  # the reason a click's request carries


def training_due(
    counter: AnnotationCounter, project: int, *, clicked: bool, every: int
) -> str | None:
    """Why a training run should start now, or None: "Start Training" always does; an
    annotation event is counted, and every `every` (TRAIN_AFTER_ANNOTATIONS) of them do."""
    if clicked:
        return CLICKED
    if counter.count_annotation(project, every):
        return f"{every} annotations"
    return None


def prelabel_due(client, state: StatusStore, project: int) -> str | None:
    """Why the project's pre-labeling job should run now, or None. A project seen empty
    is recorded as such, so the reconcile watches it from then on."""
    status = state.status(project, Lane.PRELABEL)
    if status.get("pending") or status["state"] in (
        RunState.QUEUED,
        RunState.RUNNING,
        RunState.RETRYING,
    ):
        return None
    count = client.projects.get(id=project).task_number or 0
    seen = status.get("tasks")
    if seen is None and not count:
        # Else a project connected while empty stays unknown to the reconcile, and posts
        # whose TASKS_CREATED webhook was refused (sent before this backend had put its
        # basic auth on the webhook) would never be pre-labeled.
        state.set_status(project, Lane.PRELABEL, tasks=0)
        return None
    if seen is None:
        return f"{count} tasks, never pre-labeled by this backend"
    if seen != count:
        return f"{count} tasks, the last pre-labeling run saw {seen}"
    return None
