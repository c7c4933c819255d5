"""Learning curve: held-out accuracy of models trained on growing shares of the
training annotations.

For each share (default 25/50/75/100%) a model is fine-tuned (backend.trainer.fine_tune,
BASE_MODEL and the TRAIN_* settings, or --base-model / --epochs) on that share of the
training side's annotations and scored on the held-out side (backend.domain.dataset's rule).
Shares are drawn per label with a fixed seed and are nested: each share holds the
smaller ones, so the curve shows the effect of more data, not of a different sample.

Accuracy carries its exact (Clopper-Pearson) 95% interval: a bootstrap one is too narrow
on a small held-out set. Writes a table to stdout, and learning_curve.json and
learning_curve.png to --out.

Examples:
  takemeter learning-curve --project 3 --out out/curve
  takemeter learning-curve --from-file out/project-3.json --shares 0.5,1.0
"""

from __future__ import annotations

import math
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm import tqdm

from backend.domain.dataset import Example, labeled_examples
from takemeter import common as cli

if TYPE_CHECKING:
    from backend.model.trainer import TrainConfig


def parse_shares(text: str) -> list[float]:
    try:
        shares = sorted({float(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise cli.CliError(f"--shares must be comma-separated numbers, got {text!r}") from None
    if not shares or not all(0 < s <= 1 for s in shares):
        raise cli.CliError(f"--shares must lie in (0, 1], got {text!r}")
    return shares


def nested_subsets(examples: list[Example], shares: list[float], seed: int) -> list[list[Example]]:
    """Per label, a seeded shuffle cut at each share: label proportions stay those of
    the full set, and every subset contains the smaller ones."""
    rng = random.Random(seed)
    by_label: dict[str, list[Example]] = {}
    for example in sorted(examples, key=lambda e: e.task_id):
        by_label.setdefault(example.label, []).append(example)
    for group in by_label.values():
        rng.shuffle(group)
    return [
        [e for group in by_label.values() for e in group[: max(1, math.ceil(s * len(group)))]]
        for s in shares
    ]


def train_and_score(
    subset: list[Example], test: list[Example], labels: list[str], config: TrainConfig, bar: tqdm
) -> dict:
    """Fine-tune on `subset` in a temporary folder; score it on the held-out examples."""
    from backend.model.classifier import Classifier
    from backend.model.registry import write_meta
    from backend.model.trainer import fine_tune
    from takemeter import evaluation

    def progress(event: dict) -> None:
        bar.set_postfix(n=len(subset), epoch=event.get("epoch"), loss=event.get("loss"))

    with tempfile.TemporaryDirectory(prefix="takemeter-curve-") as folder:
        result = fine_tune(
            [e.text for e in subset],
            [e.label for e in subset],
            label_names=labels,
            config=config,
            out_dir=Path(folder),
            keys=[str(e.task_id) for e in subset],
            progress=progress,
        )
        # Classifier reads a version's metadata, as for a registry version.
        write_meta(
            Path(folder),
            {"version": f"curve-{len(subset)}", "labels": labels, "max_length": config.max_length},
        )
        probabilities = Classifier(Path(folder)).predict_proba([e.text for e in test])
    truth = [e.label for e in test]
    predicted = [labels[int(row.argmax())] for row in probabilities]
    interval = evaluation.accuracy_ci(truth, predicted)
    return {
        "n_train": len(subset),
        "accuracy": evaluation.accuracy(truth, predicted),
        "accuracy_ci": [interval.low, interval.high],
        "accuracy_ci_method": interval.method,
        "macro_f1": evaluation.macro_f1(truth, predicted, labels=labels),
        "train_seconds": result.metrics["train_seconds"],
        "epochs_run": result.metrics["epochs_run"],
    }


def plot(points: list[dict], n_test: int, path: Path, title: str) -> None:
    # Figure + Agg canvas: no pyplot global state, no display needed.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(6.5, 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    x = [p["n_train"] for p in points]
    accuracy = [p["accuracy"] for p in points]
    # Error bars rather than a band: they show with a single share, too.
    below = [a - p["accuracy_ci"][0] for a, p in zip(accuracy, points, strict=True)]
    above = [p["accuracy_ci"][1] - a for a, p in zip(accuracy, points, strict=True)]
    ax.errorbar(
        x,
        accuracy,
        yerr=[below, above],
        fmt="o-",
        capsize=4,
        label="accuracy (95% Clopper-Pearson interval)",
    )
    ax.plot(x, [p["macro_f1"] for p in points], "s--", label="macro-F1")
    ax.set_xlabel("training annotations")
    ax.set_ylabel(f"held-out score (n = {n_test})")
    ax.set_ylim(0, 1)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    with cli.atomic_open(path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = cli.parser(__doc__)
    cli.add_source_arguments(parser)
    parser.add_argument(
        "--shares",
        default="0.25,0.5,0.75,1.0",
        help="comma-separated shares of the training annotations (default: %(default)s)",
    )
    parser.add_argument("--base-model", help="model to fine-tune (default: BASE_MODEL)")
    parser.add_argument("--epochs", type=int, help="epochs per model (default: TRAIN_EPOCHS)")
    parser.add_argument("--seed", type=int, help="sampling and training seed (default: TRAIN_SEED)")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("out/learning_curve"),
        help="folder for learning_curve.json and .png (default: %(default)s)",
    )
    cli.add_json_argument(parser)
    args = parser.parse_args(argv)

    shares = parse_shares(args.shares)
    settings = cli.settings()
    if args.epochs is not None and args.epochs < 1:
        raise cli.CliError("--epochs must be at least 1")
    source = cli.load_source(args, settings)
    percent = settings.holdout_percent
    labels = list(source.taxonomy.names)
    train = labeled_examples(source.tasks, source.taxonomy, holdout_percent=percent)
    test = cli.held_out_examples(source, percent)
    if not train:
        raise cli.CliError(f"no training annotations in {source.description}")

    from backend.model.trainer import TrainConfig  # torch: after the cheap checks

    seed = settings.train_seed if args.seed is None else args.seed
    config = TrainConfig(
        base_model=args.base_model or settings.base_model,
        epochs=args.epochs or settings.train_epochs,
        min_steps=settings.train_min_steps,
        learning_rate=settings.train_learning_rate,
        batch_size=settings.train_batch_size,
        max_length=settings.train_max_length,
        seed=seed,
        judge_share=0.0,
    )  # the held-out set judges here, not promotion
    points = []
    subsets = nested_subsets(train, shares, seed)
    bar = tqdm(
        list(zip(shares, subsets, strict=True)),
        desc="learning curve",
        unit="model",
        file=sys.stderr,
    )
    for share, subset in bar:
        points.append({"share": share, **train_and_score(subset, test, labels, config, bar)})
    bar.close()

    args.out.mkdir(parents=True, exist_ok=True)
    png = args.out / "learning_curve.png"
    plot(points, len(test), png, f"Learning curve: {source.description}")
    summary = {
        "source": source.description,
        "project": source.project,
        "base_model": config.base_model,
        "epochs": config.epochs,
        "seed": seed,
        "holdout_percent": percent,
        "n_train_available": len(train),
        "n_test": len(test),
        "points": points,
        "png": str(png),
        "created": time.time(),
    }
    cli.write_json_atomic(args.out / "learning_curve.json", summary)

    lines = [
        f"{source.description}: {len(test)} held-out posts, base model "
        f"{config.base_model}, {config.epochs} epochs, seed {seed}",
        "",
        f"{'share':>6} {'n_train':>8} {'accuracy [95% exact CI]':>24} {'macro-F1':>9} "
        f"{'train s':>8}",
    ]
    for p in points:
        ci = f"{p['accuracy']:.3f} [{p['accuracy_ci'][0]:.3f}, {p['accuracy_ci'][1]:.3f}]"
        lines.append(
            f"{p['share']:>6.0%} {p['n_train']:>8} {ci:>24} {p['macro_f1']:>9.3f} "
            f"{p['train_seconds']:>8.1f}"
        )
    lines += ["", f"wrote {args.out / 'learning_curve.json'} and {png}"]
    cli.emit(summary, lines, as_json=args.json)
    return 0


if __name__ == "__main__":
    cli.run(main)
