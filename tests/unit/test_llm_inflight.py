"""A post already being asked is not asked twice: the second request waits for the first.
Uses a real HTTP endpoint that answers slowly (tests/doubles/llm_endpoint.py), not a mock
of our code."""

from __future__ import annotations

import threading

from backend.domain.taxonomy import parse_taxonomy
from backend.llm.cache import AnswerCache
from backend.llm.labeler import ZeroShotLabeler
from tests.doubles.llm_endpoint import MisbehavingLLM


def test_overlapping_requests_share_the_llm_call(tmp_path, label_config):
    taxonomy = parse_taxonomy(label_config)
    with MisbehavingLLM("slow", delay=1.0) as double:
        labeler = ZeroShotLabeler(
            base_url=double.url,
            api_key="x",
            model="double",
            cache=AnswerCache(tmp_path / "cache.sqlite"),
        )
        texts = [f"post {i}" for i in range(4)]
        results = []
        threads = [
            threading.Thread(target=lambda: results.append(labeler.label_many(taxonomy, texts)))
            for _ in range(3)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert double.requests == 4  # three overlapping batches, one call per post
        assert len(results) == 3
        # The double answers "banana": no pre-label, and the answer is cached as such.
        assert all(o.label is None for batch in results for o in batch)
        again = labeler.label_many(taxonomy, texts)[0]
        # From the cache it reads as it did fresh: off the list, not an error to retry.
        assert again.cached and again.off_list
        assert all(o.off_list for batch in results for o in batch)
        assert double.requests == 4


def test_texts_cut_to_the_same_prompt_share_one_request(tmp_path, label_config):
    """Long posts that differ only in the middle LLM_MAX_CHARS cuts out make the same
    prompt: one request, and every one of them gets its answer."""
    taxonomy = parse_taxonomy(label_config)
    with MisbehavingLLM("garbage") as double:
        labeler = ZeroShotLabeler(
            base_url=double.url,
            api_key="x",
            model="double",
            cache=AnswerCache(tmp_path / "cache.sqlite"),
            max_chars=20,
        )
        try:
            texts = [
                "my numbers went up a lot this week, the end.",
                "my numbers went down a bit this week, the end.",
            ]
            opinions = labeler.label_many(taxonomy, texts)
        finally:
            labeler.close()
        assert double.requests == 1
        assert [o.error for o in opinions] == ["answer outside the label set"] * 2
