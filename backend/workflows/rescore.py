"""Refresh Label Studio after a promotion: re-score every unlabeled task under the serving
version and push the predictions in bulk.

First the project's calibrator is refitted for the version now serving (refit_calibration,
also run before each training run), so the scores are P(right) for what is served. Each
unlabeled task gets the serving version's prediction (policy label, P(right) as score;
a blind task an empty one at its place in the queue, domain.roles).
Where the model and the LLM disagree, both opinions are added as predictions of their
own ("zero-shot:<llm>" and "<version>:model"), each scored with the P(right) of its own
label, so the annotator sees both labels in the labeling view. The review-queue summary
is logged and kept by the registry.
"""

from __future__ import annotations

import logging

from backend.domain import calibration, dataset, policy, queue, roles
from backend.domain.taxonomy import Form
from backend.inference.predictor import Predictor
from backend.labelstudio import client as ls_client
from backend.llm.labeler import LLMOpinion
from backend.workflows.context import ProjectRun

log = logging.getLogger(__name__)


def refit_calibration(
    predictor: Predictor, run: ProjectRun, tasks: list[dict]
) -> calibration.Calibrator | None:
    """Fit the project's calibrator on its annotated tasks under the version now serving
    and store it. Never raises: a failure is logged and the stored calibrator stays."""
    project = run.project
    try:
        trained = trained_on(tasks) if run.serving() else set()

        def opinions(texts: list[str]) -> list:
            return predictor.opinions(
                project, run.taxonomy, texts, llm_only_cached=True, kept=True
            )[1]

        fitted = calibration.fit_from_tasks(
            tasks,
            run.taxonomy,
            opinions,
            holdout_percent=predictor.settings.holdout_percent,
            usable=lambda task: task not in trained,
        )
        run.registry.write_calibration(fitted.to_dict())
        log.info("project %d: score calibrator %s", project, fitted.describe())
        return fitted
    except Exception:
        log.exception("project %d: the score calibrator was not refitted", project)
        return None


def trained_on(tasks: list[dict]) -> set[int]:
    """Task ids a version may have trained on: those in the trainer's training bucket
    (not validation, not judge). Their model probabilities look surer than they are, so
    the calibrator is not fitted on them."""
    ids = [t["id"] for t in tasks if isinstance(t.get("id"), int)]
    train, _, _ = roles.split_roles(
        [str(i) for i in ids],
        validation_share=roles.VALIDATION_SHARE,
        judge_share=roles.JUDGE_SHARE,
    )
    return {ids[i] for i in train}


def rescore(client, predictor: Predictor, run: ProjectRun, tasks: list[dict]) -> dict:
    """Refresh the predictions of every unlabeled task; keep and return the summary."""
    project, taxonomy = run.project, run.taxonomy
    calibrator = refit_calibration(predictor, run, tasks) or run.calibrator()
    with_text = [t for t in tasks if dataset.task_text(t, taxonomy.text_field) is not None]
    unlabeled = [t for t in with_text if dataset.latest_annotation(t) is None]
    # Label Studio accepts a project model_version only once a prediction carries it: in a
    # fully annotated project the labeled tasks get the new version's predictions instead.
    targets = unlabeled or with_text
    texts = [t["data"][taxonomy.text_field] for t in targets]
    version, opinions = predictor.opinions(project, taxonomy, texts, kept=True)
    llm_version = predictor.llm_version()
    existing = ls_client.prediction_versions(client, project)
    made = predictor.label_studio_predictions(
        taxonomy,
        version,
        targets,
        [item.decision for item in opinions],
        predictor.others(project, Form.of(taxonomy), texts, kept=True),
    )
    predictions = []
    for task, item, prediction in zip(targets, opinions, made, strict=True):
        if item.decision is None or prediction is None:
            continue
        predictions.append({"task": task["id"], **prediction})
        llm, model = item.llm, item.model
        if (
            not item.decision.disagree
            or not unlabeled
            or not prediction["result"]  # a blind task shows neither opinion
            or llm is None
            or llm.label is None
            or model is None
        ):
            continue  # (a disagreement has both opinions)
        versions = existing.get(task["id"], set())
        if llm_version not in versions:
            predictions.append(
                {
                    "task": task["id"],
                    "model_version": llm_version,
                    "score": own_score(llm, model, calibrator, from_model=False),
                    "result": taxonomy.result(llm.label),
                }
            )
        if f"{version}:model" not in versions:
            predictions.append(
                {
                    "task": task["id"],
                    "model_version": f"{version}:model",
                    "score": own_score(llm, model, calibrator, from_model=True),
                    "result": taxonomy.result(model.label),
                }
            )
    ls_client.import_predictions(client, project, predictions)
    # The queue's rows are the pre-labels shown: a blind task has none to review.
    shown = [i for i, p in enumerate(made) if p and p["result"]] if unlabeled else []
    rows = queue.rows(
        [targets[i]["id"] for i in shown],
        [texts[i] for i in shown],
        [opinions[i] for i in shown],
        [p["score"] for p in (made[i] for i in shown) if p],  # the tab's order
    )
    summary = queue.summary(version, rows, unlabeled=len(unlabeled))
    run.registry.write_queue(summary)
    log.info(
        "re-scored %d unlabeled tasks under %s: %d in the review queue, %d disagreements (%s)",
        len(unlabeled),
        version,
        summary["in_queue"],
        summary["disagreements"],
        queue.describe(summary),
    )
    return summary


def own_score(
    llm: LLMOpinion,
    model: policy.ModelOpinion,
    calibrator: calibration.Calibrator,
    *,
    from_model: bool,
) -> float:
    """P(right) of one opinion's label in a disagreement, as if it were the one shown."""
    decision = policy.decide(
        llm.label, llm.confidence, model, prefer_model=from_model, calibrator=calibrator
    )
    assert decision is not None  # there is an opinion
    return decision.score


def refresh_label_studio(
    client, predictor: Predictor, run: ProjectRun, tasks: list[dict], version: str
) -> dict:
    """Re-score the unlabeled tasks under the serving version and point Label Studio at it."""
    summary = rescore(client, predictor, run, tasks)
    # After the import: Label Studio accepts a project model_version only once
    # predictions (or a live backend) carry it.
    ls_client.set_model_version(client, run.project, version)
    ls_client.ensure_review_tab(client, run.project)
    return summary
