"""Zero-shot labels from any OpenAI-compatible chat endpoint, cached on disk.

Bounded concurrency (one pool per process), the openai client's retries with backoff on
429, 5xx and timeouts, a per-request timeout, a circuit breaker that stops calling a dead
endpoint for a while, a bound on the posts waiting per project, and one summary log line
per batch when the endpoint fails instead of a stack trace per post.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

import openai

from backend.config import Settings
from backend.domain.taxonomy import Taxonomy
from backend.llm import prompt
from backend.llm.breaker import CircuitBreaker
from backend.llm.cache import AnswerCache, CachedAnswer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LLMOpinion:
    label: str | None  # None: no usable answer (failure, timeout, or an answer off the list)
    confidence: float | None  # None: unknown (the endpoint returned no logprobs)
    cached: bool = False
    error: str | None = None
    tokens: int = 0  # prompt + completion tokens this answer cost (0 from the cache)


class ZeroShotLabeler:
    def __init__(self, *, base_url: str, api_key: str, model: str, cache: AnswerCache,
                 concurrency: int = 8, timeout: float = 30.0, max_retries: int = 2,
                 max_chars: int = 4000, max_queued: int = 5000,
                 breaker: CircuitBreaker | None = None) -> None:
        self.model = model
        self.cache = cache
        self.max_chars = max_chars
        self._client = openai.OpenAI(base_url=base_url, api_key=api_key, timeout=timeout,
                                     max_retries=max_retries)
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="llm")
        self._schema_supported = True  # turned off once if the endpoint rejects JSON schema
        self._logprobs_supported = True
        self._lock = threading.RLock()  # a done callback may run inside _submit
        self._inflight: dict[str, Future] = {}
        self.max_queued = max_queued
        self._queued: Counter[object] = Counter()  # posts waiting or asked, per group
        self.breaker = breaker or CircuitBreaker(errors=5, cooldown=30.0)

    def key(self, taxonomy: Taxonomy, text: str) -> str:
        return prompt.cache_key(self.model, taxonomy, text, max_chars=self.max_chars)

    def cached(self, taxonomy: Taxonomy, texts: list[str]) -> list[LLMOpinion | None]:
        """Answers already in the cache (None where a post was never asked)."""
        keys = [self.key(taxonomy, text) for text in texts]
        found = self.cache.get_many(keys)
        return [LLMOpinion(found[k].label, found[k].confidence, cached=True) if k in found
                else None for k in keys]

    def label_many(self, taxonomy: Taxonomy, texts: list[str], *,
                   deadline: float | None = None, group: object = None) -> list[LLMOpinion]:
        """One opinion per text, in order. Posts still unanswered at `deadline`
        (time.monotonic()) get no label now; their requests finish in the background and
        fill the cache for the next call. At most `max_queued` posts of one `group` (a
        project) wait for the LLM at a time; the rest get no label now."""
        opinions: list[LLMOpinion | None] = self.cached(taxonomy, texts)
        hits = sum(o is not None for o in opinions)
        futures: dict[Future, list[int]] = {}
        by_text: dict[str, list[int]] = {}
        for index, opinion in enumerate(opinions):
            if opinion is None:
                by_text.setdefault(texts[index], []).append(index)
        errors: Counter[str] = Counter()
        for text, indexes in by_text.items():
            future = self._submit(taxonomy, text, group)
            if future is None:
                errors[f"{self.max_queued} posts of this project already wait for the LLM "
                       f"(LLM_MAX_QUEUED)"] += 1
                continue
            futures[future] = indexes
        self.cache.count(cache_hits=hits, cache_misses=len(by_text))

        pending = set(futures)
        while pending:
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            done, pending = wait(pending, timeout=timeout, return_when=FIRST_COMPLETED)
            if not done:
                break
            for future in done:
                opinion = future.result()
                if opinion.error:
                    errors[opinion.error] += 1
                for index in futures[future]:
                    opinions[index] = opinion
        if pending:
            errors[f"not answered within the {len(texts)}-post request's deadline"] += len(
                pending)
        answered = [o for o in opinions if o is not None and not o.cached]
        if answered:
            log.info("LLM %s: %d posts from the cache, %d asked, %d tokens", self.model, hits,
                     len(answered), sum(o.tokens for o in answered))
        if errors:
            summary = "; ".join(f"{n} x {reason}" for reason, n in errors.most_common(3))
            log.warning("LLM %s: %d of %d posts got no pre-label (%s)", self.model,
                        sum(errors.values()), len(by_text), summary)
        return [o or LLMOpinion(None, None, error="pending") for o in opinions]

    def _submit(self, taxonomy: Taxonomy, text: str, group: object) -> Future | None:
        """One request per post at a time: a retrieval that comes back before the last
        one's requests finished waits for them instead of asking again. None when the
        group's queue is full."""
        key = self.key(taxonomy, text)
        with self._lock:
            future = self._inflight.get(key)
            if future is None:
                if self._queued[group] >= self.max_queued:
                    return None
                self._queued[group] += 1
                future = self._pool.submit(self._ask, taxonomy, text)
                self._inflight[key] = future
                future.add_done_callback(lambda _f, k=key, g=group: self._forget(k, g))
            return future

    def _forget(self, key: str, group: object) -> None:
        with self._lock:
            self._inflight.pop(key, None)
            self._queued[group] -= 1
            if self._queued[group] <= 0:
                del self._queued[group]

    def _ask(self, taxonomy: Taxonomy, text: str) -> LLMOpinion:
        if not self.breaker.allow():
            return LLMOpinion(None, None, error="the LLM endpoint is failing; not asked "
                                                "during the circuit breaker's cool-down")
        messages = prompt.build_messages(taxonomy, text, max_chars=self.max_chars)
        try:
            response = self._complete(taxonomy, messages)
        except (openai.APIConnectionError, openai.APITimeoutError,
                openai.InternalServerError, openai.RateLimitError) as exc:
            self.cache.count(llm_failures=1)
            if self.breaker.failed():
                log.warning("LLM %s: circuit breaker open after %d failures in a row (%s); "
                            "no calls for %.0f s", self.model, self.breaker.errors,
                            _describe(exc), self.breaker.cooldown)
            return LLMOpinion(None, None, error=_describe(exc))
        except openai.OpenAIError as exc:
            self.cache.count(llm_failures=1)
            self.breaker.succeeded()  # it answered: the endpoint is alive
            return LLMOpinion(None, None, error=_describe(exc))
        except Exception as exc:  # a broken answer must not take the batch down
            self.cache.count(llm_failures=1)
            return LLMOpinion(None, None, error=f"{type(exc).__name__}: {exc}")
        self.breaker.succeeded()
        usage = response.usage
        prompt_tokens = getattr(usage, "prompt_tokens", 0) or 0
        completion_tokens = getattr(usage, "completion_tokens", 0) or 0
        self.cache.count(llm_calls=1, prompt_tokens=prompt_tokens,
                         completion_tokens=completion_tokens)
        spent = prompt_tokens + completion_tokens
        choice = response.choices[0] if response.choices else None
        content = (choice.message.content if choice and choice.message else None) or ""
        label = prompt.parse_label(content, taxonomy.names)
        confidence = None
        if label is not None and choice is not None and choice.logprobs is not None:
            logprobs = [prompt.TokenLogprob(t.token, t.logprob,
                                            {a.token: a.logprob for a in t.top_logprobs or []})
                        for t in choice.logprobs.content or []]
            confidence = prompt.label_confidence(content, label, taxonomy.names, logprobs)
        self.cache.put(self.key(taxonomy, text), CachedAnswer(label, confidence, content[:500]),
                       model=self.model)
        if label is None:
            return LLMOpinion(None, None, error="answer outside the label set", tokens=spent)
        return LLMOpinion(label, confidence, tokens=spent)

    def _complete(self, taxonomy: Taxonomy, messages: list[dict]):
        options: dict = {"model": self.model, "messages": messages, "temperature": 0,
                         "max_tokens": 40}
        if self._logprobs_supported:
            options.update(logprobs=True, top_logprobs=10)
        if self._schema_supported:
            options["response_format"] = prompt.response_format(taxonomy)
        try:
            return self._client.chat.completions.create(**options)
        except openai.BadRequestError as exc:
            # Some endpoints reject JSON schema or logprobs: fall back once, remember it.
            message = str(exc).lower()
            with self._lock:
                if "response_format" in options and ("schema" in message
                                                     or "response_format" in message):
                    self._schema_supported = False
                    log.warning("LLM endpoint rejected JSON-schema output (%s); answers are "
                                "now parsed from plain text", _describe(exc))
                elif "logprobs" in options and "logprob" in message:
                    self._logprobs_supported = False
                    log.warning("LLM endpoint rejected logprobs (%s); confidence is unknown",
                                _describe(exc))
                else:
                    raise
            return self._complete(taxonomy, messages)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _describe(exc: Exception) -> str:
    status = getattr(exc, "status_code", None)
    name = type(exc).__name__
    return f"{name} {status}" if status else name


def from_settings(settings: Settings) -> ZeroShotLabeler:
    return ZeroShotLabeler(
        base_url=settings.llm_endpoint, api_key=settings.llm_api_key, model=settings.llm_model,
        cache=AnswerCache(settings.llm_cache),
        concurrency=settings.llm_concurrency, timeout=settings.llm_timeout,
        max_retries=settings.llm_max_retries, max_chars=settings.llm_max_chars,
        max_queued=settings.llm_max_queued,
        breaker=CircuitBreaker(errors=settings.llm_breaker_errors,
                               cooldown=settings.llm_breaker_cooldown))
