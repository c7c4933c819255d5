"""LLM answer formats: the JSON answer vs one letter per label, each with and without a
correction for the model's prior over the labels, side by side on the same posts.

Method
------
Data: --bbc-posts BBC News posts (`takemeter.offline_data`: headline and 1-3 sentences of
distinct stories), stratified (the same number per topic, so always answering one topic
scores 20%), with BBC's topics as the gold labels; and the demo posts
(data/demo_posts.jsonl, written for this project, gold labels by its decision rules).

LLM: the embedded llama.cpp server with SmolLM2-135M-Instruct, started here
(`takemeter.stack.start_local_llm`), asked through the product's ZeroShotLabeler exactly as
the backend asks it, one variant after the other, each with a fresh answer cache (nothing
is reused between variants or runs):
- json: {"label": "<name>"} under a JSON schema, confidence by the chain rule (the current
  pipeline);
- json+prior: the same answer, every label's share from its tokens divided by the model's
  prior (its mean distribution for the content-free posts "N/A", "" and "[MASK]",
  asked once per variant and taxonomy, its cost included), the likeliest label kept;
- code: one letter per label, max_tokens=1, every label's share read from the letter
  token's top_logprobs, the likeliest letter kept;
- code+prior: the letter shares divided by the prior.

Reported per data set and variant: accuracy (no answer counts as wrong), macro-F1 over the
gold labels, the share of posts given the most frequent predicted label, the share
answered, mean confidence, seconds per post (wall time of the whole set at --parallel
requests in flight, divided by the posts; the prior's calls included), LLM calls and
tokens; beside them the majority-class baseline (always the most frequent gold label).
The variants take turns, --chunk posts each (the first of each round rotates), so the load
of a shared machine falls on all of them alike; the mean load average is recorded.

Writes benchmarks/results/llm_answer.json (with the git revision and the command line).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import sys
import time
from collections import Counter
from pathlib import Path

from sklearn.metrics import f1_score

from backend.domain.taxonomy import Taxonomy, parse_taxonomy
from backend.llm.cache import AnswerCache
from backend.llm.labeler import ZeroShotLabeler
from backend.llm.local_server import MODEL_NAME
from takemeter import stack
from takemeter.offline_data import bbc_label_config, bbc_stories, short_text
from takemeter.provenance import write_result

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / ".stack" / "bench-llm-answer"
# In this order the two variants that send the same prompts never run one after the other,
# so neither finds the other's last prompts still in the server's slots.
VARIANTS = {
    "json": ("json", False),
    "code": ("code", False),
    "json+prior": ("json", True),
    "code+prior": ("code", True),
}

log = logging.getLogger("bench_llm_answer")


def stratified_bbc(n: int, seed: int) -> tuple[list[str], list[str]]:
    """n // 5 distinct stories per topic (headline and 1-3 sentences), shuffled."""
    by_topic: dict[str, list] = {}
    for story in bbc_stories():
        by_topic.setdefault(story.topic, []).append(story)
    rng = random.Random(seed)
    per_topic = n // len(by_topic)
    picked = [s for topic in sorted(by_topic) for s in rng.sample(by_topic[topic], per_topic)]
    rng.shuffle(picked)
    return [short_text(s, rng.randint(1, 3)) for s in picked], [s.topic for s in picked]


def demo_posts(path: Path) -> tuple[list[str], list[str]]:
    rows = [json.loads(line) for line in path.open(encoding="utf-8") if line.strip()]
    rows = [r for r in rows if isinstance(r.get("text"), str) and r.get("label")]
    return [r["text"] for r in rows], [r["label"] for r in rows]


def scores(predicted: list[str | None], gold: list[str], names: tuple[str, ...]) -> dict:
    n = len(gold)
    answered = [p for p in predicted if p is not None]
    top, top_n = Counter(answered).most_common(1)[0] if answered else (None, 0)
    shown = [p if p is not None else "<none>" for p in predicted]
    return {
        "accuracy": round(sum(p == g for p, g in zip(predicted, gold, strict=True)) / n, 4),
        "macro_f1": round(
            float(f1_score(gold, shown, labels=list(names), average="macro", zero_division=0)), 4
        ),
        "top_label": top,
        "top_label_share": round(top_n / n, 4),
        "answered": round(len(answered) / n, 4),
        "predicted_share": {name: round(predicted.count(name) / n, 4) for name in names},
    }


