"""Re-score unlabeled tasks after a promotion and refresh their predictions in bulk.

Each unlabeled task gets the serving version's prediction (policy label, priority score).
Where the model and the LLM disagree, both opinions are added as predictions of their
own ("zero-shot:<llm>" and "<version>:model"), so the annotator sees both labels in the
labeling view. The disagreement summary is logged and kept in queue.json.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections import Counter
from pathlib import Path

from backend import dataset
from backend.files import write_json_atomic
from backend.policy import QUEUE_BELOW
from backend.predictor import Opinions, Predictor
from backend.taxonomy import Taxonomy

log = logging.getLogger(__name__)


def queue_rows(tasks: list[dict], taxonomy: Taxonomy, opinions: list[Opinions]) -> list[dict]:
    """One row per task: both opinions, the shown label and the priority."""
    rows = []
    for task, item in zip(tasks, opinions, strict=True):
        if item.decision is None:
            continue
        rows.append({
            "task": task["id"],
            "text": task["data"][taxonomy.text_field],
            "priority": item.decision.score,
            "shown_label": item.decision.label,
            "shown_from": item.decision.source,
            "disagree": item.decision.disagree,
            "llm_label": item.llm.label if item.llm else None,
            "llm_confidence": item.llm.confidence if item.llm else None,
            "model_label": item.model.label if item.model else None,
            "model_probabilities": item.model.probabilities if item.model else None,
            "in_queue": item.decision.score < QUEUE_BELOW,
        })
    rows.sort(key=lambda r: r["priority"])
    return rows


QUEUE_FIELDS = ["task", "priority", "in_queue", "disagree", "shown_label", "shown_from",
                "llm_label", "llm_confidence", "model_label", "model_probabilities", "text"]


def queue_csv(rows: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=QUEUE_FIELDS, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({**row, "model_probabilities": json.dumps(row["model_probabilities"])})
    return out.getvalue()


def disagreement_summary(rows: list[dict], *, examples: int = 3) -> list[dict]:
    """Model-vs-LLM label pairs, most frequent first, with example posts."""
    pairs = Counter((r["llm_label"], r["model_label"]) for r in rows if r["disagree"])
    return [{
        "llm_label": llm, "model_label": model, "count": n,
        "examples": [r["text"][:200] for r in rows
                     if r["disagree"] and (r["llm_label"], r["model_label"]) == (llm, model)
                     ][:examples],
    } for (llm, model), n in pairs.most_common()]


def rescore(client, predictor: Predictor, project: int, taxonomy: Taxonomy,
            tasks: list[dict], out: Path) -> dict:
    """Refresh the predictions of every unlabeled task; write and return the summary."""
    from backend.ls_client import import_predictions, prediction_versions

    with_text = [t for t in tasks
                 if isinstance((t.get("data") or {}).get(taxonomy.text_field), str)
                 and t["data"][taxonomy.text_field].strip()]
    unlabeled = [t for t in with_text if dataset.latest_annotation(t) is None]
    # Label Studio accepts a project model_version only once a prediction carries it: in a
    # fully annotated project the labeled tasks get the new version's predictions instead.
    targets = unlabeled or with_text
    texts = [t["data"][taxonomy.text_field] for t in targets]
    version, opinions = predictor.opinions(project, taxonomy, texts)
    llm_version = predictor.llm_version()
    existing = prediction_versions(client, project)
    predictions = []
    for task, item in zip(targets, opinions, strict=True):
        if item.decision is None:
            continue
        predictions.append({"task": task["id"], "model_version": version,
                            "score": item.decision.score,
                            "result": taxonomy.result(item.decision.label)})
        if not item.decision.disagree or not unlabeled:
            continue
        versions = existing.get(task["id"], set())
        if llm_version not in versions:
            predictions.append({"task": task["id"], "model_version": llm_version,
                                "score": item.llm.confidence,
                                "result": taxonomy.result(item.llm.label)})
        if f"{version}:model" not in versions:
            predictions.append({"task": task["id"], "model_version": f"{version}:model",
                                "score": item.model.margin,
                                "result": taxonomy.result(item.model.label)})
    import_predictions(client, project, predictions)
    rows = queue_rows(unlabeled, taxonomy, opinions) if unlabeled else []
    summary = {
        "model_version": version,
        "unlabeled": len(unlabeled),
        "in_queue": sum(r["in_queue"] for r in rows),
        "disagreements": sum(r["disagree"] for r in rows),
        "pairs": disagreement_summary(rows),
        "rows": rows,
    }
    write_json_atomic(out, summary)
    pairs = ", ".join(f"llm {p['llm_label']} vs model {p['model_label']}: {p['count']}"
                      for p in summary["pairs"][:5]) or "none"
    log.info("re-scored %d unlabeled tasks under %s: %d in the review queue, %d "
             "disagreements (%s)", len(unlabeled), version, summary["in_queue"],
             summary["disagreements"], pairs)
    return summary
