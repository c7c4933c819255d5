"""Predictions for a batch of tasks: the LLM's and the serving model's opinions, combined
by the pre-label policy into Label Studio results.

A label config may ask several questions (a Form). The primary one (its first
single-choice question) gets both opinions, as a one-question config does; the others get
the LLM's answer from the same request. A task's prediction holds a region per question
answered, scored with the least sure answer's P(right): a task is worth a look when any of
its answers is."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from backend.config import Settings
from backend.domain import calibration, policy, roles
from backend.domain.dataset import task_text
from backend.domain.taxonomy import Form, Taxonomy, answer_key, set_of_key
from backend.llm.labeler import LLMOpinion, ZeroShotLabeler
from backend.model import embeddings
from backend.model.classifier import Classifier, ServingModels
from backend.model.registry import Registry

log = logging.getLogger(__name__)

NOT_CACHED = "not cached"


@dataclass(frozen=True)
class Opinions:
    llm: LLMOpinion | None
    model: policy.ModelOpinion | None
    decision: policy.Decision | None


@dataclass(frozen=True)
class OtherAnswers:
    """The pre-labels of one post for a form's other questions (all but the primary)."""

    result: list[dict]  # a region per question answered
    score: float  # the least sure answer's P(right), each by its question's calibrator


Answer = tuple[list[dict], float]  # one question's regions on a post, and their P(right)


def other_answers(per_question: Sequence[Sequence[Answer | None]]) -> list[OtherAnswers | None]:
    """Each post's OtherAnswers from `per_question[q][i]`, question q's answer on post i:
    every region in question order, scored by the least sure (None: none answered)."""
    out: list[OtherAnswers | None] = []
    for answers in zip(*per_question, strict=True):
        found = [answer for answer in answers if answer is not None]
        if not found:
            out.append(None)
            continue
        result = [region for regions, _ in found for region in regions]
        out.append(OtherAnswers(result, min(score for _, score in found)))
    return out


def model_opinions(
    classifier: Classifier, texts: list[str], store: embeddings.EmbeddingStore | None
) -> list[policy.ModelOpinion]:
    """A version's opinion on each text: its label and every label's probability, or for a
    multiple-choice question its set as one label (answer_key) with P(that whole set),
    each label's sigmoid taken as independent of the others'."""
    if not classifier.multiple:
        probabilities = classifier.predict_proba(texts, store=store)
        return [policy.model_opinion(classifier.labels, row) for row in probabilities]
    sets, probabilities = classifier.predict_sets(texts, store=store)
    out = []
    for chosen, row in zip(sets, probabilities, strict=True):
        key = answer_key(chosen)
        assert key is not None
        each = [
            p if name in chosen else 1 - p for name, p in zip(classifier.labels, row, strict=True)
        ]
        out.append(policy.ModelOpinion(key, {key: float(np.prod(each))}))
    return out


def regions(question: Taxonomy, label: str) -> list[dict]:
    """The Label Studio regions of a decided label (a set's answer_key for a
    multiple-choice question)."""
    return (
        question.result_of_set(sorted(set_of_key(label)))
        if question.multiple
        else question.result(label)
    )


