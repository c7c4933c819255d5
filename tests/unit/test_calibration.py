"""Unit tests for backend.domain.calibration: the score as P(the shown pre-label is right),
its prior, its fit, the disagreements-first rule and the measures, with hand-computed
values; and the storage and refit around it (registry, refresh, runner)."""

from __future__ import annotations

import itertools
import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path

import pytest

from backend.config import load_settings
from backend.domain import calibration
from backend.domain.calibration import (
    MIN_EXAMPLES,
    PRIOR,
    Calibrator,
    Features,
    brier,
    ece,
    features,
    fit,
    fit_from_tasks,
    prior,
    reliability_bins,
)
from backend.domain.policy import ModelOpinion, decide
from backend.domain.taxonomy import parse_taxonomy
from backend.llm.labeler import LLMOpinion
from backend.model.registry import Registry

ROOT = Path(__file__).resolve().parents[2]
TAXONOMY = parse_taxonomy((ROOT / "label_config.xml").read_text())
SS, HC, PE = "seeking_support", "health_claim", "personal_experience"
UNREGULARISED = 1e6  # C so large the fit is the plain maximum-likelihood one


def llm_only(confidence: float | None, label: str = HC) -> Features:
    return features(
        label,
        from_model=False,
        llm_label=label,
        llm_confidence=confidence,
        model_label=None,
        model_probabilities=None,
    )


def both(
    shown: str,
    llm_label: str,
    llm_confidence: float,
    probabilities: dict[str, float],
    *,
    from_model: bool = False,
) -> Features:
    model_label = max(probabilities, key=probabilities.__getitem__)
    return features(
        shown,
        from_model=from_model,
        llm_label=llm_label,
        llm_confidence=llm_confidence,
        model_label=model_label,
        model_probabilities=probabilities,
    )


# --- measures, by hand ----------------------------------------------------------------


def test_brier_by_hand():
    # (0.1^2 + 0.2^2 + 0.2^2 + 0.1^2) / 4 = 0.1 / 4
    assert brier([0.1, 0.2, 0.8, 0.9], [False, False, True, True]) == pytest.approx(0.025)
    assert brier([0.5] * 4, [True, False, True, False]) == pytest.approx(0.25)
    assert brier([1.0, 0.0], [True, False]) == 0.0


def test_ece_by_hand():
    # One score per bin: |0-0.1|, |0-0.2|, |1-0.8|, |1-0.9| each weighted 1/4 -> 0.15.
    assert ece([0.1, 0.2, 0.8, 0.9], [False, False, True, True]) == pytest.approx(0.15)
    # Bin 0.1-0.2: mean 0.15, half right -> 0.35 x 1/2; bin 0.9-1: mean 0.95, all right
    # -> 0.05 x 1/2; ECE = 0.175 + 0.025.
    assert ece([0.15, 0.15, 0.95, 0.95], [False, True, True, True]) == pytest.approx(0.2)
    # Calibrated within its one bin: mean 0.75, three of four right.
    assert ece([0.72, 0.78, 0.74, 0.76], [True, True, True, False]) == pytest.approx(0.0)
    # Two bins instead of ten: [0, 0.5) mean 0.15 none right, [0.5, 1] mean 0.85 all right.
    assert ece([0.1, 0.2, 0.8, 0.9], [False, False, True, True], bins=2) == pytest.approx(0.15)


def test_reliability_bins_count_average_and_keep_one_in_the_last_bin():
    table = reliability_bins([0.05, 0.15, 0.15, 1.0, 0.95], [True, False, True, True, False])
    assert len(table) == 10
    assert [b["n"] for b in table] == [1, 2, 0, 0, 0, 0, 0, 0, 0, 2]
    assert table[1] == {
        "low": 0.1,
        "high": 0.2,
        "n": 2,
        "mean_score": pytest.approx(0.15),
        "share_right": 0.5,
    }
    assert table[2]["mean_score"] is None and table[2]["share_right"] is None
    assert table[9]["mean_score"] == pytest.approx(0.975) and table[9]["share_right"] == 0.5


@pytest.mark.parametrize(
    "scores, right", [([], []), ([0.5], [True, False]), ([1.2], [True]), ([-0.1], [False])]
)
def test_measures_reject_bad_input(scores, right):
    for measure in (brier, ece, reliability_bins):
        with pytest.raises(ValueError):
            measure(scores, right)


