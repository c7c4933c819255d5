"""Output of an evaluation report: fixed-width text, markdown with PNG figures, JSON.

Reads the dicts :mod:`takemeter.evaluation.report` builds; computes no statistic.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from backend.files import write_text_atomic
from takemeter.evaluation.statistics import (
    BCA,
    CLOPPER_PEARSON,
    KRIPPENDORFF,
    NONE_COLUMN,
    PAIRED_BCA,
)

__all__ = [
    "RELIABILITY_PNG",
    "render_markdown",
    "render_question",
    "render_sets",
    "render_terminal",
    "write_json",
]

RELIABILITY_PNG = "reliability.png"


# ---------------------------------------------------------------------- calibration


def _calibration_lines(cal: Mapping[str, Any]) -> list[str]:
    lines = [
        f"Score = estimated P(the shown pre-label is right), on {_posts(cal['n'])} with a "
        f"pre-label ({cal['n_right']} right, {cal['share_right']:.1%}); always answering "
        f"{cal['share_right']:.2f} would score Brier {cal['brier_constant']:.3f}."
    ]
    lines += list(cal.get("notes") or [])
    for name, res in cal["scores"].items():
        lines.append(
            f"{name}: Brier {res['brier']:.3f}, ECE {res['ece']:.3f} ({cal['bins']} bins), "
            f"mean score {res['mean_score']:.3f}"
        )
    return lines


def _reliability_lines(cal: Mapping[str, Any]) -> list[str]:
    name, res = next(iter(cal["scores"].items()))
    lines = [f"Reliability of {name} (bins with posts):"]
    for b in res["reliability"]:
        if b["n"]:
            lines.append(
                f"  score {b['low']:.1f}-{b['high']:.1f}: {_posts(b['n'])}, mean score "
                f"{b['mean_score']:.2f}, right {b['share_right']:.0%}"
            )
    return lines


def _reliability_table(cal: Mapping[str, Any]) -> list[str]:
    sets = list(cal["scores"].values())
    head = " | ".join(f"{_md(name)}: posts, mean score, right" for name in cal["scores"])
    rows = [f"| score | {head} |", "|---|" + "---|" * len(sets)]
    for k in range(cal["bins"]):
        cells = [
            f"{b['n']}, {b['mean_score']:.2f}, {b['share_right']:.0%}" if b["n"] else "0"
            for b in (res["reliability"][k] for res in sets)
        ]
        edge = sets[0]["reliability"][k]
        rows.append(f"| {edge['low']:.1f}-{edge['high']:.1f} | " + " | ".join(cells) + " |")
    return rows


def _plot_reliability(cal: Mapping[str, Any], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 6.4), layout="constrained")
    FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    top.plot([0, 1], [0, 1], ls="--", color="gray", lw=1, label="perfectly calibrated")
    names = list(cal["scores"])
    width = 1 / cal["bins"] / (len(names) + 1)
    largest = max(b["n"] for res in cal["scores"].values() for b in res["reliability"])
    for k, (name, res) in enumerate(cal["scores"].items()):
        used = [b for b in res["reliability"] if b["n"]]
        xs = [b["mean_score"] for b in used]
        ys = [b["share_right"] for b in used]
        # Marker area follows the bin's post count: a bin of 2 posts proves little.
        sizes = [20 + 180 * b["n"] / largest for b in used]
        label = f"{name}: Brier {res['brier']:.3f}, ECE {res['ece']:.3f}"
        (line,) = top.plot(xs, ys, marker="", lw=1.5, label=label)
        top.scatter(xs, ys, s=sizes, color=line.get_color(), zorder=3)
        bottom.bar(
            [b["low"] + width * (k + 0.5) for b in res["reliability"]],
            [b["n"] for b in res["reliability"]],
            width=width,
            align="edge",
            color=line.get_color(),
            label=name,
        )
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel("share of pre-labels right")
    top.set_title(f"Score reliability on {_posts(cal['n'])} ({cal['share_right']:.0%} right)")
    top.legend(loc="lower right", fontsize="small")  # calibrated points stay off it
    top.grid(alpha=0.3)
    bottom.set_xlabel("score: estimated P(the shown pre-label is right)")
    bottom.set_ylabel("posts")
    bottom.set_xticks([i / cal["bins"] for i in range(cal["bins"] + 1)])
    fig.savefig(path, dpi=110)


# ------------------------------------------------------------------------ rendering

_FALLBACK_MARK = "\u2020"


def _cell(
    value: float, ci: Sequence[float] | None, method: str, *, usual: str, spec: str = ".3f"
) -> str:
    """``value [low, high]``; a dagger where the interval is not the row's usual method."""
    if ci is None:
        return f"{value:{spec}} [n/a]"
    mark = "" if method == usual else _FALLBACK_MARK
    return f"{value:{spec}} [{ci[0]:{spec}}, {ci[1]:{spec}}]{mark}"


