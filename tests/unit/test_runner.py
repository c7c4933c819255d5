"""The training runner's decisions against an in-process Label Studio
(tests/doubles/label_studio.py): what it skips, promotes or keeps, what it pushes back, and
how it reports a failure.

The serving model is a tiny DistilBERT whose head always answers personal_experience, so
its validation scores can be worked out by hand; LLM answers come from the answer cache
(the endpoint is a closed port).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from label_studio_sdk.core.api_error import ApiError

from backend.config import Settings, load_settings
from backend.domain import queue, roles
from backend.domain.jobs import Kind
from backend.domain.taxonomy import parse_taxonomy
from backend.inference.predictor import Predictor
from backend.jobs.lane import work
from backend.jobs.state import JobState
from backend.llm.cache import CachedAnswer
from backend.llm.labeler import from_settings as labeler_from_settings
from backend.model.registry import Registry
from backend.model.trainer import TrainResult
from backend.workflows.context import ProjectRun
from backend.workflows.training import Runner, Verdict, collect, judge
from tests.doubles.label_studio import FakeLabelStudio

ROOT = Path(__file__).resolve().parents[2]
LABEL_CONFIG = (ROOT / "label_config.xml").read_text()
TAXONOMY = parse_taxonomy(LABEL_CONFIG)
SS, HC, PE = "seeking_support", "health_claim", "personal_experience"
LLM = "test-llm"
LLM_VERSION = f"zero-shot:{LLM}"


@pytest.fixture(scope="module")
def always_personal(tmp_path_factory) -> Path:
    """A tiny DistilBERT classifier over the config's labels that always answers PE."""
    import torch
    from transformers import (
        DistilBertConfig,
        DistilBertForSequenceClassification,
        DistilBertTokenizerFast,
    )

    from takemeter.offline_models import minilm_path

    folder = tmp_path_factory.mktemp("always-personal")
    tokenizer = DistilBertTokenizerFast.from_pretrained(minilm_path())
    tokenizer.save_pretrained(folder)
    names = list(TAXONOMY.names)
    torch.manual_seed(0)
    config = DistilBertConfig(
        vocab_size=tokenizer.vocab_size,
        dim=32,
        hidden_dim=64,
        n_layers=1,
        n_heads=2,
        num_labels=len(names),
        id2label=dict(enumerate(names)),
        label2id={n: i for i, n in enumerate(names)},
    )
    model = DistilBertForSequenceClassification(config)
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.tensor([5.0 if n == PE else 0.0 for n in names]))
    model.save_pretrained(folder)
    return folder


@dataclass
class World:
    """A runner wired to a fake Label Studio project, a real registry and job state."""

    settings: Settings
    fake: FakeLabelStudio
    project: int
    predictor: Predictor
    state: JobState
    runner: Runner

    @property
    def registry(self) -> Registry:
        return self.predictor.registry(self.project)

    @property
    def run(self) -> ProjectRun:
        """The context a training run of the project hands to its steps."""
        return ProjectRun.of(self.predictor, self.project, TAXONOMY)

    def answer(self, answers: dict[str, str]) -> None:
        """LLM answers, put in the answer cache."""
        labeler = self.predictor.labeler
        for text, label in answers.items():
            labeler.cache.put(
                labeler.key(TAXONOMY, text),
                CachedAnswer(label, 0.9, json.dumps({"label": label})),
                model=labeler.model,
            )

    def install(
        self,
        model: Path,
        *,
        promote: bool = True,
        beats_llm: bool = False,
        trained_on: list[str] | None = None,
    ) -> str:
        """Commit a copy of `model` as a new version (and serve it)."""
        staging = self.stage(model)
        name = self.registry.new_version_name()
        data = {"data": {"trained_on": trained_on}} if trained_on is not None else {}
        self.registry.commit(staging, name, version_meta(beats_llm=beats_llm, **data))
        if promote:
            self.registry.promote(name)
        return name

    def stage(self, model: Path) -> Path:
        staging = self.registry.staging_dir()
        shutil.copytree(model, staging, dirs_exist_ok=True)
        return staging

    def status(self) -> dict:
        return self.state.status(self.project)


