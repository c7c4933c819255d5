"""Predictions for a batch of tasks: the LLM's and the serving model's opinions, combined
by the pre-label policy into Label Studio results.

A label config may ask several questions (a Form). The primary one (its first
single-choice question) gets both opinions, as a one-question config does; the others get
the LLM's answer from the same request. A task's prediction holds a region per question
answered, scored with the least sure answer's P(right): a task is worth a look when any of
its answers is."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from backend.config import Settings
from backend.domain import calibration, policy, roles
from backend.domain.dataset import task_text
from backend.domain.taxonomy import Form, Taxonomy
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
    """The LLM's pre-labels of one post for a form's other questions (all but the
    primary one)."""

    result: list[dict]  # a region per question answered
    # The least sure answer's P(right), by the prior: its stated confidence (a list's:
    # the LLM's probability of the whole list), LLM_UNKNOWN where none is known.
    score: float


def other_answers(form: Form, opinions: Sequence[Sequence[LLMOpinion | None]]) -> list:
    """Each post's OtherAnswers (None where the LLM answered none of them), from
    `opinions[q][i]`: the LLM's opinion on form.others[q] for post i."""
    out: list[OtherAnswers | None] = []
    for answers in zip(*opinions, strict=True):
        result: list[dict] = []
        scores: list[float] = []
        for question, opinion in zip(form.others, answers, strict=True):
            if opinion is None:
                continue
            if opinion.chosen is not None:
                result += question.result_of_set(sorted(opinion.chosen))
                stated = opinion.confidence
                low, high = calibration.PRIOR_RANGE  # the prior never claims certainty
                scores.append(
                    calibration.LLM_UNKNOWN if stated is None else min(high, max(low, stated))
                )
            elif opinion.label is not None:
                decision = policy.decide(
                    opinion.label, opinion.confidence, None, prefer_model=False
                )
                assert decision is not None  # there is an opinion
                result += question.result(opinion.label)
                scores.append(decision.score)
        out.append(OtherAnswers(result, min(scores)) if result else None)
    return out


class Predictor:
    def __init__(self, settings: Settings, labeler: ZeroShotLabeler) -> None:
        self.settings = settings
        self.labeler = labeler
        self.models = ServingModels()
        self._registries: dict[int, Registry] = {}

    def llm_version(self) -> str:
        return f"zero-shot:{self.labeler.model}"

    def registry(self, project: int) -> Registry:
        """The project's registry, one per worker (its once-per-version warnings too)."""
        registry = self._registries.get(project)
        if registry is None:
            if len(self._registries) >= 1000:  # bounded, whatever ids clients send
                self._registries.clear()
            registry = self._registries.setdefault(
                project, Registry(self.settings.model_dir, project)
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
        if classifier.kind != "head":
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
        """The serving model's opinion beside the LLM's given ones, and the decisions."""
        version = self.model_version(project)
        classifier = None
        if project is not None and version != self.llm_version():
            try:
                classifier = self.models.get(self.registry(project).path(version))
            except Exception as exc:  # a broken version must not stop the LLM pre-labels
                log.error("cannot load model %s (%s); serving LLM pre-labels", version, exc)
                version = self.llm_version()
        models: list[policy.ModelOpinion | None] = [None] * len(texts)
        prefer_model = False
        if classifier is not None and classifier.labels == list(taxonomy.names):
            store = self.store_for(project, classifier) if kept and project is not None else None
            probabilities = classifier.predict_proba(texts, store=store)
            models = [policy.model_opinion(classifier.labels, row) for row in probabilities]
            prefer_model = bool(classifier.meta.get("beats_llm", False))
        elif classifier is not None:
            log.warning(
                "model %s was trained on labels %s, the config has %s; not used",
                version,
                classifier.labels,
                list(taxonomy.names),
            )
        calibrator = calibration.load(
            self.registry(project).read_calibration() if project is not None else None
        )
        out = []
        for opinion, model in zip(llm, models, strict=True):
            decision = policy.decide(
                opinion.label,
                opinion.confidence,
                model,
                prefer_model=prefer_model,
                calibrator=calibrator,
            )
            out.append(Opinions(opinion, model, decision))
        return version, out

    def others(self, form: Form, texts: list[str]) -> list[OtherAnswers | None]:
        """The form's other questions' pre-labels from the answers cached (the primary
        question's request asked them all)."""
        if not form.others:
            return [None] * len(texts)
        return other_answers(form, [self.labeler.cached(q, texts) for q in form.others])

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
        others = self.others(form, asked)
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
