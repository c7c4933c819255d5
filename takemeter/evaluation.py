"""Held-out evaluation: fine-tuned classifier and zero-shot LLM against human labels.

Labels are plain strings. A prediction of ``None`` means the system gave no answer: it
counts as wrong everywhere and shows up as coverage below 100%.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats
from sklearn.metrics import (
    cohen_kappa_score,
    confusion_matrix,
    precision_recall_fscore_support,
)

from backend.domain import policy
from backend.files import write_text_atomic

__all__ = [
    "NONE_COLUMN",
    "accuracy",
    "bootstrap_ci",
    "cohen_kappa",
    "compare_systems",
    "confusion",
    "evaluate_system",
    "macro_f1",
    "mcnemar",
    "render_markdown",
    "render_terminal",
    "top_confusions",
    "write_json",
]

Prediction = str | None

NONE_COLUMN = "(none)"
# numpy/sklearn cannot mix None with strings, so None is swapped for this token.
# The NUL byte keeps it from ever colliding with a real label.
_MISSING = "\x00no-prediction"
EXAMPLE_CHARS = 200
# Below this many discordant pairs the chi-square approximation is poor.
EXACT_MCNEMAR_BELOW = 25
# Below this many posts a 95% accuracy interval is roughly +/-10 points or wider.
SMALL_N = 100
# Per-label scores resting on fewer posts than this are flagged.
SMALL_SUPPORT = 10
MIN_FINDING_COUNT = 2
SIGNIFICANCE = 0.05


# --------------------------------------------------------------------------- checks


def _check_same_length(**seqs: Sequence[Any]) -> int:
    return _same_length(seqs)


def _same_length(seqs: Mapping[str, Sequence[Any]]) -> int:
    lengths = {name: len(seq) for name, seq in seqs.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"inputs differ in length: {lengths}")
    return next(iter(lengths.values()))


def _check_nonempty(n: int) -> None:
    if n == 0:
        raise ValueError("need at least one item to evaluate")


def _check_labels(labels: Sequence[str]) -> list[str]:
    labels = list(labels)
    if not labels:
        raise ValueError("labels must not be empty")
    if len(set(labels)) != len(labels):
        raise ValueError(f"labels contain duplicates: {labels}")
    if NONE_COLUMN in labels:
        raise ValueError(f"{NONE_COLUMN!r} is reserved for missing predictions")
    return labels


def _check_known(y_true: Sequence[str], y_pred: Sequence[Prediction], labels: list[str]) -> None:
    # An unknown label would silently vanish from the confusion matrix, so fail loudly.
    known = set(labels)
    bad_true = sorted({t for t in y_true if t not in known}, key=str)
    if bad_true:
        raise ValueError(f"human labels not in labels: {bad_true}")
    bad_pred = sorted({p for p in y_pred if p is not None and p not in known}, key=str)
    if bad_pred:
        raise ValueError(f"predictions not in labels: {bad_pred} (map unusable answers to None)")


def _fill(preds: Sequence[Prediction]) -> list[str]:
    return [_MISSING if p is None else p for p in preds]


def _is_right(t: str, p: Prediction) -> bool:
    return p is not None and p == t


# -------------------------------------------------------------------------- metrics


def accuracy(y_true: Sequence[str], y_pred: Sequence[Prediction]) -> float:
    """Share of posts where the prediction equals the human label (None is wrong)."""
    _check_nonempty(_check_same_length(y_true=y_true, y_pred=y_pred))
    return policy.accuracy(list(y_true), list(y_pred))


def _f1_per_label(
    y_true: Sequence[str], y_pred: Sequence[Prediction], labels: Sequence[str]
) -> np.ndarray:
    t = np.asarray(list(y_true), dtype=object)
    p = np.asarray(_fill(y_pred), dtype=object)
    scores = np.zeros(len(labels))
    for i, label in enumerate(labels):
        is_t, is_p = t == label, p == label
        tp = int(np.sum(is_t & is_p))
        fp = int(np.sum(~is_t & is_p))
        fn = int(np.sum(is_t & ~is_p))
        denom = 2 * tp + fp + fn
        # Same convention as sklearn's zero_division=0: a label nobody used scores 0.
        scores[i] = 2 * tp / denom if denom else 0.0
    return scores


def macro_f1(
    y_true: Sequence[str], y_pred: Sequence[Prediction], *, labels: Sequence[str]
) -> float:
    """Unweighted mean F1 over ``labels``; None predictions count as wrong."""
    labels = _check_labels(labels)
    n = _check_same_length(y_true=y_true, y_pred=y_pred)
    _check_nonempty(n)
    # Hand-rolled rather than sklearn.f1_score: the bootstrap calls this thousands of
    # times and sklearn's input validation dominates at these sizes.
    return float(np.mean(_f1_per_label(y_true, y_pred, labels)))


def bootstrap_ci(
    y_true: Sequence[str],
    y_pred: Sequence[Prediction],
    *,
    metric: Callable[[list, list], float],
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval for ``metric``, resampling posts with replacement."""
    n = _check_same_length(y_true=y_true, y_pred=y_pred)
    _check_nonempty(n)
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    t, p = list(y_true), list(y_pred)
    rng = np.random.default_rng(seed)
    scores = np.empty(n_resamples)
    for r in range(n_resamples):
        idx = rng.integers(0, n, size=n)
        scores[r] = metric([t[i] for i in idx], [p[i] for i in idx])
    tail = (1 - confidence) / 2 * 100
    lo, hi = np.percentile(scores, [tail, 100 - tail])
    return float(lo), float(hi)