def version_meta(**extra: object) -> dict:
    return {
        "created": time.time(),
        "labels": list(TAXONOMY.names),
        "max_length": 32,
        "beats_llm": False,
        **extra,
    }


@pytest.fixture
def world(tmp_path, always_personal) -> World:
    settings = load_settings(
        {
            "MODEL_DIR": str(tmp_path / "models"),
            "LLM_BASE_URL": "http://127.0.0.1:9/v1",
            "LLM_MODEL": LLM,
            "LLM_TIMEOUT": "0.5",
            "LLM_MAX_RETRIES": "0",
            "TRAIN_MIN_PER_LABEL": "2",
            "BLIND_LABELS": "false",  # every task pre-labeled; the blind ones have their tests
            "TRAIN_DEBOUNCE": "0",
            "TRAIN_EPOCHS": "1",
            "TRAIN_BATCH_SIZE": "8",
            "TRAIN_MAX_LENGTH": "32",
            "BASE_MODEL": str(always_personal),
            "TRAIN_MIN_STEPS": "4",
            "TRAIN_FINETUNE_FROM": "10",
        }
    )
    fake = FakeLabelStudio()
    project = fake.add_project(LABEL_CONFIG)
    predictor = Predictor(settings, labeler_from_settings(settings))
    state = JobState(settings.model_dir)
    yield World(
        settings,
        fake,
        project,
        predictor,
        state,
        Runner(settings, state, client=fake, predictor=predictor),
    )
    predictor.labeler.close()


def main_predictions(fake: FakeLabelStudio, project: int, version: str) -> dict[int, str]:
    """task -> label of the predictions carrying `version`."""
    return {
        p.task: TAXONOMY.label_of(p.result)
        for p in fake.predictions_of(project)
        if p.model_version == version
    }


# --------------------------------------------------------------------------- collect


def test_too_few_annotations_skip_training_with_the_short_labels_named(world):
    fake, project = world.fake, world.project
    for i in range(3):
        fake.add_task(project, f"does anyone know {i}?", label=SS, split="train")
    fake.add_task(project, "cinnamon cures it", label=HC, split="train")
    fake.add_task(project, "my numbers today", label=PE, split="train", cancelled=True)
    fake.add_task(project, "held out one", label=HC, split="test")
    fake.add_task(project, "held out two", label=PE, split="test")
    fake.add_task(project, "not labeled yet", split="train")

    collected = collect(fake, project, world.settings)
    assert len(collected.examples) == 4 and collected.held_out_tasks == 2
    assert collected.too_few is not None
    assert f"{HC}: 1" in collected.too_few and f"{PE}: 0" in collected.too_few
    assert SS not in collected.too_few and "at least 2" in collected.too_few

    world.runner.train(project)
    status = world.status()
    assert status["state"] == "skipped"
    assert status["reason"] == collected.too_few
    assert status["held_out_tasks"] == 2
    assert world.registry.versions() == [] and world.registry.serving() is None
    assert not list(world.registry.versions_dir.glob(".staging-*"))
    assert fake.called("projects.import_predictions") == []


def test_collect_reads_the_whole_export_with_the_latest_label(world):
    fake, project = world.fake, world.project
    task = fake.add_task(project, "relabeled post", label=HC, split="train")
    fake.project(project).tasks[-1]["annotations"].append(
        {
            "id": 999,
            "completed_by": 2,
            "was_cancelled": False,
            "created_at": "2999-01-01T00:00:00+00:00",
            "updated_at": "2999-01-01T00:00:00+00:00",
            "result": TAXONOMY.result(SS),
        }
    )
    fake.add_task(project, "no label")
    collected = collect(fake, project, world.settings)
    assert [(e.task_id, e.label) for e in collected.examples] == [(task, SS)]
    assert len(collected.tasks) == 2  # unlabeled tasks come along for the re-score
    assert fake.called("projects.exports.download_sync") == [
        {"id": project, "export_type": "JSON", "download_all_tasks": True}
    ]


