"""Predictions for a batch of tasks: the LLM's and the serving model's opinions, combined
by the pre-label policy into Label Studio results."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from backend import policy
from backend.classifier import ServingModels
from backend.config import Settings
from backend.llm import LLMOpinion, ZeroShotLabeler
from backend.registry import Registry
from backend.taxonomy import Taxonomy

log = logging.getLogger(__name__)


def project_id(value: object) -> int | None:
    """Label Studio names projects '<id>.<created timestamp>' in /setup and /predict."""
    if isinstance(value, dict):
        value = value.get("id")
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.split(".")[0].isdigit():
        return int(value.split(".")[0])
    return None


def task_text(task: object, taxonomy: Taxonomy) -> str | None:
    """The task's text, or None when it has no usable one."""
    if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
        return None
    text = task["data"].get(taxonomy.text_field)
    return text if isinstance(text, str) and text.strip() else None


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

    def llm_version(self) -> str:
        return f"zero-shot:{self.labeler.model}"

    def registry(self, project: int) -> Registry:
        return Registry(self.settings.model_dir, project)

    def model_version(self, project: int | None) -> str:
        """What /setup and /predict report: the serving fine-tuned version, else the LLM."""
        if project is not None:
            serving = self.registry(project).serving()
            if serving:
                return serving
        return self.llm_version()

    def opinions(self, project: int | None, taxonomy: Taxonomy, texts: list[str], *,
                 deadline: float | None = None, llm_only_cached: bool = False
                 ) -> tuple[str, list[Opinions]]:
        """Both opinions and the decision for each text, and the version they belong to."""
        version = self.model_version(project)
        classifier = None
        if project is not None and version != self.llm_version():
            try:
                classifier = self.models.get(self.registry(project).path(version))
            except Exception as exc:  # a broken version must not stop the LLM pre-labels
                log.error("cannot load model %s (%s); serving LLM pre-labels", version, exc)
                version = self.llm_version()
        if llm_only_cached:
            cached = self.labeler.cached(taxonomy, texts)
            llm = [o or LLMOpinion(None, None, error="not cached") for o in cached]
        else:
            llm = self.labeler.label_many(taxonomy, texts, deadline=deadline)
        models: list[policy.ModelOpinion | None] = [None] * len(texts)
        prefer_model = False
        if classifier is not None and classifier.labels == list(taxonomy.names):
            probabilities = classifier.predict_proba(texts)
            models = [policy.model_opinion(classifier.labels, row) for row in probabilities]
            prefer_model = bool(classifier.meta.get("beats_llm", False))
        elif classifier is not None:
            log.warning("model %s was trained on labels %s, the config has %s; not used",
                        version, classifier.labels, list(taxonomy.names))
        out = []
        for opinion, model in zip(llm, models, strict=True):
            decision = policy.decide(opinion.label, opinion.confidence, model,
                                     prefer_model=prefer_model)
            out.append(Opinions(opinion, model, decision))
        return version, out

    def predict(self, project: int | None, taxonomy: Taxonomy, tasks: list) -> tuple[str, list]:
        """Label Studio `results`: one entry per task, `[]` for a task with no pre-label
        (Label Studio then stores nothing for it and asks again on the next retrieval)."""
        started = time.monotonic()
        texts = [task_text(task, taxonomy) for task in tasks]
        usable = [i for i, text in enumerate(texts) if text is not None]
        if len(usable) < len(tasks):
            log.warning("%d of %d tasks have no text in data[%r]; they get no pre-label",
                        len(tasks) - len(usable), len(tasks), taxonomy.text_field)
        version, opinions = self.opinions(
            project, taxonomy, [texts[i] for i in usable],
            deadline=started + self.settings.predict_deadline)
        results: list = [[] for _ in tasks]
        for index, item in zip(usable, opinions, strict=True):
            if item.decision is not None:
                results[index] = {"result": taxonomy.result(item.decision.label),
                                  "score": item.decision.score, "model_version": version}
        labeled = sum(1 for r in results if r)
        log.info("predict: %d tasks, %d pre-labeled, version %s, %.2f s", len(tasks), labeled,
                 version, time.monotonic() - started)
        return version, results