def mcnemar(
    y_true: Sequence[str], pred_a: Sequence[Prediction], pred_b: Sequence[Prediction]
) -> dict[str, Any]:
    """Paired test of two systems on the same posts.

    ``b`` counts posts system A gets right and B wrong, ``c`` the reverse. Uses the exact
    two-sided binomial test when b + c < 25 (``statistic`` is then min(b, c)), else the
    continuity-corrected chi-square with 1 degree of freedom.
    """
    _check_same_length(y_true=y_true, pred_a=pred_a, pred_b=pred_b)
    b = c = 0
    for t, pa, pb in zip(y_true, pred_a, pred_b, strict=True):
        right_a, right_b = _is_right(t, pa), _is_right(t, pb)
        b += right_a and not right_b
        c += right_b and not right_a
    discordant = b + c
    if discordant < EXACT_MCNEMAR_BELOW:
        method = "exact"
        statistic = float(min(b, c))
        p_value = 1.0 if discordant == 0 else float(stats.binomtest(b, discordant).pvalue)
    else:
        method = "chi2-corrected"
        # max(): with b == c the correction must not push the statistic above zero.
        statistic = max(abs(b - c) - 1, 0) ** 2 / discordant
        p_value = float(stats.chi2.sf(statistic, df=1))
    return {
        "b": int(b),
        "c": int(c),
        "statistic": float(statistic),
        "p_value": min(p_value, 1.0),
        "method": method,
    }


def cohen_kappa(a: Sequence[Prediction], b: Sequence[Prediction]) -> float | None:
    """Cohen's kappa between two raters; None where it is undefined.

    None (no answer) is treated as a category of its own.
    """
    n = _check_same_length(a=a, b=b)
    if n < 2:
        return None
    fa, fb = _fill(a), _fill(b)
    count_a, count_b = Counter(fa), Counter(fb)
    expected = sum(count_a[k] * count_b[k] for k in count_a) / n**2
    # Both raters used one and the same label throughout: kappa is 0/0.
    if expected >= 1 - 1e-12:
        return None
    return float(cohen_kappa_score(fa, fb))


def _columns(y_pred: Sequence[Prediction], labels: list[str]) -> list[str]:
    has_none = any(p is None for p in y_pred)
    return labels + ([NONE_COLUMN] if has_none else [])


def confusion(
    y_true: Sequence[str], y_pred: Sequence[Prediction], *, labels: Sequence[str]
) -> list[list[int]]:
    """Counts with rows = human label, columns = predicted label (+ "(none)" if needed)."""
    labels = _check_labels(labels)
    _check_same_length(y_true=y_true, y_pred=y_pred)
    _check_known(y_true, y_pred, labels)
    matrix = confusion_matrix(list(y_true), _fill(y_pred), labels=[*labels, _MISSING])
    # Drop the missing-prediction row (no human label is missing) and, if unused, column.
    ncols = len(_columns(y_pred, labels))
    return [[int(x) for x in row[:ncols]] for row in matrix[: len(labels)]]