# ----------------------------------------------------------------------------- judge


def judged(
    texts: list[str],
    truth: list[str],
    predictions: list[str],
    *,
    trained_on: list[str] | None = None,
) -> TrainResult:
    """A training result whose judge posts (and the posts it learned from) are given:
    nothing else is read by judge."""
    return TrainResult(
        metrics={},
        validation_texts=[],
        validation_labels=[],
        validation_predictions=[],
        judge_texts=texts,
        judge_labels=truth,
        judge_predictions=predictions,
        trained_on=trained_on or [],
    )


def test_judge_promotes_when_nothing_serves(world):
    texts = ["post a", "post b", "post c", "post d"]
    truth = [SS, SS, HC, PE]
    world.answer(dict(zip(texts, [SS, HC, PE, PE], strict=True)))  # LLM: 2 of 4 right
    verdict = judge(
        judged(texts, truth, [SS, SS, HC, HC]),  # 3 of 4 right
        world.run,
        world.predictor,
    )
    assert verdict.promote is True and verdict.reason is None
    validation = verdict.validation
    assert validation["serving_version"] is None and validation["serving_macro_f1"] is None
    assert validation["against_serving"] == "no serving version yet"
    assert validation["judge_posts"] == 4
    assert validation["model_accuracy"] == 0.75 and validation["llm_accuracy"] == 0.5
    # Per label F1: SS 1, HC 2/3, PE 0 for the model; SS 2/3, HC 0, PE 2/3 for the LLM.
    assert validation["model_macro_f1"] == pytest.approx(5 / 9)
    assert validation["llm_macro_f1"] == pytest.approx(4 / 9)
    # Right on 2 posts the LLM missed and wrong on 1 it got: annotators see the model.
    assert verdict.beats_llm is True
    assert world.predictor.labeler.cache.usage()["llm_failures"] == 0  # all from the cache


def test_judge_keeps_a_version_worse_than_the_serving_one(world, always_personal):
    serving = world.install(always_personal)  # always PE: right on the six PE posts
    texts = [f"judge post {i}" for i in range(8)]
    truth = [PE] * 6 + [HC, SS]
    world.answer(dict(zip(texts, truth, strict=True)))
    verdict = judge(
        judged(texts, truth, [HC] * 6 + [PE, PE]),  # wrong on every post
        world.run,
        world.predictor,
    )
    assert verdict.promote is False
    assert verdict.reason.startswith(f"kept, not promoted: worse than {serving} on 8 judge")
    assert "/versions/promote" in verdict.reason  # how to serve it anyway
    assert verdict.validation["serving_version"] == serving
    assert verdict.validation["serving_accuracy"] == 0.75
    assert verdict.validation["serving_macro_f1"] == pytest.approx((6 / 7) / 3)
    assert verdict.validation["model_accuracy"] == 0.0 and verdict.beats_llm is False


def test_judge_keeps_a_challenger_that_is_only_even(world, always_personal):
    """Trained without some of the serving version's posts, it must be better to serve."""
    serving = world.install(always_personal, trained_on=["1", "2", "3"])
    texts, truth = ["judge a", "judge b"], [PE, HC]
    world.answer(dict(zip(texts, truth, strict=True)))
    verdict = judge(
        judged(texts, truth, [PE, PE], trained_on=["1", "2", "4"]),
        world.run,
        world.predictor,
    )
    assert verdict.promote is False and verdict.validation["successor"] is False
    assert verdict.reason.startswith(f"kept, not promoted: even with {serving} on 2 judge")
    assert "a challenger" in verdict.reason


