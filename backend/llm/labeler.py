"""Zero-shot labels from any OpenAI-compatible chat endpoint, cached on disk.

Bounded concurrency (one pool per process), the openai client's retries with backoff on
429, 5xx and timeouts, a per-request timeout, a circuit breaker that stops calling a dead
endpoint for a while, a bound on the posts waiting per project, and one summary log line
per batch when the endpoint fails instead of a stack trace per post.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
import time
from collections import Counter, deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

import openai

from backend.config import Settings
from backend.connections import redis_client
from backend.domain.taxonomy import Taxonomy
from backend.llm import prompt, questions
from backend.llm.breaker import CircuitBreaker
from backend.llm.cache import AnswerCache, Cache, CachedAnswer, RedisAnswerCache

log = logging.getLogger(__name__)

OFF_LIST = "answer outside the label set"


@dataclass(frozen=True)
class LLMOpinion:
    label: str | None  # None: no usable answer (failure, timeout, or an answer off the list)
    confidence: float | None  # None: unknown (the endpoint returned no logprobs)
    cached: bool = False
    error: str | None = None
    tokens: int = 0  # prompt + completion tokens this answer cost (0 from the cache)
    # A multiple-choice question's answer (label is then None; confidence, when known,
    # the probability of the whole list as the LLM wrote it).
    chosen: frozenset[str] | None = None

    @property
    def off_list(self) -> bool:
        """The LLM answered, outside the labels: asking again would get the same."""
        return self.error == OFF_LIST

    @classmethod
    def from_cache(cls, answer: CachedAnswer) -> LLMOpinion:
        """A stored answer reads as it did when fresh, off-list answers included."""
        error = OFF_LIST if answer.label is None else None
        return cls(answer.label, answer.confidence, cached=True, error=error)


@dataclass(frozen=True)
class Spent:
    """Tokens the cached answers of some posts cost, as the endpoint counted them."""

    answered: int  # posts with a cached answer
    prompt_tokens: int
    completion_tokens: int
    without_counts: int  # answers stored before token counts were kept (counted as 0)

    def cost(
        self, input_per_million: float | None, output_per_million: float | None
    ) -> float | None:
        """In the prices' currency; None when a price is unknown."""
        if input_per_million is None or output_per_million is None:
            return None
        return (
            self.prompt_tokens * input_per_million + self.completion_tokens * output_per_million
        ) / 1e6


