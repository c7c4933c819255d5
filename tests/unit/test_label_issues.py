"""Unit tests for takemeter.label_issues: planted wrong labels on separable synthetic
embeddings are found and ranked first, the three opinions are reported, the LLM moves the
ranking by its weight, and the tab, the rank fields and the files come out right."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from backend.config import load_settings
from backend.domain.taxonomy import parse_taxonomy
from backend.llm.labeler import LLMOpinion
from takemeter import label_issues as li

ROOT = Path(__file__).resolve().parents[2]
NAMES = ["health_claim", "personal_experience", "seeking_support"]
PLANTED = [3, 17, 40, 66, 81]  # indexes whose label is wrong


def separable(n_per_class: int = 30, dim: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three well separated clusters on the unit sphere; labels = the cluster."""
    rng = np.random.default_rng(seed)
    centers = np.eye(dim)[: len(NAMES)] * 4.0
    labels = np.repeat(np.arange(len(NAMES)), n_per_class)
    x = centers[labels] + rng.normal(scale=0.6, size=(len(labels), dim))
    return x / np.linalg.norm(x, axis=1, keepdims=True), labels


def plant(truth: np.ndarray) -> np.ndarray:
    noisy = truth.copy()
    noisy[PLANTED] = (truth[PLANTED] + 1) % len(NAMES)
    return noisy


def items_for(labels: np.ndarray) -> list[li.Annotated]:
    return [
        li.Annotated(task_id=100 + i, text=f"post {i}", label=NAMES[k], split="train")
        for i, k in enumerate(labels)
    ]


@pytest.fixture(scope="module")
def case() -> dict:
    x, truth = separable()
    noisy = plant(truth)
    probs = li.out_of_fold_probabilities(x, noisy, len(NAMES))
    return {"x": x, "truth": truth, "noisy": noisy, "probs": probs}


def test_out_of_fold_probabilities_are_distributions_that_doubt_the_planted_labels(case):
    probs, noisy, truth = case["probs"], case["noisy"], case["truth"]
    assert probs.shape == (len(noisy), len(NAMES))
    np.testing.assert_allclose(probs.sum(1), 1.0)
    # Out of fold: each planted post is scored by a model that never saw its wrong label.
    assert (probs[PLANTED].argmax(1) == truth[PLANTED]).all()
    assert (probs[PLANTED, noisy[PLANTED]] < 0.3).all()


def test_planted_flips_are_flagged_and_ranked_first(case):
    ranking = li.rank(case["noisy"], case["probs"])
    assert set(ranking.order[: len(PLANTED)]) == set(PLANTED)
    assert ranking.flagged[PLANTED].all()
    assert ranking.flagged.sum() <= 2 * len(PLANTED)
    # Flagged first, each part by label quality, lowest first.
    flagged = ranking.flagged[ranking.order]
    assert not (np.diff(flagged.astype(int)) > 0).any()
    for part in (ranking.order[flagged], ranking.order[~flagged]):
        assert (np.diff(ranking.quality[part]) >= 0).all()


def test_find_suspects_reports_the_three_opinions(case):
    noisy, truth = case["noisy"], case["truth"]
    items = items_for(noisy)
    # The LLM knows the truth on the planted posts, is silent on one, agrees elsewhere.
    llm = [LLMOpinion(NAMES[truth[i]], 0.8) for i in range(len(items))]
    llm[PLANTED[0]] = None
    suspects = li.find_suspects(items, case["probs"], NAMES, llm)
    assert [s.rank for s in suspects] == list(range(1, len(items) + 1))
    assert sorted(s.task_id for s in suspects) == [i.task_id for i in items]
    top = {s.task_id: s for s in suspects[: len(PLANTED)]}
    assert set(top) == {100 + i for i in PLANTED}
    for i in PLANTED:
        s = top[100 + i]
        assert s.flagged and s.human_label == NAMES[noisy[i]]
        assert s.model_label == NAMES[truth[i]]
        assert s.model_p_human == pytest.approx(case["probs"][i, noisy[i]], abs=1e-4)
        assert s.model_p_label == pytest.approx(case["probs"][i].max(), abs=1e-4)
        assert s.model_p_human < s.model_p_label
        assert s.text == f"post {i}" and s.split == "train"
        if i == PLANTED[0]:
            assert (s.llm_label, s.llm_confidence) == (None, None)
        else:
            assert (s.llm_label, s.llm_confidence) == (NAMES[truth[i]], 0.8)


