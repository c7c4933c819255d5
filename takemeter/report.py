"""What pre-labels really did in a project: how often annotators accepted, changed or
ignored them (per source: the LLM, each model version), the time they saved, the anchoring
they caused, and what they cost.

Held-out tasks and judge posts are labeled blind (BLIND_LABELS, the default) and the
others with a pre-label in view, by a hash of the task id: inside every project that is a
randomized comparison. Figures (takemeter.evaluation.prelabels says how each is read):
  - acceptance per source, with exact (Clopper-Pearson) intervals;
  - annotation time: median lead time blind vs pre-labeled, a bootstrap interval of the
    difference, and what it comes to in hours for the project's remaining pre-labeled
    tasks;
  - anchoring: each system's agreement with labels made with its suggestion in view
    against labels made blind (its answer for those posts: the LLM's from the answer
    cache, the model's from the serving version), the difference with Newcombe's
    interval, and a warning when held-out labels were made with a pre-label in view;
  - money: the LLM tokens the project's posts cost (as the endpoint counted them, kept
    with each cached answer) at --input-price / --output-price per million tokens
    (LLM_PRICE_INPUT, LLM_PRICE_OUTPUT), cost per correct pre-label, annotation cost at
    --hourly-rate (ANNOTATION_HOURLY_RATE), and cost per label with and without
    pre-labels;
  - the same acceptance and time figures per annotator with 5 labels or more (the others
    pooled, unnamed).
What it cannot tell: with few labels the intervals are wide (it says so rather than
guess); with one annotator, the time and anchoring figures are that person's; lead time
counts the whole time a task was open, reading included.

--plan estimates, before a large pre-labeling run, the tokens, cost and time for the
project's unlabeled tasks the LLM has not answered: it asks the LLM for a sample of them
(--sample, 10 by default: they are paid for once and cached) and scales up.

Examples:
  takemeter report --project 3 --out out/report
  takemeter report --project 3 --input-price 0.15 --output-price 0.6 --hourly-rate 30
  takemeter report --project 3 --plan --input-price 0.15 --output-price 0.6
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from backend.config import Settings
from backend.domain import roles
from backend.domain.dataset import latest_annotation, task_text
from backend.domain.labelings import LLM, OUTCOMES, labelings
from backend.domain.taxonomy import Taxonomy
from backend.labelstudio import client as ls_client
from takemeter import common
from takemeter.evaluation import prelabels
from takemeter.evaluation.prelabels import Prices

MODEL = "model"


def _labeler(settings: Settings):
    from backend.llm.labeler import from_settings  # openai: only when needed

    return from_settings(settings)


def blind_answers(
    settings: Settings,
    labeler,
    project: int | None,
    taxonomy: Taxonomy,
    posts: dict[int, str],
    notes: list[str],
) -> dict[str, dict[int, str | None]]:
    """Each system's answer for the blind-labeled posts: the LLM's from the cache (asking
    nothing), the serving model's computed here."""
    from takemeter.evaluate import model_predictions

    ids, texts = list(posts), list(posts.values())
    out: dict[str, dict[int, str | None]] = {}
    cached = labeler.cached(taxonomy, texts)
    out[LLM] = {i: o.label for i, o in zip(ids, cached, strict=True) if o is not None}
    if len(out[LLM]) < len(ids):
        notes.append(f"{len(ids) - len(out[LLM])} blind posts have no cached LLM answer")
    if texts:
        why: list[str] = []
        model = model_predictions(settings, project, None, taxonomy, texts, why, require=False)
        if model.labels is not None:
            out[MODEL] = dict(zip(ids, model.labels, strict=True))
        else:
            notes.append("no model answers for the blind posts: " + why[0].split(";")[0])
    return out