# --- features ---------------------------------------------------------------------------


def test_features_relative_to_the_shown_label():
    probabilities = {SS: 0.1, HC: 0.7, PE: 0.2}
    agree = both(HC, HC, 0.8, probabilities)
    assert agree == Features("agree", llm_for=0.8, model_for=0.7, model_against=0.2)
    assert agree.vector() == [0.8, 0.0, 0.7, 0.2, 1.0, 0.0, 0.0]
    llm_shown = both(PE, PE, 0.6, probabilities)
    assert llm_shown == Features("disagree", llm_for=0.6, model_for=0.2, model_against=0.7)
    model_shown = both(HC, PE, 0.6, probabilities, from_model=True)
    assert model_shown == Features(
        "disagree", llm_against=0.6, model_for=0.7, model_against=0.2, from_model=True
    )
    assert llm_only(None) == Features("llm", llm_for=calibration.LLM_UNKNOWN)
    model_alone = features(
        HC,
        from_model=True,
        llm_label=None,
        llm_confidence=0.9,
        model_label=HC,
        model_probabilities=probabilities,
    )
    assert model_alone == Features("model", model_for=0.7, model_against=0.2, from_model=True)


# --- the prior --------------------------------------------------------------------------


def test_prior_by_hand():
    assert prior(llm_only(0.8)) == pytest.approx(0.8)
    assert prior(llm_only(None)) == 0.5
    assert prior(Features("model", model_for=0.6, model_against=0.3)) == pytest.approx(0.6)
    probabilities = {SS: 0.1, HC: 0.7, PE: 0.2}
    # agree: 0.5 + 0.25 * (0.8 + 0.7)
    assert prior(both(HC, HC, 0.8, probabilities)) == pytest.approx(0.875)
    # the LLM's PE shown against the model's HC at 0.7: 0.25 * (0.8 + 1 - 0.7)
    assert prior(both(PE, PE, 0.8, probabilities)) == pytest.approx(0.275)
    # the model's HC shown against the LLM's PE at 0.8: 0.25 * (0.7 + 1 - 0.8)
    assert prior(both(HC, PE, 0.8, probabilities, from_model=True)) == pytest.approx(0.225)
    # clipped: never certain either way
    assert prior(llm_only(0.0)) == 0.01
    assert prior(both(HC, HC, 1.0, {HC: 1.0, SS: 0.0})) == 0.99


GRID = [i / 20 for i in range(21)]  # 0 .. 1
TOPS = [0.34, 0.5, 0.7, 0.9, 1.0]


def _grid(agree: bool, *, from_model: bool = False) -> list[float]:
    scores = []
    for confidence, top in itertools.product([*GRID, None], TOPS):
        probabilities = {HC: top, SS: (1 - top) / 2, PE: (1 - top) / 2}  # HC on top
        llm_label = HC if agree else SS
        shown = HC if from_model else llm_label
        scores.append(
            PRIOR.score(both(shown, llm_label, confidence, probabilities, from_model=from_model))
        )
    return scores


def test_prior_puts_every_disagreement_below_every_agreement():
    agreements = _grid(True) + _grid(True, from_model=True)
    disagreements = _grid(False) + _grid(False, from_model=True)
    assert max(disagreements) < min(agreements)
    assert max(disagreements) < 0.5 <= min(agreements)
    assert all(0.0 < s < 1.0 for s in agreements + disagreements)


def test_prior_is_monotone_in_each_confidence():
    scores = [PRIOR.score(llm_only(c)) for c in GRID]
    assert scores == sorted(scores)
    surer_model = [PRIOR.score(both(HC, HC, 0.6, {HC: p, SS: 1 - p})) for p in (0.5, 0.7, 0.9)]
    assert surer_model == sorted(surer_model) and len(set(surer_model)) == 3
    # A disagreement: the surer the other opinion, the less likely the shown label.
    against = [PRIOR.score(both(SS, SS, 0.7, {HC: p, SS: 1 - p})) for p in (0.5, 0.7, 0.9)]
    assert against == sorted(against, reverse=True) and len(set(against)) == 3


# --- the fit ----------------------------------------------------------------------------


