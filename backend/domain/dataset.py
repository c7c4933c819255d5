"""Training and held-out data from Label Studio tasks (an export or the API).

Held-out rule, shared by the trainer and the scripts: a task whose data has
`split` = "test" is held out and one with `split` = "train" is not; any other task is held
out when sha256("takemeter:<task id>") mod 100 < HOLDOUT_PERCENT. The rule depends only on
the task, so a task never moves between training and evaluation as a project grows.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass
from datetime import datetime

from backend.domain.taxonomy import Taxonomy, answer_key, set_of_key

SPLIT_FIELD = "split"


def is_held_out(task: dict, *, percent: int) -> bool:
    split = str((task.get("data") or {}).get(SPLIT_FIELD, "")).strip().lower()
    if split in ("test", "heldout", "held_out", "held-out"):
        return True
    if split == "train":
        return False
    digest = hashlib.sha256(f"takemeter:{task.get('id')}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 100 < percent


def task_text(task: object, field: str) -> str | None:
    """The task's text in data[field], or None when it has no usable (non-blank) one."""
    if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
        return None
    text = task["data"].get(field)
    return text if isinstance(text, str) and text.strip() else None


def annotation_order(annotation: dict) -> tuple[float, int]:
    """Sort key, oldest first: last change (updated, else created), then id."""
    value = annotation.get("updated_at") or annotation.get("created_at")
    try:
        stamp = datetime.fromisoformat(str(value)).timestamp()
    except ValueError:
        stamp = 0.0
    return stamp, annotation.get("id") or 0


def latest_annotation(task: dict) -> dict | None:
    """The newest annotation that was not skipped (cancelled)."""
    kept = [a for a in task.get("annotations") or [] if not a.get("was_cancelled")]
    return max(kept, key=annotation_order) if kept else None


def latest_per_annotator(task: dict) -> dict[object, dict]:
    """Each annotator's newest annotation that was not skipped, by user id."""
    latest: dict[object, dict] = {}
    for annotation in sorted(task.get("annotations") or [], key=annotation_order):
        if annotation.get("was_cancelled"):
            continue
        user = annotation.get("completed_by")
        latest[user.get("id") if isinstance(user, dict) else user] = annotation
    return latest


@dataclass(frozen=True)
class Example:
    task_id: int
    text: str
    label: str


def labeled_examples(
    tasks: list[dict], taxonomy: Taxonomy, *, holdout_percent: int, held_out: bool = False
) -> list[Example]:
    """One example per annotated task from the training side (or, with held_out=True,
    from the held-out side): the latest annotation wins, skipped ones are left out."""
    examples = []
    for task in tasks:
        if is_held_out(task, percent=holdout_percent) != held_out:
            continue
        labeled = text_and_label(task, taxonomy)
        if labeled is not None:
            examples.append(Example(int(task["id"]), *labeled))
    return examples


def text_and_label(task: dict, taxonomy: Taxonomy) -> tuple[str, str] | None:
    """The task's text and the label of its latest annotation that was not skipped (for a
    multiple-choice question, its chosen_set as an answer_key); None when either is
    missing or the annotation chose no single label of the taxonomy."""
    annotation = latest_annotation(task)
    text = task_text(task, taxonomy.text_field)
    if annotation is None or text is None:
        return None
    if taxonomy.multiple:
        label = answer_key(chosen_set(task, taxonomy))
    else:
        label = taxonomy.label_of(annotation.get("result") or [])
    return (text, label) if label is not None else None


def chosen_set(task: dict, question: Taxonomy) -> frozenset[str] | None:
    """The labels the latest kept annotation chose for a multiple-choice question; None
    without a kept annotation or text. Label Studio stores no region for a multiple-choice
    question left unticked, so an annotation without one chose none of its labels (a
    `required` question cannot be left so)."""
    annotation = latest_annotation(task)
    if annotation is None or task_text(task, question.text_field) is None:
        return None
    result = annotation.get("result") or []
    if not any(isinstance(r, dict) and r.get("from_name") == question.from_name for r in result):
        return frozenset()
    return question.labels_of(result)


@dataclass(frozen=True)
class SetExample:
    """A post annotated for a multiple-choice question: the set of labels chosen."""

    task_id: int
    text: str
    labels: frozenset[str]


def labeled_sets(
    tasks: list[dict], question: Taxonomy, *, holdout_percent: int, held_out: bool = False
) -> list[SetExample]:
    """labeled_examples for a multiple-choice question, each label back as its set."""
    examples = labeled_examples(tasks, question, holdout_percent=holdout_percent, held_out=held_out)
    return [SetExample(e.task_id, e.text, set_of_key(e.label)) for e in examples]


def too_few(examples: list[Example], labels: tuple[str, ...], minimum: int) -> str | None:
    """Why there are not enough examples to train, or None when there are."""
    counts = Counter(e.label for e in examples)
    short = {name: counts.get(name, 0) for name in labels if counts.get(name, 0) < minimum}
    if not short:
        return None
    listed = ", ".join(f"{name}: {n}" for name, n in short.items())
    return (
        f"needs at least {minimum} training annotations per label; have {listed} "
        f"({len(examples)} training annotations in all)"
    )


def too_few_sets(examples: list[SetExample], labels: tuple[str, ...], minimum: int) -> str | None:
    """too_few for a multiple-choice question: each label needs `minimum` posts that have
    it and `minimum` that do not (its sigmoid learns from both)."""
    has = Counter(label for e in examples for label in e.labels)
    short = {
        name: has.get(name, 0)
        for name in labels
        if not minimum <= has.get(name, 0) <= len(examples) - minimum
    }
    if not short:
        return None
    listed = ", ".join(f"{name}: {n} of {len(examples)}" for name, n in short.items())
    return (
        f"needs at least {minimum} training annotations with and {minimum} without each "
        f"label; have {listed}"
    )
