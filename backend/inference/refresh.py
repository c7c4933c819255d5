"""Refresh Label Studio after a promotion: re-score every unlabeled task under the serving
version and push the predictions in bulk.

Each unlabeled task gets the serving version's prediction (policy label, priority score).
Where the model and the LLM disagree, both opinions are added as predictions of their
own ("zero-shot:<llm>" and "<version>:model"), so the annotator sees both labels in the
labeling view. The review-queue summary is logged and kept by the registry.
"""

from __future__ import annotations

import logging

from backend.domain import dataset, queue
from backend.domain.taxonomy import Taxonomy
from backend.inference.predictor import Predictor
from backend.labelstudio import client as ls_client

log = logging.getLogger(__name__)


def rescore(client, predictor: Predictor, project: int, taxonomy: Taxonomy,
            tasks: list[dict]) -> dict:
    """Refresh the predictions of every unlabeled task; keep and return the summary."""
    with_text = [t for t in tasks if dataset.task_text(t, taxonomy.text_field) is not None]
    unlabeled = [t for t in with_text if dataset.latest_annotation(t) is None]
    # Label Studio accepts a project model_version only once a prediction carries it: in a
    # fully annotated project the labeled tasks get the new version's predictions instead.
    targets = unlabeled or with_text
    texts = [t["data"][taxonomy.text_field] for t in targets]
    version, opinions = predictor.opinions(project, taxonomy, texts)
    llm_version = predictor.llm_version()
    existing = ls_client.prediction_versions(client, project)
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
    ls_client.import_predictions(client, project, predictions)
    rows = queue.rows([t["id"] for t in unlabeled], texts, opinions) if unlabeled else []
    summary = queue.summary(version, rows, unlabeled=len(unlabeled))
    predictor.registry(project).write_queue(summary)
    log.info("re-scored %d unlabeled tasks under %s: %d in the review queue, %d "
             "disagreements (%s)", len(unlabeled), version, summary["in_queue"],
             summary["disagreements"], queue.describe(summary))
    return summary


def refresh_label_studio(client, predictor: Predictor, project: int, taxonomy: Taxonomy,
                         tasks: list[dict], version: str) -> dict:
    """Re-score the unlabeled tasks under the serving version and point Label Studio at it."""
    summary = rescore(client, predictor, project, taxonomy, tasks)
    # After the import: Label Studio accepts a project model_version only once
    # predictions (or a live backend) carry it.
    ls_client.set_model_version(client, project, version)
    ls_client.ensure_review_tab(client, project)
    return summary