def test_too_few_examples_or_outcomes_keep_the_prior():
    rows = [llm_only(0.9)] * (MIN_EXAMPLES - 1)
    assert fit(rows, [i % 2 == 0 for i in range(len(rows))]).kind == "prior"
    rows = [llm_only(0.9)] * 100
    few_wrong = fit(rows, [i >= 4 for i in range(100)])  # 4 wrong of 100
    assert few_wrong.kind == "prior" and (few_wrong.n, few_wrong.n_right) == (100, 96)
    assert "have 100, 96 right" in few_wrong.describe()
    enough = fit(rows[:30], [i >= 5 for i in range(30)])  # 5 wrong of 30
    assert enough.kind == "fitted"


def test_unregularised_fit_of_two_confidence_levels_gives_their_shares():
    # Two distinct confidences make the logistic model saturated: its maximum-likelihood
    # P(right) at each is the share right there, 5/20 and 16/20.
    rows = [llm_only(0.2)] * 20 + [llm_only(0.9)] * 20
    right = [i < 5 for i in range(20)] + [i < 16 for i in range(20)]
    fitted = fit(rows, right, regularisation=UNREGULARISED)
    assert fitted.kind == "fitted" and fitted.regimes == ("llm",)
    assert fitted.raw(llm_only(0.2)) == pytest.approx(0.25, abs=1e-3)
    assert fitted.raw(llm_only(0.9)) == pytest.approx(0.80, abs=1e-3)
    # Features that never vary get no weight.
    assert fitted.weights[1:] == (0.0,) * 6
    # The default L2 penalty pulls both toward the overall share, 21/40.
    shrunk = fit(rows, right)
    assert 0.25 < shrunk.raw(llm_only(0.2)) < shrunk.raw(llm_only(0.9)) < 0.80


def test_fit_recovers_a_monotone_relation():
    rng = random.Random(7)
    rows, right = [], []
    for _ in range(400):
        confidence = rng.random()
        rows.append(llm_only(confidence))
        right.append(rng.random() < 0.1 + 0.8 * confidence)  # the truth: 0.1 + 0.8 c
    fitted = fit(rows, right)
    scores = [fitted.score(llm_only(c)) for c in GRID]
    assert all(a < b for a, b in itertools.pairwise(scores))
    for c in (0.25, 0.5, 0.75):
        assert fitted.score(llm_only(c)) == pytest.approx(0.1 + 0.8 * c, abs=0.08)
    # Better than taking the stated confidence at face value, on fresh posts.
    fresh = [rng.random() for _ in range(2000)]
    outcome = [rng.random() < 0.1 + 0.8 * c for c in fresh]
    fitted_brier = brier([fitted.score(llm_only(c)) for c in fresh], outcome)
    assert fitted_brier < brier([PRIOR.score(llm_only(c)) for c in fresh], outcome)


AGREE = both(HC, HC, 0.6, {HC: 0.6, SS: 0.3, PE: 0.1})
DISAGREE = both(SS, SS, 0.6, {HC: 0.6, SS: 0.3, PE: 0.1})


def _two_regimes(agree_right: int, disagree_right: int) -> tuple[list, list]:
    rows = [AGREE] * 20 + [DISAGREE] * 20
    right = [i < agree_right for i in range(20)] + [i < disagree_right for i in range(20)]
    return rows, right


def test_a_fit_that_ranks_disagreements_first_is_left_alone():
    fitted = fit(*_two_regimes(18, 6), regularisation=UNREGULARISED)
    assert fitted.regimes == ("agree", "disagree")
    assert fitted.boundary == pytest.approx(0.9, abs=1e-3)
    assert fitted.score(AGREE) == pytest.approx(0.9, abs=1e-3)
    assert fitted.score(DISAGREE) == pytest.approx(0.3, abs=1e-3)
    assert fitted.score(DISAGREE) == round(fitted.raw(DISAGREE), 6)


def test_disagreements_stay_first_when_the_fit_alone_would_not_keep_them_there():
    # Disagreements right 19 of 20, agreements 12 of 20: the fit alone says 0.95 and 0.6.
    fitted = fit(*_two_regimes(12, 19), regularisation=UNREGULARISED)
    assert fitted.raw(DISAGREE) == pytest.approx(0.95, abs=1e-3)
    assert fitted.raw(AGREE) == pytest.approx(0.60, abs=1e-3)
    # The boundary is the lowest agreement seen; a disagreement goes just under it.
    assert fitted.score(AGREE) == fitted.boundary == round(fitted.raw(AGREE), 6)
    assert fitted.score(DISAGREE) == pytest.approx(fitted.boundary - 1e-6)
    # An agreement less certain than any seen is raised to the boundary.
    weaker = both(HC, HC, 0.1, {HC: 0.34, SS: 0.33, PE: 0.33})
    assert fitted.score(weaker) >= fitted.boundary > fitted.score(DISAGREE)


