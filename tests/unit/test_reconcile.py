"""The reconcile: when the pre-labeling job is due, and lanes left without a runner."""

from __future__ import annotations

from backend.config import load_settings
from backend.domain.jobs import Kind
from backend.jobs.dispatch import Dispatcher
from backend.jobs.reconcile import reconcile_projects
from backend.jobs.state import JobState
from backend.workflows.triggers import prelabel_due
from tests.conftest import ROOT
from tests.doubles.label_studio import FakeLabelStudio

LABEL_CONFIG = (ROOT / "label_config.xml").read_text()


class Recording(Dispatcher):
    """The real dispatcher with the runner start recorded instead of spawned."""

    def __init__(self, settings, state) -> None:
        super().__init__(settings, state)
        self.kicked: list[tuple[int, str]] = []

    def kick(self, project: int, lane: str) -> bool:
        self.kicked.append((project, lane))
        return True


def test_prelabeling_is_due_until_a_run_saw_every_task(tmp_path):
    fake, state = FakeLabelStudio(), JobState(tmp_path)
    empty = fake.add_project(LABEL_CONFIG)
    project = fake.add_project(LABEL_CONFIG)
    assert prelabel_due(fake, state, empty) is None  # nothing to label
    fake.add_task(project, "a post")
    assert prelabel_due(fake, state, project) == "1 tasks, never pre-labeled by this backend"
    state.request(project, "connected", kind=Kind.PRELABEL)
    assert prelabel_due(fake, state, project) is None  # already asked for
    lease = state.acquire(project, "prelabel")
    state.take_pending(lease)
    state.set_status(project, "prelabel", state="finished", tasks=1)
    state.take_pending(lease)
    assert prelabel_due(fake, state, project) is None
    fake.add_task(project, "imported while the backend was down")
    assert prelabel_due(fake, state, project) == "2 tasks, the last pre-labeling run saw 1"


def test_reconcile_requests_what_is_due_and_restarts_orphaned_lanes(tmp_path):
    fake = FakeLabelStudio()
    settings = load_settings({"MODEL_DIR": str(tmp_path)})
    state = JobState(tmp_path)
    dispatcher = Recording(settings, state)
    project = fake.add_project(LABEL_CONFIG)
    fake.add_task(project, "a post")
    state.count_annotation(project, threshold=100)  # the backend knows the project
    assert reconcile_projects(fake, dispatcher) == [project]
    assert dispatcher.kicked == [(project, "prelabel")]
    assert state.status(project, "prelabel")["requested_by"].startswith("1 tasks")

    # A training run whose runner died: its lane has work and no runner.
    state.request(project, "Start Training", kind=Kind.TRAIN)
    lease = state.acquire(project, "training")
    state.take_pending(lease)
    lease.release()
    dispatcher.kicked.clear()
    assert sorted(dispatcher.recover()) == [(project, "prelabel"), (project, "training")]


def test_one_failing_project_does_not_stop_the_others(tmp_path):
    fake = FakeLabelStudio()
    dispatcher = Recording(load_settings({"MODEL_DIR": str(tmp_path)}), JobState(tmp_path))
    good = fake.add_project(LABEL_CONFIG)
    fake.add_task(good, "a post")
    dispatcher.state.count_annotation(good, threshold=100)
    dispatcher.state.count_annotation(999, threshold=100)  # gone from Label Studio
    assert reconcile_projects(fake, dispatcher) == [good]