def test_llm_disagreement_lifts_a_post_the_model_is_unsure_about():
    # The model is sure of every label but two, which it doubts equally (0.45); the LLM
    # agrees everywhere but on the second of them, where it is sure of another label.
    labels = np.repeat(np.arange(3), 20)
    probs = np.full((len(labels), 3), 0.05)
    probs[np.arange(len(labels)), labels] = 0.9
    probs[5] = [0.45, 0.45, 0.10]  # label 0
    probs[25] = [0.45, 0.45, 0.10]  # label 1
    items = items_for(labels)
    llm: list[LLMOpinion | None] = [LLMOpinion(NAMES[k], 0.9) for k in labels]
    llm[25] = LLMOpinion(NAMES[2], 0.9)
    rank = {
        weight: {
            s.task_id: s.rank for s in li.find_suspects(items, probs, NAMES, llm, llm_weight=weight)
        }
        for weight in (0.0, 0.3)
    }
    assert rank[0.0][105] == 1 and rank[0.0][125] == 2  # a tie, broken by position
    assert rank[0.3][125] == 1 and rank[0.3][105] == 2


def test_llm_probabilities():
    probs = li.llm_probabilities([0, -1, 2, 1], [0.7, None, None, 0.1], 3)
    np.testing.assert_allclose(probs[0], [0.7, 0.15, 0.15])
    assert np.isnan(probs[1]).all()  # no answer
    np.testing.assert_allclose(probs[2], [0.25, 0.25, 0.5])  # no logprobs: 0.5
    np.testing.assert_allclose(probs[3], [1 / 3] * 3)  # never below uniform
    model = np.array([[0.2, 0.8, 0.0], [0.1, 0.1, 0.8]])
    # Mixed where the LLM answered; the model alone where it did not.
    np.testing.assert_allclose(
        li.combined_probabilities(model, probs[:2], 0.5), [[0.45, 0.475, 0.075], [0.1, 0.1, 0.8]]
    )
    assert li.combined_probabilities(model, None) is model
    assert li.combined_probabilities(model, probs[:2], 0.0) is model


def test_llm_weight_follows_its_agreement_with_the_annotators():
    human = [NAMES[i % 3] for i in range(30)]
    right = [LLMOpinion(h, 0.9) for h in human]
    assert li.llm_agreement(human, right) == pytest.approx(1.0)
    assert li.llm_share(1.0) == li.LLM_WEIGHT
    # A constant answer agrees at chance level: no weight, however confident.
    constant = [LLMOpinion(NAMES[0], 0.99) for _ in human]
    assert li.llm_agreement(human, constant) == pytest.approx(0.0)
    assert li.llm_share(-0.2) == 0.0
    # Unanswered posts are left out; fewer than two answers: nothing to measure.
    assert li.llm_agreement(human, [None] * 29 + [right[0]]) == 0.0
    half = [o if i % 2 else None for i, o in enumerate(right)]
    assert li.llm_agreement(human, half) == pytest.approx(1.0)


def test_annotated_tasks_takes_the_latest_annotation_on_both_sides():
    taxonomy = parse_taxonomy((ROOT / "label_config.xml").read_text())
    older = {"id": 1, "updated_at": "2024-01-01T00:00:00Z", "result": taxonomy.result(NAMES[0])}
    newer = {"id": 2, "updated_at": "2024-02-01T00:00:00Z", "result": taxonomy.result(NAMES[1])}
    skipped = {"id": 3, "updated_at": "2024-03-01T00:00:00Z", "was_cancelled": True, "result": []}
    tasks = [
        {"id": 7, "data": {"text": "a", "split": "test"}, "annotations": [older, newer, skipped]},
        {"id": 8, "data": {"text": "b", "split": "train"}, "annotations": [older]},
        {"id": 9, "data": {"text": "c"}, "annotations": [skipped]},
        {"id": 10, "data": {"text": " "}, "annotations": [older]},
        {"id": 11, "data": {"text": "d"}, "annotations": []},
    ]
    assert li.annotated_tasks(tasks, taxonomy, holdout_percent=20) == [
        li.Annotated(7, "a", NAMES[1], "test"),
        li.Annotated(8, "b", NAMES[0], "train"),
    ]


def test_suspect_tab_filters_and_orders_on_the_rank_as_a_number():
    tab = li.suspect_tab()
    assert tab["title"] == li.SUSPECT_TAB
    assert tab["ordering"] == ["tasks:data.suspect_rank"]
    assert tab["columnsDisplayType"] == {"tasks:data.suspect_rank": "Number"}
    [item] = tab["filters"]["items"]
    assert item["filter"] == "filter:tasks:data.suspect_rank" and item["type"] == "Number"


