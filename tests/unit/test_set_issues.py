"""Suspect labels of a multiple-choice question (takemeter.set_issues, and label-issues
--question): planted wrong labels in annotated sets found, with the label in doubt."""

from __future__ import annotations

import json

import numpy as np
import pytest

from backend.domain.taxonomy import parse_form
from takemeter import common, label_issues, set_issues
from takemeter.offline_models import minilm_path
from tests.conftest import TOPICS_CONFIG

NAMES = ["food", "exercise", "numbers"]


def synthetic(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Label k present with chance 0.4; coordinate k is +1 when it is, -1 when not."""
    rng = np.random.default_rng(seed)
    y = (rng.random((n, len(NAMES))) < 0.4).astype(int)
    x = rng.normal(0.0, 0.3, (n, 8))
    x[:, : len(NAMES)] += 2 * y - 1
    return x / np.linalg.norm(x, axis=1, keepdims=True), y


def test_planted_wrong_labels_come_first_with_the_label_in_doubt():
    x, truth = synthetic(200, seed=0)
    given = truth.copy()
    planted = {7: 0, 31: 1, 64: 2, 90: 0, 150: 1}  # post -> the label flipped in it
    for post, label in planted.items():
        given[post, label] = 1 - given[post, label]
    items = [
        set_issues.AnnotatedSet(
            i, f"post {i}", frozenset(n for n, on in zip(NAMES, row, strict=True) if on), "train"
        )
        for i, row in enumerate(given)
    ]
    probs = set_issues.out_of_fold_set_probabilities(x, given, folds=5)
    ranked = set_issues.find_set_suspects(items, probs, NAMES)
    top = {s.task_id: s for s in ranked[: len(planted)]}
    assert set(top) == set(planted)  # the five planted, first
    # cleanlab flags those its estimate of the error count reaches (2 of 5 here: the
    # out-of-fold probabilities are soft), each with the flipped label in doubt, and no
    # clean set.
    flagged = [post for post in planted if top[post].flagged]
    assert flagged and sum(s.flagged for s in ranked) == len(flagged)
    for post in flagged:
        assert top[post].doubted == [NAMES[planted[post]]]
    assert [s.rank for s in ranked] == list(range(1, len(items) + 1))


def test_label_issues_triages_a_multiple_choice_question_from_an_export(tmp_path, monkeypatch):
    """`label-issues --question topics` on an export: the post annotated without its
    obvious topic is flagged, with that topic in doubt; a name not in the config is
    refused clearly."""
    config = TOPICS_CONFIG
    (tmp_path / "config.xml").write_text(config)
    label, topics = parse_form(config).questions
    foods, sports = ["pasta", "rice", "bread", "cake", "soup"], ["running", "cycling", "yoga"]
    tasks = []
    for i in range(40):
        food, sport = foods[i % 5], sports[i % 3]
        text, chosen = [
            (f"I ate {food} for dinner, day {i}", ["food"]),
            (f"went {sport} this morning, day {i}", ["exercise"]),
            (f"ate {food} right after {sport}, day {i}", ["food", "exercise"]),
            (f"my meter broke again, day {i}", []),
        ][i % 4]
        if i == 4:
            chosen = []  # "I ate pasta for dinner" annotated with no topic: wrong
        result = label.result("personal_experience") + topics.result_of_set(chosen)
        tasks.append(
            {"id": i + 1, "data": {"text": text}, "annotations": [{"id": i, "result": result}]}
        )
    export = tmp_path / "export.json"
    export.write_text(json.dumps(tasks))
    monkeypatch.setenv("MODEL_DIR", str(tmp_path / "models"))
    out = tmp_path / "suspects.csv"
    args = ["--from-file", str(export), "--config", str(tmp_path / "config.xml")]
    args += ["--question", "topics", "--llm", "off", "--encoder", str(minilm_path())]
    assert label_issues.main([*args, "--out", str(out), "--json"]) == 0
    assert out.read_text().splitlines()[0].startswith("rank,task_id,flagged,quality")
    rows = out.read_text().splitlines()[1:]
    first = rows[0].split(",")
    assert first[1] == "5" and first[2] == "True", rows[:3]  # task 5 (i == 4)
    with pytest.raises(common.CliError, match="'colour' is not a question"):
        label_issues.main([*args[:4], "--question", "colour", "--llm", "off"])
