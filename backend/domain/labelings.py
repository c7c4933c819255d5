"""What each annotator had in view when labeling a task, read from the task as Label
Studio exports it, and the headline the model card shows.

Every kept annotation (each annotator's latest, skipped ones left out) is one labeling:
who labeled, the label, the lead time Label Studio recorded, and the pre-label in view.
That is the prediction the annotation was made from (`parent_prediction`, or the region
origins "prediction"/"prediction-changed" with the task's pre-label then); an annotation
made from none is "blind" when the task held no pre-label (a blind task's prediction is
empty, domain.roles) and "ignored" when it did (the annotator labeled from scratch). One
made from a pre-label was "accepted" when its label is the pre-label's, else "changed".
A pre-label's source is "LLM" for the zero-shot versions, else the model version's name.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from backend.domain.dataset import is_held_out, latest_per_annotator
from backend.domain.taxonomy import Taxonomy

LLM = "LLM"
OUTCOMES = ("accepted", "changed", "ignored")


@dataclass(frozen=True)
class Labeling:
    """One annotator's kept label of one task, and what they had in view."""

    task: int
    annotator: object
    label: str | None
    seconds: float | None  # Label Studio's lead time
    outcome: str  # accepted, changed, ignored or blind
    source: str | None  # who made the pre-label in view: LLM or a model version
    shown: str | None  # that pre-label
    held_out: bool


def source_of(model_version: str | None) -> str | None:
    """Who made a prediction: the LLM, or a model version (its second opinion in a
    disagreement, `<version>:model`, is that version's too)."""
    if not model_version:
        return None
    if model_version.startswith("zero-shot:"):
        return LLM
    return model_version.removesuffix(":model")


def _stamp(value: object) -> float:
    try:
        return datetime.fromisoformat(str(value)).timestamp()
    except ValueError:
        return math.inf  # unknown: not "before" anything


def _in_view(task: dict, annotation: dict, taxonomy: Taxonomy) -> tuple[dict | None, bool]:
    """The prediction the annotation came from, and whether it was made from it; else
    the pre-label the task held when it was made (second opinions, `<version>:model` and
    an LLM beside a model, are extra predictions and not what the labeling view loads)."""
    predictions = [p for p in task.get("predictions") or [] if isinstance(p, dict)]
    parent = annotation.get("parent_prediction")
    for prediction in predictions:
        if parent is not None and prediction.get("id") == parent:
            return prediction, True
    made = _stamp(annotation.get("created_at"))
    earlier = [
        p
        for p in predictions
        if taxonomy.label_of(p.get("result") or []) is not None
        and not str(p.get("model_version") or "").endswith(":model")
        and _stamp(p.get("created_at")) <= made
    ]
    origins = {r.get("origin") for r in annotation.get("result") or [] if isinstance(r, dict)}
    from_prediction = bool(origins & {"prediction", "prediction-changed"})
    if not earlier:
        return None, from_prediction
    newest = max(earlier, key=lambda p: (_stamp(p.get("created_at")), p.get("id") or 0))
    return newest, from_prediction


def labelings(tasks: Sequence[dict], taxonomy: Taxonomy, *, holdout_percent: int) -> list[Labeling]:
    out = []
    for task in tasks:
        if not isinstance(task, dict):
            continue
        held = is_held_out(task, percent=holdout_percent)
        for annotator, annotation in latest_per_annotator(task).items():
            label = taxonomy.label_of(annotation.get("result") or [])
            prediction, made_from = _in_view(task, annotation, taxonomy)
            shown = taxonomy.label_of(prediction.get("result") or []) if prediction else None
            if shown is None:
                outcome, source = "blind", None
            else:
                source = source_of(prediction.get("model_version") if prediction else None)
                if not made_from:
                    outcome = "ignored"
                else:
                    outcome = "accepted" if label == shown else "changed"
            lead = annotation.get("lead_time")
            out.append(
                Labeling(
                    task=task.get("id") or 0,
                    annotator=annotator,
                    label=label,
                    seconds=float(lead) if isinstance(lead, int | float) and lead >= 0 else None,
                    outcome=outcome,
                    source=source,
                    shown=shown,
                    held_out=held,
                )
            )
    out.sort(key=lambda item: item.task)
    return out


def headline(
    items: Sequence[Labeling],
    *,
    llm_cost: float | None = None,
    answered_posts: int = 0,
    hourly_rate: float | None = None,
) -> str:
    """One line for the model card: the share of pre-labels accepted as is, the median
    time a pre-label saved (blind minus pre-labeled), with `llm_cost` what an accepted LLM
    pre-label cost, and with `hourly_rate` too what a label costs with pre-labels (the LLM
    per post, `llm_cost / answered_posts`, plus the median time) and blind. Empty before
    any label was made with a pre-label in view."""
    shown = [i for i in items if i.outcome != "blind"]
    if not shown:
        return ""
    accepted = sum(i.outcome == "accepted" for i in shown)
    parts = [f"pre-labels accepted {accepted / len(shown):.0%} ({accepted} of {len(shown)})"]
    blind = [i.seconds for i in items if i.outcome == "blind" and i.seconds is not None]
    timed = [i.seconds for i in shown if i.seconds is not None]
    if blind and timed:
        saved = round(statistics.median(blind) - statistics.median(timed), 1) + 0.0  # no -0.0
        parts.append(f"{saved:.1f} s saved a task ({len(blind)} blind, {len(timed)} timed)")
    accepted_llm = sum(i.outcome == "accepted" and i.source == LLM for i in shown)
    if llm_cost is not None and accepted_llm:
        parts.append(f"{llm_cost / accepted_llm:.4g} an accepted LLM pre-label")
    if llm_cost is not None and hourly_rate is not None and blind and timed:
        per_post = llm_cost / answered_posts if answered_posts else 0.0
        with_prelabels = per_post + statistics.median(timed) / 3600 * hourly_rate
        parts.append(
            f"a label {with_prelabels:.3g} with pre-labels, "
            f"{statistics.median(blind) / 3600 * hourly_rate:.3g} blind"
        )
    return ", ".join(parts)
