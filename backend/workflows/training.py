"""A training run, for the "training" job lane (backend/jobs/lane.py). Four steps, each a
function that takes its collaborators:
  collect  pull the tasks from Label Studio, keep the training side's annotations;
  fit      train one candidate into a staging folder: a linear head on the frozen
           encoder (seconds), and from TRAIN_FINETUNE_FROM labels on also a fine-tune;
  judge    score the candidate on every judge post against the LLM and against the
           serving version (policy.should_promote, policy.beats_llm);
  publish  commit the version, promote it if judged so, re-score the unlabeled tasks.
The head goes through all four first, so a new model can serve within seconds of the
click; the fine-tune follows and is judged against whatever serves by then.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Unpack

from backend.config import Settings
from backend.domain import dataset, labelings, policy
from backend.domain.jobs import JobStatus, Lane, RunState, StatusFields, StatusStore
from backend.domain.taxonomy import Form, Taxonomy, answer_key, parse_taxonomy
from backend.inference.predictor import Predictor
from backend.labelstudio import client as ls_client
from backend.labelstudio.card import Card
from backend.labelstudio.card import for_backend as card_for_backend
from backend.model.embeddings import EmbeddingStore
from backend.model.head import train_head
from backend.model.multilabel_head import train_multilabel_head
from backend.model.trainer import TrainConfig, TrainResult, fine_tune
from backend.workflows.context import ProjectRun
from backend.workflows.rescore import refit_calibration, refresh_label_studio

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Collected:
    taxonomy: Taxonomy
    tasks: list[dict]
    examples: list[dataset.Example]
    held_out_tasks: int
    too_few: str | None  # why there is not enough to train, or None


@dataclass(frozen=True)
class Verdict:
    validation: dict
    promote: bool
    beats_llm: bool
    reason: str | None  # why it is kept and not promoted


def data_hash(keyed: Sequence[tuple[int, str, str]]) -> str:
    """A digest of (task id, text, answer) for each example a version learned from."""
    payload = json.dumps(sorted(keyed))
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def version_meta(
    kind: str,
    question: Taxonomy,
    settings: Settings,
    result: TrainResult,
    verdict: Verdict,
    keyed: Sequence[tuple[int, str, str]],
) -> dict:
    """What a version's meta.json records: how it was made, on what, and its verdict."""
    return {
        "created": time.time(),
        "kind": kind,
        "question": question.from_name,
        "labels": list(question.names),
        "base_model": settings.base_model,
        "max_length": settings.train_max_length,
        "metrics": result.metrics,
        "data": {
            "hash": data_hash(keyed),
            "n_examples": len(keyed),
            "trained_on": result.trained_on,
        },
        "validation": verdict.validation,
        "beats_llm": verdict.beats_llm,
        "timings": {"train_seconds": result.metrics["train_seconds"]},
        "promoted": verdict.promote,
    }


def collect(client, project: int, settings: Settings) -> Collected:
    taxonomy = parse_taxonomy(client.projects.get(id=project).label_config)
    tasks = ls_client.all_tasks(client, project)
    examples = dataset.labeled_examples(tasks, taxonomy, holdout_percent=settings.holdout_percent)
    held_out = sum(dataset.is_held_out(t, percent=settings.holdout_percent) for t in tasks)
    short = dataset.too_few(examples, taxonomy.names, settings.train_min_per_label)
    return Collected(taxonomy, tasks, examples, held_out, short)


def candidates(n_examples: int, settings: Settings) -> list[str]:
    """The kinds a run trains, in order: the head always, the fine-tune from
    TRAIN_FINETUNE_FROM labels on."""
    return ["head", *(["fine-tune"] if n_examples >= settings.train_finetune_from else [])]


