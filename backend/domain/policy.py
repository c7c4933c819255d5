"""Which pre-label the annotator sees, and the review priority carried in its score.

Pre-label: the LLM's label until a fine-tuned version beats the LLM on the validation
posts of its own training run (`beats_llm`, by accuracy); from then on the
model's. When the preferred opinion is
missing (the LLM failed, say) the other one is shown.

Priority, stored as the prediction score (lower = review first):
- only one opinion: its certainty (the LLM's confidence, or the model's margin
  p1 - p2 between its two most likely labels);
- both agree: 0.5 + 0.5 * certainty, certainty being the smaller of the two;
- they disagree: 0.5 * certainty, so every disagreement sorts before every agreement.
An unknown LLM confidence (no logprobs) leaves the model's margin alone as certainty.

Promotion (`should_promote`): a new version serves when its validation macro-F1 is no
worse than the serving version's on the same posts (or when either is unknown).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ModelOpinion:
    label: str
    probabilities: dict[str, float]

    @property
    def margin(self) -> float:
        top = [*sorted(self.probabilities.values(), reverse=True), 0.0]
        return float(top[0] - top[1])


@dataclass(frozen=True)
class Decision:
    label: str
    score: float
    source: str  # "llm" or "model"
    disagree: bool


def model_opinion(labels: list[str], probabilities: np.ndarray) -> ModelOpinion:
    return ModelOpinion(labels[int(np.argmax(probabilities))],
                        {name: float(p) for name, p in zip(labels, probabilities, strict=True)})


def decide(llm_label: str | None, llm_confidence: float | None, model: ModelOpinion | None,
           *, prefer_model: bool) -> Decision | None:
    """The pre-label and its priority score; None when there is no opinion at all."""
    if llm_label is None and model is None:
        return None
    certainties = [c for c in (llm_confidence if llm_label is not None else None,
                               model.margin if model is not None else None) if c is not None]
    certainty = min(certainties) if certainties else 0.5
    if llm_label is None or model is None:
        label, source = (model.label, "model") if model is not None else (llm_label, "llm")
        return Decision(label, round(certainty, 6), source, disagree=False)
    use_model = prefer_model or llm_label is None
    label, source = (model.label, "model") if use_model else (llm_label, "llm")
    if model.label == llm_label:
        return Decision(label, round(0.5 + 0.5 * certainty, 6), source, disagree=False)
    # Kept strictly below 0.5: a certain disagreement still sorts before any agreement.
    return Decision(label, min(round(0.5 * certainty, 6), 0.499999), source, disagree=True)


def accuracy(truth: list[str], predicted: list[str | None]) -> float | None:
    """Share of posts where the prediction equals the label (None is wrong); None when
    there are no posts."""
    if not truth:
        return None
    return sum(t == p for t, p in zip(truth, predicted, strict=True)) / len(truth)


def beats_llm(model_accuracy: float | None, llm_accuracy: float | None) -> bool:
    """Whether the model's label replaces the LLM's as the pre-label."""
    return (model_accuracy is not None and llm_accuracy is not None
            and model_accuracy > llm_accuracy)


def should_promote(new_macro_f1: float | None, serving_macro_f1: float | None) -> bool:
    return serving_macro_f1 is None or new_macro_f1 is None or new_macro_f1 >= serving_macro_f1