def test_disagreements_first_through_policy_decide_with_a_fitted_calibrator():
    fitted = fit(*_two_regimes(12, 19))
    model = ModelOpinion(HC, {HC: 0.6, SS: 0.3, PE: 0.1})
    agreement = decide(HC, 0.2, model, prefer_model=False, calibrator=fitted)
    disagreement = decide(SS, 0.99, model, prefer_model=False, calibrator=fitted)
    assert disagreement.disagree and not agreement.disagree
    assert disagreement.score < agreement.score


def test_regimes_the_fit_has_not_seen_keep_the_prior():
    rows = [llm_only(0.2)] * 20 + [llm_only(0.9)] * 20
    right = [i < 5 for i in range(20)] + [i < 16 for i in range(20)]
    fitted = fit(rows, right)
    assert fitted.regimes == ("llm",) and fitted.boundary == calibration.PRIOR_BOUNDARY
    assert fitted.score(AGREE) == PRIOR.score(AGREE)
    assert fitted.score(DISAGREE) == PRIOR.score(DISAGREE)
    # Nine disagreements are too few to speak for the regime (MIN_PER_REGIME = 10).
    fewer = fit(rows + [DISAGREE] * 9, right + [False] * 9)
    assert fewer.regimes == ("llm",) and fewer.counts == {"llm": 40, "disagree": 9}


def test_fit_rejects_mismatched_input():
    with pytest.raises(ValueError):
        fit([llm_only(0.5)], [True, False])


# --- stored form ------------------------------------------------------------------------


def test_round_trip_through_json_keeps_every_score():
    fitted = fit(*_two_regimes(12, 19))
    again = Calibrator.from_dict(json.loads(json.dumps(fitted.to_dict())))
    assert again == fitted
    for row in (AGREE, DISAGREE, llm_only(0.3), llm_only(None)):
        assert again.score(row) == fitted.score(row)
    assert Calibrator.from_dict(PRIOR.to_dict()) == PRIOR
    assert fitted.to_dict()["kind"] == "fitted" and PRIOR.to_dict()["kind"] == "prior"


@pytest.mark.parametrize(
    "change",
    [
        {"version": 0},
        {"features": ["llm_for"]},
        {"weights": [1.0, 2.0]},
        {"regimes": ["sometimes"]},
        {"intercept": float("nan")},
        {"weights": None},
    ],
)
def test_another_stored_form_is_refused_and_load_falls_back_to_the_prior(change):
    stored = {**fit(*_two_regimes(12, 19)).to_dict(), **change}
    with pytest.raises(ValueError):
        Calibrator.from_dict(stored)
    assert calibration.load(stored) is PRIOR
    assert calibration.load(None) is PRIOR


def test_registry_stores_the_calibrator(tmp_path, caplog):
    registry = Registry(tmp_path, 4)
    assert registry.read_calibration() is None
    fitted = fit(*_two_regimes(12, 19))
    registry.write_calibration(fitted.to_dict())
    assert (tmp_path / "projects" / "4" / "calibration.json").is_file()
    assert calibration.load(registry.read_calibration()) == fitted
    (tmp_path / "projects" / "4" / "calibration.json").write_text("{not json")
    with caplog.at_level(logging.WARNING):
        assert registry.read_calibration() is None
        assert registry.read_calibration() is None
    assert sum("calibration.json" in r.getMessage() for r in caplog.records) == 1


# --- fitting from Label Studio tasks ------------------------------------------------------


@dataclass(frozen=True)
class Item:
    """What the predictor returns per text (inference.predictor.Opinions)."""

    llm: LLMOpinion | None
    model: ModelOpinion | None
    decision: object


def task(task_id: int, text: str, label: str | None, split: str) -> dict:
    annotations = (
        []
        if label is None
        else [
            {
                "id": task_id,
                "was_cancelled": False,
                "result": TAXONOMY.result(label),
                "created_at": "2026-01-01T00:00:00+00:00",
            }
        ]
    )
    return {"id": task_id, "data": {"text": text, "split": split}, "annotations": annotations}