def test_judge_serves_a_successor_on_thin_evidence(world, always_personal):
    """Trained on every post the serving version was, and more: one lost post is no
    reason to keep the old version."""
    world.install(always_personal, trained_on=["1", "2"])
    texts, truth = ["judge a", "judge b", "judge c"], [PE, HC, PE]
    world.answer(dict(zip(texts, truth, strict=True)))
    verdict = judge(
        judged(texts, truth, [HC, HC, HC], trained_on=["1", "2", "3"]),
        world.run,
        world.predictor,
    )
    assert verdict.validation["successor"] is True
    assert verdict.validation["against_serving"].startswith("worse than")
    assert verdict.promote is True


def test_judge_promotes_a_version_clearly_better_than_serving_and_the_llm(world, always_personal):
    serving = world.install(always_personal)
    texts = [f"judge post {i}" for i in range(12)]
    truth = [HC] * 6 + [SS] * 4 + [PE] * 2  # the serving version is right on 2 of 12
    world.answer(
        {text: PE if label != PE else SS for text, label in zip(texts, truth, strict=True)}
    )
    verdict = judge(judged(texts, truth, truth), world.run, world.predictor)
    assert verdict.promote is True and verdict.reason is None
    assert verdict.validation["against_serving"].startswith(f"better than {serving}")
    assert verdict.validation["llm_accuracy"] == 0.0
    assert verdict.beats_llm is True  # annotators now see the model's label


def test_judge_scores_the_serving_version_without_asking_the_llm(world, always_personal):
    """The serving version's opinions use cached LLM answers only; a down LLM costs the
    LLM comparison its labels, not the run."""
    world.install(always_personal)
    texts, truth = ["judge a", "judge b", "judge c"], [PE, PE, HC]
    verdict = judge(judged(texts, truth, truth), world.run, world.predictor)
    assert verdict.validation["llm_accuracy"] == 0.0  # the LLM is down: no labels
    assert verdict.validation["serving_accuracy"] == pytest.approx(2 / 3)
    usage = world.predictor.labeler.cache.usage()
    assert usage["llm_calls"] == 0 and usage["llm_failures"] == len(texts)  # asked once each


# --------------------------------------------------------------------------- publish


def labeled_and_unlabeled(world: World) -> dict[str, int]:
    """Two annotated tasks and four unlabeled ones (one without text)."""
    fake, project = world.fake, world.project
    ids = {
        "labeled_a": fake.add_task(project, "labeled post a", label=SS, split="train"),
        "labeled_b": fake.add_task(project, "labeled post b", label=PE, split="train"),
        "disagree": fake.add_task(project, "any tips for night lows?"),
        "agree": fake.add_task(project, "my walk lowered my numbers today"),
        "no_text": fake.add_task(project, None, data={"image": "x.png"}),
        "llm_down": fake.add_task(project, "a post the LLM never saw"),
    }
    world.answer({"any tips for night lows?": SS, "my walk lowered my numbers today": PE})
    return ids


VALIDATION_OF_A_PROMOTED_RUN = {
    "judge_posts": 10,
    "model_accuracy": 0.8,
    "llm_accuracy": 0.5,
    "serving_version": None,
    "against_serving": "no serving version yet",
    "against_llm": "not enough evidence compared with the LLM on 10 judge posts",
}


