"""Which pre-label the annotator sees, and the score it carries.

Pre-label: the LLM's label until a fine-tuned version is "better" than the LLM on the
judge posts of its own training run (`beats_llm`, below); from then on the model's. When
the preferred opinion is missing (the LLM failed, say) the other one is shown.

Score, stored as the prediction score: the estimated probability that the shown
pre-label is the label a human gives it, from the project's calibrator
(domain.calibration: a documented prior until the project has enough annotations, then a
fit on them). Lower = review first, and every model-vs-LLM disagreement scores below
every agreement (calibration's ordering rule).

Promotion and the switch from the LLM's label to the model's (`compare`): decided on the
judge posts of the new version's run (never trained on, never used to pick the epoch), by
a paired comparison of who is right on each post:
- "better": the new version is right where the other is wrong significantly more often
  than the reverse (exact one-sided McNemar, p < ALPHA);
- "worse": the reverse;
- "no worse": not worse by more than MARGIN (accuracy points) at 95% confidence: the
  share of posts it gets right and the other wrong, minus the exact (Clopper-Pearson)
  upper bound of the share it gets wrong and the other right, is at least -MARGIN;
- "not enough evidence": none of these; too few or too mixed judge posts.
A version is promoted when there is no serving version, or when it is "better" or "no
worse" than the serving one. Annotators see the model's label instead of the LLM's only
when the model is "better" than the LLM.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from backend.domain import calibration
from backend.domain.calibration import Calibrator


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
           *, prefer_model: bool, calibrator: Calibrator | None = None) -> Decision | None:
    """The pre-label and its score, P(right) from `calibrator` (None: the prior); None when
    there is no opinion at all."""
    if llm_label is None and model is None:
        return None
    if model is not None and (prefer_model or llm_label is None):
        label, source = model.label, "model"
    else:
        label, source = llm_label, "llm"
    features = calibration.features(
        label, from_model=source == "model", llm_label=llm_label,
        llm_confidence=llm_confidence, model_label=model.label if model else None,
        model_probabilities=model.probabilities if model else None)
    score = (calibrator or calibration.PRIOR).score(features)
    return Decision(label, score, source, disagree=features.regime == "disagree")


def accuracy(truth: list[str], predicted: list[str | None]) -> float | None:
    """Share of posts where the prediction equals the label (None is wrong); None when
    there are no posts."""
    if not truth:
        return None
    return sum(t == p for t, p in zip(truth, predicted, strict=True)) / len(truth)


ALPHA = 0.05
MARGIN = 0.05


@dataclass(frozen=True)
class Comparison:
    verdict: str  # "better", "no worse", "worse" or "not enough evidence"
    n: int  # judge posts
    new_only: int  # posts the new system gets right and the other wrong
    other_only: int  # the reverse
    p_better: float  # exact one-sided McNemar p-value for "new is better"
    lower_bound: float  # 95% lower bound of (new accuracy - other accuracy)

    def describe(self, other: str) -> str:
        relation = ("compared with" if self.verdict == "not enough evidence" else "than")
        return (f"{self.verdict} {relation} {other} on {self.n} judge posts (right where "
                f"{other} was wrong: {self.new_only}, the reverse: {self.other_only}; "
                f"p = {self.p_better:.3g}; accuracy difference >= "
                f"{self.lower_bound:+.3f} at 95%)")


def compare(truth: Sequence[str], new: Sequence[str | None], other: Sequence[str | None],
            *, alpha: float = ALPHA, margin: float = MARGIN) -> Comparison:
    """The paired verdict on the same posts (see the module docstring)."""
    n = len(truth)
    new_only = sum(t == a and t != b for t, a, b in zip(truth, new, other, strict=True))
    other_only = sum(t != a and t == b for t, a, b in zip(truth, new, other, strict=True))
    discordant = new_only + other_only
    p_better = (stats.binomtest(new_only, discordant, 0.5, alternative="greater").pvalue
                if discordant else 1.0)
    p_worse = (stats.binomtest(other_only, discordant, 0.5, alternative="greater").pvalue
               if discordant else 1.0)
    # One-sided 95% bound: a two-sided 90% Clopper-Pearson interval's upper end.
    upper_other = (stats.binomtest(other_only, n).proportion_ci(0.90, "exact").high
                   if n else 1.0)
    lower_bound = new_only / n - upper_other if n else -1.0
    if p_better < alpha:
        verdict = "better"
    elif p_worse < alpha:
        verdict = "worse"
    elif lower_bound >= -margin:
        verdict = "no worse"
    else:
        verdict = "not enough evidence"
    return Comparison(verdict, n, new_only, other_only, float(p_better),
                      round(float(lower_bound), 4))


def should_promote(against_serving: Comparison | None) -> bool:
    """Promote when nothing serves yet, or when the new version is better or no worse."""
    return against_serving is None or against_serving.verdict in ("better", "no worse")


def beats_llm(against_llm: Comparison | None) -> bool:
    """Whether annotators see the model's label instead of the LLM's."""
    return against_llm is not None and against_llm.verdict == "better"