class ZeroShotLabeler:
    def __init__(
        self,
        *,
        base_url: str,
        api_key: str,
        model: str,
        cache: Cache,
        concurrency: int = 8,
        timeout: float = 30.0,
        max_retries: int = 2,
        max_chars: int = 4000,
        max_queued: int = 5000,
        breaker: CircuitBreaker | None = None,
        answer_format: str = prompt.DEFAULT_ANSWER_FORMAT,
        calibrate: bool = prompt.DEFAULT_CALIBRATE,
    ) -> None:
        if answer_format not in prompt.ANSWER_FORMATS:
            raise ValueError(f"answer_format must be one of {prompt.ANSWER_FORMATS}")
        self.model = model
        self.answer_format = answer_format
        self.calibrate = calibrate
        # The model's prior over the labels, per (format, system prompt): asked once per
        # process, by one thread, the first time an answer comes with logprobs.
        self._priors: dict[tuple[str, str], list[float] | None] = {}
        self._prior_locks: dict[tuple[str, str], threading.Lock] = {}
        self.cache = cache
        self.max_chars = max_chars
        self._client = openai.OpenAI(
            base_url=base_url, api_key=api_key, timeout=timeout, max_retries=max_retries
        )
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="llm")
        self._schema_supported = True  # turned off once if the endpoint rejects JSON schema
        self._logprobs_supported = True
        self._lock = threading.RLock()  # a done callback may run inside _submit
        self._inflight: dict[str, Future] = {}
        self.max_queued = max_queued
        self._queued: Counter[object] = Counter()  # posts waiting or asked, per group
        self.breaker = breaker or CircuitBreaker(errors=5, cooldown=30.0)
        self.concurrency = concurrency
        # A claim outlives the longest a call may take (its retries included).
        self.claim_seconds = timeout * (max_retries + 1) + 10

    def key(self, taxonomy: Taxonomy, text: str) -> str:
        """The answer's cache key; the same for every question of a form (one request
        answers them all)."""
        if taxonomy.form:
            return questions.cache_key(self.model, taxonomy.form, text, max_chars=self.max_chars)
        return prompt.cache_key(
            self.model,
            taxonomy,
            text,
            max_chars=self.max_chars,
            answer_format=self.answer_format,
            calibrate=self.calibrate,
        )

    def cached(self, taxonomy: Taxonomy, texts: list[str]) -> list[LLMOpinion | None]:
        """Answers already in the cache (None where a post was never asked)."""
        return self.cached_each((taxonomy,), texts)[0]

    def cached_each(
        self, asked: Sequence[Taxonomy], texts: list[str]
    ) -> list[list[LLMOpinion | None]]:
        """`cached` for each of several questions of one form, read from the cache once
        (one request answered them all, under one key)."""
        keys = [self.key(asked[0], text) for text in texts]
        try:
            found = self.cache.get_many(keys)
        except Exception as exc:  # a shared cache away (Redis down): answer without it
            log.warning(
                "LLM answer cache unreachable (%s: %s); answering without it",
                type(exc).__name__,
                exc,
            )
            found = {}
        kept = [LLMOpinion.from_cache(found[k]) if k in found else None for k in keys]
        return [[o and self._answer_to(question, o) for o in kept] for question in asked]

    def _answer_to(self, taxonomy: Taxonomy, opinion: LLMOpinion) -> LLMOpinion:
        """The opinion on `taxonomy` in an answer (a form's answer holds every question's,
        questions.encode)."""
        if not taxonomy.form or opinion.label is None:
            return opinion
        found = questions.decode(opinion.label, taxonomy.form)[taxonomy.from_name]
        cached, tokens = opinion.cached, opinion.tokens
        if found.answer is None:
            return LLMOpinion(None, None, cached=cached, error=OFF_LIST, tokens=tokens)
        if isinstance(found.answer, frozenset):
            return LLMOpinion(
                None, found.confidence, cached=cached, tokens=tokens, chosen=found.answer
            )
        return LLMOpinion(found.answer, found.confidence, cached=cached, tokens=tokens)

    def spent(self, taxonomy: Taxonomy, texts: Iterable[str]) -> Spent:
        """What the cached answers for these posts cost, each distinct post once."""
        found = self.cache.get_many(self.key(taxonomy, text) for text in set(texts))
        return Spent(
            answered=len(found),
            prompt_tokens=sum(a.prompt_tokens for a in found.values()),
            completion_tokens=sum(a.completion_tokens for a in found.values()),
            without_counts=sum(
                1 for a in found.values() if not (a.prompt_tokens or a.completion_tokens)
            ),
        )

    def label_many(
        self,
        taxonomy: Taxonomy,
        texts: list[str],
        *,
        deadline: float | None = None,
        group: object = None,
    ) -> list[LLMOpinion]:
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
                errors[
                    f"{self.max_queued} posts of this project already wait for the LLM "
                    f"(LLM_MAX_QUEUED)"
                ] += 1
                continue
            # Two texts the prompt cuts to the same words share one request and answer.
            futures.setdefault(future, []).extend(indexes)
        self.cache.count(cache_hits=hits, cache_misses=len(by_text))

        pending = set(futures)
        while pending:
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            done, pending = wait(pending, timeout=timeout, return_when=FIRST_COMPLETED)
            if not done:
                break
            for future in done:
                opinion = self._answer_to(taxonomy, future.result())
                if opinion.error:
                    errors[opinion.error] += 1
                for index in futures[future]:
                    opinions[index] = opinion
        if pending:
            errors[f"not answered within the {len(texts)}-post request's deadline"] += len(pending)
        answered = [o for o in opinions if o is not None and not o.cached]
        if answered:
            log.info(
                "LLM %s: %d posts from the cache, %d asked, %d tokens",
                self.model,
                hits,
                len(answered),
                sum(o.tokens for o in answered),
            )
        if errors:
            summary = "; ".join(f"{n} x {reason}" for reason, n in errors.most_common(3))
            log.warning(
                "LLM %s: %d of %d posts got no pre-label (%s)",
                self.model,
                sum(errors.values()),
                len(by_text),
                summary,
            )
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
                future = self._pool.submit(self._ask_once, taxonomy, text, key)
                self._inflight[key] = future
                future.add_done_callback(lambda _f: self._forget(key, group))
            return future

    def label_stream(
        self, taxonomy: Taxonomy, chunks: Iterable[list[str]], *, group: object = None
    ) -> Iterator[tuple[list[int], LLMOpinion]]:
        """(indexes, opinion) as answers arrive, for texts given in chunks (pages of
        tasks) and numbered across them; cached answers first, a text that occurs several
        times in a chunk asked once. Keeps the pool full (twice its size in flight) and
        takes the next chunk before this one runs out, so the endpoint stays at full
        concurrency from the first chunk to the last."""
        chunks = iter(chunks)
        waiting: deque[tuple[str, list[int]]] = deque()
        in_flight: dict[Future, list[int]] = {}
        # Answers in the order they come. A callback a future, not wait() over all in
        # flight: that walks every future on each answer, and this loop runs once a post.
        answered: queue.SimpleQueue[Future] = queue.SimpleQueue()
        offset, more = 0, True
        while True:
            while more and len(waiting) < 2 * self.concurrency:
                texts = next(chunks, None)
                if texts is None:
                    more = False
                    break
                by_text: dict[str, list[int]] = {}
                for index, opinion in enumerate(self.cached(taxonomy, texts), start=offset):
                    if opinion is not None:
                        yield [index], opinion
                    else:
                        by_text.setdefault(texts[index - offset], []).append(index)
                self.cache.count(
                    cache_hits=len(texts) - sum(map(len, by_text.values())),
                    cache_misses=len(by_text),
                )
                waiting.extend(by_text.items())
                offset += len(texts)
            while waiting and len(in_flight) < 2 * self.concurrency:
                text, indexes = waiting.popleft()
                future = self._submit(taxonomy, text, group)
                if future is None:
                    yield (
                        indexes,
                        LLMOpinion(
                            None,
                            None,
                            error="LLM_MAX_QUEUED posts of this project already wait for the LLM",
                        ),
                    )
                elif future in in_flight:  # the same text in an earlier chunk, still asked
                    in_flight[future].extend(indexes)
                else:
                    in_flight[future] = indexes
                    future.add_done_callback(answered.put)
            if not in_flight:
                if waiting or more:
                    continue
                return
            future = answered.get()
            yield in_flight.pop(future), self._answer_to(taxonomy, future.result())

    def _ask_once(self, taxonomy: Taxonomy, text: str, key: str) -> LLMOpinion:
        """Ask unless another process (worker, replica, host) asks for the same post now:
        then wait for its answer in the shared cache. Paid once per distinct post.
        `key` is self.key(taxonomy, text), made once a post by _submit."""
        owner = f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"
        claimed, opinion = False, None
        try:
            # The caller looked in the cache already: claim first, then look again (an
            # answer stored between the two looks dropped its asker's claim, and must not
            # be paid for twice); without the claim, wait for the asker's answer.
            while True:
                claimed = self.cache.claim(key, owner, self.claim_seconds)
                found = self.cache.get_many([key]).get(key)
                if found is not None:
                    return LLMOpinion.from_cache(found)
                if claimed:
                    opinion = self._ask(taxonomy, text, key)
                    return opinion
                time.sleep(0.2)
        finally:
            # A stored answer dropped the claim; a failed call gives it up for others.
            if claimed and (opinion is None or opinion.error):
                self.cache.release(key, owner)

    def _forget(self, key: str, group: object) -> None:
        with self._lock:
            self._inflight.pop(key, None)
            self._queued[group] -= 1
            if self._queued[group] <= 0:
                del self._queued[group]

    def _ask(self, taxonomy: Taxonomy, text: str, key: str) -> LLMOpinion:
        if not self.breaker.allow():
            return LLMOpinion(
                None,
                None,
                error="the LLM endpoint is failing; not asked "
                "during the circuit breaker's cool-down",
            )
        if taxonomy.form:
            fmt = "json"
            messages = questions.messages(taxonomy.form, text, max_chars=self.max_chars)
        else:
            fmt = prompt.answer_format_for(taxonomy, self.answer_format)
            messages = prompt.build_messages(
                taxonomy, text, max_chars=self.max_chars, answer_format=fmt
            )
        try:
            response = self._complete(taxonomy, messages, fmt)
            prompt_tokens, completion_tokens = self._count(response)
            reading = self._read(response, taxonomy, fmt)
            if self.calibrate and reading.probs is not None:
                prior = self._prior(taxonomy, fmt)
                if prior is not None:
                    reading = reading.calibrated(prior, taxonomy.names)
        except (
            openai.APIConnectionError,
            openai.APITimeoutError,
            openai.InternalServerError,
            openai.RateLimitError,
        ) as exc:
            self.cache.count(llm_failures=1)
            if self.breaker.failed():
                log.warning(
                    "LLM %s: circuit breaker open after %d failures in a row (%s); "
                    "no calls for %.0f s",
                    self.model,
                    self.breaker.errors,
                    _describe(exc),
                    self.breaker.cooldown,
                )
            return LLMOpinion(None, None, error=_describe(exc))
        except openai.OpenAIError as exc:
            self.cache.count(llm_failures=1)
            self.breaker.succeeded()  # it answered: the endpoint is alive
            return LLMOpinion(None, None, error=_describe(exc))
        except Exception as exc:  # a broken answer must not take the batch down
            self.cache.count(llm_failures=1)
            return LLMOpinion(None, None, error=f"{type(exc).__name__}: {exc}")
        self.breaker.succeeded()
        label, confidence = reading.label, reading.confidence
        self.cache.put(
            key,
            CachedAnswer(
                label, confidence, reading.content[:500], prompt_tokens, completion_tokens
            ),
            model=self.model,
        )
        spent = prompt_tokens + completion_tokens
        if label is None:
            return LLMOpinion(None, None, error=OFF_LIST, tokens=spent)
        return LLMOpinion(label, confidence, tokens=spent)

    def _count(self, response: dict) -> tuple[int, int]:
        """The call's (prompt, completion) tokens, added to the usage counters."""
        usage = response.get("usage") or {}
        prompt_tokens = int(usage.get("prompt_tokens") or 0)
        completion_tokens = int(usage.get("completion_tokens") or 0)
        self.cache.count(
            llm_calls=1, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens
        )
        return prompt_tokens, completion_tokens

    def _read(self, response: dict, taxonomy: Taxonomy, fmt: str) -> _Reading:
        """The label, its confidence and, where the logprobs give it, every label's share,
        from the answer's JSON (OpenAI's chat completion shape)."""
        choice = (response.get("choices") or [None])[0] or {}
        content = (choice.get("message") or {}).get("content") or ""
        logprobs = None
        if choice.get("logprobs") is not None:
            logprobs = [
                prompt.TokenLogprob(
                    t["token"],
                    t["logprob"],
                    {a["token"]: a["logprob"] for a in t.get("top_logprobs") or []},
                )
                for t in choice["logprobs"].get("content") or []
            ]
        if taxonomy.form:
            # Every question's answer, kept whole (not calibrated against a prior: the
            # prior is asked per single question).
            answers = questions.read_answers(content, taxonomy.form, logprobs or [])
            return _Reading(questions.encode(answers), None, None, content)
        names = taxonomy.names
        if fmt == "code":
            probs = prompt.code_distribution(logprobs[0], len(names)) if logprobs else None
            if probs is None:  # no logprobs (or no letter among them): the answer as given
                return _Reading(prompt.parse_code(content, names), None, None, content)
            # The likeliest letter, even where the token sampled was no letter at all.
            best = max(range(len(names)), key=probs.__getitem__)
            return _Reading(names[best], probs[best], probs, content)
        label = prompt.parse_label(content, names)
        if label is None or not logprobs:
            return _Reading(label, None, None, content)
        return _Reading(
            label,
            prompt.label_confidence(content, label, names, logprobs),
            prompt.label_distribution(content, label, names, logprobs) if self.calibrate else None,
            content,
        )

    def known_prior(self, taxonomy: Taxonomy) -> list[float] | None:
        """The prior this labeler divides out for `taxonomy`, if it has asked for it."""
        fmt = prompt.answer_format_for(taxonomy, self.answer_format)
        with self._lock:
            return self._priors.get((fmt, prompt.system_prompt(taxonomy, fmt)))

    def _prior(self, taxonomy: Taxonomy, fmt: str) -> list[float] | None:
        """The model's distribution over the labels for content-free posts (their mean),
        asked once per process and prompt; concurrent first answers wait for one asker.
        A failed call raises (nothing is kept, the next answer tries again); None, kept,
        when the endpoint gives no distribution for them."""
        key = (fmt, prompt.system_prompt(taxonomy, fmt))
        with self._lock:
            if key in self._priors:
                return self._priors[key]
            lock = self._prior_locks.setdefault(key, threading.Lock())
        with lock:
            with self._lock:
                if key in self._priors:
                    return self._priors[key]
            found = []
            for filler in prompt.CONTENT_FREE:
                messages = prompt.build_messages(
                    taxonomy, filler, max_chars=self.max_chars, answer_format=fmt
                )
                response = self._complete(taxonomy, messages, fmt)
                self._count(response)
                probs = self._read(response, taxonomy, fmt).probs
                if probs is not None:
                    found.append(probs)
            prior = prompt.mean_prior(found)
            with self._lock:
                self._priors[key] = prior
            if prior is not None:
                log.info(
                    "LLM %s: prior over the labels %s",
                    self.model,
                    ", ".join(f"{n} {p:.3f}" for n, p in zip(taxonomy.names, prior, strict=True)),
                )
            return prior

    def _complete(self, taxonomy: Taxonomy, messages: list[dict], fmt: str = "json") -> dict:
        # One letter is the whole "code" answer; its alternatives carry every label's share.
        options: dict = {
            "model": self.model,
            "messages": messages,
            "temperature": 0,
            "max_tokens": 1 if fmt == "code" else _max_tokens(taxonomy),
        }
        if self._logprobs_supported:
            options.update(logprobs=True, top_logprobs=20 if fmt == "code" else 10)
        if self._schema_supported and fmt == "json":
            options["response_format"] = (
                questions.response_format(taxonomy.form)
                if taxonomy.form
                else prompt.response_format(taxonomy)
            )
        try:
            # A bulk run at full concurrency is bound by the client's CPU a call. The body
            # is plain JSON already, and the answer is read as JSON: create() would walk
            # the one against the SDK's typed parameters and build typed objects from the
            # other on every call, more than half the client's CPU a call. post() keeps
            # the SDK's retries, errors and back-off.
            # cast_to=object: the SDK returns the parsed JSON without validating it.
            return self._client.post("/chat/completions", body=options, cast_to=object)  # type: ignore[arg-type]
        except openai.BadRequestError as exc:
            # Some endpoints reject JSON schema or logprobs: fall back once, remember it.
            message = str(exc).lower()
            with self._lock:
                if "response_format" in options and (
                    "schema" in message or "response_format" in message
                ):
                    self._schema_supported = False
                    log.warning(
                        "LLM endpoint rejected JSON-schema output (%s); answers are "
                        "now parsed from plain text",
                        _describe(exc),
                    )
                elif "logprobs" in options and "logprob" in message:
                    self._logprobs_supported = False
                    log.warning(
                        "LLM endpoint rejected logprobs (%s); confidence is unknown", _describe(exc)
                    )
                else:
                    raise
            return self._complete(taxonomy, messages, fmt)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


