"""Keep Label Studio's side of a project right: webhook auth, the review tab, the
sampling that makes "Label All Tasks" follow the review order, the project's
model_version, and pre-labels for every task (the pre-labeling job is requested when the
project has tasks it has not seen). Label Studio calls /setup before every prediction,
so a change made there is picked up within seconds; the work runs in the background, at
most every few seconds per project, one worker at a time."""

from __future__ import annotations

import fcntl
import logging
import threading
import time
from collections.abc import Callable

from backend.config import Settings
from backend.domain.jobs import Kind, RequestJob, StatusStore
from backend.inference.predictor import Predictor
from backend.labelstudio import client as ls_client
from backend.model.registry import Registry
from backend.workflows.triggers import prelabel_due

log = logging.getLogger(__name__)

EVERY_SECONDS = 5.0


class ProjectSync:
    def __init__(
        self,
        settings: Settings,
        predictor: Predictor,
        *,
        connect: Callable[[], ls_client.LabelStudio] | None = None,
        jobs: StatusStore | None = None,
        request_job: RequestJob | None = None,
    ) -> None:
        self.settings = settings
        self.predictor = predictor
        self.jobs = jobs  # with `request_job`: request the pre-labeling job where it is due
        self.request_job = request_job
        self.connect = connect or (lambda: ls_client.connect(settings))
        self._last: dict[int, float] = {}
        self._refused: set[tuple[int, str]] = set()
        self._lock = threading.Lock()

    def soon(self, project: int, backend_url: str) -> bool:
        """Start a sync of `project` in the background unless one ran lately. The
        backend's credentials go only to webhooks at `backend_url` + "/webhook"."""
        if not self.settings.label_studio_url:
            return False
        now = time.monotonic()
        with self._lock:
            if now - self._last.get(project, -EVERY_SECONDS * 12) < EVERY_SECONDS:
                return False
            self._last[project] = now
        threading.Thread(target=self.run, args=(project, backend_url), daemon=True).start()
        return True

    def run(self, project: int, backend_url: str) -> None:
        try:
            # One worker at a time: check-then-create would otherwise make two tabs.
            lock_path = Registry(self.settings.model_dir, project).lock_file("sync")
            with open(lock_path, "a+") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                client = self.connect()
                if not ls_client.ensure_webhook_auth(
                    client, project, backend_url, self.settings.basic_auth
                ):
                    # Connecting calls /setup before the webhook exists: let the next
                    # /setup try again instead of waiting out the interval.
                    with self._lock:
                        self._last.pop(project, None)
                ls_client.ensure_review_tab(client, project)
                current = client.projects.get(id=project)
                version = self.predictor.model_version(project)
                # Label Studio refuses a version no prediction carries yet: try again on
                # later /setup calls, with one log line, not one each time.
                if current.model_version != version:
                    key = (project, version)
                    if not ls_client.set_model_version(
                        client, project, version, quiet=key in self._refused
                    ):
                        self._refused.add(key)
                ls_client.ensure_sampling(client, project, current.sampling)
                if self.jobs is not None and self.request_job is not None:
                    reason = prelabel_due(client, self.jobs, project)
                    if reason:
                        self.request_job(project, reason, kind=Kind.PRELABEL)
        except Exception as exc:
            with self._lock:
                self._last.pop(project, None)
            log.warning(
                "could not update project %d in Label Studio: %s",
                project,
                ls_client.describe_error(exc),
            )