def test_publish_of_a_promoted_version_pushes_it_to_label_studio(world, always_personal):
    ids = labeled_and_unlabeled(world)
    collected = collect(world.fake, world.project, world.settings)
    staging = world.stage(always_personal)
    name = world.registry.new_version_name()
    verdict = Verdict(
        validation=VALIDATION_OF_A_PROMOTED_RUN, promote=True, beats_llm=False, reason=None
    )
    world.runner.publish(
        world.run, collected, staging, name, version_meta(promoted=True), verdict, time.time()
    )

    assert world.registry.serving() == name
    fake, project = world.fake, world.project
    # Every unlabeled task with text, under the new version; the LLM's label is shown
    # where the model has not beaten it, the model's where the LLM had no answer.
    assert main_predictions(fake, project, name) == {
        ids["disagree"]: SS,
        ids["agree"]: PE,
        ids["llm_down"]: PE,
    }
    # A disagreement carries both opinions as predictions of their own.
    assert main_predictions(fake, project, LLM_VERSION) == {ids["disagree"]: SS}
    assert main_predictions(fake, project, f"{name}:model") == {ids["disagree"]: PE}
    scores = {p.task: p.score for p in fake.predictions_of(project) if p.model_version == name}
    assert scores[ids["disagree"]] < 0.5 < scores[ids["agree"]]
    # The project's model_version follows, after the predictions that carry it.
    assert fake.project(project).model_version == name
    names = [call for call, _ in fake.calls]
    assert names.index("projects.update") > names.index("projects.import_predictions")
    views = fake.project(project).views
    assert [v.data["title"] for v in views] == ["Review queue"]
    assert views[0].data["filters"] == queue.review_tab()["filters"]
    status = world.status()
    assert (status["state"], status["version"], status["promoted"]) == ("finished", name, True)
    summary = world.registry.read_queue()
    assert summary["model_version"] == name and summary["unlabeled"] == 3
    assert summary["disagreements"] == 1


def test_publish_of_a_kept_version_leaves_serving_and_label_studio_alone(world, always_personal):
    labeled_and_unlabeled(world)
    serving = world.install(always_personal)
    collected = collect(world.fake, world.project, world.settings)
    staging = world.stage(always_personal)
    name = world.registry.new_version_name()
    reason = f"kept, not promoted: worse than {serving} on 10 judge posts"
    verdict = Verdict(
        validation={**VALIDATION_OF_A_PROMOTED_RUN, "against_serving": "worse"},
        promote=False,
        beats_llm=False,
        reason=reason,
    )
    world.runner.publish(
        world.run, collected, staging, name, version_meta(promoted=False), verdict, time.time()
    )

    assert world.registry.serving() == serving
    assert [m["version"] for m in world.registry.versions()] == [serving, name]
    assert world.registry.meta(name)["promoted"] is False
    assert world.fake.called("projects.import_predictions") == []
    assert world.fake.called("projects.update") == []
    assert world.fake.project(world.project).views == []
    status = world.status()
    assert (status["state"], status["version"], status["promoted"], status["reason"]) == (
        "finished",
        name,
        False,
        reason,
    )


# --------------------------------------------------------------------------- rescore


def test_rescore_after_a_promotion_by_hand(world, always_personal):
    ids = labeled_and_unlabeled(world)
    older = world.install(always_personal)
    newer = world.install(always_personal)
    world.registry.promote(older)  # a rollback by hand
    world.runner.rescore(world.project)

    fake, project = world.fake, world.project
    assert set(main_predictions(fake, project, older)) == {
        ids["disagree"],
        ids["agree"],
        ids["llm_down"],
    }
    assert main_predictions(fake, project, newer) == {}
    assert fake.project(project).model_version == older
    status = world.status()
    assert (status["state"], status["version"]) == ("finished", older)
    # Again: the second opinions are already there and are not added twice.
    world.runner.rescore(world.project)
    assert len(fake.predictions_of(project, ids["disagree"])) == 4  # 2 x main + llm + model
    assert [p.model_version for p in fake.predictions_of(project, ids["disagree"])].count(
        LLM_VERSION
    ) == 1
    assert len(fake.project(project).views) == 1  # the tab is not made twice


