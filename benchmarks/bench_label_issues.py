"""Label issues: how many deliberately wrong labels `takemeter label-issues` finds.

Method
------
Data: 1,000 BBC News posts (`takemeter.offline_data.bbc_posts`, headline and 1-3
sentences of distinct stories, --seed-data) with their true topics as the "human" labels.
--flip-share of them (5%: 50) get a wrong label, drawn uniformly among the other four
topics with --seed. The flips are the only label errors we know of: BBC's own topics are
taken as correct, so a "false positive" may now and then be a story whose topic is
debatable, and precision errs low.

Opinions, exactly as the command computes them (takemeter.label_issues):
- model: out-of-fold probabilities of logistic regression on frozen, mean-pooled MiniLM-L6
  embeddings (--folds-fold cross-validation, each post scored by a model that never saw
  its label); a CPU stand-in for the product's fine-tuned classifier on the same encoder;
- LLM: the product's ZeroShotLabeler against the embedded llama.cpp server with
  SmolLM2-135M-Instruct (started with takemeter.stack.start_local_llm only when the answer
  cache misses; --llm-cache keeps the answers, so a re-run asks nothing). It is a toy
  model: its figures show a weak LLM, not a good one. --no-llm skips it.

Rankings compared, each over all 1,000 posts (most suspect first):
- cleanlab alone: `cleanlab.rank.get_label_quality_scores` (self-confidence) on the
  model's probabilities, cleanlab-flagged posts (`find_label_issues`) first;
- LLM alone: posts where the LLM's answer differs from the label, most confident first;
- combined (what the command does): the same on the model's probabilities mixed with the
  LLM's answer (label_issues.combined_probabilities, --llm-weight); also swept over weights
  to show the choice.
Recall at k = 2 x flips (targets: >= 80%) and precision at k = flips (>= 50%), plus the
size, precision and recall of cleanlab's own flagged set.

Writes benchmarks/results/label_issues.json (with the git revision and the command line).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from backend.domain.taxonomy import Taxonomy, parse_taxonomy
from backend.llm.cache import AnswerCache
from backend.llm.labeler import LLMOpinion, ZeroShotLabeler
from backend.llm.local_server import MODEL_NAME
from takemeter import label_issues, stack
from takemeter.offline_data import bbc_label_config, bbc_posts
from takemeter.offline_models import minilm_path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / ".stack" / "bench-label-issues"

log = logging.getLogger("bench_label_issues")


def llm_opinions(taxonomy: Taxonomy, texts: list[str], *, cache: Path, parallel: int = 4,
                 chunk: int = 32) -> list[LLMOpinion]:
    """One opinion per text from the cache; the local LLM is started only for misses."""
    port = stack.free_port()
    labeler = ZeroShotLabeler(base_url=f"http://127.0.0.1:{port}/v1", api_key="none",
                              model=MODEL_NAME, cache=AnswerCache(cache),
                              concurrency=parallel, timeout=300.0, max_retries=1)
    process = None
    try:
        missing = sum(o is None for o in labeler.cached(taxonomy, texts))
        if missing:
            log.warning("starting the local %s for %d uncached posts", MODEL_NAME, missing)
            process = stack.start_local_llm(port=port, log_path=cache.with_suffix(".log"),
                                            parallel=parallel)
        opinions: list[LLMOpinion] = []
        with tqdm(total=len(texts), desc=f"LLM ({missing} uncached)", unit="post",
                  file=sys.stderr) as bar:
            for start in range(0, len(texts), chunk):
                batch = texts[start:start + chunk]
                opinions += labeler.label_many(taxonomy, batch)
                bar.update(len(batch))
        return opinions
    finally:
        labeler.close()
        stack.stop(process)
