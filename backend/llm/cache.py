"""The LLM answer cache, shared by every worker, with usage counters and claims.

Keyed by model, prompt and text (see prompt.cache_key): asking again for the same posts
costs no LLM call, also after a restart. A claim says "this process is asking the LLM for
this key now": whoever holds it asks, everyone else waits for the answer, so each
distinct post is paid for once across workers, replicas and hosts. A claim expires, so
a killed worker's claim does not block a post for good.

Two stores with one interface: SQLite in MODEL_DIR (the embedded default) and Redis
(REDIS_URL: several replicas and worker hosts share it).
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

# Connections a forked process inherited: kept open for good (see AnswerCache._connect).
_INHERITED: list[sqlite3.Connection] = []

COUNTERS = (
    "llm_calls",
    "llm_failures",
    "cache_hits",
    "cache_misses",
    "prompt_tokens",
    "completion_tokens",
)


@dataclass(frozen=True)
class CachedAnswer:
    # None: the LLM answered something outside the label set. A form's answer (a config
    # of several questions) keeps every question's answer here (llm.questions.encode).
    label: str | None
    confidence: float | None  # None: the endpoint gave no logprobs
    raw: str
    # What the answer cost, as the endpoint counted it (0: stored before they were kept).
    prompt_tokens: int = 0
    completion_tokens: int = 0


class Cache(Protocol):
    """What the labeler needs of an answer cache; AnswerCache (SQLite, one machine) and
    RedisAnswerCache (shared by every host) implement it."""

    def get_many(self, keys: Iterable[str]) -> dict[str, CachedAnswer]: ...
    def put(self, key: str, answer: CachedAnswer, *, model: str) -> None: ...
    def claim(self, key: str, owner: str, ttl: float) -> bool:
        """True when `owner` may ask the LLM for `key` now (no live claim by another)."""
        ...

    def release(self, key: str, owner: str) -> None: ...
    def count(self, **increments: int) -> None: ...
    def usage(self) -> dict[str, int]: ...


class AnswerCache:
    """SQLite store: one file, safe across threads and forked workers on one machine."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        self._write_lock, self._write_lock_pid = threading.Lock(), os.getpid()
        path.parent.mkdir(parents=True, exist_ok=True)
        for attempt in range(100):
            try:
                self._create()
                break
            except sqlite3.OperationalError as exc:
                # Workers booting together race for the one-time switch to WAL.
                if "locked" not in str(exc) or attempt == 99:
                    raise
                time.sleep(0.05)

    def _create(self) -> None:
        with self._writing() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(
                "CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, label TEXT,"
                " confidence REAL, raw TEXT, model TEXT, created REAL)"
            )
            columns = {row[1] for row in db.execute("PRAGMA table_info(answers)")}
            for column in ("prompt_tokens", "completion_tokens"):  # caches made before them
                if column not in columns:
                    db.execute(f"ALTER TABLE answers ADD COLUMN {column} INTEGER DEFAULT 0")
            db.execute("CREATE TABLE IF NOT EXISTS usage (name TEXT PRIMARY KEY, value INTEGER)")
            db.execute(
                "CREATE TABLE IF NOT EXISTS claims (key TEXT PRIMARY KEY, owner TEXT, expires REAL)"
            )
            db.executemany(
                "INSERT OR IGNORE INTO usage VALUES (?, 0)", [(name,) for name in COUNTERS]
            )

    def _connect(self) -> sqlite3.Connection:
        """This thread's connection. Opening one costs about 50 times a claim's
        statements, and the bulk job makes several calls per post, so each thread keeps
        its own. A forked process opens new ones and never closes what it inherited:
        closing a copied connection can checkpoint away the parent's write-ahead log."""
        local = self._local
        if getattr(local, "pid", None) != os.getpid():
            if getattr(local, "db", None) is not None:
                _INHERITED.append(local.db)
            db = sqlite3.connect(self.path, timeout=30)
            # WAL without an fsync per commit: a crash of the process loses nothing; a
            # power cut may lose the last answers, which are then asked again.
            db.execute("PRAGMA synchronous=NORMAL")
            local.db, local.pid = db, os.getpid()
        return local.db

    @contextmanager
    def _writing(self) -> Iterator[sqlite3.Connection]:
        """A write transaction, one thread of this process at a time: SQLite lets one
        writer in and makes the others sleep and retry (up to 100 ms a time), which with
        the bulk job's 32 threads cost more than the writes. Threads queue on a lock
        instead; other processes still meet SQLite's own wait."""
        if self._write_lock_pid != os.getpid():  # a lock copied by fork may be held
            self._write_lock, self._write_lock_pid = threading.Lock(), os.getpid()
        with self._write_lock, self._connect() as db:
            yield db

    def get_many(self, keys: Iterable[str]) -> dict[str, CachedAnswer]:
        keys = list(dict.fromkeys(keys))
        found: dict[str, CachedAnswer] = {}
        db = self._connect()
        for i in range(0, len(keys), 500):  # SQLite caps the number of parameters
            chunk = keys[i : i + 500]
            rows = db.execute(
                f"SELECT key, label, confidence, raw, prompt_tokens, completion_tokens "
                f"FROM answers WHERE key IN ({','.join('?' * len(chunk))})",
                chunk,
            ).fetchall()
            for key, label, confidence, raw, prompt, completion in rows:
                found[key] = CachedAnswer(label, confidence, raw, prompt or 0, completion or 0)
        return found

    def put(self, key: str, answer: CachedAnswer, *, model: str) -> None:
        """Store the answer and drop the key's claim: waiters find the answer."""
        with self._writing() as db:
            db.execute(
                "INSERT OR REPLACE INTO answers (key, label, confidence, raw, model, created,"
                " prompt_tokens, completion_tokens) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    key,
                    answer.label,
                    answer.confidence,
                    answer.raw,
                    model,
                    time.time(),
                    answer.prompt_tokens,
                    answer.completion_tokens,
                ),
            )
            db.execute("DELETE FROM claims WHERE key = ?", (key,))

    def claim(self, key: str, owner: str, ttl: float) -> bool:
        """True when `owner` may ask the LLM for `key` now (no live claim by another)."""
        now = time.time()
        with self._writing() as db:
            db.execute("DELETE FROM claims WHERE key = ? AND expires < ?", (key, now))
            taken = db.execute(
                "INSERT OR IGNORE INTO claims VALUES (?, ?, ?)", (key, owner, now + ttl)
            ).rowcount
        return bool(taken)

    def release(self, key: str, owner: str) -> None:
        """Give up a claim without an answer (the call failed): another may ask."""
        with self._writing() as db:
            db.execute("DELETE FROM claims WHERE key = ? AND owner = ?", (key, owner))

    def count(self, **increments: int) -> None:
        """Add to the usage counters (names from COUNTERS)."""
        pairs = [(value, name) for name, value in increments.items() if value]
        if not pairs:
            return
        with self._writing() as db:
            db.executemany("UPDATE usage SET value = value + ? WHERE name = ?", pairs)

    def usage(self) -> dict[str, int]:
        db = self._connect()
        counters = dict(db.execute("SELECT name, value FROM usage").fetchall())
        counters["cached_answers"] = db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]
        return counters