class Predictor:
    def __init__(self, settings: Settings, labeler: ZeroShotLabeler) -> None:
        self.settings = settings
        self.labeler = labeler
        self.models = ServingModels()
        self._registries: dict[tuple[int, str | None], Registry] = {}

    def llm_version(self) -> str:
        return f"zero-shot:{self.labeler.model}"

    def registry(self, project: int, question: str | None = None) -> Registry:
        """The project's registry (`question`: another question's, by its <Choices>
        name), one per worker (its once-per-version warnings too)."""
        registry = self._registries.get((project, question))
        if registry is None:
            if len(self._registries) >= 1000:  # bounded, whatever ids clients send
                self._registries.clear()
            registry = self._registries.setdefault(
                (project, question), Registry(self.settings.model_dir, project, question)
            )
        return registry

    def embedding_store(
        self, project: int, base_model: str | None = None, max_length: int | None = None
    ) -> embeddings.EmbeddingStore:
        """The project's store of embeddings by `base_model` and `max_length` (default: the
        ones the next head trains with, BASE_MODEL and TRAIN_MAX_LENGTH)."""
        base_model = base_model or self.settings.base_model
        max_length = max_length or self.settings.train_max_length
        folder = self.registry(project).embeddings_folder(base_model, max_length)
        return embeddings.store(folder, base_model, max_length)

    def store_for(self, project: int, classifier: Classifier) -> embeddings.EmbeddingStore | None:
        """The store a head version reads its posts' embeddings from (None: a fine-tune)."""
        if classifier.kind == "fine-tune":
            return None
        return self.embedding_store(project, classifier.base_model, classifier.max_length)

    def model_version(self, project: int | None) -> str:
        """What /setup and /predict report: the serving fine-tuned version, else the LLM."""
        if project is not None:
            serving = self.registry(project).serving()
            if serving:
                return serving
        return self.llm_version()

    def opinions(
        self,
        project: int | None,
        taxonomy: Taxonomy,
        texts: list[str],
        *,
        deadline: float | None = None,
        llm_only_cached: bool = False,
        kept: bool = False,
    ) -> tuple[str, list[Opinions]]:
        """Both opinions and the decision for each text, and the version they belong to.
        `kept`: a head reads and keeps the embeddings in the project's store (the jobs do;
        a /predict request embeds its few posts and holds no store in memory)."""
        if llm_only_cached:
            cached = self.labeler.cached(taxonomy, texts)
            llm = [o or LLMOpinion(None, None, error=NOT_CACHED) for o in cached]
        else:
            llm = self.labeler.label_many(taxonomy, texts, deadline=deadline, group=project)
        return self.combine(project, taxonomy, texts, llm, kept=kept)

    def combine(
        self,
        project: int | None,
        taxonomy: Taxonomy,
        texts: list[str],
        llm: list[LLMOpinion],
        *,
        kept: bool = False,
    ) -> tuple[str, list[Opinions]]:
        """The serving model's opinion beside the LLM's given ones, and the decisions;
        the model and the calibrator of `taxonomy`'s own registry (registry_for)."""
        registry = self.registry_for(project, taxonomy) if project is not None else None
        version = (registry.serving() if registry else None) or self.llm_version()
        classifier = None
        if registry is not None and version != self.llm_version():
            try:
                classifier = self.models.get(registry.path(version))
            except Exception as exc:  # a broken version must not stop the LLM pre-labels
                log.error("cannot load model %s (%s); serving LLM pre-labels", version, exc)
                version = self.llm_version()
        models: Sequence[policy.ModelOpinion | None] = [None] * len(texts)
        prefer_model = False
        fits = classifier is not None and classifier.multiple == taxonomy.multiple
        if classifier is not None and fits and classifier.labels == list(taxonomy.names):
            store = self.store_for(project, classifier) if kept and project is not None else None
            models = model_opinions(classifier, texts, store)
            prefer_model = bool(classifier.meta.get("beats_llm", False))
        elif classifier is not None:
            log.warning(
                "model %s was trained on labels %s, the config has %s; not used",
                version,
                classifier.labels,
                list(taxonomy.names),
            )
        calibrator = calibration.load(registry.read_calibration() if registry else None)
        out = []
        for opinion, model in zip(llm, models, strict=True):
            if opinion.chosen is not None:  # a set, decided on as one label (answer_key)
                opinion = dataclasses.replace(opinion, label=answer_key(opinion.chosen))
            decision = policy.decide(
                opinion.label,
                opinion.confidence,
                model,
                prefer_model=prefer_model,
                calibrator=calibrator,
            )
            out.append(Opinions(opinion, model, decision))
        return version, out

    def others(
        self, project: int | None, form: Form, texts: list[str], *, kept: bool = False
    ) -> list[OtherAnswers | None]:
        """The form's other questions' pre-labels: the LLM's answers from the cache (the
        primary question's request asked them all) beside each question's serving model
        (`kept`: as in `combine`)."""
        if not form.others:
            return [None] * len(texts)
        per_question: list[list[Answer | None]] = []
        answers = self.labeler.cached_each(form.others, texts)
        for question, cached in zip(form.others, answers, strict=True):
            llm = [o or LLMOpinion(None, None, error=NOT_CACHED) for o in cached]
            _, combined = self.combine(project, question, texts, llm, kept=kept)
            per_question.append(
                [
                    (regions(question, o.decision.label), o.decision.score) if o.decision else None
                    for o in combined
                ]
            )
        return other_answers(per_question)

    def registry_for(self, project: int, taxonomy: Taxonomy) -> Registry:
        """The registry of `taxonomy`: the project's for its config's first single-choice
        question, the question's own for another."""
        primary = Form.of(taxonomy).primary
        if primary is not None and primary.from_name == taxonomy.from_name:
            return self.registry(project)
        return self.registry(project, taxonomy.from_name)

    def is_blind(self, task: dict) -> bool:
        """Labeled with no pre-label in view (domain.roles), unless BLIND_LABELS is off."""
        return self.settings.blind_labels and roles.is_blind(
            task, holdout_percent=self.settings.holdout_percent
        )

    def label_studio_predictions(
        self,
        taxonomy: Taxonomy | None,
        version: str,
        tasks: Sequence[dict],
        decisions: Sequence[policy.Decision | None],
        others: Sequence[OtherAnswers | None] | None = None,
    ) -> list[dict | None]:
        """One Label Studio prediction per task, None where there is nothing to show: the
        pre-label of `taxonomy` (the primary question) and the `others`, scored with the
        least P(right) among them; for a blind task an empty result placed at random in
        the queue (roles.queue_scores) among this batch's shown pre-labels."""
        others = others if others is not None else [None] * len(tasks)
        made: list[tuple[list[dict], float] | None] = []
        for decision, other in zip(decisions, others, strict=True):
            result = taxonomy.result(decision.label) if decision and taxonomy else []
            scores = ([decision.score] if decision else []) + ([other.score] if other else [])
            made.append((result + (other.result if other else []), min(scores)) if scores else None)
        blind = [self.is_blind(task) for task in tasks]
        shown = [m[1] for m, b in zip(made, blind, strict=True) if m and not b]
        hidden = [task.get("id") for task, b in zip(tasks, blind, strict=True) if b]
        places = dict(zip(hidden, roles.queue_scores(hidden, shown), strict=True))
        out: list[dict | None] = []
        for task, pre_label, is_blind in zip(tasks, made, blind, strict=True):
            if pre_label is None:
                out.append(None)
            elif is_blind:
                out.append(
                    {"result": [], "score": places[task.get("id")], "model_version": version}
                )
            else:
                result, score = pre_label
                out.append({"result": result, "score": score, "model_version": version})
        return out

    def predict(
        self, project: int | None, form: Form, tasks: list, *, ask_llm: bool = True
    ) -> tuple[str, list, int]:
        """Label Studio `results`: one entry per task, `[]` for a task with no pre-label
        (Label Studio then stores nothing for it and asks again on the next retrieval),
        and how many tasks wait for an LLM answer. With `ask_llm` False only cached
        answers are used: the caller queues the rest for the background job."""
        started = time.monotonic()
        texts = [task_text(task, form.text_field) for task in tasks]
        usable = [i for i, text in enumerate(texts) if text is not None]
        if len(usable) < len(tasks):
            log.warning(
                "%d of %d tasks have no text in data[%r]; they get no pre-label",
                len(tasks) - len(usable),
                len(tasks),
                form.text_field,
            )
        asked = [text for text in texts if text is not None]
        deadline = started + self.settings.predict_deadline
        decisions: list[policy.Decision | None] = [None] * len(asked)
        llm: Sequence[LLMOpinion | None]
        if form.primary is not None:
            version, opinions = self.opinions(
                project, form.primary, asked, deadline=deadline, llm_only_cached=not ask_llm
            )
            llm = [o.llm for o in opinions]
            decisions = [o.decision for o in opinions]
        else:  # only multiple-choice questions: the LLM's answers, no model yet
            version = self.llm_version()
            first = form.questions[0]
            if ask_llm:
                llm = self.labeler.label_many(first, asked, deadline=deadline, group=project)
            else:
                llm = self.labeler.cached(first, asked)
        others = self.others(project, form, asked)
        results: list = [[] for _ in tasks]
        waiting = [o is None or o.error == NOT_CACHED for o in llm]
        missing = sum(waiting)
        answered = [
            (index, decision, other)
            for index, decision, other, wait in zip(usable, decisions, others, waiting, strict=True)
            if not wait
        ]
        made = self.label_studio_predictions(
            form.primary,
            version,
            [tasks[index] for index, _, _ in answered],
            [decision for _, decision, _ in answered],
            [other for _, _, other in answered],
        )
        for (index, _, _), prediction in zip(answered, made, strict=True):
            if prediction is not None:
                results[index] = prediction
        labeled = sum(1 for r in results if r)
        log.info(
            "predict: %d tasks, %d pre-labeled, %d wait for the LLM, version %s, %.2f s",
            len(tasks),
            labeled,
            missing,
            version,
            time.monotonic() - started,
        )
        return version, results, missing
