"""Job progress on Label Studio's ML backend card: the text for each status the training
and pre-labeling jobs record, both lanes on one card, which connections get it,
throttling, and a Label Studio that fails."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from backend.config import load_settings
from backend.inference.predictor import Predictor
from backend.jobs.state import JobState
from backend.labelstudio.card import Card, base_title, card_text, prelabel_text, status_text
from backend.llm.labeler import from_settings as labeler_from_settings
from backend.workflows.training import Runner
from tests.doubles.label_studio import FakeLabelStudio

ROOT = Path(__file__).resolve().parents[2]
LABEL_CONFIG = (ROOT / "label_config.xml").read_text()
KEPT = (
    "kept, not promoted: worse than v1 84% (n=25) on 25 judge posts (right where v1 84% "
    "(n=25) was wrong: 1, the reverse: 7; p = 0.996; accuracy difference >= -0.400 at "
    "95%); POST /versions/promote serves it anyway"
)
SHORT = (
    "needs at least 3 training annotations per label; have health_claim: 1 "
    "(9 training annotations in all)"
)


@pytest.mark.parametrize(
    "status, expected",
    [
        ({"state": "queued", "requested_by": "Start Training"}, "queued (Start Training)"),
        ({"state": "running", "phase": "fetching annotations"}, "training: fetching annotations"),
        (
            {"state": "running", "phase": "training", "n_examples": 40, "epoch": None},
            "training on 40 training annotations: starting",
        ),
        (
            {
                "state": "running",
                "phase": "training",
                "n_examples": 40,
                "epoch": 2,
                "epochs": 4,
                "loss": 0.53124,
                "val_accuracy": 0.75,
            },
            "training: epoch 2 of 4, loss 0.531, validation accuracy 75% (40 training annotations)",
        ),
        (
            {"state": "running", "phase": "validating"},
            "judging the new version against the serving version and the LLM",
        ),
        (
            {"state": "running", "phase": "training (head)", "n_examples": 40},
            "fitting the fast head on 40 training annotations",
        ),
        (
            {"state": "running", "phase": "validating (head)"},
            "judging the head against the serving version and the LLM",
        ),
        (
            {"state": "running", "phase": "training (fine-tune)", "n_examples": 40, "epoch": None},
            "fine-tuning on 40 training annotations: starting",
        ),
        (
            {
                "state": "running",
                "phase": "training (fine-tune)",
                "n_examples": 40,
                "epoch": 6,
                "epochs": 14,
                "loss": 0.25,
            },
            "fine-tuning: epoch 6 of 14, loss 0.250 (40 training annotations)",
        ),
        (
            {"state": "running", "phase": "re-scoring unlabeled tasks", "version": "v2 80% (n=10)"},
            "re-scoring unlabeled tasks with v2 80% (n=10)",
        ),
        (
            {
                "state": "finished",
                "promoted": True,
                "version": "v2 80% (n=10)",
                "seconds": 41.6,
                "reason": "no serving version yet",
            },
            "promoted v2 80% (n=10): no serving version yet (42 s)",
        ),
        (
            {"state": "finished", "promoted": True, "version": "v1 84% (n=25)", "reason": None},
            "serving v1 84% (n=25); unlabeled tasks re-scored",
        ),
        (
            {"state": "finished", "promoted": False, "version": "v2 60% (n=25)", "reason": KEPT},
            f"v2 60% (n=25) {KEPT}",
        ),
        (
            {"state": "skipped", "reason": SHORT, "held_out_tasks": 12},
            f"skipped: {SHORT}; 12 tasks held out for evaluation",
        ),
        (
            {"state": "skipped", "reason": SHORT, "held_out_tasks": 1},
            f"skipped: {SHORT}; 1 task held out for evaluation",
        ),
        (
            {"state": "failed", "reason": "Label Studio answered 503"},
            "failed: Label Studio answered 503",
        ),
        (
            {"state": "retrying", "attempts": 2, "reason": "ConnectionError: refused"},
            "retrying after attempt 2: ConnectionError: refused",
        ),
        ({"state": "idle"}, ""),
        ({}, ""),
    ],
)
def test_status_text(status, expected):
    assert status_text(status) == expected


def test_status_text_is_one_bounded_line_without_the_title_separator():
    text = status_text({"state": "failed", "reason": "a\nb · c " + "x" * 1000})
    assert "\n" not in text and "·" not in text and len(text) <= 300


@pytest.mark.parametrize(
    "status, expected",
    [
        ({"state": "queued", "requested_by": "tasks imported"}, "pre-labeling queued"),
        ({"state": "running", "phase": "pre-labeling"}, "pre-labeling: listing tasks"),
        (
            {
                "state": "running",
                "phase": "pre-labeling",
                "tasks": 20500,
                "to_label": 20000,
                "done": 1200,
                "failed": 0,
                "unusable": 0,
            },
            "pre-labeling: 1,200 of 20,000 tasks",
        ),
        (
            {"state": "running", "to_label": 300, "done": 100, "failed": 2, "unusable": 1},
            "pre-labeling: 100 of 300 tasks (2 LLM failures, 1 answer off the list)",
        ),
        (
            {"state": "retrying", "attempts": 1, "reason": "APIConnectionError: Connection error."},
            "pre-labeling: retrying after attempt 1: APIConnectionError: Connection error.",
        ),
        (
            {"state": "failed", "reason": "Label Studio answered 401"},
            "pre-labeling failed: Label Studio answered 401",
        ),
        (
            {"state": "finished", "tasks": 180, "to_label": 180, "done": 180},
            "pre-labeled 180 tasks",
        ),
        ({"state": "finished", "to_label": 1, "done": 1}, "pre-labeled 1 task"),
        (
            {"state": "finished", "to_label": 5, "done": 3, "unusable": 2},
            "pre-labeled 3 tasks (2 answers off the list)",
        ),
        ({"state": "finished", "tasks": 180, "to_label": 0, "done": 0}, ""),  # nothing was new
        ({"state": "running", "tasks": 180, "to_label": 0, "done": 0}, ""),
        ({"state": "idle"}, ""),
        ({}, ""),
    ],
)
def test_prelabel_text(status, expected):
    assert prelabel_text(status) == expected


def test_card_text_puts_training_first_and_leaves_out_an_empty_lane():
    training = {"state": "queued", "requested_by": "Start Training"}
    prelabel = {"state": "running", "to_label": 10, "done": 4}
    assert card_text(training, prelabel) == (
        "queued (Start Training) · pre-labeling: 4 of 10 tasks"
    )
    assert card_text({}, prelabel) == "pre-labeling: 4 of 10 tasks"
    assert card_text(training, {"state": "idle"}) == "queued (Start Training)"
    assert card_text({}, {}) == ""
    questions = "topics: v1 head 83%/6 serves; v2 tune 67%/6 kept, not promoted"
    assert card_text({**training, "questions": questions}, {}) == (
        f"queued (Start Training) · {questions}"
    )
    headline = "pre-labels accepted 67% (2 of 3)"
    assert card_text({**training, "prelabels": headline}, prelabel) == (
        f"queued (Start Training) · {headline} · pre-labeling: 4 of 10 tasks"
    )
    # A long reason is what gets cut: the short parts after it stay whole.
    long = {"state": "finished", "version": "v2", "reason": "kept: " + "because " * 60}
    text = card_text({**long, "prelabels": headline}, prelabel)
    assert len(text) <= 300 and text.endswith(f"... · {headline} · pre-labeling: 4 of 10 tasks")


def test_one_card_shows_both_lanes_each_written_from_its_own_process():
    """The pre-labeling runner reads the training lane from the job state, and the
    reverse: whichever writes last, the card holds both."""
    fake = FakeLabelStudio()
    project = fake.add_project(LABEL_CONFIG)
    fake.add_ml_backend(project, "http://backend:9090", title="TakeMeter")
    lanes = {"training": {}, "prelabel": {}}
    clock = Clock()
    card = Card(
        fake,
        backend_url="http://backend:9090",
        clock=clock,
        lane_status=lambda p, lane: lanes[lane],
    )

    def show(lane: str, **status: object) -> bool:
        lanes[lane] = status
        return card.show(project, status, lane)

    def title() -> str:
        return fake.project(project).ml_backends[0].title

    assert show("prelabel", state="running", phase="pre-labeling", to_label=300, done=0)
    assert title() == "TakeMeter · pre-labeling: 0 of 300 tasks"
    clock.now += 5  # batches in quick succession are throttled like epochs
    assert not show("prelabel", state="running", phase="pre-labeling", to_label=300, done=100)
    assert show("training", state="queued", requested_by="Start Training")
    assert title() == "TakeMeter · queued (Start Training) · pre-labeling: 100 of 300 tasks"
    clock.now += 1
    assert show("prelabel", state="finished", to_label=300, done=300)
    assert title() == "TakeMeter · queued (Start Training) · pre-labeled 300 tasks"
    assert fake.project(project).ml_backends[0].description == (
        "queued (Start Training) · pre-labeled 300 tasks"
    )
    # Text shown is taken back when nothing is left to say.
    lanes["training"] = {}
    assert show("prelabel", state="running", phase="pre-labeling", to_label=0, done=0)
    assert title() == "TakeMeter"


@pytest.mark.parametrize(
    "title, base",
    [
        ("TakeMeter", "TakeMeter"),
        ("TakeMeter · training: epoch 1 of 4", "TakeMeter"),
        ("My model · queued · x", "My model"),
        ("", "TakeMeter"),
        (None, "TakeMeter"),
    ],
)
def test_base_title(title, base):
    assert base_title(title) == base


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


EPOCH = {"state": "running", "phase": "training", "epochs": 4, "loss": 0.5, "n_examples": 9}


def test_the_card_of_this_backend_gets_the_status_after_the_users_title():
    fake = FakeLabelStudio()
    project = fake.add_project(LABEL_CONFIG)
    mine = fake.add_ml_backend(
        project, "http://backend:9090/", title="Diabetes model", basic_auth_user="takemeter"
    )
    other = fake.add_ml_backend(project, "http://other:9090", title="Other model")
    clock = Clock()
    card = Card(fake, backend_url="http://backend:9090", clock=clock)

    assert card.show(project, {**EPOCH, "epoch": 1})
    backends = {b.id: b for b in fake.project(project).ml_backends}
    text = "training: epoch 1 of 4, loss 0.500 (9 training annotations)"
    assert backends[mine].title == f"Diabetes model · {text}"
    assert backends[mine].description == text
    assert backends[other].title == "Other model"  # another backend's card is left alone
    # Label Studio re-checks the connection on update: url, project and basic auth go too.
    update = fake.called("ml.update")[0]
    assert (update["url"], update["project"], update["auth_method"], update["basic_auth_user"]) == (
        "http://backend:9090/",
        project,
        "BASIC_AUTH",
        "takemeter",
    )

    # Epochs in quick succession are throttled; a new phase or an outcome goes at once.
    clock.now += 5
    assert not card.show(project, {**EPOCH, "epoch": 2})
    clock.now += 11
    assert card.show(project, {**EPOCH, "epoch": 3})
    clock.now += 1
    assert card.show(project, {"state": "running", "phase": "validating"})
    assert not card.show(project, {"state": "running", "phase": "validating"})  # unchanged
    outcome = {
        "state": "finished",
        "promoted": True,
        "version": "v1 90% (n=4)",
        "reason": "no serving version yet",
    }
    assert card.show(project, outcome)
    final = {b.id: b for b in fake.project(project).ml_backends}[mine]
    assert final.title == "Diabetes model · promoted v1 90% (n=4): no serving version yet"
    assert len(fake.called("ml.update")) == 4
    # What the run adds to its outcome a moment later is not throttled away.
    clock.now += 1
    assert card.show(project, {**outcome, "prelabels": "pre-labels accepted 50% (1 of 2)"})
    final = {b.id: b for b in fake.project(project).ml_backends}[mine]
    assert final.title.endswith(" · pre-labels accepted 50% (1 of 2)")


def test_without_backend_url_the_card_is_found_by_the_versions_it_served():
    fake = FakeLabelStudio()
    project = fake.add_project(LABEL_CONFIG)
    mine = fake.add_ml_backend(project, "http://a:9090", model_version="zero-shot:llm")
    fake.add_ml_backend(project, "http://b:9090", model_version="other-model-1")
    card = Card(fake, own_versions=lambda p: ["zero-shot:llm", "v1 80% (n=5)"])
    assert card.show(project, {"state": "queued"})
    assert [u["id"] for u in fake.called("ml.update")] == [mine]

    alone = fake.add_project(LABEL_CONFIG)
    only = fake.add_ml_backend(alone, "http://c:9090", model_version="")
    assert card.show(alone, {"state": "queued"})  # the only connection is this backend
    assert fake.called("ml.update")[-1]["id"] == only


def test_a_failing_label_studio_is_logged_once_and_never_raises(caplog):
    fake = FakeLabelStudio()
    project = fake.add_project(LABEL_CONFIG)
    fake.add_ml_backend(project, "http://backend:9090")
    fake.fail_with = ConnectionError("Label Studio is down")
    clock = Clock()
    card = Card(fake, backend_url="http://backend:9090", clock=clock)
    with caplog.at_level(logging.WARNING, logger="backend.labelstudio.card"):
        assert not card.show(project, {**EPOCH, "epoch": 1})
        clock.now += 20
        assert not card.show(project, {**EPOCH, "epoch": 2})  # no retry for a minute
        assert not card.show(
            project, {"state": "finished", "promoted": False, "version": "v1.x", "reason": "kept"}
        )
    assert len(fake.calls) == 2  # the first epoch and the outcome were tried
    assert [r.message for r in caplog.records].count(caplog.records[0].message) == 1
    assert "Label Studio is down" in caplog.records[0].message
    fake.fail_with = None
    clock.now += 61
    assert card.show(project, {**EPOCH, "epoch": 3})


@pytest.fixture
def runner(tmp_path):
    settings = load_settings(
        {
            "MODEL_DIR": str(tmp_path),
            "LLM_BASE_URL": "http://127.0.0.1:9/v1",
            "LLM_MODEL": "test-llm",
            "BACKEND_URL": "http://backend:9090",
        }
    )
    predictor = Predictor(settings, labeler_from_settings(settings))
    fake = FakeLabelStudio()
    yield Runner(settings, JobState(settings.model_dir), client=fake, predictor=predictor), fake
    predictor.labeler.close()


def test_the_runner_reports_the_shown_name_to_the_status_the_card_and_the_project(runner):
    runner, fake = runner
    project = fake.add_project(LABEL_CONFIG)
    fake.add_ml_backend(project, "http://backend:9090")
    registry = runner.predictor.registry(project)
    staging = registry.staging_dir()
    (staging / "config.json").write_text("{}")
    folder = registry.new_version_name()
    registry.commit(
        staging,
        folder,
        {"created": time.time(), "validation": {"model_accuracy": 0.8, "judge_posts": 10}},
    )
    registry.promote(folder)
    name = registry.name(folder)
    assert name == "v1 tune 80%/10"
    # What the re-score pushed: predictions under the shown name.
    task = fake.add_task(project, "a post")
    fake.projects.import_predictions(
        id=project, request=[{"task": task, "model_version": name, "score": 0.3, "result": []}]
    )

    status = runner.report(
        project,
        serves=True,
        state="finished",
        phase=None,
        version=folder,
        promoted=True,
        reason="no serving version yet",
        seconds=3.2,
    )
    assert status["version"] == name
    assert runner.state.status(project)["version"] == name
    assert fake.project(project).model_version == name
    title = fake.project(project).ml_backends[0].title
    assert title == f"TakeMeter · promoted {name}: no serving version yet (3 s)"


def test_a_failing_label_studio_does_not_break_the_runners_report(runner, caplog):
    runner, fake = runner
    project = fake.add_project(LABEL_CONFIG)
    fake.fail_with = ConnectionError("refused")
    with caplog.at_level(logging.WARNING):
        for epoch in range(1, 4):
            status = runner.report(project, state="running", phase="training", epoch=epoch)
            assert status["epoch"] == epoch
        status = runner.report(project, state="finished", promoted=True, version="v1.x")
    assert runner.state.status(project)["state"] == "finished"
    assert status["version"] == "v1.x"  # no such version: reported as given