def _metric_cell(res: Mapping[str, Any], name: str, *, usual: str, spec: str = ".3f") -> str:
    return _cell(res[name], res[f"{name}_ci"], res[f"{name}_ci_method"], usual=usual, spec=spec)


def _fmt_kappa(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _summary_rows(report: Mapping[str, Any]) -> list[tuple[str, list[str]]]:
    systems = report["systems"].values()
    rows = [
        (
            f"accuracy ({CLOPPER_PEARSON})",
            [_metric_cell(s, "accuracy", usual=CLOPPER_PEARSON) for s in systems],
        ),
        (f"macro-F1 ({BCA})", [_metric_cell(s, "macro_f1", usual=BCA) for s in systems]),
        (
            f"coverage ({CLOPPER_PEARSON})",
            [_metric_cell(s, "coverage", usual=CLOPPER_PEARSON, spec=".1%") for s in systems],
        ),
    ]
    first = next(iter(systems))
    for label in report["labels"]:
        support = first["per_label"][label]["support"]
        cells = [
            _cell(
                s["per_label"][label]["f1"],
                s["per_label_ci"][label]["f1_ci"],
                s["per_label_ci"][label]["f1_ci_method"],
                usual=BCA,
            )
            for s in systems
        ]
        rows.append((f"F1 {label} (n={support})", cells))
    return rows


def _paired_lines(report: Mapping[str, Any]) -> list[str]:
    lines = []
    for test, pair in zip(report["mcnemar"], report["paired"], strict=True):
        a, b = test["system_a"], test["system_b"]
        lines.append(
            f"McNemar {a} vs {b}: {a} right & {b} wrong = {test['b']}, "
            f"{a} wrong & {b} right = {test['c']}; {test['method']} p = {test['p_value']:.3g}"
        )
        for name, title in (("accuracy", "accuracy"), ("macro_f1", "macro-F1")):
            key = f"{name}_difference"
            lines.append(
                f"{a} \u2212 {b} {title}: "
                f"{_metric_cell(pair, key, usual=PAIRED_BCA, spec='+.3f')} "
                f"({pair[f'{key}_ci_method']})"
            )
        lines.append(f"\u2192 {pair['verdict']}")
    return lines


def _kappa_lines(report: Mapping[str, Any]) -> list[str]:
    lines = [
        f"Cohen's kappa {name} vs human: {_fmt_kappa(k)}"
        for name, k in report["kappa_vs_human"].items()
    ]
    agreement = report["inter_annotator"]
    if agreement is None or agreement["value"] is None:
        lines.append("Inter-annotator agreement: not available")
    else:
        short = "alpha" if agreement["statistic"] == KRIPPENDORFF else "kappa"
        lines.append(
            f"Inter-annotator {short}: {agreement['value']:.3f} ({agreement['statistic']}; "
            f"{agreement['n_annotators']} annotators, {_posts(agreement['n_posts'])} "
            f"annotated more than once)"
        )
    return lines


def _intro(report: Mapping[str, Any]) -> str:
    return (
        f"{report['n']} held-out posts; {report['confidence']:.0%} intervals: "
        f"{CLOPPER_PEARSON} (exact) for accuracy and coverage, {BCA} for F1, "
        f"{PAIRED_BCA} for differences ({report['n_resamples']} resamples of the posts, "
        f"seed {report['seed']})."
    )


def _notes(text: str) -> list[str]:
    if _FALLBACK_MARK not in text:
        return []
    return [
        f"{_FALLBACK_MARK} BCa undefined here (every resample scored the same, or the "
        f"observed value fell outside them): an exact Clopper-Pearson bound instead (per "
        f"label on tp of tp + fp + fn, Bonferroni-combined over labels and systems)."
    ]


def render_terminal(report: Mapping[str, Any]) -> str:
    """Fixed-width text rendering of a :func:`compare_systems` report."""
    names = list(report["systems"])
    rows = _summary_rows(report)
    if any(cell.endswith(_FALLBACK_MARK) for _, cells in rows for cell in cells):
        # Keep the digits of unmarked cells in line with the marked ones.
        rows = [
            (label, [c if c.endswith(_FALLBACK_MARK) else c + " " for c in cells])
            for label, cells in rows
        ]
    first_w = max(len(label) for label, _ in rows)
    widths = [max(len(name), *(len(cells[j]) for _, cells in rows)) for j, name in enumerate(names)]

    def line(first: str, cells: Sequence[str]) -> str:
        padded = (cell.rjust(w) for cell, w in zip(cells, widths, strict=True))
        return (first.ljust(first_w) + "  " + "  ".join(padded)).rstrip()

    header = line("", names)
    table = [line(label, cells) for label, cells in rows]
    out = [_intro(report), "", header, "-" * len(header), *table]
    out += _notes("\n".join(table))
    if report["paired"]:
        out += ["", "Paired comparisons (same posts):", *_paired_lines(report)]
    out += ["", *_kappa_lines(report)]
    if report.get("calibration"):
        lines = _calibration_lines(report["calibration"]) + _reliability_lines(
            report["calibration"]
        )
        out += ["", "Score calibration:", *(f"  {line}" for line in lines)]
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
    rows = _summary_rows(report)
    for label, cells in rows:
        md.append(f"| {_md(label)} | " + " | ".join(cells) + " |")
    notes = _notes("\n".join(c for _, cells in rows for c in cells))
    md += ["", *notes] if notes else []
    sections = [
        ("Paired comparisons (same posts)", _paired_lines(report)),
        ("Agreement", _kappa_lines(report)),
        ("Findings", report["findings"]),
        ("Warnings", report["warnings"]),
    ]
    for heading, items in sections:
        md += ["", f"## {heading}", ""]
        md += [f"- {_md(item)}" for item in items] or ["(none)"]

    cal = report.get("calibration")
    if cal:
        _plot_reliability(cal, out_dir / RELIABILITY_PNG)
        md += ["", "## Score calibration", ""]
        md += [f"- {_md(line)}" for line in _calibration_lines(cal)]
        md += ["", *_reliability_table(cal)]
        md += ["", f"![Reliability diagram of the score]({RELIABILITY_PNG})"]

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


# ------------------------------------------------------------ the other questions


def _estimate_cell(found: Mapping[str, Any] | None) -> str:
    if found is None:
        return "n/a"
    return f"{found['value']:.3f} [{found['ci_low']:.3f}, {found['ci_high']:.3f}]"


def render_sets(report: Mapping[str, Any]) -> list[str]:
    """A :func:`compare_sets` report as a pipe table (read as is in a terminal, and as a
    table in markdown), then its paired comparisons."""
    names = list(report["systems"])
    rows: list[tuple[str, list[str]]] = [
        (title, [_estimate_cell(report["systems"][n][metric]) for n in names])
        for title, metric in (
            ("subset accuracy", "subset_accuracy"),
            ("Hamming loss", "hamming_loss"),
            ("micro-F1", "micro_f1"),
            ("macro-F1", "macro_f1"),
        )
    ]
    rows.append(("coverage", [f"{report['systems'][n]['coverage']:.0%}" for n in names]))
    for label in report["labels"]:
        for metric in ("precision", "recall", "f1"):
            cells = [
                _estimate_cell(report["systems"][n]["per_label"][label][metric]) for n in names
            ]
            rows.append((f"{label}: {metric}", cells))
        support = report["systems"][names[0]]["per_label"][label]["support"]
        said = [str(report["systems"][n]["per_label"][label]["predicted"]) for n in names]
        rows.append((f"{label}: human {support}, predicted", said))
    lines = [
        f"{_posts(report['n'])}; 95% intervals (subset accuracy, precision, recall: "
        f"Clopper-Pearson; the rest: BCa bootstrap over posts)",
        "",
        "| metric | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
        *(f"| {label} | " + " | ".join(cells) + " |" for label, cells in rows),
    ]
    for pair, test in report["pairs"].items():
        lines.append(
            f"{pair}: exactly right where the other is not: {test['b']} vs {test['c']} "
            f"posts, McNemar p = {test['p_value']:.3g} ({test['method']})"
        )
    return lines


def render_question(section: Mapping[str, Any]) -> list[str]:
    """One other question's section: its heading, then its report (a multiple-choice
    question's as render_sets, a single-choice one's as render_terminal)."""
    kind = "multiple choice" if section["multiple"] else "single choice"
    version = section.get("model_version")
    served = f"; fine-tuned = its model {version}" if version else "; no model of its own yet"
    lines = [f"Question {section['question']!r} ({kind}{served})", ""]
    if section["multiple"]:
        return lines + render_sets(section["report"])
    return lines + render_terminal(section["report"]).rstrip("\n").split("\n")


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
