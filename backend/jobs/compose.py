"""The backend's parts, built in one place for every process that serves or runs jobs: the
HTTP service (backend/service/app.py), the embedded mode's runner (run.py), a worker's
jobs (lane.run_message) and the reconcile (reconcile.py, worker.py).

Each part is built when first asked for, so a process that only dispatches (the
reconcile) never opens the LLM client or loads a model. A part given to `Parts` (a test's
predictor, say) is used as it is.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property

from backend.config import Settings
from backend.inference.predictor import Predictor
from backend.jobs.dispatch import Dispatcher
from backend.jobs.state import JobStore, open_state
from backend.labelstudio import client as ls_client
from backend.llm.labeler import from_settings as labeler_from_settings


class Parts:
    """The collaborators of one process, each made once."""

    def __init__(
        self,
        settings: Settings,
        *,
        jobs: JobStore | None = None,
        predictor: Predictor | None = None,
        start_lane: Callable[[int, str], object] | None = None,
    ) -> None:
        self.settings = settings
        self._start_lane = start_lane  # instead of the mode's runner or queue message
        if jobs is not None:
            self.jobs = jobs
        if predictor is not None:
            self.predictor = predictor

    @cached_property
    def jobs(self) -> JobStore:
        return open_state(self.settings)

    @cached_property
    def predictor(self) -> Predictor:
        """The LLM labeler and the serving models: one per process, shared by its jobs."""
        return Predictor(self.settings, labeler_from_settings(self.settings))

    @cached_property
    def dispatcher(self) -> Dispatcher:
        return Dispatcher(self.settings, self.jobs, start_lane=self._start_lane)

    def connect(self) -> ls_client.LabelStudio:
        """A Label Studio client (ConfigError when LABEL_STUDIO_URL or the key is missing)."""
        return ls_client.connect(self.settings)
