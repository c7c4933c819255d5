"""Bulk pre-labeling: every task of a project that has no pre-label of the serving version
gets one, pushed to Label Studio in batches as the LLM answers arrive.

Runs as the "prelabel" job (backend/jobs): started when a backend connects to a project,
when tasks are imported (TASKS_CREATED), when "Retrieve Predictions" finds posts not yet
asked, and by the periodic reconcile. Running it twice is harmless: tasks that hold a
prediction of the version are skipped, and answers already paid for come from the cache.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from backend.config import Settings
from backend.domain import dataset
from backend.domain.taxonomy import parse_taxonomy
from backend.inference.predictor import Predictor
from backend.labelstudio import client as ls_client

log = logging.getLogger(__name__)


class PrelabelFailures(RuntimeError):
    """Some posts got no answer (the LLM failed): the job runs again later for them."""


def tasks_to_label(tasks: list[dict], text_field: str, version: str,
                   have: dict[int, set[str]]) -> list[dict]:
    """Unannotated tasks with text and no prediction of `version` yet."""
    return [t for t in tasks
            if dataset.latest_annotation(t) is None
            and dataset.task_text(t, text_field) is not None
            and version not in have.get(t["id"], set())]


def prelabel_project(client, predictor: Predictor, settings: Settings, project: int,
                     report: Callable[..., object]) -> dict:
    """Pre-label what is missing; return the counts (also given to `report` as it goes)."""
    started = time.monotonic()
    details = client.projects.get(id=project)
    taxonomy = parse_taxonomy(details.label_config)
    version = predictor.model_version(project)
    tasks = ls_client.all_tasks(client, project)
    todo = tasks_to_label(tasks, taxonomy.text_field, version,
                          ls_client.prediction_versions(client, project))
    counts = {"tasks": len(tasks), "to_label": len(todo), "done": 0, "failed": 0, "unusable": 0,
              "batches": 0, "version": version}
    report(state="running", phase="pre-labeling", started=time.time(), reason=None,
           **counts)
    texts = [dataset.task_text(t, taxonomy.text_field) or "" for t in todo]
    batch: list[tuple[int, object]] = []  # (task index, LLM opinion)

    def push(items: list[tuple[int, object]]) -> None:
        indexes = [i for i, _ in items]
        _, opinions = predictor.combine(project, taxonomy, [texts[i] for i in indexes],
                                        [o for _, o in items])
        predictions = [{"task": todo[i]["id"], "model_version": version,
                        "score": item.decision.score,
                        "result": taxonomy.result(item.decision.label)}
                       for i, item in zip(indexes, opinions, strict=True)
                       if item.decision is not None]
        ls_client.import_predictions(client, project, predictions)
        counts["done"] += len(predictions)
        for (_, opinion), item in zip(items, opinions, strict=True):
            if item.decision is None:
                # An error is worth asking again; an answer off the label list is not.
                counts["failed" if opinion.error else "unusable"] += 1
        counts["batches"] += 1
        elapsed = time.monotonic() - started
        log.info("project %d: pre-label batch %d: %d pushed, %d of %d done, %d failed, %d "
                 "off the label list, %.1f posts/s", project, counts["batches"],
                 len(predictions), counts["done"], len(todo), counts["failed"],
                 counts["unusable"],
                 counts["done"] / elapsed if elapsed else 0.0)
        report(**counts)

    # Pushes run beside the stream, one at a time and in order: the LLM stays busy while
    # Label Studio stores the batches (it may be the slower of the two).
    last_push, pushes = time.monotonic(), []
    with ThreadPoolExecutor(1, thread_name_prefix="push") as pusher:
        for indexes, opinion in predictor.labeler.label_stream(taxonomy, texts,
                                                               group=project):
            batch.extend((i, opinion) for i in indexes)
            # Full batches, and at least every few seconds so a slow endpoint shows
            # progress.
            if len(batch) >= settings.prelabel_batch or time.monotonic() - last_push > 5:
                pushes.append(pusher.submit(push, list(batch)))
                batch.clear()
                last_push = time.monotonic()
                if pushes[0].done():  # a refusing Label Studio stops the run early
                    pushes.pop(0).result()
        if batch:
            pushes.append(pusher.submit(push, list(batch)))
        counts["llm_seconds"] = round(time.monotonic() - started, 2)
        for future in pushes:
            future.result()
    if todo:
        ls_client.set_model_version(client, project, version, quiet=True)
    counts["seconds"] = round(time.monotonic() - started, 2)
    if counts["failed"]:
        report(**counts)
        raise PrelabelFailures(f"{counts['failed']} of {len(todo)} posts got no pre-label "
                               f"(the LLM endpoint failed); asked again on the next attempt")
    return counts
