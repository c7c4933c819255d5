"""The review queue: which unlabeled tasks an annotator should look at first.

Each task's priority is its prediction score: the estimated probability that its shown
pre-label is right (policy.decide, domain.calibration), so lower = review first, and every
model-vs-LLM disagreement scores below every agreement. The queue is the unlabeled tasks
whose pre-label is less than QUEUE_BELOW likely to be right, lowest first. It exists in
three shapes, all built here:
- the "Review queue" Data Manager tab (filters and ordering Label Studio applies itself);
- queue rows (both opinions, the shown label, the priority) with a disagreement summary,
  kept by the registry after each re-score and served by GET /queue;
- CSV of those rows for spreadsheets.
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from collections.abc import Sequence

from backend.domain.calibration import Scored

# P(right) under 0.8 is worth a look: at least one such pre-label in five is corrected.
QUEUE_BELOW = 0.8
REVIEW_TAB = "Review queue"
FIELDS = [
    "task",
    "priority",
    "in_queue",
    "disagree",
    "shown_label",
    "shown_from",
    "llm_label",
    "llm_confidence",
    "model_label",
    "model_probabilities",
    "text",
]


def review_tab() -> dict:
    """The Data Manager tab: unlabeled tasks scored under the threshold, lowest first."""
    return {
        "title": REVIEW_TAB,
        "filters": {
            "conjunction": "and",
            "items": [
                {
                    "filter": "filter:tasks:total_annotations",
                    "operator": "equal",
                    "type": "Number",
                    "value": 0,
                },
                {
                    "filter": "filter:tasks:predictions_score",
                    "operator": "less",
                    "type": "Number",
                    "value": QUEUE_BELOW,
                },
            ],
        },
        "ordering": ["tasks:predictions_score"],
        "hiddenColumns": {"explore": [], "labeling": []},
    }


def rows(
    task_ids: Sequence[int],
    texts: Sequence[str],
    opinions: Sequence[Scored],
    scores: Sequence[float] | None = None,
) -> list[dict]:
    """One row per task that has a pre-label, lowest priority first. `scores`: each task's
    prediction score where it is not its first question's (a config of several questions:
    the least sure answer's), so the rows are the "Review queue" tab's."""
    out: list[dict] = []
    scores = (
        scores
        if scores is not None
        else [o.decision.score if o.decision else 1.0 for o in opinions]
    )
    for task, text, item, score in zip(task_ids, texts, opinions, scores, strict=True):
        decision = item.decision
        if decision is None:
            continue
        out.append(
            {
                "task": task,
                "text": text,
                "priority": score,
                "shown_label": decision.label,
                "shown_from": decision.source,
                "disagree": decision.disagree,
                "llm_label": item.llm.label if item.llm else None,
                "llm_confidence": item.llm.confidence if item.llm else None,
                "model_label": item.model.label if item.model else None,
                "model_probabilities": item.model.probabilities if item.model else None,
                "in_queue": score < QUEUE_BELOW,
            }
        )
    out.sort(key=lambda r: r["priority"])
    return out


def disagreement_pairs(queue_rows: list[dict], *, examples: int = 3) -> list[dict]:
    """Model-vs-LLM label pairs, most frequent first, with example posts."""
    pairs = Counter((r["llm_label"], r["model_label"]) for r in queue_rows if r["disagree"])
    return [
        {
            "llm_label": llm,
            "model_label": model,
            "count": n,
            "examples": [
                r["text"][:200]
                for r in queue_rows
                if r["disagree"] and (r["llm_label"], r["model_label"]) == (llm, model)
            ][:examples],
        }
        for (llm, model), n in pairs.most_common()
    ]


def summary(version: str, queue_rows: list[dict], *, unlabeled: int) -> dict:
    """What GET /queue serves and `takemeter queue` prints."""
    return {
        "model_version": version,
        "unlabeled": unlabeled,
        "in_queue": sum(r["in_queue"] for r in queue_rows),
        "disagreements": sum(r["disagree"] for r in queue_rows),
        "pairs": disagreement_pairs(queue_rows),
        "rows": queue_rows,
    }


def describe(queue_summary: dict, *, top: int = 5) -> str:
    """One line for the log: the most frequent disagreement pairs."""
    return (
        ", ".join(
            f"llm {p['llm_label']} vs model {p['model_label']}: {p['count']}"
            for p in queue_summary["pairs"][:top]
        )
        or "none"
    )


def to_csv(queue_rows: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=FIELDS, extrasaction="ignore")
    writer.writeheader()
    for row in queue_rows:
        writer.writerow({**row, "model_probabilities": json.dumps(row["model_probabilities"])})
    return out.getvalue()
