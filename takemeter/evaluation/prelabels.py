"""What pre-labels did in a project: the figures of `takemeter report`, with their
intervals, from the labelings backend.domain.labelings reads out of the exported tasks.

Held-out tasks and judge posts are blind by a hash of the task id, the others are
pre-labeled, so within a project blind and pre-labeled labeling is a randomized
comparison: the time it saves (median lead times, bootstrap interval of the difference)
and the anchoring it causes (a system's agreement with labels made with its suggestion in
view against labels made blind, Newcombe's interval of the difference) are measured, not
guessed. Human labels count as correct; the anchoring figure says how far that holds.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from backend.domain.labelings import LLM, OUTCOMES, Labeling
from backend.llm.labeler import Spent
from takemeter.evaluation.statistics import WILSON, Interval, proportion_ci

MIN_PER_ANNOTATOR = 5  # annotators with fewer are pooled, unnamed
MIN_PER_GROUP = 5  # lead times a side needs before a time difference is reported


def _share(hits: int, n: int) -> dict:
    if n == 0:
        return {"count": 0, "share": None, "interval": None}
    ci = proportion_ci(hits, n)
    return {"count": hits, "share": hits / n, "interval": [ci.low, ci.high]}


def acceptance(items: Sequence[Labeling]) -> dict[str, dict]:
    """Per pre-label source: accepted, changed and ignored counts and shares (exact
    Clopper-Pearson intervals)."""
    by_source: dict[str, list[Labeling]] = defaultdict(list)
    for item in items:
        if item.source is not None:
            by_source[item.source].append(item)
    out = {}
    for source, group in sorted(by_source.items(), key=lambda kv: (kv[0] != LLM, kv[0])):
        counts = Counter(item.outcome for item in group)
        out[source] = {"n": len(group)} | {o: _share(counts[o], len(group)) for o in OUTCOMES}
    return out


def median_difference(
    slower: Sequence[float], faster: Sequence[float], *, resamples: int = 2000, seed: int = 0
) -> dict:
    """median(slower) - median(faster), with a 95% percentile bootstrap interval
    (each side resampled on its own)."""
    a, b = np.asarray(slower, dtype=float), np.asarray(faster, dtype=float)
    rng = np.random.default_rng(seed)
    diffs = np.median(rng.choice(a, (resamples, a.size)), axis=1) - np.median(
        rng.choice(b, (resamples, b.size)), axis=1
    )
    return {
        "difference": float(np.median(a) - np.median(b)),
        "interval": [float(np.percentile(diffs, 2.5)), float(np.percentile(diffs, 97.5))],
        "method": f"percentile bootstrap, {resamples} resamples",
    }


def annotation_time(items: Sequence[Labeling], *, remaining: int) -> dict:
    """Median lead time blind vs with a pre-label in view; the difference is the time a
    pre-label saves a task, and over `remaining` pre-labeled tasks, hours."""
    blind = [i.seconds for i in items if i.outcome == "blind" and i.seconds is not None]
    shown = [i.seconds for i in items if i.outcome != "blind" and i.seconds is not None]
    out: dict = {
        "blind": {"n": len(blind), "median_seconds": float(np.median(blind)) if blind else None},
        "prelabeled": {
            "n": len(shown),
            "median_seconds": float(np.median(shown)) if shown else None,
        },
        "remaining_prelabeled_tasks": remaining,
        "saved_per_task": None,
        "saved_hours_remaining": None,
    }
    if min(len(blind), len(shown)) < MIN_PER_GROUP:
        out["note"] = (
            f"too few lead times to compare ({len(blind)} blind, {len(shown)} pre-labeled; "
            f"{MIN_PER_GROUP} each needed)"
        )
        return out
    saved = median_difference(blind, shown)
    out["saved_per_task"] = saved
    out["saved_hours_remaining"] = {
        "hours": saved["difference"] * remaining / 3600,
        "interval": [v * remaining / 3600 for v in saved["interval"]],
    }
    return out


def _wilson(hits: int, n: int) -> Interval:
    return proportion_ci(hits, n, method=WILSON)


def difference_of_shares(hits_a: int, n_a: int, hits_b: int, n_b: int) -> dict:
    """p_a - p_b with Newcombe's hybrid score interval (method 10: from the two Wilson
    intervals), which stays inside [-1, 1] and behaves at small counts."""
    p_a, p_b = hits_a / n_a, hits_b / n_b
    a, b = _wilson(hits_a, n_a), _wilson(hits_b, n_b)
    d = p_a - p_b
    return {
        "difference": d,
        "interval": [
            d - math.hypot(p_a - a.low, b.high - p_b),
            d + math.hypot(a.high - p_a, p_b - b.low),
        ],
        "method": "Newcombe hybrid score (Wilson)",
    }


def anchoring(
    items: Sequence[Labeling], blind_answers: Mapping[str, Mapping[int, str | None]]
) -> dict[str, dict]:
    """Per system: its agreement with humans where its suggestion was in view (the
    label shown against the label given) and on blind labels (its answer for the post,
    from `blind_answers[system][task]`), and assisted minus blind."""
    out = {}
    for system, answers in blind_answers.items():
        shown = [i for i in items if i.outcome != "blind" and _same_system(i.source, system)]
        blind = [i for i in items if i.outcome == "blind" and i.task in answers]
        entry: dict = {
            "assisted": _share(sum(i.label == i.shown for i in shown), len(shown))
            | {"n": len(shown)},
            "blind": _share(sum(i.label == answers[i.task] for i in blind), len(blind))
            | {"n": len(blind)},
            "difference": None,
        }
        if shown and blind:
            entry["difference"] = difference_of_shares(
                entry["assisted"]["count"], len(shown), entry["blind"]["count"], len(blind)
            )
        out[system] = entry
    return out


def _same_system(source: str | None, system: str) -> bool:
    return source == LLM if system == LLM else source not in (None, LLM)


def assisted_held_out(items: Sequence[Labeling]) -> dict[str, int]:
    """Held-out labels by what was in view: labels made with one flatter that system."""
    counts = Counter(
        "blind" if i.outcome == "blind" else f"with a {i.source} pre-label"
        for i in items
        if i.held_out
    )
    return dict(counts)


@dataclass(frozen=True)
class Prices:
    input_per_million: float | None = None  # currency units per million prompt tokens
    output_per_million: float | None = None
    hourly_rate: float | None = None  # an annotator hour


def money(items: Sequence[Labeling], *, spent: Spent, prices: Prices, times: dict) -> dict:
    """LLM tokens and cost so far, cost per correct pre-label (an LLM pre-label accepted
    as is), and per label with and without pre-labels (LLM cost per post + the median lead
    time at the hourly rate; human labels count as correct)."""
    cost = spent.cost(prices.input_per_million, prices.output_per_million)
    accepted = sum(1 for i in items if i.source == LLM and i.outcome == "accepted")
    out: dict = {
        "prompt_tokens": spent.prompt_tokens,
        "completion_tokens": spent.completion_tokens,
        "answered_posts": spent.answered,
        "llm_cost": cost,
        "cost_per_correct_prelabel": cost / accepted if cost is not None and accepted else None,
        "cost_per_label_with_prelabels": None,
        "cost_per_label_blind": None,
    }
    if prices.hourly_rate is not None:
        per_post = (cost or 0.0) / spent.answered if spent.answered else 0.0
        shown = times["prelabeled"]["median_seconds"]
        blind = times["blind"]["median_seconds"]
        if shown is not None:
            out["cost_per_label_with_prelabels"] = per_post + shown / 3600 * prices.hourly_rate
        if blind is not None:
            out["cost_per_label_blind"] = blind / 3600 * prices.hourly_rate
    return out


def per_annotator(items: Sequence[Labeling], *, remaining: int) -> dict[str, dict]:
    """Acceptance and time for each annotator with MIN_PER_ANNOTATOR labels or more; the
    rest pooled as "others", unnamed."""
    by: dict[object, list[Labeling]] = defaultdict(list)
    for item in items:
        by[item.annotator].append(item)
    out: dict[str, dict] = {}
    others: list[Labeling] = []
    pooled = 0
    for annotator, group in sorted(by.items(), key=lambda kv: str(kv[0])):
        if len(group) >= MIN_PER_ANNOTATOR:
            out[f"annotator {annotator}"] = _annotator_figures(group, remaining)
        else:
            others.extend(group)
            pooled += 1
    if others:
        out[f"others ({pooled} with fewer than {MIN_PER_ANNOTATOR} labels)"] = _annotator_figures(
            others, remaining
        )
    return out


def _annotator_figures(group: Sequence[Labeling], remaining: int) -> dict:
    return {
        "labels": len(group),
        "acceptance": acceptance(group),
        "time": annotation_time(group, remaining=remaining),
    }
