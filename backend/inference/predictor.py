"""Predictions for a batch of tasks: the LLM's and the serving model's opinions, combined
by the pre-label policy into Label Studio results."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from backend.config import Settings
from backend.domain import calibration, policy, roles
from backend.domain.dataset import task_text
from backend.domain.taxonomy import Taxonomy
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

    def is_blind(self, task: dict) -> bool:
        """Labeled with no pre-label in view (domain.roles), unless BLIND_LABELS is off."""
        return self.settings.blind_labels and roles.is_blind(
            task, holdout_percent=self.settings.holdout_percent
        )

    def label_studio_predictions(
        self,
        taxonomy: Taxonomy,
        version: str,
        tasks: Sequence[dict],
        decisions: Sequence[policy.Decision | None],
    ) -> list[dict | None]:
        """One Label Studio prediction per task, None where there is no decision: the
        pre-label scored with P(right), or for a blind task an empty result placed at
        random in the queue (roles.queue_scores) among this batch's shown pre-labels."""
        blind = [self.is_blind(task) for task in tasks]
        shown = [d.score for d, b in zip(decisions, blind, strict=True) if d and not b]
        hidden = [task.get("id") for task, b in zip(tasks, blind, strict=True) if b]
        places = dict(zip(hidden, roles.queue_scores(hidden, shown), strict=True))
        out: list[dict | None] = []
        for task, decision, is_blind in zip(tasks, decisions, blind, strict=True):
            if decision is None:
                out.append(None)
            elif is_blind:
                out.append(
                    {"result": [], "score": places[task.get("id")], "model_version": version}
                )
            else:
                out.append(
                    {
                        "result": taxonomy.result(decision.label),
                        "score": decision.score,
                        "model_version": version,
                    }
                )
        return out

    def predict(
        self, project: int | None, taxonomy: Taxonomy, tasks: list, *, ask_llm: bool = True
    ) -> tuple[str, list, int]:
        """Label Studio `results`: one entry per task, `[]` for a task with no pre-label
        (Label Studio then stores nothing for it and asks again on the next retrieval),
        and how many tasks wait for an LLM answer. With `ask_llm` False only cached
        answers are used: the caller queues the rest for the background job."""
        started = time.monotonic()
        texts = [task_text(task, taxonomy.text_field) for task in tasks]
        usable = [i for i, text in enumerate(texts) if text is not None]
        if len(usable) < len(tasks):
            log.warning(
                "%d of %d tasks have no text in data[%r]; they get no pre-label",
                len(tasks) - len(usable),
                len(tasks),
                taxonomy.text_field,
            )
        version, opinions = self.opinions(
            project,
            taxonomy,
            [text for text in texts if text is not None],
            deadline=started + self.settings.predict_deadline,
            llm_only_cached=not ask_llm,
        )
        results: list = [[] for _ in tasks]
        missing = sum(1 for o in opinions if o.llm is not None and o.llm.error == NOT_CACHED)
        answered = [
            (index, item.decision)
            for index, item in zip(usable, opinions, strict=True)
            if not (item.llm is not None and item.llm.error == NOT_CACHED)
        ]
        made = self.label_studio_predictions(
            taxonomy,
            version,
            [tasks[index] for index, _ in answered],
            [decision for _, decision in answered],
        )
        for (index, _), prediction in zip(answered, made, strict=True):
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
