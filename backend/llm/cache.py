"""A persistent SQLite cache of LLM answers, shared by every worker, with usage counters.

Keyed by model, prompt and text (see prompt.cache_key): asking again for the same posts
costs no LLM call, also after a restart.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

COUNTERS = ("llm_calls", "llm_failures", "cache_hits", "cache_misses",
            "prompt_tokens", "completion_tokens")


@dataclass(frozen=True)
class CachedAnswer:
    label: str | None  # None: the LLM answered something outside the label set
    confidence: float | None  # None: the endpoint gave no logprobs
    raw: str


class AnswerCache:
    def __init__(self, path: Path) -> None:
        self.path = path
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
        with closing(self._connect()) as db, db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, label TEXT,"
                       " confidence REAL, raw TEXT, model TEXT, created REAL)")
            db.execute("CREATE TABLE IF NOT EXISTS usage (name TEXT PRIMARY KEY, value INTEGER)")
            db.executemany("INSERT OR IGNORE INTO usage VALUES (?, 0)",
                           [(name,) for name in COUNTERS])

    def _connect(self) -> sqlite3.Connection:
        # One short-lived connection per call: safe across threads and forked workers.
        return sqlite3.connect(self.path, timeout=30)

    def get_many(self, keys: Iterable[str]) -> dict[str, CachedAnswer]:
        keys = list(dict.fromkeys(keys))
        found: dict[str, CachedAnswer] = {}
        with closing(self._connect()) as db:
            for i in range(0, len(keys), 500):  # SQLite caps the number of parameters
                chunk = keys[i:i + 500]
                rows = db.execute(
                    f"SELECT key, label, confidence, raw FROM answers WHERE key IN "
                    f"({','.join('?' * len(chunk))})", chunk)
                for key, label, confidence, raw in rows:
                    found[key] = CachedAnswer(label, confidence, raw)
        return found

    def put(self, key: str, answer: CachedAnswer, *, model: str) -> None:
        with closing(self._connect()) as db, db:
            db.execute("INSERT OR REPLACE INTO answers VALUES (?, ?, ?, ?, ?, ?)",
                       (key, answer.label, answer.confidence, answer.raw, model, time.time()))

    def count(self, **increments: int) -> None:
        """Add to the usage counters (names from COUNTERS)."""
        pairs = [(value, name) for name, value in increments.items() if value]
        if not pairs:
            return
        with closing(self._connect()) as db, db:
            db.executemany("UPDATE usage SET value = value + ? WHERE name = ?", pairs)

    def usage(self) -> dict[str, int]:
        with closing(self._connect()) as db:
            counters = dict(db.execute("SELECT name, value FROM usage"))
            counters["cached_answers"] = db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]
        return counters