class FakeTasks:
    def __init__(self) -> None:
        self.updates: list[tuple[str, dict]] = []

    def update(self, id: str, data: dict) -> None:
        self.updates.append((id, data))


class FakeClient:
    def __init__(self) -> None:
        self.tasks = FakeTasks()


def test_write_ranks_updates_only_what_changed():
    tasks = [
        {"id": 1, "data": {"text": "a"}},  # newly flagged
        {"id": 2, "data": {"text": "b", "suspect_rank": 1}},  # moves to rank 2
        {"id": 3, "data": {"text": "c", "suspect_rank": 3}},  # no longer flagged
        {"id": 4, "data": {"text": "d", "suspect_rank": 3}},  # unchanged
        {"id": 5, "data": {"text": "e"}},  # never flagged
    ]
    client = FakeClient()
    assert li.write_ranks(client, tasks, {1: 1, 2: 2, 4: 3}) == 3
    assert client.tasks.updates == [
        ("1", {"text": "a", "suspect_rank": 1}),
        ("2", {"text": "b", "suspect_rank": 2}),
        ("3", {"text": "c"}),
    ]
    assert tasks[0]["data"] == {"text": "a"}  # the caller's tasks are left alone


def test_table_and_files(tmp_path, case):
    items = items_for(case["noisy"])
    suspects = li.find_suspects(items, case["probs"], NAMES, None)[:3]
    lines = li.table(suspects)
    assert len(lines) == 4 and "human" in lines[0] and "LLM" in lines[0]
    assert lines[1].split()[0] == "1" and suspects[0].human_label in lines[1]
    li.write_rows(tmp_path / "s.csv", suspects)
    with (tmp_path / "s.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == li.COLUMNS
    assert [int(r["task_id"]) for r in rows] == [s.task_id for s in suspects]
    assert rows[0]["llm_label"] == ""
    li.write_rows(tmp_path / "s.jsonl", suspects)
    lines = (tmp_path / "s.jsonl").read_text().splitlines()
    assert [json.loads(line)["rank"] for line in lines] == [1, 2, 3]


def test_encoder_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("BASE_MODEL", str(tmp_path))
    assert li.encoder_folder(load_settings()) == (tmp_path, "BASE_MODEL")
    monkeypatch.setenv("BASE_MODEL", "distilbert-base-uncased")
    folder, origin = li.encoder_folder(load_settings())
    assert origin.startswith("MiniLM") and folder.is_dir()
    assert li.encoder_folder(load_settings(), tmp_path) == (tmp_path, "--encoder")
    with pytest.raises(li.common.CliError, match="--encoder"):
        li.encoder_folder(load_settings(), tmp_path / "missing")


def test_command_from_an_export_file(tmp_path, monkeypatch, capsys, case):
    """The whole command on an export, with the embeddings stubbed by the clusters."""
    taxonomy = parse_taxonomy((ROOT / "label_config.xml").read_text())
    noisy = case["noisy"]
    tasks = [
        {
            "id": 100 + i,
            "project": 4,
            "data": {"text": f"post {i}", "split": "train"},
            "annotations": [{"id": i + 1, "result": taxonomy.result(NAMES[k])}],
        }
        for i, k in enumerate(noisy)
    ]
    export = tmp_path / "export.json"
    export.write_text(json.dumps(tasks))
    by_text = {f"post {i}": case["x"][i] for i in range(len(noisy))}
    monkeypatch.setattr(li, "embed", lambda texts, folder: np.array([by_text[t] for t in texts]))
    monkeypatch.setenv("MODEL_DIR", str(tmp_path / "models"))
    out = tmp_path / "suspects.csv"
    code = li.main(["--from-file", str(export), "--llm", "off", "--json", "--out", str(out)])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["annotated"] == len(noisy) and summary["llm"] is None
    assert "stand-in" in summary["model"] and "out-of-fold" in summary["model"]
    ranked = [s["task_id"] for s in summary["suspects"]]
    assert set(ranked[: len(PLANTED)]) == {100 + i for i in PLANTED}
    assert summary["listed"] == summary["flagged"] == len(ranked)
    with out.open(newline="") as handle:
        assert [int(r["task_id"]) for r in csv.DictReader(handle)] == ranked


def test_command_refuses_what_it_cannot_do(tmp_path):
    with pytest.raises(li.common.CliError, match="--tab needs --project"):
        li.main(["--from-file", str(tmp_path / "x.json"), "--tab"])
    with pytest.raises(li.common.CliError, match="--out"):
        li.main(["--from-file", str(tmp_path / "x.json"), "--out", str(tmp_path / "x.txt")])
