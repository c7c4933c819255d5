"""Held-out evaluation: the fine-tuned model and the zero-shot LLM against human labels.

Only held-out tasks count (backend.dataset.is_held_out, the rule the trainer uses to keep
them out of training); the human label is each task's latest annotation that was not
skipped. Systems:
  - fine-tuned: the project's serving version in MODEL_DIR (or --version NAME);
  - zero-shot: the LLM at LLM_BASE_URL and LLM_MODEL (answers come from the answer
    cache the backend fills, LLM_CACHE, when present: re-running costs no LLM calls).
Where held-out tasks carry annotations from several annotators, their agreement is
reported as the ceiling to compare the systems against: Cohen's kappa for two annotators,
Fleiss' kappa or Krippendorff's alpha for more.

Accuracy and coverage carry exact (Clopper-Pearson) intervals, F1 BCa bootstrap ones;
two systems are compared on the same posts (McNemar test and a paired bootstrap interval
of the difference), and "better" is claimed only where both agree.

The prediction score (the estimated probability that the pre-label shown is right, from
the project's calibrator, MODEL_DIR/projects/<id>/calibration.json, or the prior) is
measured on the same held-out posts: the pre-label the backend would show for each post
against the human label, with the Brier score, the expected calibration error (10
equal-width bins) and a reliability diagram (reliability.png); the prior is measured
beside a fitted calibrator. The calibrator is never fitted on held-out posts.

A label config of several questions: the report above is its first single-choice
question's (the one a model is trained for); each other question gets a section of its
own, the LLM's answers (from the same one request a post) against the held-out
annotations that answer it: per label precision, recall and F1 with intervals, and for a
multiple-choice question subset accuracy, Hamming loss, micro- and macro-F1.

Writes the terminal report to stdout, and report.md, report.json, one confusion-matrix
PNG per system and reliability.png to --out. Without any model version the LLM is
evaluated alone (with a note), unless --require-model.

Examples:
  takemeter evaluate --project 3 --out out/eval
  takemeter evaluate --from-file out/project-3.json --out out/eval-file
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from backend.config import Settings
from backend.domain import calibration
from backend.domain.dataset import (
    chosen_set,
    is_held_out,
    latest_annotation,
    latest_per_annotator,
    task_text,
)
from backend.domain.taxonomy import Form, Taxonomy
from backend.model.registry import Registry
from takemeter import common

if TYPE_CHECKING:  # scipy, openai: imported where used, after the cheap checks
    from backend.domain import policy
    from backend.llm.labeler import LLMOpinion

MODEL = "fine-tuned"
LLM = "zero-shot"


def annotator_labels(
    tasks: list[dict], taxonomy: Taxonomy, task_ids: set[int]
) -> list[dict[object, str]]:
    """{annotator: label} for every task two or more annotators labeled (latest annotation
    of each, skipped ones left out): who labeled what decides the agreement statistic."""
    labeled = []
    for task in tasks:
        if task.get("id") not in task_ids:
            continue
        by_annotator = {
            who: taxonomy.label_of(a.get("result") or [])
            for who, a in latest_per_annotator(task).items()
        }
        usable = {who: label for who, label in by_annotator.items() if label is not None}
        if len(usable) >= 2:
            labeled.append(usable)
    return labeled


class ModelAnswers(NamedTuple):
    version: str | None
    labels: list[str | None] | None  # None: no model to evaluate
    opinions: list[policy.ModelOpinion] | None  # None where the backend would not use it
    prefer_model: bool  # the backend shows the model's label (it beat the LLM)


def model_predictions(
    settings: Settings,
    project: int | None,
    version: str | None,
    taxonomy: Taxonomy,
    texts: list[str],
    notes: list[str],
    *,
    require: bool,
) -> ModelAnswers:
    """The fine-tuned version's labels and opinions, or none (with a note) when there is
    no model."""
    registry = Registry(settings.model_dir, project) if project is not None else None
    if registry is None:
        version = None
        reason = "the export names no single project, so no model registry applies"
    elif version is not None:
        if registry.meta(version) is None:
            found = ", ".join(m["version"] for m in registry.versions()) or "none"
            raise common.CliError(
                f"model version {version!r} is not in {registry.root} "
                f"(versions: {found}; check --version and MODEL_DIR)"
            )
    else:
        version = registry.serving()
        reason = (
            f"no model version for project {project} in MODEL_DIR "
            f"({settings.model_dir}): train one first"
        )
    if registry is None or version is None:
        if require:
            raise common.CliError(reason)
        notes.append(f"{reason}; evaluating the zero-shot LLM alone")
        return ModelAnswers(None, None, None, False)

    from backend.domain import policy
    from backend.model.classifier import Classifier  # torch: imported only when needed

    classifier = Classifier(registry.path(version))
    probabilities = classifier.predict_proba(texts)
    predicted = [classifier.labels[int(row.argmax())] for row in probabilities]
    if not set(classifier.labels) <= set(taxonomy.names):
        notes.append(
            f"model {version} was trained on labels {classifier.labels}, the config "
            f"has {list(taxonomy.names)}: its other labels count as no answer"
        )
    # The backend uses a model only when its labels are the config's, in order.
    opinions = (
        [policy.model_opinion(classifier.labels, row) for row in probabilities]
        if classifier.labels == list(taxonomy.names)
        else None
    )
    return ModelAnswers(
        version,
        [p if p in taxonomy.names else None for p in predicted],
        opinions,
        bool(classifier.meta.get("beats_llm", False)),
    )


def llm_predictions(
    settings: Settings, taxonomy: Taxonomy, texts: list[str], notes: list[str]
) -> list[LLMOpinion]:
    if not settings.llm_base_url:
        notes.append(
            f"LLM_BASE_URL is not set: asking the backend's embedded LLM at {settings.llm_endpoint}"
        )
    from backend.llm.labeler import from_settings

    labeler = from_settings(settings)
    try:
        cached = sum(o is not None for o in labeler.cached(taxonomy, texts))
        opinions = labeler.label_many(taxonomy, texts)
    finally:
        labeler.close()
    notes.append(
        f"zero-shot LLM {settings.llm_model}: {cached} of {len(texts)} answers from the cache"
    )
    errors = [o.error for o in opinions if o.label is None and o.error]
    if errors and len(errors) == len(texts):
        notes.append(
            f"the LLM answered none of the {len(texts)} posts (e.g. {errors[0]}); "
            f"check LLM_BASE_URL"
        )
    return opinions


def other_questions(
    settings: Settings,
    source: common.Source,
    *,
    seed: int,
    n_resamples: int,
    notes: list[str],
) -> list[dict]:
    """A section per question of the config but the first single-choice one: the LLM's
    answers against the held-out annotations that answer it."""
    form = Form.of(source.taxonomy)
    if not form.others:
        return []
    from backend.llm.labeler import from_settings
    from takemeter import evaluation

    sections = []
    labeler = from_settings(settings)
    try:
        for question in form.others:
            held: list[tuple[str, str | frozenset[str]]] = []
            for task in source.tasks:
                text = task_text(task, question.text_field)
                if text is None or not is_held_out(task, percent=settings.holdout_percent):
                    continue
                human: str | frozenset[str] | None
                if question.multiple:
                    human = chosen_set(task, question)
                else:
                    annotation = latest_annotation(task)
                    human = question.label_of(annotation["result"]) if annotation else None
                if human is not None:
                    held.append((text, human))
            if not held:
                notes.append(f"question {question.from_name!r}: no held-out annotation answers it")
                continue
            texts = [text for text, _ in held]
            truth = [human for _, human in held]  # sets for a multiple-choice question
            opinions = labeler.label_many(question, texts)
            version, model = question_model(settings, source.project, question, texts)
            # Sets for a multiple-choice question, labels for a single-choice one.
            llm: list[Any] = [o.chosen if question.multiple else o.label for o in opinions]
            systems = {LLM: llm} if model is None else {MODEL: model, LLM: llm}
            names = list(question.names)
            if question.multiple:
                sets = [h for h in truth if isinstance(h, frozenset)]
                report = evaluation.compare_sets(
                    sets, systems, labels=names, seed=seed, n_resamples=n_resamples
                )
            else:
                labels = [h for h in truth if isinstance(h, str)]
                report = evaluation.compare_systems(
                    labels, systems, labels=names, texts=texts, seed=seed, n_resamples=n_resamples
                )
            sections.append(
                {
                    "question": question.from_name,
                    "multiple": question.multiple,
                    "model_version": version,
                    "report": report,
                }
            )
    finally:
        labeler.close()
    return sections


def question_model(
    settings: Settings, project: int | None, question: Taxonomy, texts: list[str]
) -> tuple[str | None, list | None]:
    """Another question's serving version and its answers on `texts` (sets for a
    multiple-choice question); (None, None) without one."""
    if project is None:
        return None, None
    registry = Registry(settings.model_dir, project, question.from_name)
    version = registry.serving()
    if version is None:
        return None, None
    from backend.model.classifier import Classifier  # torch: imported only when needed

    classifier = Classifier(registry.path(version))
    if classifier.multiple:
        return version, classifier.predict_sets(texts)[0]
    probabilities = classifier.predict_proba(texts)
    return version, [classifier.labels[int(row.argmax())] for row in probabilities]


def score_calibration(
    settings: Settings,
    project: int | None,
    y_true: list[str],
    llm: list[LLMOpinion] | None,
    model: ModelAnswers,
) -> dict | None:
    """The served score against what happened: for each held-out post the pre-label the
    backend would show (policy.decide) and its P(right), from the project's calibrator and
    from the prior; None when no post gets a pre-label."""
    from backend.domain import policy

    registry = Registry(settings.model_dir, project) if project is not None else None
    calibrator = calibration.load(registry.read_calibration() if registry else None)
    calibrators = {"prior": calibration.PRIOR}
    if calibrator.kind == "fitted":
        calibrators = {"project's calibrator": calibrator, **calibrators}
    scores: dict[str, list[float]] = {name: [] for name in calibrators}
    right = []
    for i, human in enumerate(y_true):
        answer = llm[i] if llm is not None else None
        opinion = model.opinions[i] if model.opinions is not None else None
        label = answer.label if answer is not None else None
        confidence = answer.confidence if answer is not None else None
        decisions = {
            name: policy.decide(
                label, confidence, opinion, prefer_model=model.prefer_model, calibrator=c
            )
            for name, c in calibrators.items()
        }
        shown = next(iter(decisions.values()))
        if shown is None:
            continue
        right.append(shown.label == human)
        for name, decision in decisions.items():
            if decision is not None:  # the same opinions: every calibrator decides
                scores[name].append(decision.score)
    if not right:
        return None
    from takemeter import evaluation

    notes = [f"score source: {calibrator.describe()}"]
    if llm is None and model.opinions is not None:
        notes.append(
            "the LLM was left out: these are the model's pre-labels and scores "
            "alone, as the backend gives them where the LLM has no answer"
        )
    if registry and calibrator.kind == "fitted" and model.version not in (None, registry.serving()):
        notes.append(f"the calibrator was fitted for the serving version, not {model.version}")
    if len(right) < len(y_true):
        notes.append(f"{len(y_true) - len(right)} held-out posts get no pre-label and no score")
    if len(right) < evaluation.SMALL_N:
        notes.append(
            f"only {len(right)} scored posts: a bin of a few posts moves ECE by "
            f"several points; read the Brier scores side by side"
        )
    return {
        **evaluation.calibration_summary(scores, right),
        "notes": notes,
        "calibrator": calibrator.to_dict(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = common.parser(__doc__)
    common.add_source_arguments(parser)
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("out/evaluation"),
        help="folder for report.md, report.json and PNGs (default: %(default)s)",
    )
    parser.add_argument("--version", help="evaluate this model version instead of the serving one")
    parser.add_argument(
        "--require-model",
        action="store_true",
        help="fail when no model version exists (default: LLM alone)",
    )
    parser.add_argument("--no-llm", action="store_true", help="leave the LLM out")
    parser.add_argument(
        "--resamples",
        type=int,
        default=2000,
        help="bootstrap resamples for the F1 and paired-difference intervals "
        "(default: %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    common.add_json_argument(parser)
    args = parser.parse_args(argv)
    if args.resamples < 1:
        raise common.CliError("--resamples must be at least 1")

    settings = common.settings()
    source = common.load_source(args, settings)
    taxonomy, percent = source.taxonomy, settings.holdout_percent
    examples = common.held_out_examples(source, percent)
    texts = [e.text for e in examples]
    y_true = [e.label for e in examples]
    notes: list[str] = []

    systems: dict[str, list[str | None]] = {}
    model = model_predictions(
        settings, source.project, args.version, taxonomy, texts, notes, require=args.require_model
    )
    version = model.version
    if model.labels is not None:
        systems[MODEL] = model.labels
    llm = None if args.no_llm else llm_predictions(settings, taxonomy, texts, notes)
    if llm is not None:
        systems[LLM] = [o.label for o in llm]
    if not systems:
        raise common.CliError(
            "nothing to evaluate: no model version and no LLM (" + "; ".join(notes) + ")"
        )

    from takemeter import evaluation  # sklearn/scipy/matplotlib: after the cheap checks

    annotations = annotator_labels(source.tasks, taxonomy, {e.task_id for e in examples})
    report = evaluation.compare_systems(
        y_true,
        systems,
        labels=list(taxonomy.names),
        texts=texts,
        annotations=annotations or None,
        seed=args.seed,
        n_resamples=args.resamples,
    )
    report["meta"] = {
        "source": source.description,
        "project": source.project,
        "model_version": version,
        "llm_model": settings.llm_model if LLM in systems else None,
        "holdout_percent": percent,
        "notes": notes,
    }
    report["items"] = [
        {
            "task_id": e.task_id,
            "human": e.label,
            **{name: preds[i] for name, preds in systems.items()},
        }
        for i, e in enumerate(examples)
    ]
    report["calibration"] = score_calibration(settings, source.project, y_true, llm, model)
    questions = (
        []
        if args.no_llm
        else other_questions(
            settings, source, seed=args.seed, n_resamples=args.resamples, notes=notes
        )
    )
    report["questions"] = questions
    title = f"Held-out evaluation: {source.description}"
    args.out.mkdir(parents=True, exist_ok=True)
    markdown = evaluation.render_markdown(report, out_dir=args.out, title=title)
    sections = [evaluation.render_question(section) for section in questions]
    if sections:
        with markdown.open("a") as md:
            for lines in sections:
                md.write(f"\n## {lines[0]}\n\n" + "\n".join(lines[2:]) + "\n")
    evaluation.write_json(report, args.out / "report.json")

    described = {MODEL: f"model {version}", LLM: f"LLM {settings.llm_model}"}
    lines = [
        f"{title}; systems: " + ", ".join(f"{n} = {described[n]}" for n in systems),
        *(f"note: {note}" for note in notes),
        "",
        evaluation.render_terminal(report).rstrip("\n"),
        *("\n" + "\n".join(lines) for lines in sections),
        f"\nwrote {markdown}, {args.out / 'report.json'}, confusion-matrix PNGs"
        + (f" and {evaluation.RELIABILITY_PNG}" if report["calibration"] else ""),
    ]
    common.emit(json.loads((args.out / "report.json").read_text()), lines, as_json=args.json)
    return 0


if __name__ == "__main__":
    common.run(main)