def _truncate(text: str, limit: int = EXAMPLE_CHARS) -> str:
    text = str(text)
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def top_confusions(
    y_true: Sequence[str],
    y_pred: Sequence[Prediction],
    *,
    texts: Sequence[str],
    k: int | None = 5,
    examples: int = 3,
) -> list[dict[str, Any]]:
    """The ``k`` most frequent (human, predicted) error pairs, with example posts.

    ``k=None`` returns every pair. Ties are ordered by human then predicted label, with
    missing predictions (predicted None) last.
    """
    _check_same_length(y_true=y_true, y_pred=y_pred, texts=texts)
    support = Counter(y_true)
    groups: dict[tuple[str, Prediction], list[int]] = {}
    for i, (t, p) in enumerate(zip(y_true, y_pred, strict=True)):
        if not _is_right(t, p):
            groups.setdefault((t, p), []).append(i)
    ordered = sorted(
        groups.items(),
        key=lambda kv: (-len(kv[1]), kv[0][0], kv[0][1] is None, kv[0][1] or ""),
    )
    if k is not None:
        ordered = ordered[:k]
    return [
        {
            "human": human,
            "predicted": predicted,
            "count": len(idx),
            "share_of_human_label": len(idx) / support[human],
            "examples": [_truncate(texts[i]) for i in idx[: max(examples, 0)]],
        }
        for (human, predicted), idx in ordered
    ]


# ------------------------------------------------------------------------- reports


