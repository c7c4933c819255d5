"""The sync keeps "Label All Tasks" walking the review order: Label Studio serves that
button by the project's sampling, so every sync sets uncertainty sampling (lowest
prediction score first) and puts it back when someone changes it."""

from __future__ import annotations

from pathlib import Path

import pytest

from backend.config import load_settings
from backend.inference.predictor import Predictor
from backend.labelstudio import client as ls_client
from backend.llm.labeler import from_settings as labeler_from_settings
from backend.workflows.sync import ProjectSync
from tests.doubles.label_studio import FakeLabelStudio

ROOT = Path(__file__).resolve().parents[2]
LABEL_CONFIG = (ROOT / "label_config.xml").read_text()
UNCERTAINTY = "Uncertainty sampling"


@pytest.fixture
def sync(tmp_path):
    settings = load_settings(
        {
            "MODEL_DIR": str(tmp_path),
            "LLM_BASE_URL": "http://127.0.0.1:9/v1",
            "LLM_MODEL": "test-llm",
            "LABEL_STUDIO_URL": "http://ls.invalid",
            "LABEL_STUDIO_API_KEY": "token",
        }
    )
    predictor = Predictor(settings, labeler_from_settings(settings))
    fake = FakeLabelStudio()
    yield ProjectSync(settings, predictor, connect=lambda: fake), fake
    predictor.labeler.close()


def sampling_updates(fake: FakeLabelStudio) -> list[dict]:
    return [c for c in fake.called("projects.update") if "sampling" in c]


def test_a_sync_sets_uncertainty_sampling_and_puts_it_back(sync):
    runner, fake = sync
    project = fake.add_project(LABEL_CONFIG)
    assert fake.project(project).sampling == "Sequential sampling"  # Label Studio's default

    runner.run(project, "http://backend:9090")
    assert fake.project(project).sampling == UNCERTAINTY
    runner.run(project, "http://backend:9090")
    assert len(sampling_updates(fake)) == 1  # kept: no update while it is right

    fake.project(project).sampling = "Sequential sampling"  # someone changed it back
    runner.run(project, "http://backend:9090")
    assert fake.project(project).sampling == UNCERTAINTY
    assert sampling_updates(fake) == [{"id": project, "sampling": UNCERTAINTY}] * 2


def test_a_sampling_update_that_fails_leaves_the_model_version_set(sync):
    """The model_version is what uncertainty sampling orders by: it goes first."""
    runner, fake = sync
    project = fake.add_project(LABEL_CONFIG, model_version="old")
    task = fake.add_task(project, "a post")
    fake.projects.import_predictions(
        id=project,
        request=[{"task": task, "model_version": "zero-shot:test-llm", "score": 0.4, "result": []}],
    )
    original = fake.projects.update

    def refuse_sampling(id, **fields):
        if "sampling" in fields:
            raise ConnectionError("Label Studio went away")
        return original(id, **fields)

    fake.projects.update = refuse_sampling
    runner.run(project, "http://backend:9090")  # logs the failure, raises nothing
    assert fake.project(project).model_version == "zero-shot:test-llm"
    assert fake.project(project).sampling == "Sequential sampling"


def test_ensure_sampling_reads_the_project_only_when_not_given_its_sampling():
    fake = FakeLabelStudio()
    project = fake.add_project(LABEL_CONFIG)
    assert ls_client.ensure_sampling(fake, project) is True
    assert ls_client.ensure_sampling(fake, project) is False
    assert len(fake.called("projects.get")) == 2
    assert ls_client.ensure_sampling(fake, project, UNCERTAINTY) is False
    assert len(fake.called("projects.get")) == 2