def fit(
    kind: str,
    collected: Collected,
    settings: Settings,
    out_dir: Path,
    progress: Callable[[dict], None],
    *,
    store: EmbeddingStore,
) -> TrainResult:
    """Train one candidate of `kind` into out_dir; a head reads its posts' embeddings from
    `store` (BASE_MODEL's at TRAIN_MAX_LENGTH)."""
    examples = collected.examples
    if kind == "head":
        return train_head(
            [e.text for e in examples],
            [e.label for e in examples],
            label_names=list(collected.taxonomy.names),
            store=store,
            out_dir=out_dir,
            keys=[str(e.task_id) for e in examples],
            seed=settings.train_seed,
        )
    return fine_tune(
        [e.text for e in examples],
        [e.label for e in examples],
        label_names=list(collected.taxonomy.names),
        config=train_config(settings),
        out_dir=out_dir,
        keys=[str(e.task_id) for e in examples],
        progress=progress,
    )


def train_config(settings: Settings) -> TrainConfig:
    """The fine-tune's recipe, from the settings."""
    return TrainConfig(
        base_model=settings.base_model,
        epochs=settings.train_epochs,
        min_steps=settings.train_min_steps,
        learning_rate=settings.train_learning_rate,
        batch_size=settings.train_batch_size,
        max_length=settings.train_max_length,
        seed=settings.train_seed,
    )


def is_successor(trained_on: list[str], serving_meta: dict | None) -> bool:
    """Whether a candidate learned from every post the serving version did (a version
    from before this was recorded counts as learned from fewer)."""
    if serving_meta is None:
        return True
    before = (serving_meta.get("data") or {}).get("trained_on")
    return not isinstance(before, list) or set(before) <= set(trained_on)


def judge(result: TrainResult, run: ProjectRun, predictor: Predictor) -> Verdict:
    """The new version against the serving version and against the LLM, all scored on
    every judge post the project has now: never trained on by any version and never used
    to pick an epoch. policy.should_promote decides, knowing whether it is a successor."""
    from sklearn.metrics import f1_score

    truth, texts = result.judge_labels, result.judge_texts
    project, taxonomy, registry = run.project, run.taxonomy, run.registry
    names = list(taxonomy.names)

    def macro_f1(predicted: Sequence[str | None]) -> float | None:
        if not truth or taxonomy.multiple:  # sets are judged whole (answer_key)
            return None
        return float(
            f1_score(
                truth, [p or "" for p in predicted], labels=names, average="macro", zero_division=0
            )
        )

    new = result.judge_predictions
    llm = [
        answer_key(o.chosen) if taxonomy.multiple else o.label
        for o in predictor.labeler.label_many(taxonomy, texts, group=project)
    ]
    serving = run.serving()
    successor = is_successor(result.trained_on, registry.meta(serving) if serving else None)
    old: list[str | None] | None = None
    if serving:
        try:
            classifier = predictor.models.get(registry.path(serving))
            if classifier.labels != names:
                raise ValueError(f"trained on labels {classifier.labels}, not {names}")
            store = predictor.store_for(project, classifier)
            if not texts:
                old = []
            elif classifier.multiple:
                sets, _ = classifier.predict_sets(texts, judging=True, store=store)
                old = [answer_key(chosen) for chosen in sets]
            else:
                probabilities = classifier.predict_proba(texts, judging=True, store=store)
                old = [classifier.labels[i] for i in probabilities.argmax(1)]
        except Exception as exc:  # a broken serving version is no reason to keep it
            log.error(
                "project %d: cannot score the serving version %s (%s); judged as "
                "right on no judge post",
                project,
                serving,
                exc,
            )
            old = [None] * len(texts)
    against_llm = policy.compare(truth, new, llm)
    against_serving = policy.compare(truth, new, old) if old is not None else None
    promote = policy.should_promote(against_serving, successor=successor)
    role = (
        "a successor (learned from every post it did, and more): serves unless worse"
        if successor
        else "a challenger (not trained on all its posts): serves only when better"
    )
    reason = None
    if not promote and against_serving is not None and serving is not None:
        reason = (
            f"kept, not promoted: {against_serving.describe(serving)}; {role}; "
            f"POST /versions/promote serves it anyway"
        )
    return Verdict(
        validation={
            "judge_posts": len(truth),
            "model_accuracy": policy.accuracy(truth, new),
            "model_macro_f1": macro_f1(new),
            "llm_accuracy": policy.accuracy(truth, llm),
            "llm_macro_f1": macro_f1(llm),
            "serving_version": serving,
            "serving_accuracy": policy.accuracy(truth, old) if old else None,
            "serving_macro_f1": macro_f1(old) if old is not None else None,
            "against_llm": against_llm.describe("the LLM"),
            "against_serving": (
                against_serving.describe(serving)
                if against_serving and serving
                else "no serving version yet"
            ),
            "successor": successor,
        },
        promote=promote,
        beats_llm=policy.beats_llm(against_llm),
        reason=reason,
    )


