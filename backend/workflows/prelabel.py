"""Bulk pre-labeling: every task of a project that has no pre-label of the serving version
gets one, pushed to Label Studio in batches as the LLM answers arrive. Beside the stream,
every post of the project is embedded into its store for the next head
(backend.model.embeddings), so the first "Start Training" finds its posts embedded.

Runs as the "prelabel" job (backend/jobs): started when a backend connects to a project,
when tasks are imported (TASKS_CREATED), when "Retrieve Predictions" finds posts not yet
asked, and by the periodic reconcile. Running it twice is harmless: tasks that hold a
prediction of the version are skipped, and answers already paid for come from the cache.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

from backend.config import Settings
from backend.domain import dataset
from backend.domain.jobs import RunState
from backend.domain.taxonomy import parse_form
from backend.inference.predictor import Predictor
from backend.labelstudio import client as ls_client
from backend.llm.labeler import LLMOpinion
from backend.model.embeddings import EmbeddingStore

log = logging.getLogger(__name__)

PUSH_SECONDS = 5.0  # the longest answers wait for a push, so progress shows
MAX_BATCHES_WAITING = 10  # PRELABEL_BATCHes gathered behind a slow push before one queues


class PrelabelFailures(RuntimeError):
    """Some posts got no answer (the LLM failed): the job runs again later for them."""


def tasks_to_label(tasks: list[dict], text_field: str, version: str) -> list[dict]:
    """Tasks without a kept annotation, with text and no prediction of `version` yet (as
    `task_pages` lists them)."""
    return [
        t
        for t in tasks
        if not t["total_annotations"]
        and dataset.task_text(t, text_field) is not None
        and version not in t["model_versions"]
    ]


def fetched_ahead(pages: Iterator[list[dict]]) -> Iterator[list[dict]]:
    """The pages, the next one fetched while the caller works on this one."""
    with ThreadPoolExecutor(1, thread_name_prefix="list") as fetcher:
        upcoming = fetcher.submit(next, pages, None)
        while (page := upcoming.result()) is not None:
            upcoming = fetcher.submit(next, pages, None)
            yield page


def prelabel_project(
    client, predictor: Predictor, settings: Settings, project: int, report: Callable[..., object]
) -> dict:
    """Pre-label what is missing; return the counts (also given to `report` as it goes).

    Tasks come a page at a time and the LLM starts on the first page while Label Studio
    lists the next."""
    started = time.monotonic()
    details = client.projects.get(id=project)
    form = parse_form(details.label_config)
    # The question asked for (one request answers every question of the form); the
    # others' answers are read from the cache as each batch is pushed.
    asked = form.primary or form.questions[0]
    version = predictor.model_version(project)
    counts: dict[str, float] = {
        "tasks": 0,
        "to_label": 0,
        "done": 0,
        "failed": 0,
        "unusable": 0,
        "batches": 0,
        "embedded": 0,  # posts the job embedded for the next head (the others were in)
    }
    report(
        state=RunState.RUNNING,
        phase="pre-labeling",
        started=time.time(),
        reason=None,
        version=version,
        **counts,
    )

    # The next head's embeddings (BASE_MODEL's); None once the encoder failed.
    store: EmbeddingStore | None = predictor.embedding_store(project)

    def embed(texts: list[str]) -> None:
        nonlocal store
        if store is None:
            return
        try:
            counts["embedded"] += store.rows(texts)[1]
        except Exception as exc:  # the first run embeds them instead
            log.warning(
                "project %d: posts not embedded ahead of training (%s); the first run embeds them",
                project,
                exc,
            )
            store = None

    def push(items: list[tuple[dict, str, LLMOpinion]]) -> None:
        posts = [text for _, text, _ in items]
        decisions: list = [None] * len(items)
        if form.primary is not None:
            _, opinions = predictor.combine(
                project, form.primary, posts, [opinion for _, _, opinion in items], kept=True
            )
            decisions = [o.decision for o in opinions]
        made = predictor.label_studio_predictions(
            form.primary,
            version,
            [task for task, _, _ in items],
            decisions,
            predictor.others(project, form, posts, kept=True),
        )
        predictions = [
            {"task": task["id"], **prediction}
            for (task, _, _), prediction in zip(items, made, strict=True)
            if prediction is not None
        ]
        ls_client.import_predictions(client, project, predictions)
        counts["done"] += len(predictions)
        for (_, _, opinion), prediction in zip(items, made, strict=True):
            if prediction is None:
                # An error is worth asking again; an answer off the label list is not.
                counts["failed" if opinion.error and not opinion.off_list else "unusable"] += 1
        counts["batches"] += 1
        elapsed = time.monotonic() - started
        log.info(
            "project %d: pre-label batch %d: %d pushed, %d of %d done, %d failed, %d "
            "off the label list, %.1f posts/s",
            project,
            counts["batches"],
            len(predictions),
            counts["done"],
            counts["to_label"],
            counts["failed"],
            counts["unusable"],
            counts["done"] / elapsed if elapsed else 0.0,
        )
        report(**counts)

    # Pushes run beside the stream, one at a time and in order: the LLM stays busy while
    # Label Studio stores the batches. While a push is under way, answers gather into
    # the next one: a Label Studio slower than the LLM gets fewer, larger imports (1.23
    # by default updates every task of the project on each import, so the number of
    # calls, not their size, is what costs).
    batch: list[tuple[dict, str, LLMOpinion]] = []  # (task, text, LLM opinion)
    todo: list[dict] = []  # every task to label so far, numbered as the LLM's answers are
    texts: list[str] = []

    def chunks() -> Iterator[list[str]]:
        for page in fetched_ahead(ls_client.task_pages(client, project)):
            found = tasks_to_label(page, form.text_field, version)
            counts["tasks"] += len(page)
            counts["to_label"] += len(found)
            todo.extend(found)
            texts.extend(dataset.task_text(t, form.text_field) or "" for t in found)
            # Every post of the page, labeled or pre-labeled before included: the next run
            # trains on the labeled ones and re-scores the others.
            listed = (dataset.task_text(t, form.text_field) for t in page)
            embedder.submit(embed, [text for text in listed if text])
            yield texts[len(texts) - len(found) :]

    last_push, pushes = time.monotonic(), list[Future]()
    # Each page of tasks is embedded beside the stream; the job ends when all are in.
    with (
        ThreadPoolExecutor(1, thread_name_prefix="embed") as embedder,
        ThreadPoolExecutor(1, thread_name_prefix="push") as pusher,
    ):
        for indexes, opinion in predictor.labeler.label_stream(asked, chunks(), group=project):
            batch.extend((todo[i], texts[i], opinion) for i in indexes)
            while pushes and pushes[0].done():
                pushes.pop(0).result()  # a refusing Label Studio stops the run early
            # Full batches, and at least every few seconds so a slow endpoint shows
            # progress; a batch grown to MAX_BATCHES_WAITING batches queues regardless.
            due = (
                len(batch) >= settings.prelabel_batch or time.monotonic() - last_push > PUSH_SECONDS
            )
            if due and (not pushes or len(batch) >= MAX_BATCHES_WAITING * settings.prelabel_batch):
                pushes.append(pusher.submit(push, list(batch)))
                batch.clear()
                last_push = time.monotonic()
        counts["llm_seconds"] = round(time.monotonic() - started, 2)  # every answer in
        if batch:
            pushes.append(pusher.submit(push, list(batch)))
        for future in pushes:
            future.result()
        counts["pushed_seconds"] = round(time.monotonic() - started, 2)  # every pre-label in
    if counts["to_label"]:
        ls_client.set_model_version(client, project, version, quiet=True)
    counts["seconds"] = round(time.monotonic() - started, 2)
    if counts["failed"]:
        report(**counts)
        raise PrelabelFailures(
            f"{counts['failed']} of {counts['to_label']} posts got no "
            f"pre-label (the LLM endpoint failed); asked again on the next "
            f"attempt"
        )
    return {**counts, "version": version}