@dataclass(frozen=True)
class _Reading:
    label: str | None
    confidence: float | None
    probs: list[float] | None  # every label's share, in the taxonomy's order, when known
    content: str

    def calibrated(self, prior: list[float], names: tuple[str, ...]) -> _Reading:
        """The likeliest label once the model's prior is divided out, and its share."""
        assert self.probs is not None
        probs = prompt.calibrate(self.probs, prior)
        best = max(range(len(names)), key=probs.__getitem__)
        return _Reading(names[best], probs[best], probs, self.content)


def _max_tokens(taxonomy: Taxonomy) -> int:
    """Room for a JSON answer: 40 tokens a question, 12 more for each label a
    multiple-choice question may list."""
    asked = taxonomy.form or (taxonomy,)
    return sum(40 + (12 * len(q.labels) if q.multiple else 0) for q in asked)


def _describe(exc: Exception) -> str:
    status = getattr(exc, "status_code", None)
    name = type(exc).__name__
    return f"{name} {status}" if status else name


def from_settings(settings: Settings) -> ZeroShotLabeler:
    return ZeroShotLabeler(
        base_url=settings.llm_endpoint,
        api_key=settings.llm_api_key,
        model=settings.llm_model,
        cache=open_cache(settings),
        concurrency=settings.llm_concurrency,
        timeout=settings.llm_timeout,
        max_retries=settings.llm_max_retries,
        max_chars=settings.llm_max_chars,
        max_queued=settings.llm_max_queued,
        breaker=CircuitBreaker(
            errors=settings.llm_breaker_errors, cooldown=settings.llm_breaker_cooldown
        ),
        answer_format=settings.llm_answer_format,
        calibrate=settings.llm_calibrate,
    )


def open_cache(settings: Settings) -> Cache:
    """The answer cache where every process that asks the LLM finds it: Redis when
    REDIS_URL is set, else the SQLite file LLM_CACHE."""
    if settings.redis_url:
        return RedisAnswerCache(redis_client(settings))
    return AnswerCache(settings.llm_cache)