def plan(
    settings: Settings, taxonomy: Taxonomy, tasks: list[dict], sample: int, prices: Prices
) -> dict:
    """Tokens, cost and time for the unlabeled posts the LLM has not answered, from a
    sample asked now."""
    labeler = _labeler(settings)
    try:
        unlabeled = [
            text
            for t in tasks
            if latest_annotation(t) is None and (text := task_text(t, taxonomy.text_field))
        ]
        unlabeled = list(dict.fromkeys(unlabeled))
        cached = labeler.cached(taxonomy, unlabeled)
        todo = [text for text, answer in zip(unlabeled, cached, strict=True) if answer is None]
        asked = todo[:sample]
        started = time.monotonic()
        labeler.label_many(taxonomy, asked)
        seconds = time.monotonic() - started
        costs = labeler.cache.get_many([labeler.key(taxonomy, t) for t in asked]).values()
    finally:
        labeler.close()
    answered = [a for a in costs if a.prompt_tokens or a.completion_tokens]
    rest = len(todo) - len(asked)
    out: dict = {
        "unlabeled_posts": len(unlabeled),
        "not_answered": len(todo),
        "sampled": len(asked),
        "sample_seconds": round(seconds, 2),
        "concurrency": settings.llm_concurrency,
        "estimate": None,
    }
    if not answered:
        out["note"] = (
            "nothing to estimate: every unlabeled post has an answer"
            if not todo
            else "the sample got no answer with token counts (is the LLM reachable?)"
        )
        return out
    prompt = sum(a.prompt_tokens for a in answered) / len(answered)
    completion = sum(a.completion_tokens for a in answered) / len(answered)
    estimate = {
        "prompt_tokens": round(prompt * rest),
        "completion_tokens": round(completion * rest),
        "seconds": round(seconds / len(asked) * rest, 1),
        "cost": None,
    }
    if prices.input_per_million is not None and prices.output_per_million is not None:
        estimate["cost"] = (
            estimate["prompt_tokens"] * prices.input_per_million
            + estimate["completion_tokens"] * prices.output_per_million
        ) / 1e6
    out["estimate"] = estimate
    return out


def build(settings: Settings, source: common.Source, prices: Prices) -> dict:
    taxonomy = source.taxonomy
    notes: list[str] = []
    tasks = source.tasks
    if source.client is not None and source.project is not None:
        tasks = ls_client.with_predictions(source.client, source.project, tasks)
    elif any(not isinstance(p, dict) for t in tasks for p in t.get("predictions") or []):
        raise common.CliError(
            f"{source.description} lists predictions by id only (as Label Studio exports "
            f"them): what annotators had in view needs them in full; use --project"
        )
    items = labelings(tasks, taxonomy, holdout_percent=settings.holdout_percent)
    if not items:
        raise common.CliError(f"{source.description} has no annotation to report on")
    texts = {t.get("id"): task_text(t, taxonomy.text_field) for t in tasks}
    remaining = sum(
        1
        for t in tasks
        if latest_annotation(t) is None
        and texts.get(t.get("id"))
        and not (
            settings.blind_labels and roles.is_blind(t, holdout_percent=settings.holdout_percent)
        )
    )
    times = prelabels.annotation_time(items, remaining=remaining)
    blind_posts = {
        i.task: text for i in items if i.outcome == "blind" and (text := texts.get(i.task))
    }
    labeler = _labeler(settings)
    try:
        answers = blind_answers(settings, labeler, source.project, taxonomy, blind_posts, notes)
        spent = labeler.spent(taxonomy, [t for t in texts.values() if t])
    finally:
        labeler.close()
    if spent.without_counts:
        notes.append(
            f"{spent.without_counts} cached answers were stored before token counts were "
            f"kept: their cost counts as 0"
        )
    held = prelabels.assisted_held_out(items)
    assisted = sum(n for k, n in held.items() if k != "blind")
    warnings = []
    if assisted:
        warnings.append(
            f"{assisted} of {sum(held.values())} held-out labels were made with a "
            f"pre-label in view ({', '.join(f'{n} {k}' for k, n in held.items())}): "
            f"the accuracy `takemeter evaluate` measures on them flatters that system"
        )
    return {
        "source": source.description,
        "project": source.project,
        "labels": len(items),
        "outcomes": {o: sum(i.outcome == o for i in items) for o in (*OUTCOMES, "blind")},
        "acceptance": prelabels.acceptance(items),
        "time": times,
        "anchoring": prelabels.anchoring(items, answers),
        "held_out_labels": held,
        "money": prelabels.money(items, spent=spent, prices=prices, times=times),
        "per_annotator": prelabels.per_annotator(items, remaining=remaining),
        "warnings": warnings,
        "notes": notes,
        # Each label as read, for spreadsheets; who made it only in per_annotator.
        "items": [
            {
                "task": i.task,
                "outcome": i.outcome,
                "source": i.source,
                "shown": i.shown,
                "label": i.label,
                "seconds": i.seconds,
                "held_out": i.held_out,
            }
            for i in items
        ],
    }