def test_rescore_leaves_blind_tasks_empty_with_no_second_opinion_and_out_of_the_queue(
    world, always_personal
):
    settings = dataclasses.replace(world.settings, blind_labels=True)
    predictor = Predictor(settings, world.predictor.labeler)
    runner = Runner(settings, world.state, client=world.fake, predictor=predictor)
    fake, project = world.fake, world.project
    ids = labeled_and_unlabeled(world)
    held = fake.add_task(project, "tips for lows at night, anyone?", split="test")
    world.answer({"tips for lows at night, anyone?": SS})  # the model says PE: a disagreement
    version = world.install(always_personal)
    runner.rescore(project)

    unlabeled = (ids["disagree"], ids["agree"], ids["llm_down"])
    shown = {
        i
        for i in unlabeled
        if not roles.is_blind({"id": i, "data": {}}, holdout_percent=settings.holdout_percent)
    }
    assert shown, "no task of this project is shown a pre-label: pick other ids"
    predictions = fake.predictions_of(project, held)
    assert [(p.model_version, p.result) for p in predictions] == [(version, [])]
    # Its score is a place among the shown pre-labels' scores, not a confidence of its own.
    main = {p.task: p for p in fake.predictions_of(project) if p.model_version == version}
    assert predictions[0].score in {main[t].score for t in shown} | {roles.place(held)}
    assert {t for t, p in main.items() if p.result} == shown
    rows = predictor.registry(project).read_queue()["rows"]
    assert {r["task"] for r in rows} == shown


def test_a_fully_annotated_project_still_gets_its_model_version(world, always_personal):
    """Label Studio takes a model_version only once a prediction carries it: with no
    unlabeled task left, the labeled ones get the new version's predictions."""
    fake, project = world.fake, world.project
    labeled = [fake.add_task(project, f"post {i}", label=SS, split="train") for i in range(2)]
    version = world.install(always_personal)
    world.runner.rescore(project)
    assert set(main_predictions(fake, project, version)) == set(labeled)
    assert fake.project(project).model_version == version


# ----------------------------------------------------------------------- the job loop


@pytest.mark.parametrize(
    "error",
    [
        ApiError(
            status_code=503,
            headers={"x-secret-header": "h"},
            body={"detail": "down\nfor maintenance", "trace": "x" * 2000},
        ),
        ConnectionError("Connection refused by label-studio:8080"),
    ],
    ids=["api-error", "connection-error"],
)
def test_a_failing_label_studio_is_retried_with_back_off_then_the_run_fails(world, error):
    world.fake.fail_with = error
    world.state.request(world.project, "Start Training")
    lease = world.state.acquire(world.project, "training")
    assert lease is not None
    waits: list[float] = []
    work(
        world.settings,
        world.state,
        lease,
        client=world.fake,
        predictor=world.predictor,
        sleep=waits.append,
    )

    status = world.status()
    assert status["state"] == "failed" and status["pending"] is False
    assert status["attempts"] == world.settings.job_retries
    assert [w for w in waits if w] == [5.0, 10.0, 20.0]  # back-off between the attempts
    reason = status["reason"]
    assert "\n" not in reason and len(reason) < 400
    expected = (
        "Label Studio answered 503"
        if isinstance(error, ApiError)
        else "ConnectionError: Connection refused"
    )
    assert reason.startswith(expected)
    assert "x-secret-header" not in reason  # headers stay out of the status
    assert not world.state.busy(world.project, "training")  # the lease was given back
    assert world.registry.versions() == []


def test_a_promotion_by_hand_rescores_without_training(world, always_personal):
    ids = labeled_and_unlabeled(world)
    version = world.install(always_personal)
    world.state.request(world.project, f"promoted {version} by hand", kind=Kind.RESCORE)
    lease = world.state.acquire(world.project, "training")
    work(world.settings, world.state, lease, client=world.fake, predictor=world.predictor)
    assert [m["version"] for m in world.registry.versions()] == [version]  # nothing trained
    assert ids["agree"] in main_predictions(world.fake, world.project, version)
    status = world.status()
    assert (status["state"], status["version"], status["pending"]) == ("finished", version, False)


# ---------------------------------------------------------------------- a real run


