"""Unit tests for backend.domain.dataset: the held-out rule and examples from Label Studio tasks."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from backend.domain.dataset import (
    Example,
    chosen_set,
    is_held_out,
    labeled_examples,
    latest_annotation,
    text_and_label,
    too_few,
)
from backend.domain.taxonomy import parse_questions, parse_taxonomy

LABEL_CONFIG = Path(__file__).resolve().parents[2] / "label_config.xml"
SS, HC, PE = "seeking_support", "health_claim", "personal_experience"
LABELS = (SS, HC, PE)


@pytest.fixture(scope="module")
def taxonomy():
    return parse_taxonomy(LABEL_CONFIG.read_text())


def annotation(
    label: str | None,
    *,
    id: int = 1,
    updated_at: str = "2024-01-01T00:00:00Z",
    cancelled: bool = False,
    from_name: str = "label",
) -> dict:
    result = (
        []
        if label is None
        else [
            {
                "from_name": from_name,
                "to_name": "text",
                "type": "choices",
                "value": {"choices": [label]},
            }
        ]
    )
    return {"id": id, "updated_at": updated_at, "was_cancelled": cancelled, "result": result}


def task(
    task_id: int,
    label: str | None = None,
    *,
    split: str | None = None,
    text: object = "a post",
    annotations: list[dict] | None = None,
) -> dict:
    data: dict = {"text": text} if text is not None else {}
    if split is not None:
        data["split"] = split
    if annotations is None:
        annotations = [annotation(label)] if label is not None else []
    return {"id": task_id, "data": data, "annotations": annotations}


def _ids(held: bool, percent: int, count: int) -> list[int]:
    """Task ids on one side of the hash rule, found by trying ids in order."""
    found = []
    for i in range(1, 10_000):
        if is_held_out({"id": i}, percent=percent) is held:
            found.append(i)
            if len(found) == count:
                return found
    raise AssertionError("not enough ids")


# --- is_held_out --------------------------------------------------------------------


def test_split_field_overrides_the_hash():
    held, kept = _ids(True, 20, 1)[0], _ids(False, 20, 1)[0]
    assert is_held_out({"id": kept, "data": {"split": "test"}}, percent=20) is True
    assert is_held_out({"id": kept, "data": {"split": " TEST "}}, percent=20) is True
    assert is_held_out({"id": kept, "data": {"split": "heldout"}}, percent=0) is True
    assert is_held_out({"id": held, "data": {"split": "train"}}, percent=20) is False
    assert is_held_out({"id": held, "data": {"split": "Train"}}, percent=90) is False
    # any other split value falls back to the hash rule
    assert is_held_out({"id": held, "data": {"split": "dev"}}, percent=20) is True
    assert is_held_out({"id": kept, "data": {"split": "dev"}}, percent=20) is False


def test_hash_rule_matches_its_definition():
    for task_id in (1, 7, 123, 99_999):
        digest = hashlib.sha256(f"takemeter:{task_id}".encode()).digest()
        bucket = int.from_bytes(digest[:8], "big") % 100
        assert is_held_out({"id": task_id}, percent=bucket + 1) is True
        assert is_held_out({"id": task_id}, percent=bucket) is False


def test_is_held_out_is_deterministic_and_ignores_other_data():
    first = [is_held_out({"id": i}, percent=20) for i in range(500)]
    again = [
        is_held_out({"id": i, "data": {"text": "changed"}, "annotations": [{}]}, percent=20)
        for i in range(500)
    ]
    assert first == again


def test_percent_bounds():
    assert not any(is_held_out({"id": i}, percent=0) for i in range(300))
    assert all(is_held_out({"id": i}, percent=100) for i in range(300))


@pytest.mark.parametrize("percent", [10, 20, 50])
def test_about_percent_of_ids_are_held_out(percent):
    held = sum(is_held_out({"id": i}, percent=percent) for i in range(1, 2001))
    assert abs(held / 2000 * 100 - percent) <= 3


def test_a_growing_percent_only_adds_tasks():
    at_10 = {i for i in range(1, 1001) if is_held_out({"id": i}, percent=10)}
    at_20 = {i for i in range(1, 1001) if is_held_out({"id": i}, percent=20)}
    assert at_10 < at_20


# --- latest_annotation ----------------------------------------------------------------


def test_latest_annotation_picks_newest_by_updated_at():
    old = annotation(HC, id=9, updated_at="2024-03-01T10:00:00.000000Z")
    new = annotation(SS, id=2, updated_at="2024-03-02T09:00:00.000000Z")
    assert latest_annotation({"annotations": [new, old]}) is new
    assert latest_annotation({"annotations": [old, new]}) is new


def test_latest_annotation_drops_cancelled():
    kept = annotation(HC, id=1, updated_at="2024-03-01T00:00:00Z")
    skipped = annotation(None, id=2, updated_at="2024-03-05T00:00:00Z", cancelled=True)
    assert latest_annotation({"annotations": [kept, skipped]}) is kept
    assert latest_annotation({"annotations": [skipped]}) is None
    assert latest_annotation({"annotations": []}) is None
    assert latest_annotation({}) is None


def test_latest_annotation_falls_back_to_created_at_then_id():
    a = {"id": 1, "created_at": "2024-01-02T00:00:00Z", "result": []}
    b = {"id": 2, "created_at": "2024-01-01T00:00:00Z", "result": []}
    assert latest_annotation({"annotations": [a, b]}) is a
    same_time = [
        {"id": 3, "updated_at": "2024-01-01T00:00:00Z"},
        {"id": 5, "updated_at": "2024-01-01T00:00:00Z"},
    ]
    assert latest_annotation({"annotations": same_time})["id"] == 5


# --- labeled_examples ----------------------------------------------------------------


def test_labeled_examples_splits_train_and_held_out(taxonomy):
    tasks = [
        task(1, HC, split="train", text="post one"),
        task(2, SS, split="test", text="post two"),
        task(3, PE, split="train", text="post three"),
    ]
    train = labeled_examples(tasks, taxonomy, holdout_percent=20)
    assert train == [Example(1, "post one", HC), Example(3, "post three", PE)]
    held = labeled_examples(tasks, taxonomy, holdout_percent=20, held_out=True)
    assert held == [Example(2, "post two", SS)]


def test_labeled_examples_uses_hash_rule_without_split(taxonomy):
    held_ids = _ids(True, 20, 3)
    kept_ids = _ids(False, 20, 3)
    tasks = [task(i, HC) for i in held_ids + kept_ids]
    assert [e.task_id for e in labeled_examples(tasks, taxonomy, holdout_percent=20)] == kept_ids
    assert [
        e.task_id for e in labeled_examples(tasks, taxonomy, holdout_percent=20, held_out=True)
    ] == held_ids


def test_labeled_examples_drops_unusable_tasks(taxonomy):
    tasks = [
        task(1, HC, split="train", text=None),  # no text field
        task(2, HC, split="train", text="   "),  # blank text
        task(3, HC, split="train", text=42),  # not a string
        task(4, "banana", split="train"),  # label outside the taxonomy
        task(5, HC, split="train", annotations=[annotation(HC, from_name="other")]),
        task(6, split="train", annotations=[annotation(None)]),  # empty result
        task(7, split="train"),  # no annotations
        task(8, split="train", annotations=[annotation(HC, cancelled=True)]),
        task(9, PE, split="train", text="kept"),
    ]
    assert labeled_examples(tasks, taxonomy, holdout_percent=20) == [Example(9, "kept", PE)]


def test_labeled_examples_latest_annotation_wins(taxonomy):
    annotations = [
        annotation(HC, id=1, updated_at="2024-01-01T00:00:00Z"),
        annotation(SS, id=2, updated_at="2024-02-01T00:00:00Z"),
        annotation(PE, id=3, updated_at="2024-03-01T00:00:00Z", cancelled=True),
    ]
    tasks = [task(1, split="train", text="t", annotations=annotations)]
    assert labeled_examples(tasks, taxonomy, holdout_percent=20) == [Example(1, "t", SS)]


def test_labeled_examples_other_text_field():
    taxonomy = parse_taxonomy(
        '<View><Text name="review" value="$review"/><Choices name="sentiment" '
        'toName="review"><Choice value="negative"/><Choice value="positive"/></Choices></View>'
    )
    tasks = [
        {
            "id": "12",
            "data": {"review": "great", "split": "train"},
            "annotations": [
                {
                    "result": [
                        {
                            "from_name": "sentiment",
                            "to_name": "review",
                            "type": "choices",
                            "value": {"choices": ["positive"]},
                        }
                    ]
                }
            ],
        }
    ]
    assert labeled_examples(tasks, taxonomy, holdout_percent=0) == [
        Example(12, "great", "positive")
    ]


# --- too_few -------------------------------------------------------------------------


def test_too_few_names_short_labels_and_counts():
    examples = [Example(i, "t", SS) for i in range(5)] + [
        Example(10 + i, "t", HC) for i in range(2)
    ]
    message = too_few(examples, LABELS, 3)
    assert message is not None
    assert "at least 3" in message
    assert "health_claim: 2" in message
    assert "personal_experience: 0" in message
    assert "seeking_support" not in message
    assert "(7 training annotations in all)" in message


def test_too_few_none_when_enough():
    examples = [Example(i, "t", name) for i, name in enumerate(LABELS * 3)]
    assert too_few(examples, LABELS, 3) is None
    assert too_few(examples, LABELS, 4) is not None
    assert too_few([], LABELS, 1) == (
        "needs at least 1 training annotations per label; have seeking_support: 0, "
        "health_claim: 0, personal_experience: 0 (0 training annotations in all)"
    )


def test_a_multiple_choice_question_left_unticked_chose_none_of_its_labels():
    """Label Studio stores no region for a multiple-choice question left unticked: a kept
    annotation without one chose the empty set; a skipped one, or none, answers nothing."""
    sentiment, topics = parse_questions(
        '<View><Text name="text" value="$text"/><Choices name="sentiment" toName="text">'
        '<Choice value="up"/><Choice value="down"/></Choices><Choices name="topics" '
        'toName="text" choice="multiple"><Choice value="a"/><Choice value="b"/></Choices>'
        "</View>"
    )
    task = {"id": 1, "data": {"text": "a post"}, "annotations": []}
    assert chosen_set(task, topics) is None
    task["annotations"] = [{"id": 1, "result": sentiment.result("up")}]
    assert chosen_set(task, topics) == frozenset()
    task["annotations"].append(
        {"id": 2, "result": sentiment.result("up") + topics.result_of_set(["a", "b"])}
    )
    assert chosen_set(task, topics) == frozenset({"a", "b"})
    task["annotations"].append({"id": 3, "result": [], "was_cancelled": True})
    assert chosen_set(task, topics) == frozenset({"a", "b"})  # a skip answers nothing
    # As a label (the calibrator's and the judge's): the set's answer_key.
    assert text_and_label(task, topics) == ("a post", '["a", "b"]')
