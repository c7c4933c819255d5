"""The training runner: `python -m backend.train_runner <project id>`.

Started by jobs.start_runner in its own process. While runs are pending it pulls the
annotations from Label Studio, fine-tunes, registers the version, promotes it if it is no
worse on validation than the serving one, and re-scores the unlabeled tasks.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import sys
import time

from backend import dataset, ls_client
from backend.config import Settings, load_settings
from backend.jobs import TRAIN, JobState, acquire_runner_lock
from backend.llm import from_settings as labeler_from_settings
from backend.predictor import Predictor
from backend.registry import Registry
from backend.rescore import rescore
from backend.taxonomy import parse_taxonomy
from backend.trainer import TrainConfig, fine_tune

log = logging.getLogger("backend.train_runner")


def data_hash(examples: list[dataset.Example]) -> str:
    payload = json.dumps(sorted((e.task_id, e.text, e.label) for e in examples))
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def accuracy(truth: list[str], predicted: list[str | None]) -> float | None:
    if not truth:
        return None
    return sum(t == p for t, p in zip(truth, predicted, strict=True)) / len(truth)


def run_once(settings: Settings, state: JobState, project: int) -> None:
    from sklearn.metrics import f1_score

    started = time.time()
    state.set_status(project, state="running", phase="fetching annotations", started=started,
                     reason=None, epoch=None, version=None, promoted=None)
    client = ls_client.connect(settings)
    label_config = client.projects.get(id=project).label_config
    taxonomy = parse_taxonomy(label_config)
    tasks = ls_client.all_tasks(client, project)
    examples = dataset.labeled_examples(tasks, taxonomy,
                                        holdout_percent=settings.holdout_percent)
    short = dataset.too_few(examples, taxonomy.names, settings.train_min_per_label)
    if short:
        state.set_status(project, state="skipped", phase=None, reason=short,
                         finished=time.time())
        log.info("project %d: training skipped: %s", project, short)
        return

    registry = Registry(settings.model_dir, project)
    registry.clean_staging()
    name = registry.new_version_name()
    staging = registry.staging_dir()
    config = TrainConfig(base_model=settings.base_model, epochs=settings.train_epochs,
                         learning_rate=settings.train_learning_rate,
                         batch_size=settings.train_batch_size,
                         max_length=settings.train_max_length, seed=settings.train_seed)

    def progress(event: dict) -> None:
        state.set_status(project, phase="training", **{k: v for k, v in event.items()
                                                         if k != "phase"})
        log.info("project %d: %s", project, event)

    state.set_status(project, phase="training", n_examples=len(examples))
    try:
        result = fine_tune([e.text for e in examples], [e.label for e in examples],
                           label_names=list(taxonomy.names), config=config, out_dir=staging,
                           keys=[str(e.task_id) for e in examples], progress=progress)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise

    # Judge the new version on this run's validation posts: against the LLM, and against
    # the serving version (scored on the same posts, since data grows between runs).
    state.set_status(project, phase="validating")
    labeler = labeler_from_settings(settings)
    predictor = Predictor(settings, labeler)
    val_truth, val_texts = result.validation_labels, result.validation_texts
    llm_labels = [o.label for o in labeler.label_many(taxonomy, val_texts)]
    names = list(taxonomy.names)

    def macro_f1(predicted: list[str | None]) -> float | None:
        if not val_truth:
            return None
        return float(f1_score(val_truth, [p or "" for p in predicted], labels=names,
                              average="macro", zero_division=0))

    new_f1 = macro_f1(result.validation_predictions)
    llm_accuracy = accuracy(val_truth, llm_labels)
    model_accuracy = accuracy(val_truth, result.validation_predictions)
    serving = registry.serving()
    serving_f1 = None
    if serving and val_texts:
        _, old = predictor.opinions(project, taxonomy, val_texts, llm_only_cached=True)
        serving_f1 = macro_f1([o.model.label if o.model else None for o in old])
    promote = serving_f1 is None or new_f1 is None or new_f1 >= serving_f1
    meta = {
        "created": time.time(), "labels": names, "base_model": settings.base_model,
        "max_length": settings.train_max_length, "metrics": result.metrics,
        "data": {"hash": data_hash(examples), "n_examples": len(examples),
                 "held_out_tasks": sum(dataset.is_held_out(t, percent=settings.holdout_percent)
                                       for t in tasks)},
        "validation": {"model_macro_f1": new_f1, "model_accuracy": model_accuracy,
                       "llm_accuracy": llm_accuracy, "llm_macro_f1": macro_f1(llm_labels),
                       "serving_version": serving, "serving_macro_f1": serving_f1},
        "beats_llm": (model_accuracy is not None and llm_accuracy is not None
                      and model_accuracy > llm_accuracy),
        "timings": {"train_seconds": result.metrics["train_seconds"],
                    "run_seconds": round(time.time() - started, 2)},
        "promoted": promote,
    }
    registry.commit(staging, name, meta)
    if not promote:
        state.set_status(project, state="finished", phase=None, version=name, promoted=False,
                         reason=f"kept, not promoted: validation macro-F1 {new_f1:.3f} is "
                                f"below the serving {serving}'s {serving_f1:.3f}",
                         finished=time.time())
        log.info("project %d: %s kept but not promoted (%.3f < %.3f)", project, name, new_f1,
                 serving_f1)
        return
    registry.promote(name)
    log.info("project %d: promoted %s (validation macro-F1 %s, LLM accuracy %s)", project,
             name, new_f1, llm_accuracy)
    state.set_status(project, phase="re-scoring unlabeled tasks", version=name, promoted=True)
    refresh_label_studio(client, predictor, project, taxonomy, tasks, name)
    state.set_status(project, state="finished", phase=None, version=name, promoted=True,
                     reason=None, finished=time.time(),
                     seconds=round(time.time() - started, 2))


def refresh_label_studio(client, predictor: Predictor, project: int, taxonomy, tasks: list,
                         version: str) -> None:
    """Re-score the unlabeled tasks under the serving version and point Label Studio at it."""
    rescore(client, predictor, project, taxonomy, tasks,
            predictor.registry(project).root / "queue.json")
    # After the import: Label Studio accepts a project model_version only once
    # predictions (or a live backend) carry it.
    ls_client.set_model_version(client, project, version)
    ls_client.ensure_review_tab(client, project)


def rescore_serving(settings: Settings, state: JobState, project: int) -> None:
    """After a promotion by hand: re-score under the version now serving."""
    state.set_status(project, state="running", phase="re-scoring unlabeled tasks",
                     started=time.time(), reason=None)
    client = ls_client.connect(settings)
    taxonomy = parse_taxonomy(client.projects.get(id=project).label_config)
    predictor = Predictor(settings, labeler_from_settings(settings))
    version = predictor.model_version(project)
    refresh_label_studio(client, predictor, project, taxonomy,
                         ls_client.all_tasks(client, project), version)
    state.set_status(project, state="finished", phase=None, version=version, promoted=True,
                     finished=time.time())


def main() -> int:
    project = int(sys.argv[1])
    settings = load_settings()
    logging.basicConfig(level=settings.log_level,
                        format="%(asctime)s %(levelname)s train[%(process)d] %(message)s")
    state = JobState(settings.model_dir)
    handle = acquire_runner_lock(state, project)
    if handle is None:
        return 0  # another runner owns this project and will see the pending request
    while True:
        time.sleep(settings.train_debounce)  # let a burst of annotations settle
        pending = state.take_pending(project, handle)
        if not pending:
            return 0
        try:
            if pending & TRAIN:
                run_once(settings, state, project)
            else:
                rescore_serving(settings, state, project)
        except Exception as exc:
            log.exception("project %d: training failed", project)
            state.set_status(project, state="failed", phase=None,
                             reason=ls_client.describe_error(exc), finished=time.time())


if __name__ == "__main__":
    sys.exit(main())