def posts_of_each_label(n: int) -> dict[str, str]:
    """n posts of each label, post -> label, worded so that the labels are easy to learn."""
    texts = {}
    for i in range(n):
        texts[f"has anyone else had lows after run {i}? any tips?"] = SS
        texts[f"cinnamon lowers a1c for everyone, fact {i}"] = HC
        texts[f"my numbers were fine after dinner {i}"] = PE
    return texts


def test_a_training_run_on_a_tiny_model_is_judged_published_and_served(world):
    """fit for real (a 1-layer DistilBERT): the head first, promoted as nothing serves; then
    the fine-tune (a few steps), judged against the head as a challenger."""
    fake, project = world.fake, world.project
    texts = posts_of_each_label(5)
    ids = [
        fake.add_task(project, text, label=label, split="train") for text, label in texts.items()
    ]
    unlabeled = fake.add_task(project, "what should I eat before a run?")
    world.answer({**texts, "what should I eat before a run?": SS})
    # Two labels were made from an LLM pre-label in view: one accepted, one changed.
    fake.projects.import_predictions(
        id=project,
        request=[
            {"task": ids[0], "model_version": LLM_VERSION, "result": TAXONOMY.result(SS)},
            {"task": ids[1], "model_version": LLM_VERSION, "result": TAXONOMY.result(SS)},
        ],
    )
    for task, prediction in zip(ids[:2], fake.predictions_of(project), strict=True):
        (annotation,) = next(t for t in fake.project(project).tasks if t["id"] == task)[
            "annotations"
        ]
        annotation["parent_prediction"] = prediction.id

    world.runner.train(project)
    status = world.status()
    assert status["state"] == "finished", status
    assert status["prelabels"] == "pre-labels accepted 50% (1 of 2)"  # SS right, then HC
    head, tuned = world.registry.versions()
    assert (head["kind"], tuned["kind"]) == ("head", "fine-tune")
    assert head["shown_name"].split()[1] == "head" and tuned["shown_name"].split()[1] == "tune"
    assert head["promoted"] is True and head["validation"]["serving_version"] is None
    assert head["data"]["n_examples"] == 15 and head["labels"] == list(TAXONOMY.names)
    # The head learned from the training and validation sides, the fine-tune from the
    # training side only: it is a challenger, never a successor, of the same run's head.
    assert set(tuned["data"]["trained_on"]) < set(head["data"]["trained_on"])
    assert tuned["validation"]["serving_version"] == head["shown_name"]
    assert tuned["validation"]["successor"] is False
    assert tuned["metrics"]["step_budget"] >= world.settings.train_min_steps
    assert status["version"] == tuned["shown_name"]
    serving = world.registry.serving()
    assert serving == (tuned if tuned["promoted"] else head)["shown_name"]
    assert set(main_predictions(fake, project, serving)) == {unlabeled}
    assert fake.project(project).model_version == serving


def test_pre_labeling_embeds_the_posts_so_the_first_head_embeds_none(world):
    """The pre-labeling job fills the project's embedding store as it pushes; once the
    posts are annotated, the first run's head reads them all from it."""
    from backend.workflows.prelabel import prelabel_project

    fake, project = world.fake, world.project
    texts = posts_of_each_label(4)
    ids = {fake.add_task(project, text, split="train"): label for text, label in texts.items()}
    # Labeled before any pre-label: the job asks nothing for it, and embeds it all the same.
    fake.add_task(project, "is a low after a run normal?", label=SS, split="train")
    world.answer(texts)
    store = world.predictor.embedding_store(project)
    assert len(store) == 0

    counts = prelabel_project(fake, world.predictor, world.settings, project, lambda **_: None)
    assert counts["done"] == len(texts) and counts["embedded"] == len(store) == len(texts) + 1
    for task, label in ids.items():
        fake.annotate(project, task, label)
    world.runner.train(project)
    head = world.registry.versions()[0]
    assert head["kind"] == "head" and head["data"]["n_examples"] == len(texts) + 1
    assert head["metrics"]["embedded_now"] == 0