class Runner:
    """Runs a project's pending work with the collaborators it is given."""

    def __init__(
        self,
        settings: Settings,
        state: StatusStore,
        *,
        client,
        predictor: Predictor,
        card: Card | None = None,
    ) -> None:
        self.settings = settings
        self.state = state
        self.client = client
        self.predictor = predictor
        self.card = card or card_for_backend(client, settings, state, predictor)

    def report(
        self, project: int, *, serves: bool = False, **fields: Unpack[StatusFields]
    ) -> JobStatus:
        """Record the run's progress where GET /training and Label Studio's model card show
        it. A version is reported by its shown name, the one Label Studio knows it by;
        `serves`: it now serves and its predictions are in Label Studio."""
        version = fields.get("version")
        if isinstance(version, str):
            fields["version"] = version = self.predictor.registry(project).name(version)
        if serves and isinstance(version, str):
            # Before the status says so: the predictions carry the shown name, and Label
            # Studio takes a project model_version only when predictions carry it.
            try:
                ls_client.set_model_version(self.client, project, version)
            except Exception as exc:  # the run is done; the next /setup sync retries
                log.warning(
                    "project %d: could not point Label Studio at %s: %s",
                    project,
                    version,
                    ls_client.describe_error(exc),
                )
        status = self.state.set_status(project, Lane.TRAINING, **fields)
        self.card.show(project, status)
        return status

    def train(self, project: int) -> None:
        settings = self.settings
        started = time.time()
        self.report(
            project,
            state=RunState.RUNNING,
            phase="fetching annotations",
            started=started,
            reason=None,
            epoch=None,
            version=None,
            promoted=None,
        )
        collected = collect(self.client, project, settings)
        run = ProjectRun.of(self.predictor, project, collected.taxonomy)
        # Scores follow the annotations even when the run is skipped (logs a failure).
        refit_calibration(self.predictor, run, collected.tasks)
        # The other questions first: their heads take a moment, and the first question's
        # promotion re-scores the tasks with every question's serving model.
        others = Form.of(collected.taxonomy).others
        if others:
            self.report(project, phase="training the other questions")
            done = [self.train_question(project, q, collected.tasks) for q in others]
            self.report(project, questions="; ".join(done))
        if collected.too_few:
            self.report(
                project,
                state=RunState.SKIPPED,
                phase=None,
                reason=collected.too_few,
                held_out_tasks=collected.held_out_tasks,
                finished=time.time(),
            )
            log.info("project %d: training skipped: %s", project, collected.too_few)
            return

        run.registry.clean_staging()
        self.report(project, phase="training", n_examples=len(collected.examples))
        kinds = candidates(len(collected.examples), settings)
        for kind in kinds:
            self.train_one(run, kind, collected, started, last=kind == kinds[-1])
        # After the run, so that it costs the click-to-serving time nothing.
        self.report(project, prelabels=self.prelabel_headline(project, collected))

    def train_question(self, project: int, question: Taxonomy, tasks: list[dict]) -> str:
        """Another question of the config, trained from the annotations that answer it
        (the head always, from TRAIN_FINETUNE_FROM of them also the fine-tune, each of a
        sigmoid a label for a multiple-choice question), each candidate judged and
        published by the first question's rules into the question's own registry; what
        became of them, in a few words. Never fails the run: a failure is logged and said."""
        settings, name = self.settings, question.from_name
        percent, minimum = settings.holdout_percent, settings.train_min_per_label
        keyed: list[tuple[int, str, str]]  # (task, text, answer_key), for the data hash
        answers: list
        try:
            if question.multiple:
                sets = dataset.labeled_sets(tasks, question, holdout_percent=percent)
                short = dataset.too_few_sets(sets, question.names, minimum)
                keyed = [(e.task_id, e.text, answer_key(e.labels) or "") for e in sets]
                answers = [e.labels for e in sets]
            else:
                examples = dataset.labeled_examples(tasks, question, holdout_percent=percent)
                short = dataset.too_few(examples, question.names, minimum)
                keyed = [(e.task_id, e.text, e.label) for e in examples]
                answers = [e.label for e in examples]
            if short:
                return f"{name}: not trained ({short})"
            run = ProjectRun(project, question, self.predictor.registry(project, name))
            # Its scores follow its annotations, as the first question's do (a set is
            # scored as one label: right when the whole set is).
            refit_calibration(self.predictor, run, tasks)
            run.registry.clean_staging()
            said = []
            for kind in candidates(len(keyed), settings):
                said.append(self.train_question_kind(run, kind, keyed, answers))
            return f"{name}: " + "; ".join(said)
        except Exception as exc:
            log.exception("project %d: question %s was not trained", project, name)
            return f"{name}: not trained ({type(exc).__name__}: {exc})"

    def train_question_kind(
        self, run: ProjectRun, kind: str, keyed: list[tuple[int, str, str]], answers: list
    ) -> str:
        """One candidate of another question: fit, judge, commit, promote when judged so."""
        settings, question = self.settings, run.taxonomy
        staging, version = run.registry.staging_dir(), run.registry.new_version_name()
        texts, keys = [t for _, t, _ in keyed], [str(k) for k, _, _ in keyed]
        names = list(question.names)
        try:
            if kind == "fine-tune":
                result = fine_tune(
                    texts,
                    answers,
                    label_names=names,
                    config=train_config(settings),
                    out_dir=staging,
                    keys=keys,
                    multiple=question.multiple,
                )
            else:
                trainer: Callable[..., TrainResult] = (
                    train_multilabel_head if question.multiple else train_head
                )
                result = trainer(
                    texts,
                    answers,
                    label_names=names,
                    store=self.predictor.embedding_store(run.project),
                    out_dir=staging,
                    keys=keys,
                    seed=settings.train_seed,
                )
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        verdict = judge(result, run, self.predictor)
        if kind == "head" and question.multiple:
            kind = "multilabel-head"
        meta = version_meta(kind, question, settings, result, verdict, keyed)
        run.registry.commit(staging, version, meta)
        shown = run.registry.name(version)
        if verdict.promote:
            run.registry.promote(version)
        said = "serves" if verdict.promote else "kept, not promoted"
        log.info(
            "project %d: question %s: %s %s: %s",
            run.project,
            question.from_name,
            shown,
            said,
            verdict.validation["against_llm"],
        )
        return f"{shown} {said}"  # (how it compared: in its meta.json and the log)

    def prelabel_headline(self, project: int, collected: Collected) -> str:
        """What pre-labels did so far, for the model card (domain.labelings.headline),
        with the cost when LLM prices are set. Never fails a run: empty when it cannot
        say."""
        settings, taxonomy = self.settings, collected.taxonomy
        try:
            tasks = ls_client.with_predictions(self.client, project, collected.tasks)
            items = labelings.labelings(tasks, taxonomy, holdout_percent=settings.holdout_percent)
            cost, answered = None, 0
            if settings.llm_price_input is not None and settings.llm_price_output is not None:
                texts = (dataset.task_text(t, taxonomy.text_field) for t in tasks)
                spent = self.predictor.labeler.spent(taxonomy, [t for t in texts if t])
                cost = spent.cost(settings.llm_price_input, settings.llm_price_output)
                answered = spent.answered
            return labelings.headline(
                items,
                llm_cost=cost,
                answered_posts=answered,
                hourly_rate=settings.annotation_hourly_rate,
            )
        except Exception:
            log.exception("the pre-label headline was not computed")
            return ""

    def train_one(
        self,
        run: ProjectRun,
        kind: str,
        collected: Collected,
        started: float,
        *,
        last: bool,
    ) -> None:
        """Fit, judge and publish one candidate."""
        settings, project = self.settings, run.project
        name = run.registry.new_version_name()
        staging = run.registry.staging_dir()

        def progress(event: dict) -> None:
            self.report(
                project,
                phase=f"training ({kind})",
                **{k: v for k, v in event.items() if k != "phase"},
            )
            log.info("project %d: %s %s", project, kind, event)

        self.report(project, phase=f"training ({kind})", epoch=None)
        try:
            store = self.predictor.embedding_store(project)
            result = fit(kind, collected, settings, staging, progress, store=store)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        self.report(project, phase=f"validating ({kind})")
        verdict = judge(result, run, self.predictor)
        keyed = [(e.task_id, e.text, e.label) for e in collected.examples]
        meta = version_meta(kind, collected.taxonomy, settings, result, verdict, keyed)
        meta["data"]["held_out_tasks"] = collected.held_out_tasks
        meta["timings"]["run_seconds"] = round(time.time() - started, 2)
        self.publish(run, collected, staging, name, meta, verdict, started, last=last)

    def publish(
        self,
        run: ProjectRun,
        collected: Collected,
        staging: Path,
        name: str,
        meta: dict,
        verdict: Verdict,
        started: float,
        *,
        last: bool = True,
    ) -> None:
        """Commit, and promote and re-score when judged so. Only the run's `last`
        candidate finishes the run; an earlier one leaves it running."""
        project, registry = run.project, run.registry
        registry.commit(staging, name, meta)
        shown = registry.name(name)
        done: dict[str, Any] = (
            {"state": RunState.FINISHED, "phase": None, "finished": time.time()} if last else {}
        )
        if not verdict.promote:
            self.report(project, version=shown, promoted=False, reason=verdict.reason, **done)
            log.info("project %d: %s %s", project, shown, verdict.reason)
            return
        registry.promote(name)
        log.info(
            "project %d: promoted %s: %s; %s",
            project,
            shown,
            verdict.validation["against_serving"],
            verdict.validation["against_llm"],
        )
        self.report(project, phase="re-scoring unlabeled tasks", version=shown, promoted=True)
        refresh_label_studio(self.client, self.predictor, run, collected.tasks, shown)
        self.report(
            project,
            serves=True,
            version=shown,
            promoted=True,
            reason=verdict.validation["against_serving"],
            seconds=round(time.time() - started, 2),
            **done,
        )

    def rescore(self, project: int) -> None:
        """After a promotion by hand: re-score under the version now serving."""
        self.report(
            project,
            state=RunState.RUNNING,
            phase="re-scoring unlabeled tasks",
            started=time.time(),
            reason=None,
        )
        taxonomy = parse_taxonomy(self.client.projects.get(id=project).label_config)
        run = ProjectRun.of(self.predictor, project, taxonomy)
        version = self.predictor.model_version(project)
        refresh_label_studio(
            self.client, self.predictor, run, ls_client.all_tasks(self.client, project), version
        )
        self.report(
            project,
            serves=True,
            state=RunState.FINISHED,
            phase=None,
            version=version,
            promoted=True,
            finished=time.time(),
        )