def _share(entry: dict) -> str:
    if entry["share"] is None:
        return "-"
    low, high = entry["interval"]
    return f"{entry['share']:.0%} [{low:.0%}, {high:.0%}]"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def _money(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def lines_of(report: dict) -> list[str]:
    counts = ", ".join(f"{n} {o}" for o, n in report["outcomes"].items())
    out = [f"Pre-labels in {report['source']}: {report['labels']} labels ({counts})"]
    out += [f"WARNING: {w}" for w in report["warnings"]]
    out += [f"note: {n}" for n in report["notes"]]
    out.append("\nacceptance (share of the labels made with that source's pre-label in view):")
    for source, figures in report["acceptance"].items():
        shares = ", ".join(f"{o} {_share(figures[o])}" for o in OUTCOMES)
        out.append(f"  {source} (n={figures['n']}): {shares}")
    t = report["time"]
    out.append(
        f"\nannotation time: median {_seconds(t['blind']['median_seconds'])} blind "
        f"(n={t['blind']['n']}) vs {_seconds(t['prelabeled']['median_seconds'])} "
        f"pre-labeled (n={t['prelabeled']['n']})"
    )
    if t["saved_per_task"]:
        s, h = t["saved_per_task"], t["saved_hours_remaining"]
        out.append(
            f"  saved per task {s['difference']:.1f} s [{s['interval'][0]:.1f}, "
            f"{s['interval'][1]:.1f}]; over the {t['remaining_prelabeled_tasks']} remaining "
            f"pre-labeled tasks {h['hours']:.2f} h [{h['interval'][0]:.2f}, {h['interval'][1]:.2f}]"
        )
    else:
        out.append(f"  {t.get('note', '')}")
    out.append("\nanchoring (agreement with humans: suggestion in view vs blind):")
    for system, a in report["anchoring"].items():
        diff = a["difference"]
        said = (
            f"difference {diff['difference']:+.0%} [{diff['interval'][0]:+.0%}, "
            f"{diff['interval'][1]:+.0%}]"
            if diff
            else "no difference: a side has no label"
        )
        out.append(
            f"  {system}: {_share(a['assisted'])} (n={a['assisted']['n']}) vs "
            f"{_share(a['blind'])} (n={a['blind']['n']}); {said}"
        )
    m = report["money"]
    out.append(
        f"\nmoney: {m['prompt_tokens']} prompt + {m['completion_tokens']} completion tokens "
        f"for {m['answered_posts']} posts; LLM cost {_money(m['llm_cost'])}, per correct "
        f"pre-label {_money(m['cost_per_correct_prelabel'])}; per label with pre-labels "
        f"{_money(m['cost_per_label_with_prelabels'])}, blind {_money(m['cost_per_label_blind'])}"
    )
    out.append("\nper annotator:")
    for who, figures in report["per_annotator"].items():
        shown = figures["time"]["prelabeled"]["median_seconds"]
        blind = figures["time"]["blind"]["median_seconds"]
        accepted = {s: _share(f["accepted"]) for s, f in figures["acceptance"].items()}
        out.append(
            f"  {who}: {figures['labels']} labels, accepted {accepted}, median "
            f"{_seconds(shown)} pre-labeled / {_seconds(blind)} blind"
        )
    return out


def write_files(report: dict, out: Path) -> list[Path]:
    """report.json, report.md and two PNGs: acceptance per source, lead times."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str))
    fig = Figure(figsize=(6.4, 3.6), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    sources = list(report["acceptance"])
    names = [f"{s} (n={report['acceptance'][s]['n']})" for s in sources]
    left = [0.0] * len(sources)
    for outcome in OUTCOMES:
        shares = [report["acceptance"][s][outcome]["share"] or 0.0 for s in sources]
        ax.barh(names, shares, left=left, label=outcome)
        left = [a + b for a, b in zip(left, shares, strict=True)]
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of labels made with the source's pre-label in view")
    ax.legend(loc="lower right", fontsize="small")
    fig.savefig(out / "acceptance.png", dpi=110)
    fig = Figure(figsize=(6.4, 3.6), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    t = report["time"]
    medians = [t["blind"]["median_seconds"] or 0.0, t["prelabeled"]["median_seconds"] or 0.0]
    ax.bar([f"blind (n={t['blind']['n']})", f"pre-labeled (n={t['prelabeled']['n']})"], medians)
    ax.set_ylabel("median lead time (s)")
    fig.savefig(out / "lead_time.png", dpi=110)
    markdown = out / "report.md"
    markdown.write_text(
        f"# What pre-labels did: {report['source']}\n\n```\n"
        + "\n".join(lines_of(report))
        + "\n```\n\n![acceptance](acceptance.png)\n\n![lead time](lead_time.png)\n"
    )
    return [markdown, out / "report.json", out / "acceptance.png", out / "lead_time.png"]


def main(argv: list[str] | None = None) -> int:
    parser = common.parser(__doc__)
    common.add_source_arguments(parser)
    parser.add_argument("--out", type=Path, help="write report.md, report.json and PNGs here")
    parser.add_argument(
        "--input-price", type=float, help="per million prompt tokens (default: LLM_PRICE_INPUT)"
    )
    parser.add_argument(
        "--output-price",
        type=float,
        help="per million completion tokens (default: LLM_PRICE_OUTPUT)",
    )
    parser.add_argument(
        "--hourly-rate", type=float, help="an annotator hour (default: ANNOTATION_HOURLY_RATE)"
    )
    parser.add_argument(
        "--plan", action="store_true", help="estimate a pre-labeling run of the unlabeled tasks"
    )
    parser.add_argument("--sample", type=int, default=10, help="posts --plan asks the LLM")
    common.add_json_argument(parser)
    args = parser.parse_args(argv)
    for name in ("input_price", "output_price", "hourly_rate"):
        if (getattr(args, name) or 0) < 0:
            raise common.CliError(f"--{name.replace('_', '-')} cannot be negative")
    if args.sample < 1:
        raise common.CliError("--sample must be at least 1")
    settings = common.settings()
    prices = Prices(
        settings.llm_price_input if args.input_price is None else args.input_price,
        settings.llm_price_output if args.output_price is None else args.output_price,
        settings.annotation_hourly_rate if args.hourly_rate is None else args.hourly_rate,
    )
    source = common.load_source(args, settings)
    if args.plan:
        estimate = plan(settings, source.taxonomy, source.tasks, args.sample, prices)
        e = estimate["estimate"]
        said = (
            f"{e['prompt_tokens']} prompt + {e['completion_tokens']} completion tokens, "
            f"cost {_money(e['cost'])}, about {e['seconds'] / 60:.1f} min at concurrency "
            f"{estimate['concurrency']}"
            if e
            else estimate["note"]
        )
        lines = [
            f"Plan for {source.description}: {estimate['not_answered']} of "
            f"{estimate['unlabeled_posts']} unlabeled posts not answered; asked "
            f"{estimate['sampled']} in {estimate['sample_seconds']} s; the rest: {said}"
        ]
        common.emit(estimate, lines, as_json=args.json)
        return 0
    report = build(settings, source, prices)
    lines = lines_of(report)
    if args.out is not None:
        lines.append("\nwrote " + ", ".join(map(str, write_files(report, args.out))))
    common.emit(report, lines, as_json=args.json)
    return 0


if __name__ == "__main__":
    common.run(main)