def test_fit_from_tasks_pairs_the_shown_prelabel_with_the_human_label():
    rng = random.Random(3)
    tasks, answers = [], {}
    for i in range(60):
        confidence = rng.random()
        human = HC if i % 2 else SS
        llm_label = human if rng.random() < confidence else PE
        answers[f"post {i}"] = LLMOpinion(llm_label, confidence)
        tasks.append(task(i + 1, f"post {i}", human, "train"))
    tasks.append(task(100, "held out", HC, "test"))
    tasks.append(task(101, "unlabeled", None, "train"))
    asked: list[list[str]] = []

    def opinions(texts: list[str]) -> list[Item]:
        asked.append(texts)
        out = []
        for text in texts:
            answer = answers[text]
            out.append(
                Item(
                    answer, None, decide(answer.label, answer.confidence, None, prefer_model=False)
                )
            )
        return out

    fitted = fit_from_tasks(
        tasks, TAXONOMY, opinions, holdout_percent=20, usable=lambda task_id: task_id != 1
    )
    # Held-out, unlabeled and unusable tasks are left out.
    assert asked == [[f"post {i}" for i in range(1, 60)]]
    expected = sum(answers[f"post {i}"].label == (HC if i % 2 else SS) for i in range(1, 60))
    assert (fitted.kind, fitted.n, fitted.n_right) == ("fitted", 59, expected)
    assert fitted.score(llm_only(0.1)) < fitted.score(llm_only(0.9))


def test_refit_stores_the_calibrator_and_a_skipped_training_run_refits(tmp_path):
    from backend.inference.predictor import Predictor
    from backend.jobs.state import JobState
    from backend.labelstudio.client import all_tasks
    from backend.llm.cache import CachedAnswer
    from backend.llm.labeler import from_settings as labeler_from_settings
    from backend.workflows.context import ProjectRun
    from backend.workflows.rescore import refit_calibration
    from backend.workflows.training import Runner
    from tests.doubles.label_studio import FakeLabelStudio

    settings = load_settings(
        {
            "MODEL_DIR": str(tmp_path / "models"),
            "LLM_BASE_URL": "http://127.0.0.1:9/v1",
            "LLM_MODEL": "test-llm",
            "LLM_TIMEOUT": "0.5",
            "LLM_MAX_RETRIES": "0",
            "TRAIN_MIN_PER_LABEL": "1000",
            "TRAIN_DEBOUNCE": "0",
        }
    )
    labeler = labeler_from_settings(settings)
    predictor = Predictor(settings, labeler)
    fake = FakeLabelStudio()
    project = fake.add_project((ROOT / "label_config.xml").read_text())
    rng = random.Random(5)
    for i in range(50):  # LLM answers from the cache, right more often when surer
        confidence = rng.random()
        human = [SS, HC, PE][i % 3]
        said = human if rng.random() < confidence else [SS, HC, PE][(i + 1) % 3]
        text = f"a post numbered {i}"
        labeler.cache.put(
            labeler.key(TAXONOMY, text),
            CachedAnswer(said, confidence, json.dumps({"label": said})),
            model=labeler.model,
        )
        fake.add_task(project, text, label=human, split="train")
    registry = predictor.registry(project)
    try:
        run = ProjectRun.of(predictor, project, TAXONOMY)
        fitted = refit_calibration(predictor, run, all_tasks(fake, project))
        assert fitted is not None and fitted.kind == "fitted" and fitted.n == 50
        assert calibration.load(registry.read_calibration()) == fitted

        registry.write_calibration(PRIOR.to_dict())
        # Too few per label to train: the run is skipped, the calibrator refitted.
        Runner(settings, JobState(settings.model_dir), client=fake, predictor=predictor).train(
            project
        )
        assert calibration.load(registry.read_calibration()) == fitted
    finally:
        labeler.close()


def test_refit_failure_only_logs(tmp_path, caplog):
    from backend.workflows.context import ProjectRun
    from backend.workflows.rescore import refit_calibration

    class Broken(Registry):
        def serving(self) -> str | None:
            raise OSError("disk full")

    settings = load_settings({"MODEL_DIR": str(tmp_path)})
    run = ProjectRun(3, TAXONOMY, Broken(settings.model_dir, 3))
    with caplog.at_level(logging.ERROR):
        assert refit_calibration(None, run, []) is None  # type: ignore[arg-type]
    assert "calibrator was not refitted" in caplog.text
