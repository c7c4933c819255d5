"""A task's role, fixed by its id: held out (the evaluation's), judge (decides which
version serves), validation (picks a fine-tune's epoch) or training, and which tasks are
labeled blind.

Blind labeling: the posts whose labels decide something, held-out tasks and judge posts,
get no pre-label (BLIND_LABELS, on by default). A label made with the LLM's answer in view
leans toward it, so an accuracy measured on such labels flatters the LLM, and a judge that
compares the model with the LLM on them does too. Blind tasks still get a prediction, an
empty one, so that Label Studio's uncertainty sampling serves them: its score is not a
confidence but a place in the queue, a quantile of the shown pre-labels' scores picked by
the task's hash. "Label All Tasks" thus serves blind tasks at their share of the project,
spread through the queue, and which ones is random: under the queue order alone, judge
posts would be the posts every version finds hardest, and the judge would compare noise.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from backend.domain.dataset import is_held_out

VALIDATION_SHARE = 0.15  # of the training side: picks the epoch (early stopping)
JUDGE_SHARE = 0.15  # of the training side: never trained on, never picks the epoch
_BUCKETS = 10_000


def bucket(key: str) -> int:
    """The stable bucket (0-9999) of a training-side key (a task id) for split_roles."""
    digest = hashlib.sha256(f"takemeter-validation:{key}".encode()).hexdigest()
    return int(digest[:8], 16) % _BUCKETS


def split_roles(
    keys: list[str], *, validation_share: float, judge_share: float
) -> tuple[list[int], list[int], list[int]]:
    """Indexes (train, validation, judge) by the same stable hash: validation picks the
    epoch, judge decides promotion, so the posts that judge a version did not also tune
    it. A post keeps its role as the project grows."""
    cut_val = int(validation_share * _BUCKETS)
    cut_judge = cut_val + int(judge_share * _BUCKETS)
    buckets = [bucket(key) for key in keys]
    return (
        [i for i, b in enumerate(buckets) if b >= cut_judge],
        [i for i, b in enumerate(buckets) if b < cut_val],
        [i for i, b in enumerate(buckets) if cut_val <= b < cut_judge],
    )


def is_judge_post(task_id: object) -> bool:
    """A training-side task in the judge's share (split_roles with the default shares)."""
    cut_val = int(VALIDATION_SHARE * _BUCKETS)
    return cut_val <= bucket(str(task_id)) < cut_val + int(JUDGE_SHARE * _BUCKETS)


def is_blind(task: dict, *, holdout_percent: int) -> bool:
    """Labeled without a pre-label: a held-out task or a judge post."""
    return is_held_out(task, percent=holdout_percent) or is_judge_post(task.get("id"))


def place(task_id: object) -> float:
    """The task's stable place in [0, 1): which quantile of the queue it takes."""
    digest = hashlib.sha256(f"takemeter-place:{task_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def queue_scores(task_ids: Sequence[object], shown_scores: Sequence[float]) -> list[float]:
    """Scores that put blind tasks at random places among the shown pre-labels: each
    task's `place` quantile of `shown_scores` (its place itself when there are none)."""
    ordered = sorted(shown_scores)
    if not ordered:
        return [place(t) for t in task_ids]
    last = len(ordered) - 1
    return [ordered[min(last, int(place(t) * len(ordered)))] for t in task_ids]