class RedisAnswerCache:
    """Redis store: answers in one hash, counters in another, a key per live claim."""

    def __init__(self, client, *, prefix: str = "takemeter") -> None:
        self.redis = client
        self.answers = f"{prefix}:llm:answers"
        self.counters = f"{prefix}:llm:usage"
        self.claims = f"{prefix}:llm:claim:"

    def get_many(self, keys: Iterable[str]) -> dict[str, CachedAnswer]:
        keys = list(dict.fromkeys(keys))
        found: dict[str, CachedAnswer] = {}
        for i in range(0, len(keys), 1000):
            chunk = keys[i : i + 1000]
            for key, raw in zip(chunk, self.redis.hmget(self.answers, chunk), strict=True):
                if raw is not None:
                    found[key] = CachedAnswer(**json.loads(raw))
        return found

    def put(self, key: str, answer: CachedAnswer, *, model: str) -> None:
        pipe = self.redis.pipeline()
        pipe.hset(self.answers, key, json.dumps(asdict(answer)))
        pipe.delete(self.claims + key)
        pipe.execute()

    def claim(self, key: str, owner: str, ttl: float) -> bool:
        return bool(self.redis.set(self.claims + key, owner, nx=True, px=int(ttl * 1000)))

    def release(self, key: str, owner: str) -> None:
        if (self.redis.get(self.claims + key) or b"").decode() == owner:
            self.redis.delete(self.claims + key)

    def count(self, **increments: int) -> None:
        pairs = {name: value for name, value in increments.items() if value}
        if pairs:
            pipe = self.redis.pipeline()
            for name, value in pairs.items():
                pipe.hincrby(self.counters, name, value)
            pipe.execute()

    def usage(self) -> dict[str, int]:
        stored = {k.decode(): int(v) for k, v in self.redis.hgetall(self.counters).items()}
        counters = {name: stored.get(name, 0) for name in COUNTERS}
        counters["cached_answers"] = int(self.redis.hlen(self.answers))
        return counters