def majority(gold: list[str], names: tuple[str, ...]) -> dict:
    label, count = Counter(gold).most_common(1)[0]
    return {
        "label": label,
        "accuracy": round(count / len(gold), 4),
        "macro_f1": round(
            float(
                f1_score(
                    gold, [label] * len(gold), labels=list(names), average="macro", zero_division=0
                )
            ),
            4,
        ),
    }


def run_set(
    taxonomy: Taxonomy,
    texts: list[str],
    gold: list[str],
    variants: list[str],
    *,
    base_url: str,
    parallel: int,
    chunk: int,
    work: Path,
    tag: str,
) -> dict:
    """Every variant on the same posts, --chunk posts at a time in turn (the first variant
    of each round rotates), so a shared machine's load falls on all of them alike."""
    labelers, caches = {}, {}
    for name in variants:
        answer_format, calibrate = VARIANTS[name]
        path = work / f"{tag}_{name}.sqlite"
        path.unlink(missing_ok=True)  # nothing reused: every answer is asked in this run
        caches[name] = AnswerCache(path)
        labelers[name] = ZeroShotLabeler(
            base_url=base_url,
            api_key="none",
            model=MODEL_NAME,
            cache=caches[name],
            concurrency=parallel,
            timeout=600.0,
            max_retries=1,
            answer_format=answer_format,
            calibrate=calibrate,
        )
    opinions: dict[str, list] = {name: [] for name in variants}
    seconds = dict.fromkeys(variants, 0.0)
    loads: dict[str, list[float]] = {name: [] for name in variants}
    try:
        for round_, start in enumerate(range(0, len(texts), chunk)):
            batch = texts[start : start + chunk]
            shift = round_ % len(variants)
            for name in variants[shift:] + variants[:shift]:
                loads[name].append(os.getloadavg()[0])
                began = time.monotonic()
                opinions[name] += labelers[name].label_many(taxonomy, batch)
                seconds[name] += time.monotonic() - began
            done = min(start + chunk, len(texts))
            print(
                f"  {tag}: {done}/{len(texts)} posts, s/post so far "
                + ", ".join(f"{n} {seconds[n] / done:.2f}" for n in variants),
                file=sys.stderr,
                flush=True,
            )
    finally:
        for labeler in labelers.values():
            labeler.close()

    figures = {}
    for name in variants:
        predicted = [o.label for o in opinions[name]]
        known = [o.confidence for o in opinions[name] if o.confidence is not None]
        usage = caches[name].usage()
        prior = labelers[name].known_prior(taxonomy)
        figures[name] = {
            **scores(predicted, gold, taxonomy.names),
            "mean_confidence": round(sum(known) / len(known), 4) if known else None,
            "seconds_per_post": round(seconds[name] / len(texts), 3),
            "seconds": round(seconds[name], 1),
            "llm_calls": usage.get("llm_calls", 0),  # the prior's calls included
            "llm_failures": usage.get("llm_failures", 0),
            "tokens_per_post": round(
                (usage.get("prompt_tokens", 0) + usage.get("completion_tokens", 0)) / len(texts), 1
            ),
            "errors": dict(Counter(o.error for o in opinions[name] if o.error).most_common(3)),
            "prior": None
            if prior is None
            else {n: round(p, 4) for n, p in zip(taxonomy.names, prior, strict=True)},
            "mean_load_average": round(sum(loads[name]) / len(loads[name]), 2),
        }
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument(
        "--bbc-posts",
        type=int,
        default=200,
        help="BBC News posts, the same number per topic (0: none)",
    )
    parser.add_argument("--seed", type=int, default=0, help="which BBC posts")
    parser.add_argument(
        "--demo",
        type=Path,
        default=ROOT / "data" / "demo_posts.jsonl",
        help="JSONL posts with gold labels ('' for none)",
    )
    parser.add_argument(
        "--demo-posts", type=int, default=0, help="the first N demo posts only (0: all)"
    )
    parser.add_argument(
        "--variants", default=",".join(VARIANTS), help=f"comma-separated, of {', '.join(VARIANTS)}"
    )
    parser.add_argument(
        "--parallel", type=int, default=4, help="server slots and requests in flight"
    )
    parser.add_argument(
        "--chunk", type=int, default=20, help="posts per variant per round (variants take turns)"
    )
    parser.add_argument("--work", type=Path, default=WORK, help="answer caches and the log")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results" / "llm_answer.json"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {list(VARIANTS)}")

    sets: dict[str, tuple[Taxonomy, list[str], list[str], str]] = {}
    if args.bbc_posts:
        texts, gold = stratified_bbc(args.bbc_posts, args.seed)
        sets["bbc"] = (
            parse_taxonomy(bbc_label_config()),
            texts,
            gold,
            f"{len(texts)} BBC News posts, stratified by topic (seed {args.seed})",
        )
    if str(args.demo) not in ("", "."):
        texts, gold = demo_posts(args.demo)
        if args.demo_posts:
            texts, gold = texts[: args.demo_posts], gold[: args.demo_posts]
        sets["demo"] = (
            parse_taxonomy((ROOT / "label_config.xml").read_text()),
            texts,
            gold,
            f"{len(texts)} demo posts ({args.demo.name}, gold labels)",
        )

    args.work.mkdir(parents=True, exist_ok=True)
    port = stack.free_port()
    started = time.monotonic()
    server = stack.start_local_llm(
        port=port, log_path=args.work / "llm.log", parallel=args.parallel
    )
    results: dict[str, dict] = {}
    try:
        for set_name, (taxonomy, texts, gold, description) in sets.items():
            results[set_name] = {
                "data": description,
                "labels": list(taxonomy.names),
                "gold_share": {n: round(gold.count(n) / len(gold), 4) for n in taxonomy.names},
                "majority_baseline": majority(gold, taxonomy.names),
                "variants": {},
            }
            print(
                f"{set_name}: {len(variants)} variants on {len(texts)} posts ...",
                file=sys.stderr,
                flush=True,
            )
            results[set_name]["variants"] = run_set(
                taxonomy,
                texts,
                gold,
                variants,
                base_url=f"http://127.0.0.1:{port}/v1",
                parallel=args.parallel,
                chunk=args.chunk,
                work=args.work,
                tag=set_name,
            )
    finally:
        stack.stop(server)

    for block in results.values():
        base = block["majority_baseline"]
        print(
            f"\n{block['data']}; majority baseline ({base['label']}): accuracy "
            f"{base['accuracy']:.3f}, macro-F1 {base['macro_f1']:.3f}"
        )
        print(
            f"{'variant':<12} {'accuracy':>9} {'macro-F1':>9} {'top label':>28} "
            f"{'answered':>9} {'mean conf':>10} {'s/post':>7}"
        )
        for name, f in block["variants"].items():
            top = f"{f['top_label']} {f['top_label_share']:.0%}"
            conf = "-" if f["mean_confidence"] is None else f"{f['mean_confidence']:.3f}"
            print(
                f"{name:<12} {f['accuracy']:>9.3f} {f['macro_f1']:>9.3f} {top:>28} "
                f"{f['answered']:>9.0%} {conf:>10} {f['seconds_per_post']:>7.2f}"
            )
        best = max(
            block["variants"],
            key=lambda v: (block["variants"][v]["macro_f1"], block["variants"][v]["accuracy"]),
        )
        block["best_by_macro_f1"] = best

    result = {
        "benchmark": "llm_answer",
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "model": MODEL_NAME,
        "results": results,
        "seconds": round(time.monotonic() - started, 1),
    }
    write_result(args.out, result)
    print(f"\nwrote {args.out} ({result['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