def evaluate_system(
    y_true: Sequence[str],
    y_pred: Sequence[Prediction],
    *,
    labels: Sequence[str],
    texts: Sequence[str],
    seed: int = 0,
    n_resamples: int = 2000,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """All single-system numbers: accuracy and macro-F1 with bootstrap intervals,
    per-label scores, confusion matrix and top confusions."""
    labels = _check_labels(labels)
    n = _check_same_length(y_true=y_true, y_pred=y_pred, texts=texts)
    _check_nonempty(n)
    _check_known(y_true, y_pred, labels)
    t, p = list(y_true), list(y_pred)

    def f1_metric(a: list, b: list) -> float:
        return float(np.mean(_f1_per_label(a, b, labels)))

    ci = {"n_resamples": n_resamples, "confidence": confidence, "seed": seed}
    precision, recall, f1, support = precision_recall_fscore_support(
        t, _fill(p), labels=labels, zero_division=0
    )
    return {
        "n": n,
        "n_predicted": sum(x is not None for x in p),
        "coverage": sum(x is not None for x in p) / n,
        "accuracy": accuracy(t, p),
        "accuracy_ci": list(bootstrap_ci(t, p, metric=accuracy, **ci)),
        "macro_f1": macro_f1(t, p, labels=labels),
        "macro_f1_ci": list(bootstrap_ci(t, p, metric=f1_metric, **ci)),
        "per_label": {
            label: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, label in enumerate(labels)
        },
        "confusion": {
            "labels": labels,
            "columns": _columns(p, labels),
            "matrix": confusion(t, p, labels=labels),
        },
        "top_confusions": top_confusions(t, p, texts=texts),
    }


def _finding(system: str, conf: dict[str, Any], support: int) -> str:
    share = f"{conf['share_of_human_label']:.0%}"
    human = conf["human"]
    if conf["predicted"] is None:
        return (
            f"{system} gives no prediction for {conf['count']} of {support} {human} posts ({share})"
        )
    return (
        f"{system} reads {human} as {conf['predicted']} in {conf['count']} of "
        f"{support} {human} posts ({share})"
    )


def _findings(
    y_true: list[str], systems: Mapping[str, Sequence[Prediction]], texts: Sequence[str]
) -> list[str]:
    support = Counter(y_true)
    ranked: list[tuple[int, int, int, str]] = []
    for s_idx, (name, preds) in enumerate(systems.items()):
        confs = top_confusions(y_true, preds, texts=texts, k=None, examples=0)
        for c_idx, conf in enumerate(confs):
            if conf["count"] >= MIN_FINDING_COUNT:
                sentence = _finding(name, conf, support[conf["human"]])
                ranked.append((-conf["count"], s_idx, c_idx, sentence))
    # Most frequent first across systems; ties keep system order, then pair order.
    return [sentence for *_, sentence in sorted(ranked)]


def _warnings(
    n: int,
    per_system: dict[str, dict[str, Any]],
    labels: list[str],
    confidence: float,
    annotator_pairs_given: bool,
    inter_annotator: float | None,
) -> list[str]:
    out: list[str] = []
    if n < SMALL_N:
        widths = {
            name: res["accuracy_ci"][1] - res["accuracy_ci"][0] for name, res in per_system.items()
        }
        listed = ", ".join(f"{name} {w:.2f}" for name, w in widths.items())
        widest = max(widths.values())
        out.append(
            f"Only {n} held-out posts: the {confidence:.0%} intervals are wide "
            f"(accuracy interval width: {listed}), so accuracy differences smaller "
            f"than about {widest:.2f} ({widest * 100:.0f} points) are not evidence "
            f"that one system is better."
        )
    for name, res in per_system.items():
        if res["coverage"] < 1:
            missing = res["n"] - res["n_predicted"]
            out.append(
                f"{name} gave no prediction for {missing} of {n} posts "
                f"(coverage {res['coverage']:.1%}); those count as wrong."
            )
    first = next(iter(per_system.values()))
    for label in labels:
        support = first["per_label"][label]["support"]
        if support == 0:
            out.append(
                f"No held-out post carries the label {label}; its F1 is 0 by "
                f"convention and pulls macro-F1 down."
            )
        elif support < SMALL_SUPPORT:
            out.append(
                f"Only {support} held-out posts carry the label {label}; its "
                f"per-label scores rest on very few examples."
            )
    if not annotator_pairs_given:
        out.append(
            "No double-annotated posts were given, so there is no human-agreement "
            "ceiling to compare the systems' kappas against."
        )
    elif inter_annotator is None:
        out.append(
            "Inter-annotator kappa is undefined (fewer than 2 double-annotated posts, "
            "or both annotators used a single label throughout)."
        )
    return out


def compare_systems(
    y_true: Sequence[str],
    systems: Mapping[str, Sequence[Prediction]],
    *,
    labels: Sequence[str],
    texts: Sequence[str],
    annotator_pairs: Sequence[tuple[str, str]] | None = None,
    seed: int = 0,
    n_resamples: int = 2000,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """Evaluate every system, test each pair with McNemar, and spell out systematic
    errors ("findings") and caveats ("warnings")."""
    if not systems:
        raise ValueError("need at least one system")
    labels = _check_labels(labels)
    t = list(y_true)
    named = {f"system {name!r}": preds for name, preds in systems.items()}
    n = _same_length({"y_true": t, "texts": texts, **named})
    _check_nonempty(n)
    # Same seed for every system: with equal n they draw the same resampled post sets,
    # so their intervals are directly comparable.
    per_system = {
        name: evaluate_system(
            t,
            preds,
            labels=labels,
            texts=texts,
            seed=seed,
            n_resamples=n_resamples,
            confidence=confidence,
        )
        for name, preds in systems.items()
    }
    pairwise = [
        {"system_a": a, "system_b": b, **mcnemar(t, systems[a], systems[b])}
        for a, b in itertools.combinations(systems, 2)
    ]
    inter_annotator = None
    n_pairs = 0
    if annotator_pairs is not None:
        pairs = list(annotator_pairs)
        n_pairs = len(pairs)
        inter_annotator = cohen_kappa([x for x, _ in pairs], [y for _, y in pairs])
    return {
        "n": n,
        "labels": labels,
        "confidence": confidence,
        "n_resamples": n_resamples,
        "seed": seed,
        "systems": per_system,
        "mcnemar": pairwise,
        "kappa_vs_human": {name: cohen_kappa(t, preds) for name, preds in systems.items()},
        "inter_annotator_kappa": inter_annotator,
        "n_annotator_pairs": n_pairs,
        "warnings": _warnings(
            n, per_system, labels, confidence, annotator_pairs is not None, inter_annotator
        ),
        "findings": _findings(t, systems, texts),
    }


# ------------------------------------------------------------------------ rendering


def _fmt_ci(value: float, ci: Sequence[float]) -> str:
    return f"{value:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"


def _fmt_kappa(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _summary_rows(report: Mapping[str, Any]) -> list[tuple[str, list[str]]]:
    systems = report["systems"]
    rows = [
        ("accuracy", [_fmt_ci(s["accuracy"], s["accuracy_ci"]) for s in systems.values()]),
        ("macro-F1", [_fmt_ci(s["macro_f1"], s["macro_f1_ci"]) for s in systems.values()]),
        ("coverage", [f"{s['coverage']:.1%}" for s in systems.values()]),
    ]
    first = next(iter(systems.values()))
    for label in report["labels"]:
        support = first["per_label"][label]["support"]
        rows.append(
            (
                f"F1 {label} (n={support})",
                [f"{s['per_label'][label]['f1']:.3f}" for s in systems.values()],
            )
        )
    return rows


def _mcnemar_lines(report: Mapping[str, Any]) -> list[str]:
    lines = []
    for m in report["mcnemar"]:
        a, b = m["system_a"], m["system_b"]
        verdict = (
            f"difference unlikely to be chance (p < {SIGNIFICANCE})"
            if m["p_value"] < SIGNIFICANCE
            else f"no significant difference at {SIGNIFICANCE}"
        )
        lines.append(
            f"McNemar {a} vs {b}: {a} right & {b} wrong = {m['b']}, "
            f"{a} wrong & {b} right = {m['c']}; {m['method']} p = {m['p_value']:.3g} "
            f"\u2192 {verdict}"
        )
    return lines


def _kappa_lines(report: Mapping[str, Any]) -> list[str]:
    lines = [
        f"Cohen's kappa {name} vs human: {_fmt_kappa(k)}"
        for name, k in report["kappa_vs_human"].items()
    ]
    if report["inter_annotator_kappa"] is None:
        lines.append("Inter-annotator kappa: not available")
    else:
        lines.append(
            f"Inter-annotator kappa: {report['inter_annotator_kappa']:.3f} "
            f"({report['n_annotator_pairs']} double-annotated posts)"
        )
    return lines


def _intro(report: Mapping[str, Any]) -> str:
    return (
        f"{report['n']} held-out posts; {report['confidence']:.0%} percentile-bootstrap "
        f"intervals ({report['n_resamples']} resamples, seed {report['seed']})."
    )


def render_terminal(report: Mapping[str, Any]) -> str:
    """Fixed-width text rendering of a :func:`compare_systems` report."""
    names = list(report["systems"])
    rows = _summary_rows(report)
    first_w = max(len(label) for label, _ in rows)
    widths = [max(len(name), *(len(cells[j]) for _, cells in rows)) for j, name in enumerate(names)]

    def line(first: str, cells: Sequence[str]) -> str:
        padded = (cell.rjust(w) for cell, w in zip(cells, widths, strict=True))
        return (first.ljust(first_w) + "  " + "  ".join(padded)).rstrip()

    header = line("", names)
    out = [_intro(report), "", header, "-" * len(header)]
    out += [line(label, cells) for label, cells in rows]
    out += ["", *_mcnemar_lines(report)]
    out += ["", *_kappa_lines(report)]
    out += ["", "Findings:"]
    out += [f"  - {f}" for f in report["findings"]] or ["  (none)"]
    out += ["", "Warnings:"]
    out += [f"  - {w}" for w in report["warnings"]] or ["  (none)"]
    return "\n".join(out) + "\n"


_MD_SPECIAL = re.compile(r"([\\`*_\[\]<|#]|^>)")


def _md(text: str) -> str:
    # Posts are user text: keep markdown from reading them as markup or table cells.
    return _MD_SPECIAL.sub(r"\\\1", " ".join(str(text).split()))


def _posts(count: int) -> str:
    return f"{count} post" if count == 1 else f"{count} posts"


def _png_names(names: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    used: set[str] = set()
    for name in names:
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "system"
        candidate, i = stem, 2
        while candidate in used:
            candidate, i = f"{stem}_{i}", i + 1
        used.add(candidate)
        out[name] = f"confusion_{candidate}.png"
    return out


def _plot_confusion(system: str, conf: Mapping[str, Any], path: Path) -> None:
    # Figure + Agg canvas directly: no pyplot global state, no GUI backend needed.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    matrix = np.asarray(conf["matrix"], dtype=float)
    rows, cols = conf["labels"], conf["columns"]
    fig = Figure(figsize=(2.5 + 1.4 * len(cols), 1.8 + 0.8 * len(rows)), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    vmax = max(float(matrix.max()), 1.0)
    image = ax.imshow(matrix, cmap="Blues", vmin=0, vmax=vmax, aspect="auto")
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            value = matrix[i, j]
            ax.text(
                j,
                i,
                f"{int(value)}",
                ha="center",
                va="center",
                color="white" if value > vmax / 2 else "black",
            )
    ax.set_xticks(range(len(cols)), labels=cols, rotation=30, ha="right")
    ax.set_yticks(range(len(rows)), labels=rows)
    ax.set_xlabel("predicted")
    ax.set_ylabel("human")
    ax.set_title(f"{system}: human (rows) vs predicted (columns)")
    colorbar = fig.colorbar(image, ax=ax, shrink=0.8)
    colorbar.locator = MaxNLocator(integer=True)  # counts, not fractions
    colorbar.update_ticks()
    fig.savefig(path, dpi=110)


def render_markdown(
    report: Mapping[str, Any], *, out_dir: Path, title: str = "Held-out evaluation"
) -> Path:
    """Write ``report.md`` and one ``confusion_<system>.png`` per system into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = list(report["systems"])
    pngs = _png_names(names)

    md = [f"# {title}", "", _intro(report), "", "## Summary", ""]
    md.append("| metric | " + " | ".join(_md(n) for n in names) + " |")
    md.append("|---|" + "---|" * len(names))
    for label, cells in _summary_rows(report):
        md.append(f"| {_md(label)} | " + " | ".join(cells) + " |")
    sections = [
        ("Pairwise McNemar tests", _mcnemar_lines(report)),
        ("Agreement (Cohen's kappa)", _kappa_lines(report)),
        ("Findings", report["findings"]),
        ("Warnings", report["warnings"]),
    ]
    for heading, items in sections:
        md += ["", f"## {heading}", ""]
        md += [f"- {_md(item)}" for item in items] or ["(none)"]

    for name in names:
        res = report["systems"][name]
        _plot_confusion(name, res["confusion"], out_dir / pngs[name])
        md += ["", f"## {_md(name)}", "", f"![Confusion matrix for {_md(name)}]({pngs[name]})"]
        md += ["", "### Top confusions", ""]
        if not res["top_confusions"]:
            md.append("(none)")
        for conf in res["top_confusions"]:
            predicted = NONE_COLUMN if conf["predicted"] is None else conf["predicted"]
            md.append(
                f"**human {_md(conf['human'])} \u2192 predicted {_md(predicted)}**: "
                f"{_posts(conf['count'])} ({conf['share_of_human_label']:.0%} of "
                f"{_md(conf['human'])})"
            )
            md.append("")
            for example in conf["examples"]:
                md += [f"> {_md(example)}", ""]

    path = out_dir / "report.md"
    write_text_atomic(path, "\n".join(md).rstrip() + "\n")
    return path


# ----------------------------------------------------------------------------- json


def _to_jsonable(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(_to_jsonable(k)): _to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset, np.ndarray)):
        return [_to_jsonable(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        # Strict JSON has no NaN/Infinity.
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_json(report: Mapping[str, Any], path: Path) -> None:
    """Atomically write ``report`` as JSON, converting numpy values to Python ones."""
    text = json.dumps(_to_jsonable(report), indent=2, ensure_ascii=False, allow_nan=False)
    write_text_atomic(Path(path), text + "\n")
