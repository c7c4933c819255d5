"""Suspect labels: annotated tasks whose human label the model and the LLM doubt, ranked.

Three opinions per annotated task (its latest annotation that was not skipped, training
and held-out tasks alike: a wrong held-out label makes the evaluation wrong too):
- human: the annotation's label;
- model: OUT-OF-FOLD probabilities from a fast stand-in for the fine-tuned classifier,
  logistic regression on the frozen, mean-pooled embeddings of the same encoder, with
  K-fold cross-validation (`cross_val_predict`), so no task is scored by a model that
  saw its label. The encoder is BASE_MODEL when that is a local folder, else the offline
  MiniLM-L6 (--encoder overrides). It is not the served fine-tuned model, whose
  probabilities on its own training posts would simply repeat the labels;
- LLM: the zero-shot LLM's answer and confidence, from the backend's answer cache
  (--llm ask asks for the missing ones, --llm off leaves it out).

Ranking (cleanlab's confident learning): the model's probabilities are mixed with the
LLM's answer, and cleanlab's `find_label_issues` flags the tasks whose label is unlikely
under the mix, ranked by `get_label_quality_scores` (self-confidence: the mixed
probability of the human label, lowest first). The LLM's share is 0.3 x its Cohen's kappa
against the human labels on this project (0 at chance level; where it gave no answer the
model's probabilities stand alone). On benchmarks/bench_label_issues.py (1,000 BBC News
posts, 5% flipped labels) a fixed share helped with a good (simulated) LLM and cost
average precision with the weak embedded one, the more so the larger the share; the
kappa-scaled share kept the gain and avoided the cost. --llm-weight sets a fixed share.

Output (the flagged tasks, or --limit N of them, or --all annotated tasks): a table,
--json, --out FILE.csv|.jsonl, and --tab: a "Suspect labels" Data Manager tab holding the
listed tasks in rank order. Label Studio 1.23 tabs filter and
sort on task fields only, so each flagged task gets its rank in task data
(`data.suspect_rank`, removed again from tasks no longer flagged) and the tab filters on
it and orders by it (numerically).

Examples:
  takemeter label-issues --project 3
  takemeter label-issues --project 3 --tab --out out/suspects.csv
  takemeter label-issues --from-file out/project-3.json --llm off --json
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
from label_studio_sdk import LabelStudio

from backend.config import Settings
from backend.domain.dataset import is_held_out, text_and_label
from backend.domain.taxonomy import Form, Taxonomy
from backend.llm.labeler import LLMOpinion
from takemeter import common, set_issues
from takemeter.set_issues import SetSuspect

SUSPECT_TAB = "Suspect labels"
RANK_FIELD = "suspect_rank"  # task data key holding a flagged task's rank (1 = first)
# The LLM's share of the mixed probabilities for an LLM that agrees with the annotators
# perfectly; the share used is this x its Cohen's kappa against them on this project, so a
# weak LLM barely moves the ranking. See benchmarks/results/label_issues.json.
LLM_WEIGHT = 0.3
UNKNOWN_CONFIDENCE = 0.5  # an LLM answer without logprobs counts this sure
FOLDS = 5
# Logistic regression's inverse regularisation (sklearn's default): on the benchmark,
# C = 10 or 100 let the folds learn the wrong labels and found fewer of them.
C = 1.0
STAND_IN = (
    "out-of-fold probabilities from logistic regression on frozen mean-pooled "
    "embeddings ({encoder}), {folds}-fold cross-validation: a fast stand-in for "
    "the fine-tuned classifier on the same encoder"
)
COLUMNS = [
    "rank",
    "task_id",
    "flagged",
    "quality",
    "split",
    "human_label",
    "model_label",
    "model_p_human",
    "model_p_label",
    "llm_label",
    "llm_confidence",
    "text",
]


SET_COLUMNS = [f.name for f in fields(SetSuspect)]


@dataclass(frozen=True)
class Annotated:
    task_id: int
    text: str
    label: str
    split: str  # "train" or "test" (the held-out rule)


@dataclass(frozen=True)
class Suspect:
    rank: int  # 1 = most suspect
    task_id: int
    flagged: bool  # cleanlab calls the label an issue
    quality: float  # label quality score under the mixed probabilities, lower = worse
    split: str
    human_label: str
    model_label: str  # the out-of-fold model's label
    model_p_human: float  # the out-of-fold model's probability of the human label
    model_p_label: float  # ... and of its own label
    llm_label: str | None
    llm_confidence: float | None
    text: str


# ------------------------------------------------------------------ data


def annotated_tasks(
    tasks: list[dict], taxonomy: Taxonomy, *, holdout_percent: int
) -> list[Annotated]:
    """Every task with a usable latest annotation, training and held-out alike."""
    found = []
    for task in tasks:
        labeled = text_and_label(task, taxonomy)
        if labeled is not None:
            split = "test" if is_held_out(task, percent=holdout_percent) else "train"
            found.append(Annotated(int(task["id"]), *labeled, split))
    return found


# ------------------------------------------------------------------ the model's opinion


def encoder_folder(settings: Settings, override: Path | None = None) -> tuple[Path, str]:
    """The encoder to embed with, and where it came from: --encoder, else BASE_MODEL when
    it is a local folder (the product's own encoder), else the offline MiniLM-L6."""
    if override is not None:
        if not Path(override).is_dir():
            raise common.CliError(f"--encoder {override} is not a folder")
        return Path(override), "--encoder"
    if settings.base_model and Path(settings.base_model).is_dir():
        return Path(settings.base_model), "BASE_MODEL"
    from takemeter.offline_models import minilm_path

    return Path(minilm_path()), "MiniLM-L6 (BASE_MODEL is not a local folder)"


def embed(
    texts: Sequence[str], folder: Path, *, batch_size: int = 32, max_length: int = 128
) -> np.ndarray:
    """Mean-pooled, L2-normalised last hidden states of a frozen encoder (the head's)."""
    from backend.model.embeddings import encoder  # torch: only when embedding

    return encoder(str(folder)).embed(list(texts), max_length=max_length, batch_size=batch_size)


def out_of_fold_probabilities(
    x: np.ndarray,
    labels: np.ndarray,
    n_classes: int,
    *,
    folds: int = FOLDS,
    seed: int = 0,
    c: float = C,
) -> np.ndarray:
    """P(class | post) for every post from a model fit without that post's fold, so the
    probabilities do not just repeat the labels they are checked against."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    counts = np.bincount(labels, minlength=n_classes)
    k = int(min(folds, max(2, counts.max())))
    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    with warnings.catch_warnings():  # a label with fewer posts than folds: sklearn warns
        warnings.simplefilter("ignore")
        probs = cross_val_predict(
            LogisticRegression(C=c, max_iter=2000), x, labels, cv=splitter, method="predict_proba"
        )
    return np.asarray(probs, dtype=float)


# ------------------------------------------------------------------ the ranking


def llm_probabilities(
    llm_labels: Sequence[int], confidences: Sequence[float | None], n_classes: int
) -> np.ndarray:
    """The LLM's answer as a distribution: its confidence on its label, the rest spread
    evenly; a row of NaN where it gave no answer (label index -1)."""
    probs = np.full((len(llm_labels), n_classes), np.nan)
    for i, (label, confidence) in enumerate(zip(llm_labels, confidences, strict=True)):
        if label < 0:
            continue
        sure = UNKNOWN_CONFIDENCE if confidence is None else float(confidence)
        sure = min(max(sure, 1.0 / n_classes), 1.0)  # never below uniform
        probs[i] = (1.0 - sure) / (n_classes - 1)
        probs[i, label] = sure
    return probs


def combined_probabilities(
    model_probs: np.ndarray, llm_probs: np.ndarray | None, weight: float = LLM_WEIGHT
) -> np.ndarray:
    """A weighted average of the two opinions (cleanlab's advice for ensembles). Where the
    LLM gave no answer the model's stand alone: mixing in a uniform row instead would
    lower those posts' confidence and make cleanlab's per-label thresholds miss them."""
    if llm_probs is None or weight <= 0:
        return model_probs
    mixed = (1.0 - weight) * model_probs + weight * llm_probs
    return np.where(np.isnan(llm_probs).any(axis=1, keepdims=True), model_probs, mixed)


def llm_agreement(human: Sequence[str], llm: Sequence[LLMOpinion | None]) -> float:
    """Cohen's kappa of the LLM's answers against the human labels, over the posts it
    answered: 0 for chance-level agreement (or fewer than two answers), 1 for perfect."""
    from sklearn.metrics import cohen_kappa_score

    pairs = [
        (h, o.label)
        for h, o in zip(human, llm, strict=True)
        if o is not None and o.label is not None
    ]
    if len(pairs) < 2:
        return 0.0
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        kappa = cohen_kappa_score([h for h, _ in pairs], [a for _, a in pairs])
    return float(kappa) if np.isfinite(kappa) else 0.0


def llm_share(kappa: float, max_weight: float = LLM_WEIGHT) -> float:
    """The LLM's weight: none at chance-level agreement with the annotators, `max_weight`
    at perfect agreement. The annotators are mostly right, so kappa measures the LLM."""
    return round(max_weight * max(0.0, kappa), 4)


@dataclass(frozen=True)
class Ranking:
    order: np.ndarray  # indexes, most suspect first: flagged ones, then the rest
    flagged: np.ndarray  # bool per post: cleanlab calls the label an issue
    quality: np.ndarray  # label quality score per post, lower = more likely wrong


def rank(labels: np.ndarray, probs: np.ndarray) -> Ranking:
    """cleanlab's confident learning: the flagged posts by label quality, then the rest."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    quality = get_label_quality_scores(labels, probs, method="self_confidence")
    with warnings.catch_warnings():  # tiny classes: cleanlab warns and still answers
        warnings.simplefilter("ignore")
        flagged = find_label_issues(labels, probs, filter_by="prune_by_noise_rate", n_jobs=1)
    order = np.lexsort((np.arange(len(labels)), quality, ~flagged))
    return Ranking(order, np.asarray(flagged, dtype=bool), np.asarray(quality, dtype=float))


def find_suspects(
    items: Sequence[Annotated],
    model_probs: np.ndarray,
    names: Sequence[str],
    llm: Sequence[LLMOpinion | None] | None,
    *,
    llm_weight: float | None = None,
) -> list[Suspect]:
    """Every item ranked, with the three opinions; `names` are the columns of
    `model_probs` (the labels in use). `llm_weight` None: llm_share of the LLM's kappa."""
    if llm is not None and llm_weight is None:
        llm_weight = llm_share(llm_agreement([i.label for i in items], llm))
    index = {name: i for i, name in enumerate(names)}
    labels = np.array([index[item.label] for item in items])
    llm_probs = None
    if llm is not None:
        llm_labels = [index.get(o.label, -1) if o is not None and o.label else -1 for o in llm]
        llm_conf = [o.confidence if o is not None else None for o in llm]
        llm_probs = llm_probabilities(llm_labels, llm_conf, len(names))
    ranking = rank(labels, combined_probabilities(model_probs, llm_probs, llm_weight or 0.0))
    suspects = []
    for position, i in enumerate(ranking.order, start=1):
        item, probs = items[i], model_probs[i]
        opinion = llm[i] if llm is not None else None
        suspects.append(
            Suspect(
                rank=position,
                task_id=item.task_id,
                flagged=bool(ranking.flagged[i]),
                quality=round(float(ranking.quality[i]), 4),
                split=item.split,
                human_label=item.label,
                model_label=names[int(probs.argmax())],
                model_p_human=round(float(probs[labels[i]]), 4),
                model_p_label=round(float(probs.max()), 4),
                llm_label=opinion.label if opinion is not None else None,
                llm_confidence=None
                if opinion is None or opinion.confidence is None
                else round(float(opinion.confidence), 4),
                text=item.text,
            )
        )
    return suspects


# ------------------------------------------------------------------ Label Studio tab


def suspect_tab() -> dict:
    """Tasks that carry a rank, by rank (as a number: "10" after "9")."""
    column = f"tasks:data.{RANK_FIELD}"
    return {
        "title": SUSPECT_TAB,
        "filters": {
            "conjunction": "and",
            "items": [
                {
                    "filter": f"filter:{column}",
                    "operator": "greater_or_equal",
                    "type": "Number",
                    "value": 1,
                },
            ],
        },
        "ordering": [column],
        "columnsDisplayType": {column: "Number"},
        "hiddenColumns": {"explore": [], "labeling": []},
    }


def write_ranks(client: LabelStudio, tasks: list[dict], ranks: dict[int, int]) -> int:
    """Put each listed task's rank in its data, remove stale ranks; returns the updates."""
    updated = 0
    for task in tasks:
        data = dict(task.get("data") or {})
        want = ranks.get(int(task["id"]))
        if data.get(RANK_FIELD) == want or (want is None and RANK_FIELD not in data):
            continue
        if want is None:
            data.pop(RANK_FIELD)
        else:
            data[RANK_FIELD] = want
        client.tasks.update(id=str(task["id"]), data=data)
        updated += 1
    return updated


def ensure_suspect_tab(client: LabelStudio, project: int) -> int:
    """Create the tab, or put its filter and ordering back; returns its id."""
    data = suspect_tab()
    for view in client.views.list(project=project):
        current = view.data or {}
        if current.get("title") == SUSPECT_TAB:
            if any(current.get(k) != v for k, v in data.items() if k != "hiddenColumns"):
                client.views.update(id=str(view.id), project=project, data={**current, **data})
            return int(view.id)
    return int(client.views.create(project=project, data=data).id)


# ------------------------------------------------------------------ output


def table(suspects: Sequence[Suspect], *, width: int = 60) -> list[str]:
    """A plain-text table: rank, task, the three opinions, the post's start."""
    lines = [f"{'#':>4} {'task':>7}  {'human':<14} {'model (p human)':<24} {'LLM (conf)':<22} post"]
    for s in suspects:
        model = f"{s.model_label} ({s.model_p_human:.2f})"
        llm = (
            "-"
            if s.llm_label is None
            else (
                f"{s.llm_label} ({'?' if s.llm_confidence is None else f'{s.llm_confidence:.2f}'})"
            )
        )
        text = " ".join(s.text.split())
        text = text if len(text) <= width else text[: width - 1] + "…"
        lines.append(
            f"{s.rank:>4} {s.task_id:>7}  {s.human_label:<14} {model:<24} {llm:<22} {text}"
        )
    return lines


def write_rows(path: Path, suspects: Sequence[Suspect] | Sequence[SetSuspect]) -> None:
    """.csv or .jsonl, atomically (in a CSV a set's lists are JSON)."""
    rows = [asdict(s) for s in suspects]
    columns = COLUMNS if not suspects or isinstance(suspects[0], Suspect) else SET_COLUMNS
    with common.atomic_open(path, "w", encoding="utf-8", newline="") as handle:
        if path.suffix == ".csv":
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows({k: _cell(row[k]) for k in columns} for row in rows)
        else:
            handle.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def _cell(value: object) -> object:
    if value is None:
        return ""
    return json.dumps(value, ensure_ascii=False) if isinstance(value, (list, dict)) else value


def llm_opinions(
    settings: Settings, taxonomy: Taxonomy, texts: list[str], mode: str
) -> list[LLMOpinion | None] | None:
    """From the answer cache (mode "cache"), asking for the missing ones ("ask"), or none."""
    if mode == "off":
        return None
    from backend.llm.labeler import from_settings

    labeler = from_settings(settings)
    try:
        if mode == "ask":
            print(f"asking the LLM ({settings.llm_model}) about uncached posts…", file=sys.stderr)
            answers: list[LLMOpinion | None] = list(labeler.label_many(taxonomy, texts))
        else:
            answers = labeler.cached(taxonomy, texts)
    finally:
        labeler.close()
    # An answer: a label, or a multiple-choice question's set (`chosen`).
    return [a if a is not None and (a.label or a.chosen) is not None else None for a in answers]


def main(argv: list[str] | None = None) -> int:
    parser = common.parser(__doc__)
    common.add_source_arguments(parser)
    parser.add_argument(
        "--llm",
        choices=("cache", "ask", "off"),
        default="cache",
        help="LLM opinions from the answer cache only, asking for the "
        "missing ones, or none (default: %(default)s)",
    )
    parser.add_argument(
        "--llm-weight",
        type=float,
        default=None,
        help=f"a fixed LLM share of the mixed probabilities (default: "
        f"{LLM_WEIGHT} x the LLM's Cohen's kappa against the human "
        f"labels; 0 = cleanlab on the model alone)",
    )
    parser.add_argument(
        "--encoder",
        type=Path,
        help="encoder folder (default: BASE_MODEL "
        "when it is a local folder, else the offline MiniLM-L6)",
    )
    parser.add_argument(
        "--folds", type=int, default=FOLDS, help="cross-validation folds (default: %(default)s)"
    )
    parser.add_argument(
        "--question",
        help="the <Choices> name of the question to triage, in a config of several "
        "(default: the first single-choice one); a multiple-choice one's sets are "
        "triaged a label at a time",
    )
    parser.add_argument("--limit", type=int, help="list at most this many suspects")
    parser.add_argument(
        "--all",
        action="store_true",
        help="list every annotated task, ranked, not only the flagged ones",
    )
    parser.add_argument("--out", type=Path, help="write the list to a .csv or .jsonl file")
    parser.add_argument(
        "--tab",
        action="store_true",
        help=f'create or update the "{SUSPECT_TAB}" Data Manager tab '
        f"(with --project): the listed tasks in rank order",
    )
    common.add_json_argument(parser)
    args = parser.parse_args(argv)
    if args.out is not None and args.out.suffix not in (".csv", ".jsonl"):
        raise common.CliError("--out must end in .csv or .jsonl")
    if args.tab and args.project is None:
        raise common.CliError("--tab needs --project (a live Label Studio project)")
    if args.llm_weight is not None and not 0 <= args.llm_weight <= 1:
        raise common.CliError("--llm-weight must be between 0 and 1")
    if args.folds < 2:
        raise common.CliError("--folds must be at least 2")

    settings = common.settings()
    source = common.load_source(args, settings)
    taxonomy = question_of(source.taxonomy, args.question)
    if taxonomy.multiple:
        return triage_sets(args, settings, source, taxonomy)
    items = annotated_tasks(source.tasks, taxonomy, holdout_percent=settings.holdout_percent)
    names = [n for n in taxonomy.names if any(i.label == n for i in items)]
    if len(items) < 2 * args.folds or len(names) < 2:
        raise common.CliError(
            f"{source.description} has {len(items)} annotated tasks with "
            f"{len(names)} distinct labels: need at least {2 * args.folds} "
            f"and 2 labels to cross-validate"
        )
    folder, origin = encoder_folder(settings, args.encoder)
    texts = [i.text for i in items]
    print(f"embedding {len(items)} annotated posts with {folder.name} ({origin})…", file=sys.stderr)
    index = {n: k for k, n in enumerate(names)}
    model_probs = out_of_fold_probabilities(
        embed(texts, folder),
        np.array([index[i.label] for i in items]),
        len(names),
        folds=args.folds,
    )
    llm = llm_opinions(settings, taxonomy, texts, args.llm)
    kappa = weight = None
    if llm is not None:
        kappa = round(llm_agreement([i.label for i in items], llm), 4)
        weight = llm_share(kappa) if args.llm_weight is None else args.llm_weight
    ranked = find_suspects(items, model_probs, names, llm, llm_weight=weight)
    listed = ranked if args.all else [s for s in ranked if s.flagged]
    listed = listed[: args.limit] if args.limit is not None else listed

    tab_id, updated = publish(args, source, listed)

    method = STAND_IN.format(encoder=f"{folder.name}, {origin}", folds=args.folds)
    llm_answered = None if llm is None else sum(o is not None for o in llm)
    summary = {
        "source": source.description,
        "project": source.project,
        "annotated": len(items),
        "flagged": int(sum(s.flagged for s in ranked)),
        "listed": len(listed),
        "labels": names,
        "model": method,
        "encoder": str(folder),
        "model_accuracy_vs_human": round(
            float(np.mean([s.model_label == s.human_label for s in ranked])), 4
        ),
        "llm": None
        if llm is None
        else {
            "model": settings.llm_model,
            "mode": args.llm,
            "answered": llm_answered,
            "kappa_vs_human": kappa,
            "weight": weight,
        },
        "tab": tab_id,
        "tasks_updated": updated,
        "out": None if args.out is None else str(args.out),
        "suspects": [asdict(s) for s in listed],
    }
    lines = [
        f"{source.description}: {summary['flagged']} of {len(items)} annotated tasks "
        f"flagged as suspect labels",
        f"model: {method}",
        "LLM: off"
        if llm is None
        else f"LLM: {settings.llm_model}, {llm_answered} of {len(items)} posts answered "
        f"({args.llm}); Cohen's kappa against the human labels {kappa}, weight in the "
        f"ranking {weight}",
    ]
    if llm_answered is not None and args.llm == "cache" and llm_answered < len(items):
        lines.append(
            f"  {len(items) - llm_answered} posts have no cached LLM answer "
            f"(--llm ask asks for them)"
        )
    lines += ["", *table(listed)] if listed else ["", "no suspect labels"]
    common.emit(summary, lines + published(args, listed, tab_id, updated), as_json=args.json)
    return 0


def question_of(first: Taxonomy, name: str | None) -> Taxonomy:
    """The question --question names (default: the config's first single-choice one)."""
    if name is None:
        return first
    form = Form.of(first)
    for question in form.questions:
        if question.from_name == name:
            return question
    names = ", ".join(q.from_name for q in form.questions)
    raise common.CliError(f"--question {name!r} is not a question of the config ({names})")


def publish(
    args: argparse.Namespace,
    source: common.Source,
    listed: Sequence[Suspect] | Sequence[SetSuspect],
) -> tuple[int | None, int | None]:
    """The tab (--tab) and the file (--out) of the listed suspects."""
    tab_id = updated = None
    if args.tab:
        assert source.client is not None and source.project is not None
        updated = write_ranks(source.client, source.tasks, {s.task_id: s.rank for s in listed})
        tab_id = ensure_suspect_tab(source.client, source.project)
    if args.out is not None:
        write_rows(args.out, listed)
    return tab_id, updated


def published(
    args: argparse.Namespace, listed: Sequence[object], tab_id: int | None, updated: int | None
) -> list[str]:
    lines = []
    if tab_id is not None:
        lines.append(
            f'\ntab "{SUSPECT_TAB}" (view {tab_id}): {len(listed)} tasks in rank '
            f"order; {updated} tasks' data.{RANK_FIELD} updated"
        )
    if args.out is not None:
        lines.append(f"wrote {len(listed)} rows to {args.out}")
    return lines


def triage_sets(
    args: argparse.Namespace, settings: Settings, source: common.Source, question: Taxonomy
) -> int:
    """label-issues for a multiple-choice question (takemeter.set_issues)."""
    items = set_issues.annotated_sets(
        source.tasks, question, holdout_percent=settings.holdout_percent
    )
    if len(items) < 2 * args.folds:
        raise common.CliError(
            f"{source.description} has {len(items)} tasks annotated for {question.from_name!r}: "
            f"need at least {2 * args.folds} to cross-validate"
        )
    names = list(question.names)
    folder, origin = encoder_folder(settings, args.encoder)
    texts = [i.text for i in items]
    print(f"embedding {len(items)} annotated posts with {folder.name} ({origin})…", file=sys.stderr)
    y = np.array([[name in i.labels for name in names] for i in items], dtype=int)
    probs = set_issues.out_of_fold_set_probabilities(embed(texts, folder), y, folds=args.folds)
    found = llm_opinions(settings, question, texts, args.llm)
    llm = None if found is None else [o.chosen if o is not None else None for o in found]
    ranked = set_issues.find_set_suspects(items, probs, names, llm)
    listed = ranked if args.all else [s for s in ranked if s.flagged]
    listed = listed[: args.limit] if args.limit is not None else listed
    tab_id, updated = publish(args, source, listed)
    flagged = sum(s.flagged for s in ranked)
    doubted = {n: sum(n in s.doubted for s in ranked) for n in names}
    summary = {
        "source": source.description,
        "project": source.project,
        "question": question.from_name,
        "annotated": len(items),
        "flagged": flagged,
        "listed": len(listed),
        "labels": names,
        "model": STAND_IN.format(encoder=f"{folder.name}, {origin}", folds=args.folds)
        + "; one logistic regression a label",
        "doubted_per_label": doubted,
        "tab": tab_id,
        "out": None if args.out is None else str(args.out),
        "suspects": [asdict(s) for s in listed],
    }
    lines = [
        f"{source.description}, question {question.from_name!r}: {flagged} of {len(items)} "
        f"annotated sets flagged (a label in doubt: "
        + ", ".join(f"{n} {k}" for n, k in doubted.items())
        + ")",
        "",
        *(set_issues.table(listed) if listed else ["no suspect labels"]),
    ]
    common.emit(summary, lines + published(args, listed, tab_id, updated), as_json=args.json)
    return 0


if __name__ == "__main__":
    common.run(main)
