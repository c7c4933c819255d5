"""Suspect labels of a multiple-choice question: the annotated sets the model doubts, and
in each, the labels it doubts (cleanlab's multi-label confident learning).

The model's opinion is the one `label-issues` uses for a single-choice question, a label
at a time: out-of-fold probabilities of a logistic regression on the frozen embeddings,
each label's from a fit without the post's fold (stratified on that label), so no post is
scored by a model that learned its set. cleanlab's `find_multilabel_issues_per_class`
marks, for each label, the posts whose yes or no for it looks wrong; a post is flagged
when any of its labels is, and posts are ranked by cleanlab's multi-label quality score
(lowest first). The LLM's set is shown beside it, not mixed in.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from backend.domain.dataset import chosen_set, is_held_out, task_text
from backend.domain.taxonomy import Taxonomy


@dataclass(frozen=True)
class AnnotatedSet:
    task_id: int
    text: str
    labels: frozenset[str]
    split: str  # "train" or "test" (held out)


@dataclass(frozen=True)
class SetSuspect:
    rank: int  # 1 = most suspect
    task_id: int
    flagged: bool  # cleanlab doubts at least one of its labels
    quality: float  # cleanlab's multi-label quality score, lower = worse
    split: str
    human_labels: list[str]
    doubted: list[str]  # the labels whose yes or no cleanlab doubts
    model_labels: list[str]  # the out-of-fold model's set (each label at 0.5)
    model_probabilities: dict[str, float]
    llm_labels: list[str] | None
    text: str


def annotated_sets(
    tasks: list[dict], question: Taxonomy, *, holdout_percent: int
) -> list[AnnotatedSet]:
    """Every task whose latest kept annotation answers the question (dataset.chosen_set)."""
    found = []
    for task in tasks:
        chosen, text = chosen_set(task, question), task_text(task, question.text_field)
        if chosen is not None and text is not None:
            split = "test" if is_held_out(task, percent=holdout_percent) else "train"
            found.append(AnnotatedSet(int(task["id"]), text, chosen, split))
    return found


def out_of_fold_set_probabilities(
    x: np.ndarray, y: np.ndarray, *, folds: int, seed: int = 0, c: float = 1.0
) -> np.ndarray:
    """N x K: each label's P(yes) for every post, from fits without the post's fold. A
    label every post has (or none has) gets that answer's share for every post."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    out = np.zeros(y.shape, dtype=float)
    for k in range(y.shape[1]):
        column = y[:, k]
        rarer = int(min(column.sum(), len(column) - column.sum()))
        if rarer == 0:
            out[:, k] = column.mean()
            continue
        splitter = StratifiedKFold(
            n_splits=max(2, min(folds, rarer)), shuffle=True, random_state=seed
        )
        with warnings.catch_warnings():  # a rare label: sklearn warns and still answers
            warnings.simplefilter("ignore")
            probs = cross_val_predict(
                LogisticRegression(C=c, max_iter=2000),
                x,
                column,
                cv=splitter,
                method="predict_proba",
            )
        out[:, k] = probs[:, 1]
    return out


def find_set_suspects(
    items: Sequence[AnnotatedSet],
    probs: np.ndarray,
    names: Sequence[str],
    llm: Sequence[frozenset[str] | None] | None = None,
) -> list[SetSuspect]:
    """Every item ranked: the flagged ones (any label doubted) by quality, then the rest."""
    from cleanlab.multilabel_classification.filter import find_multilabel_issues_per_class
    from cleanlab.multilabel_classification.rank import get_label_quality_scores

    index = {name: k for k, name in enumerate(names)}
    labels = [sorted(index[n] for n in item.labels) for item in items]
    with warnings.catch_warnings():  # tiny classes: cleanlab warns and still answers
        warnings.simplefilter("ignore")
        per_label = np.asarray(find_multilabel_issues_per_class(labels, probs, n_jobs=1))
        quality = np.asarray(get_label_quality_scores(labels, probs), dtype=float)
    # N x K (cleanlab 2.9); its docs describe K masks of N, taken as well.
    doubted = per_label if per_label.shape == probs.shape else per_label.T
    flagged: np.ndarray = np.asarray(doubted.any(axis=1), dtype=bool)
    order = np.lexsort((np.arange(len(items)), quality, ~flagged))
    suspects = []
    for position, i in enumerate(order, start=1):
        item = items[i]
        answer = llm[i] if llm is not None else None
        suspects.append(
            SetSuspect(
                rank=position,
                task_id=item.task_id,
                flagged=bool(flagged[i]),
                quality=round(float(quality[i]), 4),
                split=item.split,
                human_labels=sorted(item.labels),
                doubted=[n for n, d in zip(names, doubted[i], strict=True) if d],
                model_labels=[n for n, p in zip(names, probs[i], strict=True) if p >= 0.5],
                model_probabilities={
                    n: round(float(p), 4) for n, p in zip(names, probs[i], strict=True)
                },
                llm_labels=None if answer is None else sorted(answer),
                text=item.text,
            )
        )
    return suspects


def table(suspects: Sequence[SetSuspect], *, width: int = 50) -> list[str]:
    """A plain-text table: rank, task, the human set, the doubted labels, the model's and
    the LLM's sets, the post's start."""
    lines = [f"{'#':>4} {'task':>7}  {'human':<22} {'doubted':<16} {'model':<22} {'LLM':<22} post"]
    for s in suspects:
        text = " ".join(s.text.split())
        text = text if len(text) <= width else text[: width - 1] + "…"
        llm = "-" if s.llm_labels is None else ",".join(s.llm_labels) or "(none)"
        lines.append(
            f"{s.rank:>4} {s.task_id:>7}  {','.join(s.human_labels) or '(none)':<22} "
            f"{','.join(s.doubted):<16} {','.join(s.model_labels) or '(none)':<22} "
            f"{llm:<22} {text}"
        )
    return lines
